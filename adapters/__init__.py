"""Backend adapters, registered through the entry-point group ``refmask.adapters``.

Every backend module has the same shape: a tuple ``ADAPTERS`` of
:class:`~refmask.adapters.common.Adapter`. Each adapter is one entry point of the group,
``name = "module:attribute"``, where the attribute is an ``Adapter`` or a tuple of them (the
one with that name is taken). refmask's own adapters are declared this way in its
``pyproject.toml``; a third-party package declares its own in its packaging metadata::

    [project.entry-points."refmask.adapters"]
    "mykernel.fwd" = "mykernel.refmask_adapter:ADAPTERS"

Names come from the metadata alone, so listing them imports nothing; :func:`load` imports only
the module of the adapter asked for, so a missing framework only affects its own adapters.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from refmask._pyproject import read_pyproject

from .common import Adapter, Output, Profile, Unsupported

ENTRY_POINT_GROUP = "refmask.adapters"


def _source_tree_entry_points() -> dict[str, str]:
    """The built-in entry points from pyproject.toml when refmask runs uninstalled."""
    project = (read_pyproject() or {}).get("project", {})
    table = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    return {str(name): str(value) for name, value in table.items()}


def registry() -> dict[str, tuple[str, ...]]:
    """adapter name -> the distinct ``"module:attribute"`` values registered for it.

    Read afresh from the installed distributions' metadata on every call (nothing cached, so
    a package installed meanwhile is seen). When refmask's own metadata lists no adapters (a
    source tree on ``sys.path``, or an editable install older than the entry points), its
    built-in table is read from the ``pyproject.toml`` of the source tree.
    """
    values: dict[str, list[str]] = {}
    try:
        own = metadata.distribution("refmask").entry_points.select(group=ENTRY_POINT_GROUP)
    except metadata.PackageNotFoundError:
        own = ()
    if not own:  # uninstalled, or metadata written before the entry points existed
        for name, value in _source_tree_entry_points().items():
            values.setdefault(name, []).append(value)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        known = values.setdefault(entry_point.name, [])
        if entry_point.value not in known:
            known.append(entry_point.value)
    return {name: tuple(found) for name, found in values.items()}


#: family name -> the adapters it stands for on the command line (CPU ones; GPU adapters are
#: named one by one, or together as "gpu").
ALIASES = {
    "torch": ("torch.sdpa", "torch.sdpa.is_causal", "torch.mha", "torch.mha.need_weights",
              "torch.flex"),
    "jax": ("jax.dpa", "flax.mask"),
    "keras": ("keras.mha", "keras.dpa"),
    "onnxruntime": ("onnxruntime.attention23", "onnxruntime.attention24"),
    "hf": ("hf.masks",),
    "xformers": ("xformers.attn_bias",),
    "gpu": ("cupy", "torch.sdpa.cuda.flash", "torch.sdpa.cuda.efficient",
            "torch.sdpa.cuda.cudnn", "torch.sdpa.cuda.math", "torch.flex.cuda",
            "jax.dpa.cudnn", "jax.dpa.xla"),
}


def names() -> list[str]:
    """Every registered adapter name (built-in and third-party), sorted."""
    return sorted(registry())


def expand(targets: Iterable[str]) -> list[str]:
    """Backend names with family aliases (``ALIASES``) replaced by their adapters, in order,
    without repeats; ``module:function`` targets pass through."""
    expanded: list[str] = []
    for target in targets:
        for name in ALIASES.get(target, (target,)):
            if name not in expanded:
                expanded.append(name)
    return expanded


def load(name: str) -> Adapter:
    """The adapter called ``name``, importing only the module its entry point names.

    Unknown names are an error listing the known ones and the families; a name registered by
    two packages with different targets is an error naming both (no silent winner).
    """
    where = "adapters.load"
    found = registry()
    if name not in found:
        raise ValueError(f"{where}: unknown backend {name!r}; known backends: {sorted(found)}; "
                         f"families: {sorted(ALIASES)}")
    if len(found[name]) > 1:
        raise ValueError(f"{where}: backend {name!r} is registered more than once in the "
                         f"entry-point group {ENTRY_POINT_GROUP!r}, with different targets "
                         f"{sorted(found[name])}; uninstall one of the packages")
    (value,) = found[name]
    try:
        target = metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP).load()
    except (ImportError, AttributeError) as error:  # the registering package's fault
        raise ValueError(f"{where}: entry point {name!r} = {value!r} cannot be loaded "
                         f"({type(error).__name__}: {error})") from error
    if isinstance(target, Adapter):
        candidates = (target,)
    elif isinstance(target, tuple | list):
        candidates = tuple(target)
    else:
        candidates = ()
    for adapter in candidates:
        if isinstance(adapter, Adapter) and adapter.name == name:
            return adapter
    raise ValueError(f"{where}: entry point {name!r} = {value!r} defines no Adapter named "
                     f"{name!r} (it must be an Adapter or a tuple of them)")


__all__ = ["ALIASES", "ENTRY_POINT_GROUP", "Adapter", "Output", "Profile", "Unsupported",
           "expand", "load", "names", "registry"]
