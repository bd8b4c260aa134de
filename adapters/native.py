"""A case in a framework's own terms: arrays on a device, and the mask in the peers' forms.

Two halves, both public (``from refmask.adapters import native``):

* **Arrays.** :func:`to_native` moves a NumPy array into ``framework`` ("numpy", "torch",
  "jax", "cupy") on ``device`` ("cpu", "cuda") *exactly*: float64/float32/float16 keep their
  dtype, bfloat16 (an ``ml_dtypes`` array) becomes the framework's own bfloat16 (torch
  ``torch.bfloat16``, JAX ``jnp.bfloat16``), bool stays bool, integers stay integers.
  :func:`to_float64` brings any of those arrays back as a float64 NumPy array (exact for every
  float dtype here). A float64 array for JAX needs 64-bit mode: :func:`framework_context`
  enables it (``jax.enable_x64(True)``) for the duration of a call.

* **Masks.** A wrapper around a real kernel needs the case's mask in that kernel's native
  form. Each helper takes the :class:`~refmask.adapters.user.Call` a user function receives
  and returns the form, or raises :class:`~refmask.adapters.Unsupported` naming why the case
  has no such form (so the case is reported ``unsupported``, never judged on a wrong mask):

  ==========================  ==============================================================
  :func:`keep_mask`           bool (B, Hq, Tq, Tk), True = attend (SDPA, JAX, ONNX bool)
  :func:`drop_mask`           bool (B, Hq, Tq, Tk), True = masked (nn.MultiheadAttention)
  :func:`additive_mask`       float (B, Hq, Tq, Tk) in the case dtype: 0 where kept, ``fill``
                              (default -inf) where dropped
  :func:`causal_switch`       :class:`CausalSwitch` (``is_causal``, ``align``): the mask is
                              nothing or exactly ``causal(align=...)``
  :func:`flash_window`        FlashAttention ``(window_size, causal)``: ``window_size =
                              (left, right)``, -1 = unbounded, bottom-right aligned
  :func:`cu_seqlens`          ``(cu_seqlens_q, cu_seqlens_k)`` int32 (N + 1,) of a one-row
                              ``documents`` mask (FlashAttention varlen)
  :func:`mask_mod`            FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` (torch)
  :func:`block_mask`          FlexAttention ``BlockMask`` from ``create_block_mask`` (torch)
  ==========================  ==============================================================

Frameworks are imported inside the functions, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .common import Unsupported

FRAMEWORKS = ("numpy", "torch", "jax", "cupy")
DEVICES = ("cpu", "cuda")

_INSTALL = {"torch": "pip install 'refmask[torch]'", "jax": "pip install 'refmask[jax]'",
            "cupy": "pip install 'refmask[cupy]'"}


def check_target(framework: str, device: str, *, where: str = "framework") -> None:
    """ValueError unless ``framework`` is one of :data:`FRAMEWORKS` and ``device`` one of
    :data:`DEVICES`, and the pair exists (NumPy lives on the CPU, CuPy on CUDA)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"{where}: framework must be one of {list(FRAMEWORKS)}, got "
                         f"{framework!r}")
    if device not in DEVICES:
        raise ValueError(f"{where}: device must be one of {list(DEVICES)}, got {device!r}")
    if framework == "numpy" and device != "cpu":
        raise ValueError(f"{where}: framework 'numpy' runs on device 'cpu' only, got "
                         f"{device!r} (use framework 'cupy' for CUDA arrays)")
    if framework == "cupy" and device != "cuda":
        raise ValueError(f"{where}: framework 'cupy' runs on device 'cuda' only, got "
                         f"{device!r}")


def unavailable(framework: str, device: str = "cpu") -> str | None:
    """Why ``framework`` arrays on ``device`` cannot be made here (None when they can)."""
    check_target(framework, device)
    if framework == "numpy":
        return None
    try:
        if framework == "torch":
            import torch
        elif framework == "jax":
            import jax
        else:
            import cupy
    except ImportError:
        return f"{framework} is not installed ({_INSTALL[framework]})"
    if device == "cuda":
        if framework == "torch" and not torch.cuda.is_available():
            return "torch has no CUDA device (torch.cuda.is_available() is False)"
        if framework == "jax" and not _jax_gpus(jax):
            return "jax has no GPU device (jax.devices('gpu') is empty)"
        if framework == "cupy" and cupy.cuda.runtime.getDeviceCount() == 0:
            return "cupy sees no CUDA device"
    return None


def _jax_gpus(jax) -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def _is_bfloat16(x: np.ndarray) -> bool:
    return x.dtype.name == "bfloat16"


