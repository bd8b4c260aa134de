"""The verdict on kernels modelled on public bug reports (issue 11, diagnosis v2): each must
fail, in the low-precision dtypes especially, and be named with a fix hint.

One record per report: the report (repository#number and what it says), the kernel of
``bug_report_kernels`` written from it, the catalog case and dtypes it runs on, and the name
the diagnosis must give. The names come from the reports (a window W read as W + 1 keys, KV
heads tiled, an LSE in base 2, ...), not from running refmask.
"""

from __future__ import annotations

import bug_report_kernels as b
import numpy as np
import pytest

from refmask.adapters.user import from_function
from refmask.conformance.cases import catalog
from refmask.conformance.runner import run_case

_CATALOGS: dict = {}


def case_named(name: str, dtype: str):
    if dtype not in _CATALOGS:
        _CATALOGS[dtype] = {c.name: c for c in catalog([dtype])}
    return _CATALOGS[dtype][name]


# (report, kernel, case, dtypes, expected verdict, expected name)
REPORTS = [
    ("huggingface/transformers#39408 FA window_size=(W, W) for a window of W keys",
     b.window_size_w_not_w_minus_1, "window/fa_2_0/square", ("float16", "bfloat16"), "fail",
     "window=one_key_wider"),
    ("proger/hippogriff#7 window_size=(-W, 0) is an unbounded window",
     b.window_negative_left_is_global, "window/fa_2_0/square", ("bfloat16",), "fail",
     "window=left_unbounded"),
    ("rasbt/LLMs-from-scratch#1061 triu mask passed where True = attend",
     b.triu_mask_true_attends, "causal/top_left/square", ("bfloat16",), "fail",
     "mask_inverted"),
    ("huggingface/transformers#38094 float mask cast to bool inverts it",
     b.float_mask_cast_to_bool, "padding/keys_right", ("float16",), "fail", "mask_inverted"),
    ("pytorch/pytorch#117939 a bool attn_mask is not applied",
     b.bool_mask_never_applied, "causal/top_left/square", ("float16",), "fail", "mask_ignored"),
    ("abisee/pointer-generator#88 mask multiplied after the softmax",
     b.mask_multiplied_after_softmax, "padding/keys_right", ("bfloat16",), "fail",
     "mask_after_softmax"),
    ("hyunwoongko/transformer#40 pad mask unsqueezed on the query axis",
     b.padding_mask_on_queries, "padding/keys_right", ("bfloat16",), "fail",
     "padding=keys_as_queries"),
    ("meta-pytorch/gpt-fast#233 the whole KV-cache buffer is attended",
     b.kv_cache_buffer_unmasked, "padding/keys_right", ("bfloat16",), "fail",
     "padding=ignored"),
    ("Tencent-Hunyuan/HunyuanVideo#310 cu_seqlens ignored by the vanilla path",
     b.cu_seqlens_ignored, "documents/packed_causal", ("bfloat16",), "fail",
     "documents=ignored"),
    ("onnx/onnx#7274 GQA KV heads expanded with Tile",
     b.gqa_tile_not_interleave, "gqa/4_to_2_causal", ("bfloat16",), "fail", "gqa=h_mod_hkv"),
    ("omihub777/ViT-CIFAR#11 scale 1/sqrt(d_model) instead of 1/sqrt(d_head)",
     b.scale_by_model_dim, "causal/top_left/square", ("bfloat16",), "fail",
     "scale=1/sqrt(Hq*Dqk)"),
    ("esceptico/perceiver-io#9 scores divided by the scale",
     b.scale_divided_not_multiplied, "full/square", ("float16",), "fail", "scale=inverted"),
    ("huggingface/transformers#31891 Gemma-2 query_pre_attn_scalar 224, not 256",
     b.query_pre_attn_scalar_224, "full/square", ("float16", "bfloat16"), "fail",
     "scale=fitted(1.07x)"),
    ("paiml/aprender#2143 ALiBi slopes 2^(-8h/n) instead of 2^(-8(h+1)/n)",
     b.alibi_slope_exponent_off_by_one, "alibi/abs_bidirectional", ("bfloat16",), "fail",
     "alibi=slopes_off_by_one"),
    ("ml-explore/mlx#3071 geometric ALiBi slopes for 6 heads",
     b.alibi_geometric_for_non_power_of_2, "alibi/signed_causal_6_heads", ("float16",), "fail",
     "alibi=geometric_slopes"),
    ("flashinfer-ai/flashinfer#2113 the returned LSE is in base 2",
     b.lse_in_base_2, "causal/top_left/square", ("bfloat16",), "fail", "lse_base=2"),
    ("vllm-project/vllm-metal#550 use_sinks hard-coded false",
     b.sinks_never_bound, "sinks/full", ("float16",), "fail", "sink_dropped"),
    ("openai/gpt-2#122 w * b - 1e4 * (1 - b): fully masked rows average V",
     b.gpt2_minus_1e4, "explicit/articles_empty_first_row", ("bfloat16", "float16"), "fail",
     "empty_rows=uniform"),
    ("huggingface/transformers#31303 finfo(bfloat16).min added to the scores",
     b.finfo_min_added_in_dtype, "padding/queries_right", ("bfloat16",), "fail",
     "empty_rows=uniform"),
    ("google/flax#982 the -1e10 mask bias is -inf in float16: NaN rows",
     b.minus_1e10_overflows_in_float16, "padding/queries_right", ("float16",), "fail",
     "empty_rows=nan"),
    ("sonos/tract#2586 the float16 softmax row sum stops growing past 2048",
     b.f16_row_sum, "long_rows/flat_causal_kv_cache_4096", ("float16",), "fail",
     "softmax=denominator_in_case_dtype"),
    ("rasbt/LLMs-from-scratch#431 dropout scaled by 1/rate, not 1/(1 - rate)",
     b.dropout_scaled_by_one_over_rate, "dropout/causal", ("bfloat16",), "fail",
     "dropout=scaled_by_1/rate"),
    ("Tencent-Hunyuan/HunyuanVideo#310 one cu_seqlens split point for the whole batch",
     b.first_entry_mask, "window/kv_cache_per_batch", ("bfloat16",), "fail",
     "per_batch=first_entry"),
    ("Tencent-Hunyuan/HunyuanVideo#310, on per-batch prefixes",
     b.first_entry_mask, "prefix_lm/per_batch", ("float16",), "fail", "per_batch=first_entry"),
    ("onnx/onnx#8054 Attention-24 is_causal anchored at the query index",
     b.index_anchored_causal_with_valid_lengths, "padding/keys_right_causal_bottom_right",
     ("float16",), "fail", "causal=top_left"),
    ("huggingface/transformers#29067 Falcon's SDPA path drops the ALiBi bias",
     b.alibi_dropped_by_kernel, "alibi/abs_causal_bottom_right", ("bfloat16",), "fail",
     "alibi=ignored"),
    ("huggingface/transformers#29067, the same path with an explicit bias",
     b.alibi_dropped_by_kernel, "bias/causal", ("float16",), "fail", "bias=ignored"),
    ("autocast around SDPA: float32 inputs computed in bfloat16",
     b.autocast_bfloat16_inside, "causal/top_left/square", ("float32",), "fail",
     "computed_in=bfloat16"),
]


