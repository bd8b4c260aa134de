"""Buggy attention kernels modelled on public bug reports, in the user calling convention.

Each kernel is the legitimate block-wise kernel of ``legit_kernels`` (float32 accumulation,
P rounded to the case dtype) with the one departure its bug report describes, written here
from the report's text: a keep matrix built with numpy, a scale, a bias, a post-processing
step. Nothing is computed with refmask's alternatives; the mask structure is read from
``call.keep`` / ``call.case`` only as a real caller reads its own mask arguments.
"""

from __future__ import annotations

import math
from dataclasses import replace

import legit_kernels as lk
import numpy as np

F32 = np.float32


def _rows_cols(call):
    tq, tk = call.keep.shape[-2:]
    return np.arange(tq)[:, None], np.arange(tk)[None, :]


def _attend(q, k, v, call, **changes):
    """The legitimate kernel on ``call`` with ``changes`` (keep, scale, bias, sinks)."""
    return lk.online_softmax(q, k, v, replace(call, **changes))


def _key_lengths(call):
    """Per batch entry, the number of kept keys of the first row of head 0 (key padding)."""
    return np.asarray(call.keep[:, 0].any(axis=1).sum(axis=-1))


# --- windows ---------------------------------------------------------------------------------

def window_size_w_not_w_minus_1(q, k, v, call):
    """huggingface/transformers#39408: FlashAttention got ``window_size=(W, W)`` with
    causal=True for a sliding window of W keys; FA's window is inclusive, so every query
    sees W + 1 keys (one more on the left). The case's left reach is ``mask.left``."""
    i, j = _rows_cols(call)
    left = call.mask.left + 1
    return _attend(q, k, v, call, keep=np.broadcast_to((j <= i) & (i - j <= left),
                                                       call.keep.shape))


def window_negative_left_is_global(q, k, v, call):
    """proger/hippogriff#7: ``window_size=(-W, 0)`` passed to flash_attn_func; a negative
    left reach means 'unbounded', so the sliding window silently became plain causal."""
    i, j = _rows_cols(call)
    return _attend(q, k, v, call, keep=np.broadcast_to(j <= i, call.keep.shape))


# --- mask polarity / mask ignored / mask after softmax -----------------------------------------

def triu_mask_true_attends(q, k, v, call):
    """rasbt/LLMs-from-scratch#1061 (and tinygrad#8674): the causal mask built as
    ``torch.triu(ones, 1).bool()`` and passed to SDPA, whose True means *attend*: every query
    sees the future instead of the past (the last row sees nothing)."""
    return _attend(q, k, v, call, keep=~np.asarray(call.keep))


def float_mask_cast_to_bool(q, k, v, call):
    """huggingface/transformers#38094 (Llama4 SDPA): the additive float mask (0 keep,
    finfo.min masked) was cast to bool and passed as a bool mask: nonzero (masked) -> True
    -> attend. The mask's polarity is inverted."""
    additive = np.where(call.keep, 0.0, np.finfo(F32).min)
    return _attend(q, k, v, call, keep=additive.astype(bool))


def bool_mask_never_applied(q, k, v, call):
    """pytorch/pytorch#117939: the documented 'equivalent implementation' of SDPA only
    handles a float attn_mask; a bool mask is silently not applied (every key attends)."""
    return _attend(q, k, v, call, keep=np.ones(call.keep.shape, bool))


def mask_multiplied_after_softmax(q, k, v, call):
    """abisee/pointer-generator#88, timeseriesAI/tsai#171: softmax over every key, then the
    probabilities multiplied by the 0/1 mask and not renormalised."""
    dtype = q.dtype
    A = lk._acc(dtype)
    kx = lk._expanded(k, q.shape[1]).astype(A)
    vx = lk._expanded(v, q.shape[1]).astype(A)
    s = (q.astype(A) @ np.swapaxes(kx, -1, -2)) * A(call.scale)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    p = lk._rounded(p * np.asarray(call.keep, A), dtype)
    return (p @ vx).astype(dtype)


