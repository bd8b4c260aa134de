"""One float64 attention with a switch for every known departure from spec 3.2: the
computation behind every named alternative of :mod:`.explanations` (spec 5.4)."""

from __future__ import annotations

import math

import numpy as np

from refmask.case import Case, key_range_mask, numpy_dtype, round_float64, to_bhtd

from .tolerance import ACCUMULATION

#: "use the case's value" for keyword arguments whose None is meaningful.
UNSET = object()


def default_scale(case: Case) -> float:
    return case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim)


def _keep(case: Case, mask) -> np.ndarray:
    if mask is None:
        return np.ones((case.batch, case.q_heads, case.q_len, case.k_len), dtype=bool)
    return np.broadcast_to(np.asarray(mask.materialize(case.batch, case.q_heads, case.q_len,
                                                       case.k_len)),
                           (case.batch, case.q_heads, case.q_len, case.k_len))


def _in_dtype(x, dtype):
    return round_float64(x, numpy_dtype(dtype)).astype(np.float64)


def _sequential_sum(x, axis: int, dtype: str, block: int = 1):
    """A low-precision accumulator: blocks of ``block`` consecutive terms summed exactly
    (float64), each block added left to right to a running sum rounded to ``dtype`` after
    every addition (``block=1``: a plain sequential sum; larger blocks: a tiled kernel whose
    per-tile partials are float32)."""
    np_dtype = numpy_dtype(dtype)
    moved = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    total = np.zeros(moved.shape[1:], np_dtype)
    for start in range(0, moved.shape[0], block):
        partial = moved[start:start + block].sum(axis=0)
        total = (total.astype(np.float64) + partial).astype(np_dtype)
    return total.astype(np.float64)


def alternative(case: Case, values: dict, *, merge: str | None = None,
                **changes: object) -> tuple:
    """(out BHTD, lse, weights) of attention in float64 with the named departures of
    :func:`single` (``changes``); for a split-KV case with ``merge`` ("base_2",
    "empty_partial_nan", "no_max_subtraction"), the partials of ``refmask.case.partial_cases``
    (each under ``changes``) combined by that wrong merge (:func:`wrong_merge`)."""
    if merge is None or not case.key_splits:
        return single(case, values, **changes)
    base = changes.pop("mask", case.mask)
    parts = [single(case, values, mask=key_range_mask(base, start, stop), **changes)
             for start, stop in case.key_splits]
    return wrong_merge(parts, merge, ACCUMULATION[case.dtype])


def wrong_merge(parts: list, how: str, dtype: str) -> tuple:
    """Partials ``(out, lse, weights)`` merged wrongly (spec 3.8 gives the right merge):

    * "base_2": natural-log LSEs read as log2: ``w_p = 2^(lse_p - max)``, ``lse = max +
      log2(sum_p w_p)`` (FlashInfer's ``merge_state`` fed FlashAttention's LSE);
    * "empty_partial_nan": a row with an empty partial (``lse_p = -inf``) is NaN, and its
      LSE too when every partial is empty (``0 * NaN`` of an empty partial's ``0/0`` output,
      ``exp(-inf - (-inf))``);
    * "no_max_subtraction": ``w_p = exp(lse_p)`` rounded to ``dtype`` (the merge's
      accumulation dtype), ``lse = log(sum_p w_p)``: overflows to inf / NaN once an LSE
      passes log(finfo(dtype).max).
    """
    if how not in ("base_2", "empty_partial_nan", "no_max_subtraction"):
        raise ValueError(f"wrong_merge: how must be 'base_2', 'empty_partial_nan' or "
                         f"'no_max_subtraction', got {how!r}")
    lses = np.stack([lse for _, lse, _ in parts])
    outs = np.stack([out for out, _, _ in parts])
    weights = np.stack([w for _, _, w in parts])
    with np.errstate(all="ignore"):
        top = lses.max(axis=0)
        empty = np.isneginf(top)
        shift = np.where(empty, 0.0, top)
        if how == "no_max_subtraction":
            factor = _in_dtype(np.exp(lses), dtype)
            total = factor.sum(axis=0)
            out = (factor[..., None] * outs).sum(axis=0) / total[..., None]
            return out, np.log(total), _merged_weights(weights, factor / total)
        base = 2.0 if how == "base_2" else math.e
        factor = base ** (lses - shift)
        total = factor.sum(axis=0)
        share = np.where(empty, 0.0, factor / np.where(empty, 1.0, total))
        out = np.where(share[..., None] > 0, share[..., None] * outs, 0.0).sum(axis=0)
        lse = np.where(empty, -np.inf, shift + np.log(np.where(empty, 1.0, total))
                       / math.log(base))
        if how == "empty_partial_nan":
            out = np.where(np.isneginf(lses).any(axis=0)[..., None], np.nan, out)
            lse = np.where(empty, np.nan, lse)
    return out, lse, _merged_weights(weights, share)