def to_native(x: ArrayLike, framework: str, device: str = "cpu") -> Any:
    """``x`` (a NumPy array) as a ``framework`` array on ``device`` with exactly its values.

    The result is C-contiguous. bfloat16 becomes the framework's bfloat16 (through float32,
    which holds every bfloat16 exactly); JAX float64 needs :func:`framework_context`.
    """
    check_target(framework, device, where="to_native")
    x = np.ascontiguousarray(x)
    if framework == "numpy":
        return x
    if framework == "torch":
        import torch

        if _is_bfloat16(x):
            return torch.from_numpy(x.astype(np.float32)).to(device=device,
                                                             dtype=torch.bfloat16)
        return torch.from_numpy(x.copy()).to(device)
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        target = _jax_gpus(jax)[0] if device == "cuda" else jax.devices("cpu")[0]
        if x.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError("to_native: a float64 array for JAX needs 64-bit mode; call "
                             "inside refmask.adapters.native.framework_context('jax', "
                             "'float64') or set JAX_ENABLE_X64=1")
        return jax.device_put(jnp.asarray(x), target)
    import cupy

    return cupy.asarray(x)


def to_float64(x: Any) -> np.ndarray:
    """A float64 NumPy copy of a NumPy, torch, JAX or CuPy array (bool arrays stay bool);
    TypeError for anything that is not a real floating array (complex, integer, strings,
    None), naming its dtype."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        if x.dtype == torch.bool:
            return x.detach().cpu().numpy()
        if not x.is_floating_point():
            raise TypeError(f"to_float64: expected a real floating tensor, got dtype {x.dtype} "
                            f"(shape {tuple(x.shape)})")
        return x.detach().to(torch.float64).cpu().numpy()
    if module.startswith("cupy"):
        x = x.get()
    x = np.asarray(x)
    if x.dtype == np.bool_:
        return x
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":  # ml_dtypes' bfloat16 is kind "V"
        raise TypeError(f"to_float64: expected a real floating array, got dtype {x.dtype} "
                        f"(shape {x.shape})")
    return x.astype(np.float64)


def framework_context(framework: str, dtype: str) -> AbstractContextManager:
    """The context a call in ``framework`` on ``dtype`` arrays runs in: JAX with float64 gets
    ``jax.enable_x64(True)`` (without it JAX silently computes float64 as float32); every
    other combination needs nothing."""
    if framework == "jax" and dtype == "float64":
        import jax

        return jax.enable_x64(True)
    return nullcontext()


def native_dtype(framework: str, dtype: str) -> Any:
    """The framework's dtype object for a case dtype name ("bfloat16" -> torch.bfloat16)."""
    if framework == "torch":
        import torch

        return getattr(torch, dtype)
    if framework == "jax":
        import jax.numpy as jnp

        return getattr(jnp, dtype)
    if framework == "cupy":
        import cupy

        if dtype == "bfloat16":
            raise Unsupported("cupy has no bfloat16 dtype")
        return getattr(cupy, dtype)
    return _ml_bfloat16() if dtype == "bfloat16" else np.dtype(dtype)


def _ml_bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


# --- the mask in the peers' forms ----------------------------------------------------------

@dataclass(frozen=True)
class CausalSwitch:
    """A mask a causal switch stands for: ``is_causal`` and, when True, the alignment the
    switch must mean ("top_left": SDPA ``is_causal``, JAX, Keras; "bottom_right":
    FlashAttention >= 2.1, ``causal_lower_right``). With Tq == Tk both are the same mask."""

    is_causal: bool
    align: str | None


def _case(call):
    case = getattr(call, "case", None)
    if case is None:
        raise TypeError(f"expected the call a user function receives, got {type(call).__name__}")
    return case


def _framework(call) -> tuple[str, str]:
    return getattr(call, "framework", "numpy"), getattr(call, "device", "cpu")


def keep_mask(call: Any) -> Any:
    """bool (B, Hq, Tq, Tk) in the call's framework, True = the query attends the key."""
    case = _case(call)
    return to_native(case.keep(), *_framework(call))


def drop_mask(call: Any) -> Any:
    """bool (B, Hq, Tq, Tk), True = masked out (``nn.MultiheadAttention`` ``attn_mask``)."""
    case = _case(call)
    return to_native(~case.keep(), *_framework(call))


def additive_mask(call: Any, *, fill: str | float = "-inf") -> Any:
    """float (B, Hq, Tq, Tk) in the case dtype: 0 where kept, ``fill`` where dropped.

    fill: "-inf" (default), "finfo_min" (the dtype's most negative finite value, HF style)
    or a negative number, rounded once to the case dtype (``refmask.convert.keep_to_additive``).
    A finite fill gives an empty row the mean of V instead of the spec's policy.
    """
    from refmask.convert import keep_to_additive

    case = _case(call)
    dtype = native_dtype("numpy", case.dtype)
    return to_native(np.asarray(keep_to_additive(case.keep(), dtype, fill=fill)),
                     *_framework(call))