# --- padding -----------------------------------------------------------------------------------

def padding_mask_on_queries(q, k, v, call):
    """hyunwoongko/transformer#40: the pad mask built as ``(ids != pad).unsqueeze(1)
    .unsqueeze(3)``, shape (B, 1, T, 1): it masks padded *query rows* (every key of them)
    instead of padded keys."""
    lengths = _key_lengths(call)
    i, _ = _rows_cols(call)
    rows = i[None, None] < lengths[:, None, None, None]
    return _attend(q, k, v, call, keep=np.broadcast_to(rows, call.keep.shape))


def kv_cache_buffer_unmasked(q, k, v, call):
    """meta-pytorch/gpt-fast#233: ``KVCache.update`` returns the whole cache buffer, and the
    mask only encodes causality, so the unwritten (padded) cache slots are attended."""
    return _attend(q, k, v, call, keep=np.ones(call.keep.shape, bool))


def cu_seqlens_ignored(q, k, v, call):
    """Tencent-Hunyuan/HunyuanVideo#310: the vanilla path ignores cu_seqlens, so attention
    bleeds across packed sequences; only the causal mask is applied."""
    i, j = _rows_cols(call)
    return _attend(q, k, v, call, keep=np.broadcast_to(j <= i, call.keep.shape))


# --- grouped heads -----------------------------------------------------------------------------

def gqa_tile_not_interleave(q, k, v, call):
    """onnx/onnx#7274 (and apple/axlearn#842): KV heads expanded with Tile ([kv0, kv1, kv0,
    kv1]) where torch's repeat_interleave ([kv0, kv0, kv1, kv1]) is meant: query head h uses
    KV head h % Hkv."""
    group = q.shape[1] // k.shape[1]
    kt, vt = np.tile(np.asarray(k), (1, group, 1, 1)), np.tile(np.asarray(v), (1, group, 1, 1))
    return lk.online_softmax(q, kt.astype(q.dtype), vt.astype(q.dtype), call)


# --- scale -------------------------------------------------------------------------------------

def scale_by_model_dim(q, k, v, call):
    """omihub777/ViT-CIFAR#11 (lucidrains/vit-pytorch#65): scores scaled by 1/sqrt(d_model)
    = 1/sqrt(H * D) instead of 1/sqrt(D) per head."""
    return _attend(q, k, v, call, scale=1.0 / math.sqrt(q.shape[1] * q.shape[-1]))


def scale_divided_not_multiplied(q, k, v, call):
    """esceptico/perceiver-io#9: ``self.scale = D ** -0.5`` but the scores are *divided* by
    it: s * sqrt(D) instead of s / sqrt(D)."""
    return _attend(q, k, v, call, scale=1.0 / call.scale)


# --- ALiBi -------------------------------------------------------------------------------------

def _alibi_distance(call):
    """The (B, 1, Tq, Tk) signed distance read back from head 0's bias / slope."""
    slope0 = call.case.alibi.slopes[0]
    return np.asarray(call.bias, np.float64)[:, :1] / slope0


def _with_slopes(q, k, v, call, slopes):
    bias = _alibi_distance(call) * np.asarray(slopes, np.float64)[None, :, None, None]
    return _attend(q, k, v, call, bias=bias)


def alibi_slope_exponent_off_by_one(q, k, v, call):
    """paiml/aprender#2143: slopes 2^(-8h/n) instead of 2^(-8(h+1)/n) (head 0 gets slope 1)."""
    n = call.keep.shape[1]
    return _with_slopes(q, k, v, call, [2.0 ** (-8.0 * h / n) for h in range(n)])


def alibi_geometric_for_non_power_of_2(q, k, v, call):
    """ml-explore/mlx#3071: slopes as the plain geometric sequence 2^(-8(h+1)/n) for n not a
    power of 2, instead of the paper's interleaved construction."""
    n = call.keep.shape[1]
    return _with_slopes(q, k, v, call, [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)])


# --- LSE and sinks -----------------------------------------------------------------------------