@pytest.mark.parametrize("report, kernel, case_name, dtypes, verdict, name", REPORTS,
                         ids=[r[0].split(" ")[0] for r in REPORTS])
def test_bug_report_kernel_is_named(report, kernel, case_name, dtypes, verdict, name):
    for dtype in dtypes:
        result = run_case(from_function(kernel), case_named(case_name, dtype))
        assert (result.verdict, result.convention) == (verdict, name), (dtype, result.reason)
        assert result.diagnosis["best"]["fix"], result.diagnosis
        assert len(result.reason) < 700, result.reason


def test_a_leaking_minus_10000_is_a_bug_listed_with_its_twin():
    """BERT's -10000 added in float16 where a steep ALiBi slope puts masked keys 10000 above
    the kept ones: the masked keys take all the weight, which is exactly an inverted mask on
    this case; the constant is listed with it, and neither is a policy."""
    result = run_case(from_function(b.bert_minus_10000_added),
                      case_named("long_rows/window_kv_cache_masked_high", "float16"))
    assert result.verdict == "fail" and result.convention_kind == "bug", result.reason
    assert "mask_constant=-1e4 (add" in result.reason, result.reason


def test_a_declared_finite_constant_is_a_policy():
    """The GPT-2 kernel declaring its convention (masked scores -> the finite -1e4) is a
    policy: only the empty rows differ from the spec."""
    def declared(q, k, v, call):
        return b.gpt2_minus_1e4(q, k, v, call)

    declared.refmask_conventions = {"empty_rows": "uniform"}
    result = run_case(from_function(declared),
                      case_named("explicit/articles_empty_first_row", "bfloat16"))
    assert (result.verdict, result.convention) == ("policy", "empty_rows=uniform"), result.reason


