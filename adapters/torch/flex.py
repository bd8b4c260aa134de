"""FlexAttention (``torch.nn.attention.flex_attention.flex_attention``) as the adapter
``torch.flex``, eager on CPU.

Translation into flex's native features:

* mask -> ``mask_mod(b, h, q_idx, kv_idx)`` (True = attend, ``h`` the query head) and a
  ``BlockMask`` from ``create_block_mask`` (``B``/``H`` = None when the mask does not vary
  along them, so flex broadcasts it). The mask_mod looks the answer up in the case's dense
  keep tensor (``keep[b, h, q_idx, kv_idx]``), the way attention-gym writes data-defined
  masks. Calling refmask's structured ``Mask.keep`` inside the mask_mod works under
  ``torch.vmap`` (``create_block_mask`` / ``create_mask`` reproduce every catalog mask), but
  flex_attention also traces the mask_mod with dynamo, even in eager mode, and dynamo rejects
  refmask's NumPy table lookups (``Alignment.offset_table``, padding-length checks, explicit
  arrays) and recompiles for every mask object (about 1 s per case); see
  tests/test_adapters_torch.py.
  Packed and paged sequences (``varlen`` masks whose per-sequence mask is made of causal,
  window and chunk parts) get a native, document-aware mask_mod instead
  (:func:`_document_mask_mod`): sequence and position tables gathered by index, the rules
  written in torch, the way attention-gym's ``generate_doc_mask_mod`` wraps an inner mask_mod.
* softcap, bias, ALiBi -> one ``score_mod``: ``cap * tanh(s / cap)`` first, then
  ``+ bias[b, h, q_idx, kv_idx]``, then ALiBi from the indices (``-m_h |pq - pk|`` or
  ``m_h (pk - pq)``, ``pq = q_idx + offset[b]``), the spec's order (flex applies score_mod to
  the already scaled score).
* GQA -> ``enable_gqa=True``; scale -> ``scale=``; Dqk != Dv is native; BTHD -> transposed
  views.
* LSE: ``return_aux=AuxRequest(lse=True)``; natural log (flex computes in base 2 and
  ``_finalize_outputs`` multiplies by ln 2, torch/nn/attention/flex_attention.py).

Unsupported, with the reason: attention sinks and a given dropout keep-mask (flex 2.13 has
neither, and neither is a score_mod: a sink is an extra softmax column, dropout acts after
the softmax); Tk = 0 (flex raises IndexError: 'max(): Expected reduction dim 3 to have
non-zero size'). With Tq = 0 the mask has no entries and no BlockMask is passed.

Forward only: flex_attention refuses inputs that require grad on CPU
("FlexAttention does not support backward on CPU", ``_validate_device``). The compiled CPU
kernel (``torch.compile(flex_attention)``) is not offered: on CPU it accepts only float32,
float16 and bfloat16, is inference-only, rejects ``return_lse`` ("torch.compile on CPU only
supports inference and `return_lse` is not supported yet", torch/_inductor/kernel/flex/
flex_cpu.py), and compiles for 10-40 s per shape, too slow for the suite.

``_call`` takes the device, the flex function and the scale, so cuda.py runs the same
translation compiled on CUDA (``torch.flex.cuda``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from . import common as tc

if TYPE_CHECKING:
    from refmask.case import Case


SOFTCAP = None  # supported through score_mod
SINKS = ("flex_attention has no sink argument in torch 2.13, and a sink (an extra softmax "
         "column without a value) is neither a score_mod nor a mask_mod")
DROPOUT = ("flex_attention has no dropout, and a dropout keep-mask acts after the softmax, "
           "where no score_mod reaches")


def _unsupported(case) -> str | None:
    reason = tc.score_reasons(case, "torch.flex", softcap=SOFTCAP, sinks=SINKS,
                              dropout=DROPOUT)
    if reason:
        return reason
    if case.k_len == 0:
        return ("torch.flex: Tk = 0: flex_attention raises IndexError ('max(): Expected "
                "reduction dim 3 to have non-zero size') in its eager math path")
    return None


def _rule_parts(mask) -> list | None:
    """The AND-parts of a per-sequence mask as (kind, parameters, alignment) when each is
    full, causal, sliding_window or chunked; None when some part is anything else."""
    parts = list(mask.masks) if mask.kind == "and" else [mask]
    rules = []
    for part in parts:
        if part.kind == "full":
            continue
        if part.kind == "causal":
            rules.append(("window", (None, 0), part.align))
        elif part.kind == "sliding_window":
            rules.append(("window", (part.left, part.right), part.align))
        elif part.kind == "chunked":
            rules.append(("chunk", part.size, part.align))
        else:
            return None
    return rules


def _document_mask_mod(case, device: str = "cpu"):
    """A native, document-aware mask_mod for ``varlen(inner, layout)`` (attention-gym's
    ``generate_doc_mask_mod`` generalised to per-sequence alignment and paged keys), or None
    when the inner mask is not made of causal / window / chunk parts.

    Tables (torch tensors): ``seq_q[i]`` and ``local_q[i]`` for packed queries (batched: the
    sequence is ``b`` and the local index ``q_idx``), ``pos[n, j]`` the logical position of
    key slot j in sequence n (-1 for none), and per part ``offset[n]`` of its per-sequence
    alignment. Then, with ``pq = local_q + offset[n]``, ``pk = pos[n, kv_idx]``: keep iff n
    exists, ``pk >= 0`` and every part's rule holds on (pq, pk)."""
    import torch

    mask = case.mask
    if mask is None or mask.kind != "varlen":
        return None
    rules = _rule_parts(mask.mask)
    if rules is None:
        return None
    layout = mask.layout
    long = {"dtype": torch.int64, "device": device}
    positions = torch.tensor(layout.key_positions(), **long)
    inner_q = max(layout.q_lengths, default=0) if layout.packed_queries else case.q_len
    inner_k = max(layout.k_lengths, default=0)
    tables = []
    for kind, params, align in rules:
        offsets = layout.per_sequence_alignment(align, "torch.flex").offset_table(inner_q,
                                                                                 inner_k)
        offsets = np.broadcast_to(offsets, (layout.num_sequences,)).copy()
        tables.append((kind, params, torch.tensor(offsets, **long)))
    if layout.packed_queries:
        seq_table, local_table = (torch.tensor(t, **long) for t in layout.query_table())
    else:
        seq_table = local_table = None

    def mask_mod(b, h, q_idx, kv_idx):
        if seq_table is None:
            sequence, local = b, q_idx
        else:
            sequence, local = seq_table[q_idx], local_table[q_idx]
        safe = sequence.clamp(min=0)
        pk = positions[safe, kv_idx]
        kept = (sequence >= 0) & (pk >= 0)
        for kind, params, offset in tables:
            pq = local + offset[safe]
            if kind == "chunk":
                kept = kept & (torch.div(pq, params, rounding_mode="floor")
                               == torch.div(pk, params, rounding_mode="floor"))
                continue
            left, right = params
            if left is not None:
                kept = kept & (pk >= pq - left)
            if right is not None:
                kept = kept & (pk <= pq + right)
        return kept

    return mask_mod