def _merged_weights(weights: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The factor of each key in the merged output: ``sum_p share_p * weights_p``."""
    return np.nan_to_num((share[..., None] * np.nan_to_num(weights)).sum(axis=0))


def single(case: Case, values: dict, *, mask: object = UNSET, scale: float | None = None,
           kv_map: object = "repeat", softcap: object = UNSET, softcap_at: str = "before_bias",
           alibi: object = UNSET, masking: str = "neg_inf", constant: float | None = None,
           empty_rows: str | None = None, sinks: str = "spec", dropout: str = "scaled",
           lse_base: float = math.e, max_subtract: bool = True,
           accumulate: str | None = None, accumulate_pv: bool = True,
           accumulate_denominator: bool = True, accumulate_block: int = 1,
           dropout_factor: float | None = None, empty_lse: float | None = None,
           bias: bool = True) -> tuple:
    """(out BHTD, lse, weights) of attention in float64 with the named departures from spec
    3.2; weights (B, Hq, Tq, Tk) are the factors multiplied into V.

    mask: another Mask (default the case's); scale: another scale; kv_map: "repeat"
    (``h // (Hq/Hkv)``), "modulo" (``h % Hkv``) or a sequence: the kv head of each query
    head; softcap / softcap_at: "before_bias" (spec), "after_bias", "after_mask",
    "tanh_unscaled" (``tanh(t/cap)``, no ``cap *``), "ignored";
    alibi: another Alibi or None; masking: "neg_inf" (spec), "add" / "replace" (the masked
    scores get ``s + C`` / ``C`` with ``C = constant`` rounded to the case dtype, the addition
    rounded to the accumulation dtype; "add_in_dtype": the sum rounded to the case dtype),
    "multiply" (scores times the 0/1 mask), "after_softmax"
    (weights zeroed after an unmasked softmax, not renormalised); empty_rows: a policy of spec
    3.3; sinks: "spec", "dropped", "out_of_lse" (the output uses the sink, the LSE omits it);
    dropout: "scaled" (spec), "unscaled", "ignored", "inverted" (the keep pattern read as a
    drop pattern); lse_base: the LSE's base; max_subtract=False: exp of the raw scores in the
    case dtype (overflow as the kernel would); accumulate: a dtype in which the denominator
    (with accumulate_denominator, the default) and ``P @ V`` (with accumulate_pv, the default)
    are summed left to right, in blocks of ``accumulate_block`` terms; dropout_factor: the
    factor of the kept weights (default 1 / (1 - rate)); empty_lse: the LSE of empty rows
    (default -inf); bias=False: the explicit bias of the case left out.
    """
    q = to_bhtd(case, values["q"])
    k, v = to_bhtd(case, values["k"]), to_bhtd(case, values["v"])
    group = case.q_heads // case.kv_heads
    heads = (list(kv_map) if not isinstance(kv_map, str) else
             [h // group if kv_map == "repeat" else h % case.kv_heads
              for h in range(case.q_heads)])
    k, v = k[:, heads], v[:, heads]
    keep = _keep(case, case.mask if mask is UNSET else mask)
    cap = case.softcap if softcap is UNSET else softcap
    alibi = case.alibi if alibi is UNSET else alibi
    with np.errstate(all="ignore"):
        s = (default_scale(case) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
        if cap is not None and softcap_at == "before_bias":
            s = cap * np.tanh(s / cap)
        elif cap is not None and softcap_at == "tanh_unscaled":
            s = np.tanh(s / cap)
        if "bias" in values and bias:
            s = s + values["bias"]
        if alibi is not None:
            s = s + alibi.bias(case.batch, case.q_heads, case.q_len, case.k_len)
        if cap is not None and softcap_at == "after_bias":
            s = cap * np.tanh(s / cap)
        unmasked = s
        if masking == "neg_inf":
            s = np.where(keep, s, -np.inf)
        elif masking in ("add", "add_in_dtype", "replace"):
            c = float(_in_dtype(constant, case.dtype))
            shifted = c if masking == "replace" else _in_dtype(
                s + c, ACCUMULATION[case.dtype] if masking == "add" else case.dtype)
            s = np.where(keep, s, shifted)
        elif masking == "multiply":
            s = s * keep
        if cap is not None and softcap_at == "after_mask":
            s = cap * np.tanh(s / cap)
        sink = None
        if "sinks" in values and sinks != "dropped":
            sink = np.broadcast_to(values["sinks"].reshape(1, -1, 1, 1), s.shape[:-1] + (1,))
        top = s.max(axis=-1, keepdims=True, initial=-np.inf)
        if sink is not None:
            top = np.maximum(top, sink)
        empty = np.isneginf(top)
        shift = np.where(empty, 0.0, top) if max_subtract else np.zeros(top.shape)
        weights = np.exp(s - shift)
        if not max_subtract:
            weights = _in_dtype(weights, case.dtype)
        total = (_sequential_sum(weights, -1, accumulate, accumulate_block)[..., None]
                 if accumulate and accumulate_denominator
                 else weights.sum(axis=-1, keepdims=True))
        sink_weight = None if sink is None else np.exp(sink - shift)
        denominator = total if sink_weight is None else total + sink_weight
        p = weights / np.where(empty, 1.0, denominator)
        lse = np.where(empty, -np.inf, shift + np.log(np.where(empty, 1.0, denominator)))
        if empty_lse is not None:
            lse = np.where(empty, empty_lse, lse)
        if sinks == "out_of_lse" and sink_weight is not None:
            lse = np.where(empty, -np.inf, shift + np.log(np.where(empty, 1.0, total)))
        policy = case.empty_rows if empty_rows is None else empty_rows
        if masking in ("add", "add_in_dtype", "replace"):
            p = np.where(empty, np.nan, p)  # a finite constant that overflowed to -inf
        elif masking == "neg_inf" and case.k_len:
            if policy == "nan":
                p = np.where(empty, np.nan, p)
            elif policy == "uniform":
                p = np.where(empty, 1.0 / case.k_len, p)
            elif policy == "unmasked":
                top_u = unmasked.max(axis=-1, keepdims=True)
                e_u = np.exp(unmasked - top_u)
                p = np.where(empty, e_u / e_u.sum(axis=-1, keepdims=True), p)
            else:
                p = np.where(empty, 0.0, p)
        if masking == "after_softmax":
            p = p * keep
        if "dropout_keep" in values and dropout != "ignored":
            pattern = values["dropout_keep"] if dropout != "inverted" else ~values["dropout_keep"]
            p = p * pattern
            if dropout_factor is not None:
                p = p * dropout_factor
            elif dropout != "unscaled":
                p = p / (1.0 - case.dropout_rate)
        if accumulate and accumulate_pv:
            out = _sequential_sum(p[..., :, :, None] * v[..., None, :, :], -2, accumulate,
                                  accumulate_block)
        else:
            out = p @ v
    return out, lse[..., 0] / math.log(lse_base), p

