"""Backend adapters: one module per backend, each imported lazily.

Every backend module has the same shape: a tuple ``ADAPTERS`` of
:class:`~refmask.adapters.common.Adapter`. :func:`load` finds an adapter by name without
importing any other backend, so a missing framework only affects its own adapters.
"""

from __future__ import annotations

import importlib

from .common import Adapter, Output, Profile, Unsupported

#: adapter name -> module that defines it (imported only when asked for).
REGISTRY = {
    "numpy": "refmask.adapters.reference",
    "refmask.fast": "refmask.adapters.fast",
    "torch.sdpa": "refmask.adapters.torch.sdpa",
    "torch.sdpa.is_causal": "refmask.adapters.torch.sdpa",
    "torch.mha": "refmask.adapters.torch.mha",
    "torch.mha.need_weights": "refmask.adapters.torch.mha",
    "torch.mha.fastpath": "refmask.adapters.torch.mha",
    "torch.flex": "refmask.adapters.torch.flex",
    "torch.sdpa.cuda.flash": "refmask.adapters.torch.cuda",
    "torch.sdpa.cuda.efficient": "refmask.adapters.torch.cuda",
    "torch.sdpa.cuda.cudnn": "refmask.adapters.torch.cuda",
    "torch.sdpa.cuda.math": "refmask.adapters.torch.cuda",
    "torch.flex.cuda": "refmask.adapters.torch.cuda",
    "jax.dpa": "refmask.adapters.jax",
    "flax.mask": "refmask.adapters.jax",
    "jax.dpa.cudnn": "refmask.adapters.jax.gpu",
    "jax.dpa.xla": "refmask.adapters.jax.gpu",
    "keras.mha": "refmask.adapters.keras",
    "keras.dpa": "refmask.adapters.keras",
    "onnxruntime.attention23": "refmask.adapters.onnx",
    "onnxruntime.attention24": "refmask.adapters.onnx",
    "hf.masks": "refmask.adapters.hf",
    "cupy": "refmask.adapters.cupy",
}


#: family name -> the adapters it stands for on the command line (CPU ones; GPU adapters are
#: named one by one, or together as "gpu").
ALIASES = {
    "torch": ("torch.sdpa", "torch.sdpa.is_causal", "torch.mha", "torch.mha.need_weights",
              "torch.flex"),
    "jax": ("jax.dpa", "flax.mask"),
    "keras": ("keras.mha", "keras.dpa"),
    "onnxruntime": ("onnxruntime.attention23", "onnxruntime.attention24"),
    "hf": ("hf.masks",),
    "gpu": ("cupy", "torch.sdpa.cuda.flash", "torch.sdpa.cuda.efficient",
            "torch.sdpa.cuda.cudnn", "torch.sdpa.cuda.math", "torch.flex.cuda",
            "jax.dpa.cudnn", "jax.dpa.xla"),
}


def names() -> list[str]:
    """Every registered adapter name."""
    return sorted(REGISTRY)


def expand(targets) -> list[str]:
    """Backend names with family aliases (``ALIASES``) replaced by their adapters, in order,
    without repeats; ``module:function`` targets pass through."""
    expanded: list[str] = []
    for target in targets:
        for name in ALIASES.get(target, (target,)):
            if name not in expanded:
                expanded.append(name)
    return expanded


def load(name: str) -> Adapter:
    """The adapter called ``name``; unknown names are an error listing the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"adapters.load: unknown backend {name!r}; known backends: {names()}; "
                         f"families: {sorted(ALIASES)}")
    module = importlib.import_module(REGISTRY[name])
    for adapter in module.ADAPTERS:
        if adapter.name == name:
            return adapter
    raise ValueError(f"adapters.load: module {REGISTRY[name]} defines no adapter {name!r}")


__all__ = ["ALIASES", "Adapter", "Output", "Profile", "Unsupported", "expand", "load", "names"]
