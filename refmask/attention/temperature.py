"""Per-position query temperature (Llama 4 ``attn_temperature_tuning``) as a score feature.

    q'[b, h, i, :] = query_scale[b, i] * q[b, h, i, :]      rounded once to q's dtype
    t_ij           = scale * <q'_i, k_gj>                   then everything as in spec 3.2

Llama 4's NoPE layers multiply the query states by a factor that grows with the absolute
position (HF transformers ``Llama4TextAttention``: ``attn_scales = log1p(floor((cache_position
+ 1) / floor_scale)) * attn_scale + 1``, ``query_states = (query_states * attn_scales)
.to(dtype)``), so long contexts get sharper softmaxes. Because the factor multiplies ``q``
before the product, it is one rounding of ``q`` in the compute dtype, not a change of
``scale``; gradients flow back through it: ``dq = query_scale * dq'``.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
from numpy.typing import ArrayLike

from .._typing import Array
from .._validate import check_int_array, check_real


def llama4_query_scale(positions: ArrayLike, *, floor_scale: float,
                       attn_scale: float) -> np.ndarray:
    """``log(floor((positions + 1) / floor_scale) + 1) * attn_scale + 1`` in float64.

    positions: absolute token positions (ints >= 0, any shape), e.g. ``past + arange(Tq)``.
    floor_scale, attn_scale: the model's ``floor_scale`` and ``attn_scale`` (Llama 4 Scout
    and Maverick configs: 8192 and 0.1); required, since they are per-model constants.
    The floor is exact (integer arithmetic), the logarithm correctly rounded by NumPy's libm.
    """
    where = "llama4_query_scale"
    pos = check_int_array(where, "positions", positions)
    if pos.size and pos.min() < 0:
        raise ValueError(f"{where}: positions must be >= 0, got {int(pos.min())}")
    floor = check_real(where, "floor_scale", floor_scale, positive=True)
    slope = check_real(where, "attn_scale", attn_scale)
    steps = np.floor((pos + 1) / floor)
    return np.log1p(steps) * slope + 1.0


def scaled_queries(where: str, q: Array, query_scale: Array,
                   layout: str) -> tuple[Array, Array]:
    """``q`` with row i of batch b multiplied by ``query_scale[b, i]`` (or ``[i]``), in q's
    namespace and dtype. query_scale: (Tq,) or (B, Tq), same namespace and dtype as q."""
    xp = array_api_compat.array_namespace(q)
    try:
        same = array_api_compat.array_namespace(query_scale) is xp
    except TypeError:
        same = False
    if not same:
        raise TypeError(f"{where}: query_scale must be an array of q's namespace, got "
                        f"{type(query_scale).__name__}")
    if query_scale.dtype != q.dtype:
        raise TypeError(f"{where}: query_scale must have q's dtype {q.dtype}, got "
                        f"{query_scale.dtype}")
    batch, q_len = q.shape[0], q.shape[2] if layout == "BHTD" else q.shape[1]
    shape = tuple(query_scale.shape)
    if shape not in ((q_len,), (batch, q_len), (1, q_len)):
        raise ValueError(f"{where}: query_scale must have shape (Tq,) or (B, Tq) = ({q_len},) "
                         f"or ({batch}, {q_len}), got {shape}")
    table = xp.reshape(query_scale, (-1, q_len))
    factor = (xp.reshape(table, (table.shape[0], 1, q_len, 1)) if layout == "BHTD"
              else xp.reshape(table, (table.shape[0], q_len, 1, 1)))
    return q * factor, factor
