"""What the JAX adapters share: availability, layouts, the additive bias, and the split of a
case's mask into the parts JAX has a switch for and the rest (a dense bool ``mask``).

Nothing here imports jax at module level; :func:`unavailable` does, when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from refmask.masks import Mask

if TYPE_CHECKING:
    import jax

    from refmask.case import Case


INSTALL_HINT = "pip install 'refmask[jax]'"


def unavailable() -> str | None:
    """Why jax cannot run here, or None."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return f"jax is not installed ({INSTALL_HINT})"
    return None


def flax_unavailable() -> str | None:
    """Why flax cannot run here (it also needs jax), or None."""
    reason = unavailable()
    if reason:
        return reason
    try:
        import flax.linen  # noqa: F401
    except ImportError:
        return "flax is not installed (pip install flax)"
    return None


def to_btnh(case: Case, x: np.ndarray) -> np.ndarray:
    """A case tensor in JAX's (B, T, N, H) order."""
    return x if case.layout == "BTHD" else np.swapaxes(x, 1, 2)


def btnh_to_bhtd(x: jax.Array) -> np.ndarray:
    """A JAX (B, T, N, H) result as float64 (B, N, T, H)."""
    return np.swapaxes(np.asarray(x, dtype=np.float64), 1, 2)


def per_batch_lengths(part: Mask, batch: int) -> np.ndarray:
    """A padding part's valid lengths as an int32 array of one entry per batch."""
    lengths = np.asarray(part.lengths, dtype=np.int32)
    return np.broadcast_to(lengths, (batch,)).copy() if lengths.size == 1 else lengths


def unsupported_scores(case: Case, backend: str) -> str | None:
    """The score features jax.nn.dot_product_attention lacks (checked against jax 0.10.2's
    signature: bias, mask, scale, is_causal, query_seq_lengths, key_value_seq_lengths,
    local_window_size, implementation, return_residual)."""
    if case.softcap is not None:
        return f"{backend} has no softcap argument"
    if case.sinks:
        return f"{backend} has no attention sinks"
    if case.dropout_rate is not None:
        return f"{backend} takes no dropout mask"
    if case.dtype == "float64":
        return (f"{backend} has no float64 attention: it casts the logits to float32 before "
                "the softmax for every input dtype (jax/_src/nn/functions.py, "
                "_dot_product_attention_core: padded_logits.astype(np.float32)), so float64 "
                "inputs get float32 accuracy")
    if case.qk_dim != case.v_dim:
        return (f"{backend} requires value to have key's shape (Dv = Dqk); the case has "
                f"Dqk={case.qk_dim}, Dv={case.v_dim}")
    return None