def _lookup_mask_mod(keep):
    """mask_mod reading a (B, H, Tq, Tk) bool tensor (one code object for every case, so
    dynamo reuses its trace)."""
    def mask_mod(b, h, q_idx, kv_idx):
        return keep[b, h, q_idx, kv_idx]

    return mask_mod


def _score_mod(softcap, bias, slopes, offsets, signed, tau=None, distances=None):
    """The temperature tau[q_idx] (spec 3.2.3: a factor of the row's scores), then softcap,
    bias and ALiBi (each only when given); ``distances`` (B, Tq, Tk), in the score dtype, is
    the ALiBi distance of per-sequence positions (spec 3.2.1), read instead of ``offsets``."""
    import torch

    def score_mod(score, b, h, q_idx, kv_idx):
        if tau is not None:
            score = score * tau[q_idx]
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if bias is not None:
            score = score + bias[b, h, q_idx, kv_idx]
        if distances is not None:
            score = score + slopes[b, h] * distances[b, q_idx, kv_idx]
        elif slopes is not None:
            pq = q_idx + offsets[b]
            distance = kv_idx - pq if signed else -torch.abs(pq - kv_idx)
            score = score + slopes[b, h] * distance.to(score.dtype)
        return score

    return score_mod


def _alibi_tables(case, device: str = "cpu"):
    """ALiBi slopes (B, Hq) in the case dtype and query offsets (B,) as torch tensors."""
    import numpy as np
    import torch

    alibi = case.alibi
    slopes = np.asarray(alibi.slopes, dtype=np.float64)
    slopes = np.broadcast_to(slopes.reshape(-1, case.q_heads), (case.batch, case.q_heads))
    offsets = np.broadcast_to(alibi.align.offset_table(case.q_len, case.k_len), (case.batch,))
    return (torch.tensor(slopes.copy(), dtype=tc.torch_dtype(case.dtype), device=device),
            torch.tensor(offsets.copy(), dtype=torch.int64, device=device))