def causal_switch(call: Any) -> CausalSwitch:
    """``CausalSwitch(False, None)`` for a case without a mask (or ``full()``),
    ``CausalSwitch(True, align)`` for exactly ``causal(align=...)`` with a plain alignment;
    :class:`Unsupported` for every other mask (a switch cannot stand for it)."""
    case = _case(call)
    mask = case.mask
    if mask is None or mask.kind == "full":
        return CausalSwitch(False, None)
    if mask.kind == "causal":
        offsets = set(mask.align.offset_table(case.q_len, case.k_len).tolist())
        if offsets == {0} and case.k_len == case.q_len:  # both alignments are this mask
            kind = mask.align.kind
            return CausalSwitch(True, kind if kind in ("top_left", "bottom_right") else
                                "top_left")
        if offsets == {0}:
            return CausalSwitch(True, "top_left")
        if offsets == {case.k_len - case.q_len}:
            return CausalSwitch(True, "bottom_right")
    raise Unsupported(f"causal_switch: the mask {mask!r} is not causal with a top-left or "
                      "bottom-right alignment for this Tq, Tk, so no is_causal switch "
                      "expresses it")


def flash_window(call: Any) -> tuple[tuple[int, int], bool]:
    """FlashAttention's ``(window_size, causal)`` for a mask that is nothing, ``causal`` or a
    ``sliding_window``, aligned bottom-right as FlashAttention >= 2.1 (or any alignment with
    the same offset for this case's Tq, Tk); :class:`Unsupported` otherwise.

    ``window_size = (left, right)`` with -1 = unbounded; ``causal`` is True exactly when
    ``right == 0`` and ``left == -1`` (FlashAttention's ``causal=True``)."""
    from refmask.convert import mask_to_flash_window

    case = _case(call)
    if case.mask is None:
        return (-1, -1), False
    try:
        window = mask_to_flash_window(case.mask, q_len=case.q_len, k_len=case.k_len)
    except (TypeError, ValueError) as error:
        raise Unsupported(f"flash_window: {error}") from None
    return window, window == (-1, 0)


def cu_seqlens(call: Any) -> tuple[Any, Any]:
    """``(cu_seqlens_q, cu_seqlens_k)``: int32 (N + 1,) arrays in the call's framework for a
    case whose mask is a ``documents`` mask with one row of segment ids (the packed batch of
    FlashAttention's varlen API); :class:`Unsupported` otherwise."""
    from refmask.convert import documents_to_cu_seqlens_qk

    case = _case(call)
    if case.mask is None or case.mask.kind != "documents":
        raise Unsupported(f"cu_seqlens: the mask {case.mask!r} is not a documents mask")
    try:
        cu_q, cu_k = documents_to_cu_seqlens_qk(case.mask)
    except (TypeError, ValueError) as error:
        raise Unsupported(f"cu_seqlens: {error}") from None
    where = _framework(call)
    return to_native(cu_q, *where), to_native(cu_k, *where)


def mask_mod(call: Any) -> Callable[..., Any]:
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` for the case (torch):
    a look-up in the case's keep tensor on the call's device, the way attention-gym writes
    data-defined masks (it traces under ``torch.vmap`` and dynamo)."""
    framework, device = _framework(call)
    if framework != "torch":
        raise Unsupported(f"mask_mod: FlexAttention is torch; the call's framework is "
                          f"{framework!r}")
    keep = to_native(_case(call).keep(), "torch", device)

    def mask_mod(b, h, q_idx, kv_idx):
        return keep[b, h, q_idx, kv_idx]

    return mask_mod


def block_mask(call: Any, *, block_size: int = 128) -> Any:
    """A FlexAttention ``BlockMask`` for the case (``create_block_mask`` of :func:`mask_mod`
    over (B, Hq, Tq, Tk) on the call's device); :class:`Unsupported` for Tq = 0 or Tk = 0."""
    case = _case(call)
    if case.q_len == 0 or case.k_len == 0:
        raise Unsupported("block_mask: a BlockMask needs Tq > 0 and Tk > 0")
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod(call), case.batch, case.q_heads, case.q_len, case.k_len,
                             device=_framework(call)[1], BLOCK_SIZE=block_size)


__all__ = ["DEVICES", "FRAMEWORKS", "CausalSwitch", "additive_mask", "block_mask",
           "causal_switch", "check_target", "cu_seqlens", "drop_mask", "flash_window",
           "framework_context", "keep_mask", "mask_mod", "native_dtype", "to_float64",
           "to_native", "unavailable"]