def lse_in_base_2(q, k, v, call):
    """flashinfer-ai/flashinfer#2113: the kernel folds log2(e) into the scale and returns
    max + log2(sum exp2(...)), i.e. the LSE in base 2 (natural LSE / ln 2)."""
    out, lse = lk.online_softmax(q, k, v, call)
    return out, (np.asarray(lse, np.float64) / math.log(2)).astype(lse.dtype)


def sinks_never_bound(q, k, v, call):
    """vllm-project/vllm-metal#550: ``use_sinks = false`` hard-coded, so the sink logits are
    never added to the softmax denominator."""
    return _attend(q, k, v, call, sinks=None)


# --- finite mask constants and empty rows ------------------------------------------------------

def _additive_in_dtype(q, k, v, call, constant, *, subtract_after_multiply=False):
    """Scores rounded to the case dtype, the finite ``constant`` put on masked scores in the
    case dtype, softmax over every key in float32 (the masked keys included)."""
    dtype = q.dtype
    A = lk._acc(dtype)
    kx = lk._expanded(k, q.shape[1]).astype(A)
    vx = lk._expanded(v, q.shape[1]).astype(A)
    s = lk._rounded((q.astype(A) @ np.swapaxes(kx, -1, -2)) * A(call.scale), dtype)
    if call.bias is not None:  # ALiBi included, added in the case dtype
        s = lk._rounded(s + np.asarray(call.bias, A), dtype)
    keep = np.asarray(call.keep)
    with np.errstate(over="ignore", invalid="ignore"):
        c = np.asarray(constant, dtype).astype(A)  # the constant as the dtype holds it
        if subtract_after_multiply:
            s = lk._rounded(s * keep + c * ~keep, dtype)
        else:
            s = lk._rounded(np.where(keep, s, s + c), dtype)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p = lk._rounded(p / p.sum(axis=-1, keepdims=True), dtype)
    return (p @ vx).astype(dtype)


def gpt2_minus_1e4(q, k, v, call):
    """openai/gpt-2#122: ``w * b - 1e4 * (1 - b)`` so that the mask fits float16; masked
    scores become -1e4 (in bfloat16, -1e4 rounded)."""
    return _additive_in_dtype(q, k, v, call, -1e4, subtract_after_multiply=True)


def finfo_min_added_in_dtype(q, k, v, call):
    """huggingface/transformers#31303: the padding mask filled with torch.finfo(dtype).min
    and added to bfloat16 scores; fully masked rows become uniform over every key."""
    return _additive_in_dtype(q, k, v, call, float(np.finfo(q.dtype).min)
                              if q.dtype != np.float64 else -1.7e308)


def minus_1e10_overflows_in_float16(q, k, v, call):
    """google/flax#982: the mask bias -1e10 cast to float16 is -inf; a fully masked row is
    softmax(-inf, ..., -inf) = NaN."""
    return _additive_in_dtype(q, k, v, call, -1e10)


def query_pre_attn_scalar_224(q, k, v, call):
    """huggingface/transformers#31891 (Gemma-2 9B): query_pre_attn_scalar 224 (= d_model /
    heads) where the model was trained with 256 (= head_dim): the scale is 1/sqrt(7/8 D)."""
    return _attend(q, k, v, call, scale=1.0 / math.sqrt(q.shape[-1] * 224 / 256))


# --- low-precision internals, dropout, per-batch lengths --------------------------------------

def f16_row_sum(q, k, v, call):
    """sonos/tract#2586 (and huggingface/candle#3727): the softmax row sum of exponentials is
    accumulated left to right in float16; past 2048 the running sum stops growing (its ulp
    exceeds the terms), so long rows are normalised by too small a divisor."""
    dtype = q.dtype
    A = lk._acc(dtype)
    s = lk._scores_f32(q, k, call, prescale=False, scores_in_dtype=False)
    vx = lk._expanded(v, q.shape[1]).astype(A)
    with np.errstate(invalid="ignore", over="ignore"):
        top = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isneginf(top), 0, top)).astype(np.float16)
        total = np.zeros(e.shape[:-1] + (1,), np.float16)
        for j in range(e.shape[-1]):
            total = total + e[..., j:j + 1]
        p = e.astype(A) / np.where(total == 0, 1, total).astype(A)
    return (lk._rounded(p, dtype) @ vx).astype(dtype)


