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


def names() -> list[str]:
    """Every registered adapter name."""
    return sorted(REGISTRY)


def load(name: str) -> Adapter:
    """The adapter called ``name``; unknown names are an error listing the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"adapters.load: unknown backend {name!r}; known backends: {names()}")
    module = importlib.import_module(REGISTRY[name])
    for adapter in module.ADAPTERS:
        if adapter.name == name:
            return adapter
    raise ValueError(f"adapters.load: module {REGISTRY[name]} defines no adapter {name!r}")


__all__ = ["Adapter", "Output", "Profile", "Unsupported", "load", "names"]