# --- bugs no record names: fitted, or localised in mask terms --------------------------------

@pytest.mark.parametrize("kernel, case_name, dtype, name", [
    (b.repeat_kv_wrong_group, "gqa/6_to_3_window", "bfloat16", "gqa=head_map[0,0,0,1,1,1]"),
    (b.last_partial_key_block_dropped, "full/wide", "bfloat16", "keys=dropped(keys>=8)"),
], ids=["head_map", "key_block"])
def test_a_bug_no_record_names_is_fitted(kernel, case_name, dtype, name):
    result = run_case(from_function(kernel), case_named(case_name, dtype))
    assert (result.verdict, result.convention) == ("fail", name), result.reason
    assert "matches a fitted parameter" in result.reason


def test_an_unexplained_failure_is_localised_to_the_rows_it_reads_off():
    result = run_case(from_function(b.rows_past_first_block_zero),
                      case_named("causal/top_left/square", "bfloat16"))
    assert (result.verdict, result.convention) == ("fail", None), result.reason
    assert "only query rows >= 4 are off (exactly; 8 of 24 rows)" in result.reason


# --- frameworks without a refmask adapter, through the user-function path -------------------

def numpy_einsum_neg_inf(q, k, v, call):
    """A plain NumPy attention: einsum scores, -inf where masked, softmax, einsum with V; a
    fully masked row is 0/0 = NaN (declared)."""
    q32, k32, v32 = (np.asarray(x, np.float32) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k32, v32 = np.repeat(k32, group, axis=1), np.repeat(v32, group, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q32, k32) * np.float32(call.scale)
    s = np.where(call.keep, s, -np.inf)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p = p / p.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p.astype(q.dtype).astype(np.float32),
                     v32).astype(q.dtype)


numpy_einsum_neg_inf.refmask_conventions = {"empty_rows": "nan"}
numpy_einsum_neg_inf.refmask_unsupported = {"softcap", "bias", "sinks", "dropout"}


def test_numpy_einsum_kernel_declares_nan_empty_rows():
    for case, verdict, name in (("padding/queries_right", "policy", "empty_rows=nan"),
                                ("causal/bottom_right/wide", "pass", None)):
        result = run_case(from_function(numpy_einsum_neg_inf), case_named(case, "bfloat16"))
        assert (result.verdict, result.convention) == (verdict, name), result.reason
    undeclared = from_function(numpy_einsum_neg_inf, conventions={})
    result = run_case(undeclared, case_named("padding/queries_right", "bfloat16"))
    assert (result.verdict, result.convention) == ("fail", "empty_rows=nan"), result.reason