def dropout_scaled_by_one_over_rate(q, k, v, call):
    """rasbt/LLMs-from-scratch#431 (and NVIDIA/apex#816): the kept weights scaled by
    1 / rate instead of 1 / (1 - rate)."""
    rate = call.dropout_rate
    out, lse = lk.online_softmax(q, k, v, replace(call, dropout_rate=1.0 - rate))
    return out, lse


def first_entry_mask(q, k, v, call):
    """Tencent-Hunyuan/HunyuanVideo#310 (torch mode): ``cu_seqlens_q[1]`` taken as the one
    split point, so every batch entry is masked as the first one."""
    keep = np.asarray(call.keep)
    return _attend(q, k, v, call, keep=np.broadcast_to(keep[:1], keep.shape))


def index_anchored_causal_with_valid_lengths(q, k, v, call):
    """onnx/onnx#8054: Attention-24 ``is_causal`` is anchored at the query index (key j <= i)
    even when ``nonpad_kv_seqlen`` says the query block ends at the valid length."""
    i, j = _rows_cols(call)
    lengths = _key_lengths(call)
    keep = (j[None] < lengths[:, None, None]) & (j <= i)[None]
    return _attend(q, k, v, call, keep=np.broadcast_to(keep[:, None], call.keep.shape))


def autocast_bfloat16_inside(q, k, v, call):
    """huggingface/transformers (autocast around SDPA): float32 inputs, the attention run in
    bfloat16 inside (q, k, v and the output rounded to bfloat16), returned as float32."""
    import ml_dtypes

    bf16 = ml_dtypes.bfloat16
    low = [np.asarray(x, np.float32).astype(bf16) for x in (q, k, v)]
    out, lse = lk.online_softmax(*low, call)
    return np.asarray(out, np.float32).astype(q.dtype), np.asarray(lse, np.float32)


# --- bugs no record names: the fitted head map and key range ---------------------------------

def repeat_kv_wrong_group(q, k, v, call):
    """A ``repeat_kv`` with n_rep = Hkv where Hq / Hkv is meant (query head h reads kv head
    h // Hkv, clipped): the head map class of onnx/onnx#7274 with another wrong formula."""
    hq, hkv = q.shape[1], k.shape[1]
    idx = [min(h // hkv, hkv - 1) for h in range(hq)]
    return lk.online_softmax(q, np.ascontiguousarray(k[:, idx]),
                             np.ascontiguousarray(v[:, idx]), call)


def last_partial_key_block_dropped(q, k, v, call):
    """The Triton fused-attention tutorial's assumption (N_CTX a multiple of BLOCK_N) broken:
    the last partial key block (block 4) is never visited."""
    tk = call.keep.shape[-1]
    keep = np.asarray(call.keep).copy()
    keep[..., (tk // 4) * 4:] = False
    return _attend(q, k, v, call, keep=keep)


def rows_past_first_block_zero(q, k, v, call):
    """A query-block loop that only writes its first block of 4 rows (the others stay 0)."""
    out, lse = lk.online_softmax(q, k, v, call)
    out = np.asarray(out).copy()
    out[..., 4:, :] = 0
    return out, lse


def bert_minus_10000_added(q, k, v, call):
    """google-research/bert (``adder = (1 - mask) * -10000.0``, the convention of
    huggingface/transformers#205): -10000 added to masked scores in the case dtype; a masked
    key scoring 10000 above the kept ones (a steep ALiBi slope over a long cache) leaks."""
    return _additive_in_dtype(q, k, v, call, -1e4)


def alibi_dropped_by_kernel(q, k, v, call):
    """The ALiBi bias never reaches the kernel (alibi_slopes not passed on a fast path)."""
    return _attend(q, k, v, call, bias=None)