def _sequence_distances(case, device: str = "cpu"):
    """ALiBi distances (B, Tq, Tk) in the case dtype for per-sequence positions
    (``-|pq - pk|`` or ``pk - pq`` on sequence-local positions, 0 across sequences), or None
    when the ALiBi positions are global."""
    import numpy as np
    import torch

    alibi = case.alibi
    if alibi.layout is None:
        return None
    qk = alibi.query_minus_key(case.batch, case.q_len, case.k_len)
    distance = -np.abs(qk) if alibi.convention == "abs" else -qk
    distance = np.broadcast_to(distance, (case.batch, case.q_len, case.k_len)).copy()
    return torch.tensor(distance, dtype=torch.float64, device=device).to(
        tc.torch_dtype(case.dtype))


def _call(case, q, k, v, bias, *, device: str = "cpu", attend=None, scale=None):
    """flex on the case: ``attend`` is flex_attention (default) or a compiled version of it;
    ``scale`` overrides ``case.scale`` (cuda.py passes the unpadded head dim's default)."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

    attend = flex_attention if attend is None else attend
    block_mask = None
    if case.mask is not None and case.q_len > 0:  # no queries: the mask has no entries
        document = _document_mask_mod(case, device)
        if document is not None:
            per_batch = case.mask.batch_size is not None
            block_mask = create_block_mask(document, case.batch if per_batch else None, None,
                                           case.q_len, case.k_len, device=device)
        else:
            small = tc.reduced_keep(case.keep())
            keep = tc.to_torch(small, device=device).expand(case.batch, case.q_heads,
                                                            case.q_len, case.k_len)
            block_mask = create_block_mask(
                _lookup_mask_mod(keep), case.batch if small.shape[0] > 1 else None,
                case.q_heads if small.shape[1] > 1 else None, case.q_len, case.k_len,
                device=device)
    score_mod = None
    tau = None
    if case.query_scale is not None:  # tau_i q_i . k_j = tau_i (q_i . k_j), rounded elsewhere
        import torch

        tau = torch.tensor(case.query_scale, dtype=torch.float64, device=device)
        tau = tau.to(tc.torch_dtype(case.dtype))
    if (case.softcap is not None or bias is not None or case.alibi is not None
            or tau is not None):
        slopes = offsets = distances = None
        if case.alibi is not None:
            slopes, offsets = _alibi_tables(case, device)
            distances = _sequence_distances(case, device)
        signed = case.alibi is not None and case.alibi.convention == "signed"
        score_mod = _score_mod(case.softcap, bias, slopes, offsets, signed, tau, distances)
    out, aux = attend(q, k, v, score_mod=score_mod, block_mask=block_mask,
                      scale=case.scale if scale is None else scale,
                      enable_gqa=case.kv_heads != case.q_heads, return_aux=AuxRequest(lse=True))
    return out, aux.lse


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    if grads:
        raise Unsupported("torch.flex: FlexAttention does not support backward on CPU")
    return tc.run_autograd(case, inputs, False, lambda q, k, v, bias: _call(case, q, k, v,
                                                                            bias))


ADAPTERS = (
    Adapter(
        name="torch.flex",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e",
                        backward=False,
                        notes="flex_attention eager on CPU (dynamo 'eager' backend, unfused "
                              "math path); mask_mod over the dense keep tensor + "
                              "create_block_mask; softcap/bias/ALiBi as score_mod; forward "
                              "only (no backward on CPU in torch 2.13)"),
        run=run,
        unsupported=_unsupported,
        unavailable=tc.unavailable,
        description="FlexAttention: mask_mod/BlockMask, score_mod, enable_gqa, LSE",
        temperature=True,
    ),
)