def test_torch_functional_composition_with_a_top_left_tril():
    """matmul, masked_fill(~tril, -inf), softmax, matmul in float16 with the mask built
    top-left (torch.tril over (Tq, Tk)), declared: policy where the case is bottom-right."""
    torch = pytest.importorskip("torch")

    def composed(q, k, v, call):
        tq, tk = q.shape[2], k.shape[2]
        keep = torch.ones(tq, tk, dtype=torch.bool).tril()
        s = (q.float() @ k.float().transpose(-1, -2)) * call.scale
        p = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)
        return (p.to(q.dtype).float() @ v.float()).to(q.dtype)

    composed.refmask_framework = "torch"
    composed.refmask_conventions = {"causal": "top_left"}
    for case, verdict, name in (("causal/bottom_right/wide", "policy", "causal=top_left"),
                                ("causal/top_left/square", "pass", None),
                                ("causal/kv_cache_offset", "fail", "alignment=offset_ignored")):
        result = run_case(from_function(composed), case_named(case, "float16"))
        assert (result.verdict, result.convention) == (verdict, name), (case, result.reason)


def test_jax_dot_product_attention_is_causal_as_a_user_function():
    """jax.nn.dot_product_attention(is_causal=True) is top-left; declared, the bottom-right
    case is a policy in bfloat16; JAX's finite masking gives uniform empty rows."""
    jax = pytest.importorskip("jax")

    def jax_causal(q, k, v, call):
        bthd = (0, 2, 1, 3)
        out = jax.nn.dot_product_attention(q.transpose(bthd), k.transpose(bthd),
                                           v.transpose(bthd), is_causal=True, scale=call.scale)
        return out.transpose(bthd)

    jax_causal.refmask_framework = "jax"
    jax_causal.refmask_dtypes = ("float32", "float16", "bfloat16")
    jax_causal.refmask_conventions = {"causal": "top_left"}
    for case, verdict, name in (("causal/bottom_right/wide", "policy", "causal=top_left"),
                                ("mqa/4_to_1", "policy", "causal=top_left")):
        result = run_case(from_function(jax_causal), case_named(case, "bfloat16"))
        assert (result.verdict, result.convention) == (verdict, name), (case, result.reason)


# --- fuzz: the shrunk example is named as check names the catalog case ------------------------

@pytest.mark.parametrize("kernel, name", [
    (b.gqa_tile_not_interleave, "gqa=h_mod_hkv"),
    (b.scale_divided_not_multiplied, "scale=inverted"),
    (b.query_pre_attn_scalar_224, "scale=fitted(1.07x)"),
], ids=["gqa_tile", "scale_divided", "query_pre_attn_scalar"])
def test_fuzz_names_a_bug_report_kernel_on_the_shrunk_case_in_bfloat16(kernel, name):
    from refmask.conformance.strategies import fuzz

    found = fuzz(kernel, max_examples=40, seed=1, dtypes=["bfloat16"])
    assert found.case is not None and found.result.verdict == "fail"
    assert found.result.convention == name, found.result.reason
    assert sum(found.verdicts.values()) == found.tried


def test_a_long_row_is_pictured_as_key_ranges():
    """A 4096-key row is shown as its kept / masked key ranges, not 4096 characters."""
    case = case_named("long_rows/flat_causal_kv_cache_4096", "float16")
    result = run_case(from_function(b.f16_row_sum), case)
    assert result.verdict == "fail", result.reason
    b_, h, i = _first_bad_row(result)
    row = case.keep()[b_, h, i]
    runs, start = [], 0
    for j in range(1, case.k_len + 1):  # the runs of equal keep values, written out here
        if j == case.k_len or row[j] != row[start]:
            mark = "#" if row[start] else "."
            runs.append(f"{start}-{j - 1} {mark}" if j - 1 > start else f"{start} {mark}")
            start = j
    assert f"> {i:>3} " + " | ".join(runs) in result.picture, result.picture
    assert max(len(line) for line in result.picture.splitlines()) < 120


def _first_bad_row(result):
    line = next(x for x in result.picture.splitlines() if x.startswith(">"))
    header = result.picture.splitlines()[0]
    b_ = int(header.split("of batch ")[1].split(",")[0])
    h = int(header.split("head ")[1].split(" ")[0])
    return b_, h, int(line.split()[1])
