"""The exact engine (conformance/exact.py) and the golden corpus format (conformance/golden/).

(a) exact vs an independent naive float64 computation, and hand-worked examples;
(b) exact gradients vs central finite differences of the exact forward (mpmath);
(c) the shipped corpus regenerates bit for bit;
(d) corrupted, truncated, tampered, unknown-schema, missing and pickled files are refused;
(e) generate's overwrite rules and atomicity;
(f) the shipped manifest lists exactly the catalog.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from _corpus import manifest_of, write_manifest

import refmask
from refmask import masks as m
from refmask.attention import attention, attention_vjp
from refmask.case import partial_cases, score_arrays, to_bhtd
from refmask.conformance import exact, golden
from refmask.conformance.cases import Case, attention_kwargs, base_cases, case_inputs, catalog


def by_id(case_id: str) -> Case:
    cases = {case.id: case for case in catalog()}
    return cases[case_id]


def hand_case(name, keep, **fields) -> Case:
    keep = np.asarray(keep, dtype=bool)
    fields.setdefault("qk_dim", 2)
    fields.setdefault("v_dim", 2)
    return Case(name=f"hand/{name}", family="hand", mask=m.explicit(keep), batch=1, q_heads=1,
                kv_heads=1, q_len=keep.shape[0], k_len=keep.shape[1], **fields)


def normwise(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |a| over the entries finite in both (0 when all are zero)."""
    finite = np.isfinite(a) & np.isfinite(b)
    top = np.abs(a[finite]).max() if finite.any() else 0.0
    return float(np.abs(a[finite] - b[finite]).max() / top) if top else 0.0


def assert_specials_equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
    for test in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(test(a), test(b)), f"{what}: {test.__name__} placement differs"


# --- (a) an independent naive float64 computation ----------------------------------------------

def naive(case: Case, inputs: dict) -> dict:
    """Attention and its gradients with plain float64 loops (empty rows: "zero" policy)."""
    x = {n: (a if a.dtype == bool else np.asarray(a, dtype=np.float64)) for n, a in inputs.items()}
    q, k, v, d_out = (x[n] for n in ("q", "k", "v", "d_out"))
    if case.layout == "BTHD":
        q, k, v, d_out = (a.transpose(0, 2, 1, 3) for a in (q, k, v, d_out))
    batch, q_heads, q_len, qk_dim = q.shape
    kv_heads, k_len, v_dim = k.shape[1], k.shape[2], v.shape[3]
    group = q_heads // kv_heads
    scale = 1 / math.sqrt(qk_dim) if case.scale is None else case.scale
    cap = case.softcap
    keep = case.keep()
    alibi = 0.0 if case.alibi is None else case.alibi.bias(batch, q_heads, q_len, k_len)
    extra = x.get("bias", np.zeros(keep.shape)) + alibi
    sinks = x.get("sinks")
    factor = np.ones(keep.shape)
    if case.dropout_rate is not None:
        factor = x["dropout_keep"] / (1 - case.dropout_rate)
    out = np.zeros((batch, q_heads, q_len, v_dim))
    lse = np.full((batch, q_heads, q_len), -np.inf)
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    dbias, dsinks = np.zeros(keep.shape), np.zeros(q_heads)
    for b in range(batch):
        for h in range(q_heads):
            g = h // group
            for i in range(q_len):
                kept = keep[b, h, i]
                if not kept.any() and sinks is None:
                    continue
                t = scale * (k[b, g] @ q[b, h, i])
                s = (cap * np.tanh(t / cap) if cap else t) + extra[b, h, i]
                terms = list(s[kept]) + ([sinks[h]] if sinks is not None else [])
                top = max(terms)
                e = np.where(kept, np.exp(np.where(kept, s, top) - top), 0.0)
                e_sink = np.exp(sinks[h] - top) if sinks is not None else 0.0
                total = e.sum() + e_sink
                p, p_sink = e / total, e_sink / total
                a = p * factor[b, h, i]
                out[b, h, i] = a @ v[b, g]
                lse[b, h, i] = top + math.log(total)
                d_p = (v[b, g] @ d_out[b, h, i]) * factor[b, h, i]
                row_dot = d_out[b, h, i] @ out[b, h, i]
                d_s = p * (d_p - row_dot)
                dsinks[h] -= p_sink * row_dot
                dbias[b, h, i] = d_s
                d_t = d_s * (1 - np.tanh(t / cap) ** 2) if cap else d_s
                dq[b, h, i] = scale * d_t @ k[b, g]
                dk[b, g] += scale * np.outer(d_t, q[b, h, i])
                dv[b, g] += np.outer(a, d_out[b, h, i])
    result = {"out": out, "lse": lse, "dq": dq, "dk": dk, "dv": dv}
    if case.layout == "BTHD":
        result = {n: (a.transpose(0, 2, 1, 3) if a.ndim == 4 else a) for n, a in result.items()}
    if case.bias:
        result["dbias"] = dbias
    if case.sinks:
        result["dsinks"] = dsinks
    return result


NAIVE_CASES = [
    "combined/gqa_softcap_window_sink_bthd@float64", "dropout/causal@float64",
    "alibi/signed_causal_6_heads@float64", "alibi/abs_bidirectional@float16",
    "padding/queries_right@float64", "causal/bottom_right/tall@bfloat16",
    "bias/causal@float32", "full/dqk_ne_dv@float64", "sinks/window_with_empty_rows@float64",
    "mqa/4_to_1@float16",
]


@pytest.mark.parametrize("case_id", NAIVE_CASES)
def test_exact_matches_naive_float64(case_id):
    case = by_id(case_id)
    inputs = case_inputs(case)
    want = exact.exact_attention(case, inputs)
    got = naive(case, inputs)
    assert set(got) == set(want)
    for name, value in want.items():
        assert value.dtype == np.float64 and value.shape == got[name].shape, name
        assert_specials_equal(value, got[name], name)
        assert normwise(value, got[name]) < 1e-13, name


def test_exact_matches_refmask_attention_on_the_catalog():
    """The two independent readings of the spec agree on every float64 catalog case
    (large-magnitude gradients are pure cancellation in float64, see
    test_large_magnitude_gradients_keep_their_digits; so are those of the MaskedKeysScoreHigh
    rows, whose steep ALiBi slopes put all but ~e^-12 of the weight on one key)."""
    for case in catalog(["float64"]):
        inputs = case_inputs(case)
        kwargs = attention_kwargs(case, inputs)
        result = attention(inputs["q"], inputs["k"], inputs["v"], **kwargs)
        grads = attention_vjp(inputs["q"], inputs["k"], inputs["v"], inputs["d_out"], **kwargs)
        reference = {"out": result.out, "lse": result.lse, "dq": grads.dq, "dk": grads.dk,
                     "dv": grads.dv, "dbias": grads.dbias, "dsinks": grads.dsinks,
                     **score_arrays(case, inputs)}  # the score stages the case asks for
        parts = [attention(inputs["q"], inputs["k"], inputs["v"],
                           **attention_kwargs(part, inputs)) for part in partial_cases(case)]
        if parts:  # a split-KV case: each key range's partial (BHTD)
            reference["partial_out"] = np.stack([to_bhtd(case, r.out) for r in parts])
            reference["partial_lse"] = np.stack([r.lse for r in parts])
        for name, value in exact.exact_attention(case, inputs).items():
            assert_specials_equal(value, reference[name], f"{case.id} {name}")
            cancelling = {"LargeMagnitude", "MaskedKeysScoreHigh"} & set(case.flags)
            if cancelling and name in ("dq", "dk"):
                continue
            assert normwise(value, reference[name]) < 1e-14, f"{case.id} {name}"


def test_equal_scores_give_the_mean_of_the_kept_values():
    keep = [[1, 1, 0, 1], [0, 1, 1, 0]]
    case = hand_case("q_zero", keep)
    rng_values = np.array([[3.0, -1.0], [0.5, 2.0], [7.0, 7.0], [-4.0, 0.25]])
    inputs = {"q": np.zeros((1, 1, 2, 2)), "k": np.arange(8.0).reshape(1, 1, 4, 2),
              "v": rng_values.reshape(1, 1, 4, 2), "d_out": np.ones((1, 1, 2, 2))}
    result = exact.exact_attention(case, inputs)
    for i, row in enumerate(np.asarray(keep, dtype=bool)):
        kept = rng_values[row]
        for d in range(2):  # the correctly rounded mean (exact rational arithmetic)
            mean = sum(Fraction(x) for x in kept[:, d]) / len(kept)
            assert result["out"][0, 0, i, d] == float(mean)
        assert result["lse"][0, 0, i] == pytest.approx(math.log(len(kept)), rel=2**-52)


def test_dropout_scales_the_kept_weights():
    case = hand_case("dropout", [[1, 1]], dropout_rate=0.5)
    inputs = {"q": np.zeros((1, 1, 1, 2)), "k": np.ones((1, 1, 2, 2)),
              "v": np.array([[[[1.0, 2.0], [10.0, 20.0]]]]), "d_out": np.ones((1, 1, 1, 2)),
              "dropout_keep": np.array([[[[True, False]]]])}
    result = exact.exact_attention(case, inputs)
    # p = (1/2, 1/2); kept weight 1/2 / (1 - 1/2) = 1; dropout leaves lse alone
    assert result["out"].tolist() == [[[[1.0, 2.0]]]]
    assert result["lse"][0, 0, 0] == pytest.approx(math.log(2), rel=2**-52)
    assert result["dv"].tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]


def test_empty_row_gives_zero_and_minus_inf():
    case = hand_case("empty", [[0, 0, 0], [1, 0, 1]])
    inputs = case_inputs(case)
    result = exact.exact_attention(case, inputs)
    assert result["out"][0, 0, 0].tolist() == [0.0, 0.0]
    assert result["lse"][0, 0, 0] == -np.inf
    assert result["dq"][0, 0, 0].tolist() == [0.0, 0.0]
    assert np.isfinite(result["lse"][0, 0, 1])
    assert np.all(result["dk"][0, 0, 1] == 0) and np.all(result["dv"][0, 0, 1] == 0)


def test_sink_only_row_has_lse_equal_to_the_sink():
    case = hand_case("sink_only", [[0, 0], [0, 1]], sinks=True)
    inputs = case_inputs(case)
    result = exact.exact_attention(case, inputs)
    sink = inputs["sinks"][0]
    assert result["lse"][0, 0, 0] == sink
    assert result["out"][0, 0, 0].tolist() == [0.0, 0.0]
    # row 1: one key, score s: lse = log(exp(s) + exp(sink)); the sink row adds no gradient
    assert result["lse"][0, 0, 1] > sink
    only_sink = replace(case, name="hand/sink_only_2", mask=m.explicit(np.zeros((2, 2), bool)))
    inputs = case_inputs(only_sink)
    result = exact.exact_attention(only_sink, inputs)
    assert result["lse"][0, 0].tolist() == [inputs["sinks"][0]] * 2
    assert result["dsinks"].tolist() == [0.0]


@pytest.mark.parametrize("policy", ["zero", "nan", "uniform", "unmasked"])
def test_empty_row_policies_agree_with_refmask_attention(policy):
    for name in ("padding/queries_right", "empty_rows/every_other_query_padded",
                 "causal/bottom_right/tall"):
        case = replace(by_id(f"{name}@float64"), empty_rows=policy, dropout_rate=0.25)
        inputs = case_inputs(case)
        kwargs = attention_kwargs(case, inputs)
        result = attention(inputs["q"], inputs["k"], inputs["v"], **kwargs)
        grads = attention_vjp(inputs["q"], inputs["k"], inputs["v"], inputs["d_out"], **kwargs)
        reference = {"out": result.out, "lse": result.lse, "dq": grads.dq, "dk": grads.dk,
                     "dv": grads.dv}
        for key, value in exact.exact_attention(case, inputs).items():
            assert_specials_equal(value, reference[key], f"{name} {policy} {key}")
            assert normwise(value, reference[key]) < 1e-14, (name, policy, key)


def test_zero_lengths():
    k_len_0 = by_id("full/k_len_0@float64")
    result = exact.exact_attention(k_len_0)
    assert np.all(result["out"] == 0) and result["out"].shape == (2, 2, 4, 8)
    assert np.all(result["lse"] == -np.inf)
    assert np.all(result["dq"] == 0) and result["dk"].shape == (2, 2, 0, 8)
    for policy in ("nan", "uniform", "unmasked"):
        assert np.isnan(exact.exact_attention(replace(k_len_0, empty_rows=policy))["out"]).all()
    for policy in ("zero", "nan", "uniform", "unmasked"):  # spec 3, "No keys at all"
        for sinks in (False, True):
            case = replace(k_len_0, empty_rows=policy, sinks=sinks)
            inputs = case_inputs(case)
            kwargs = attention_kwargs(case, inputs)
            result = attention(inputs["q"], inputs["k"], inputs["v"], **kwargs)
            grads = attention_vjp(inputs["q"], inputs["k"], inputs["v"], inputs["d_out"],
                                  **kwargs)
            got = exact.exact_attention(case, inputs)
            if sinks:
                assert np.array_equal(got["lse"][0, 1], np.full(4, inputs["sinks"][1]))
                assert np.all(got["out"] == 0)
            for name, want in (("out", result.out), ("lse", result.lse), ("dq", grads.dq),
                               ("dk", grads.dk), ("dv", grads.dv), ("dsinks", grads.dsinks)):
                if name in got:
                    assert np.array_equal(got[name], want, equal_nan=True), (policy, name)
    q_len_0 = exact.exact_attention(by_id("full/q_len_0@bfloat16"))
    assert q_len_0["out"].shape == (2, 2, 0, 8) and q_len_0["lse"].shape == (2, 2, 0)
    assert np.all(q_len_0["dk"] == 0) and q_len_0["dk"].shape == (2, 2, 4, 8)


def test_alibi_terms_equal_alibi_bias():
    for case in base_cases():
        if case.alibi is None:
            continue
        with mpmath.workdps(exact.DIGITS):
            terms = exact._alibi_terms(case)
        dims = (case.batch, case.q_heads, case.q_len, case.k_len)
        flat = np.array([float(x) for x in np.ravel(np.array(terms, dtype=object))])
        assert np.array_equal(flat.reshape(dims), case.alibi.bias(*dims)), case.id


def test_to_float64_rounds_correctly():
    mpf = mpmath.mpf
    tiny = 2.0**-1074
    assert exact.to_float64(mpf((3, -1075))) == 2 * tiny  # 1.5 ulp: tie to even
    assert exact.to_float64(mpf((5, -1075))) == 2 * tiny  # 2.5 ulp: tie to even
    # just above half the smallest subnormal; rounding to 53 bits first would give 0
    with mpmath.workdps(50):
        above_half = mpf(((1 << 60) + 1, -1075 - 60))
    assert float(above_half) == 0.0  # mpmath's own conversion rounds twice
    assert exact.to_float64(above_half) == tiny
    assert exact.to_float64(-mpf((1, -1080))) == 0.0
    assert math.copysign(1, exact.to_float64(-mpf((1, -1080)))) == -1
    assert exact.to_float64(mpf(2) ** 1024) == math.inf
    with mpmath.workdps(50):
        assert exact.to_float64(mpf((1, -1)) + mpf((1, -60))) == 0.5 + 2.0**-60
        assert exact.to_float64(mpf((1, -1)) + mpf((1, -80))) == 0.5
    with mpmath.workdps(50):
        third = mpmath.mpf(1) / 3
    assert exact.to_float64(third) == float(Fraction(1, 3))
    assert math.isnan(exact.to_float64(mpmath.nan))


def test_exact_leaves_mpmath_precision_alone():
    before = mpmath.mp.prec
    exact.exact_attention(by_id("full/square@float64"))
    assert mpmath.mp.prec == before


def test_exact_checks_its_inputs():
    case = by_id("bias/full@float64")
    inputs = case_inputs(case)
    with pytest.raises(ValueError, match="lacks 'bias'"):
        exact.exact_attention(case, {n: a for n, a in inputs.items() if n != "bias"})
    with pytest.raises(ValueError, match=r"inputs\['q'\] has shape"):
        exact.exact_attention(case, {**inputs, "q": inputs["q"][:, :1]})
    bad = inputs["v"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"inputs\['v'\] holds a non-finite"):
        exact.exact_attention(case, {**inputs, "v": bad})


# --- (b) gradients vs central finite differences -----------------------------------------------

def directional_check(case: Case, tensors, digits: int, step: str) -> list:
    """Relative error of <grad, delta> against (L(x + h delta) - L(x - h delta)) / 2h for each
    tensor, L = sum(d_out * out), everything in mpmath at ``digits`` digits."""
    inputs = exact._checked_inputs(case, case_inputs(case))
    errors = []
    with mpmath.workdps(digits):
        h = mpmath.mpf(step)
        base = exact._exact_values(case, inputs)
        d_out = np.array(inputs["d_out"].tolist(), dtype=object)

        def loss(x):
            out = np.array(exact._exact_values(case, x)["out"], dtype=object)
            return mpmath.fsum((out * d_out).ravel())

        grad_names = {"q": "dq", "k": "dk", "v": "dv", "bias": "dbias", "sinks": "dsinks"}
        for tensor in tensors:
            signs = np.where(np.arange(inputs[tensor].size) % 3 == 1, -1.0, 1.0)
            delta = (signs * (1 + np.arange(inputs[tensor].size) % 5)).reshape(
                inputs[tensor].shape)
            start = np.array(inputs[tensor].tolist(), dtype=object)
            plus = {**inputs, tensor: start + h * delta.astype(object)}
            minus = {**inputs, tensor: start - h * delta.astype(object)}
            finite_difference = (loss(plus) - loss(minus)) / (2 * h)
            grad = np.array(base[grad_names[tensor]], dtype=object)
            analytic = mpmath.fsum((grad * delta.astype(object)).ravel())
            assert analytic != 0, tensor
            errors.append(float(abs(finite_difference - analytic) / abs(analytic)))
    return errors


@pytest.mark.parametrize("case_id, tensors", [
    ("combined/gqa_softcap_window_sink_bthd@float64", ("q", "k", "v", "bias", "sinks")),
    ("dropout/causal@float16", ("q", "k", "v")),
    ("alibi/abs_causal_bottom_right@float64", ("q", "k")),
])
def test_gradients_match_finite_differences(case_id, tensors):
    assert max(directional_check(by_id(case_id), tensors, 50, "1e-15")) < 1e-25


def test_large_magnitude_gradients_keep_their_digits():
    """Scores thousands apart: dq, dk are ~1e-33, far below float64 cancellation noise of a
    naive p (dP - D); the exact engine still has them to many digits."""
    case = by_id("causal/large_magnitude@float64")
    dq = exact.exact_attention(case)["dq"]
    assert 0 < np.abs(dq).max() < 1e-30
    assert max(directional_check(case, ("q", "k"), 90, "1e-30")) < 1e-15


# --- corpus fixtures ---------------------------------------------------------------------------

SMALL = ["full/square@float64", "sinks/full@bfloat16", "dropout/causal@float16",
         "combined/gqa_softcap_window_sink_bthd@float32"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return golden.generate(tmp_path_factory.mktemp("golden") / "small",
                           [by_id(i) for i in SMALL])


@pytest.fixture
def corpus(small_corpus, tmp_path):
    return shutil.copytree(small_corpus, tmp_path / "corpus")


def first_file(directory):
    return directory / manifest_of(directory)["cases"][0]["file"]


def rehash(directory, file):
    manifest = manifest_of(directory)
    for entry in manifest["cases"]:
        if entry["file"] == file.name:
            entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    write_manifest(directory, manifest)


def test_small_corpus_round_trip(small_corpus):
    loaded = golden.load(small_corpus)
    assert list(loaded) == SMALL
    for case_id, golden_case in loaded.items():
        case = by_id(case_id)
        assert golden_case.case_json == json.loads(json.dumps(case.to_json()))
        for name, value in case_inputs(case).items():
            assert np.array_equal(golden_case.inputs[name], value)
            assert golden_case.inputs[name].dtype == value.dtype
        for name, value in exact.exact_attention(case).items():
            assert golden_case.expected[name].tobytes() == value.tobytes()
    assert golden.verify(small_corpus) == []
    manifest = manifest_of(small_corpus)
    assert manifest["schema_version"] == 1 and manifest["generator"] == exact.GENERATOR
    assert manifest["spec_version"] == refmask.SPEC_VERSION


def test_generation_is_byte_reproducible(small_corpus, tmp_path):
    again = golden.generate(tmp_path / "again", [by_id(i) for i in SMALL])
    for entry in manifest_of(small_corpus)["cases"]:
        assert (again / entry["file"]).read_bytes() == (small_corpus / entry["file"]).read_bytes()


# --- (d) defects -------------------------------------------------------------------------------

def test_flipped_byte_is_refused(corpus):
    file = first_file(corpus)
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(golden.CorpusError, match="sha256") as error:
        golden.load(corpus)
    assert error.value.path == file and file.name in str(error.value)
    problems = golden.verify(corpus, regenerate=False)
    assert len(problems) == 1 and file.name in problems[0]


def test_truncated_file_is_refused(corpus):
    file = first_file(corpus)
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(golden.CorpusError, match=file.name):
        golden.load(corpus)


def test_tampered_manifest_hash_is_refused(corpus):
    manifest = manifest_of(corpus)
    manifest["cases"][1]["sha256"] = "0" * 64
    write_manifest(corpus, manifest)
    with pytest.raises(golden.CorpusError, match=manifest["cases"][1]["file"]):
        golden.load(corpus)


def test_unknown_schema_version_is_refused(corpus):
    manifest = manifest_of(corpus)
    manifest["schema_version"] = 2
    write_manifest(corpus, manifest)
    with pytest.raises(golden.CorpusError, match="schema_version 2 is not supported") as error:
        golden.load(corpus)
    assert error.value.path == corpus / "manifest.json"
    assert "manifest.json" in golden.verify(corpus)[0]


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_object", "bad_file_name"])
def test_broken_manifest_is_refused(corpus, damage):
    path = corpus / golden.MANIFEST
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not_object":
        path.write_text("[]")
    else:
        manifest = manifest_of(corpus)
        manifest["cases"][0]["file"] = "../outside.npz"
        write_manifest(corpus, manifest)
    with pytest.raises(golden.CorpusError, match="manifest.json"):
        golden.load(corpus)


def test_missing_file_is_refused(corpus):
    file = first_file(corpus)
    file.unlink()
    with pytest.raises(golden.CorpusError, match="missing") as error:
        golden.load(corpus)
    assert error.value.path == file


def test_object_array_is_refused_without_unpickling(corpus):
    file = first_file(corpus)
    with np.load(file) as archive:
        members = {name: archive[name] for name in archive.files}
    members["exact.out"] = np.array([{"not": "data"}], dtype=object)
    with open(file, "wb") as handle:
        np.savez(handle, **members)
    rehash(corpus, file)
    loaded = golden.load(corpus)  # the hashes match: the defect is in the content
    with pytest.raises(golden.CorpusError, match="pickle") as error:
        loaded[SMALL[0]]
    assert error.value.path == file
    assert any(file.name in p and "pickle" in p for p in golden.verify(corpus))


def test_wrong_member_dtype_is_refused(corpus):
    file = first_file(corpus)
    with np.load(file) as archive:
        members = {name: archive[name] for name in archive.files}
    members["exact.out"] = members["exact.out"].astype(np.float32)
    file.write_bytes(golden.npz_bytes(members))
    rehash(corpus, file)
    with pytest.raises(golden.CorpusError, match="exact.out"):
        golden.load(corpus)[SMALL[0]]


def test_verify_finds_a_one_ulp_change(corpus):
    file = first_file(corpus)
    with np.load(file) as archive:
        members = {name: archive[name] for name in archive.files}
    members["exact.dq"] = members["exact.dq"].copy()
    members["exact.dq"][0, 1, 2, 3] = np.nextafter(members["exact.dq"][0, 1, 2, 3], np.inf)
    file.write_bytes(golden.npz_bytes(members))
    rehash(corpus, file)
    golden.load(corpus)[SMALL[0]]  # well-formed
    (corpus / "stray.npz").write_bytes(b"")
    problems = golden.verify(corpus)
    assert len(problems) == 2
    assert "stray.npz" in problems[0] and "not listed" in problems[0]
    assert file.name in problems[1] and "exact.dq differs bitwise in 1 of" in problems[1]
    assert "(0, 1, 2, 3)" in problems[1]


# --- (e) generate ------------------------------------------------------------------------------

def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_generate_refuses_a_non_empty_directory(corpus, tmp_path):
    before = {p.name: p.read_bytes() for p in corpus.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True") as error:
        golden.generate(corpus, [by_id("full/square@float64")])
    assert str(corpus) in str(error.value)
    assert {p.name: p.read_bytes() for p in corpus.iterdir()} == before
    other = tmp_path / "not_a_corpus"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a golden corpus"):
        golden.generate(other, [by_id("full/square@float64")], overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
    assert leftovers(tmp_path) == []


def test_generate_overwrites_atomically(corpus, tmp_path):
    calls = []
    golden.generate(corpus, [by_id("full/square@float32")], overwrite=True,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 1), (1, 1)]
    assert list(golden.load(corpus)) == ["full/square@float32"]
    assert sorted(p.name for p in corpus.iterdir()) == ["full__square.float32.npz",
                                                        "manifest.json"]
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    golden.generate(empty, [by_id("full/square@float32")])
    assert golden.verify(empty) == []


def test_generate_cleans_up_after_a_failure(corpus, tmp_path):
    before = {p.name: p.read_bytes() for p in corpus.iterdir()}

    def fail_late(done, total):
        if done == 2:
            raise RuntimeError("interrupted")

    cases = [by_id(i) for i in ("full/square@float64", "full/wide@float64", "full/tall@float64")]
    with pytest.raises(RuntimeError, match="interrupted"):
        golden.generate(corpus, cases, overwrite=True, progress=fail_late)
    assert {p.name: p.read_bytes() for p in corpus.iterdir()} == before
    with pytest.raises(RuntimeError, match="interrupted"):
        golden.generate(tmp_path / "new", cases, progress=fail_late)
    assert not (tmp_path / "new").exists()
    assert leftovers(tmp_path) == []


def test_generate_rejects_duplicate_ids(tmp_path):
    case = by_id("full/square@float64")
    with pytest.raises(ValueError, match="repeats the id"):
        golden.generate(tmp_path / "dup", [case, case])
    assert list(tmp_path.iterdir()) == []


def test_case_file_names_and_case_json():
    names = [golden.case_file_name(case.id) for case in catalog()]
    assert len({n.lower() for n in names}) == len(names)
    assert golden.case_file_name("causal/bottom_right/wide@float16") == (
        "causal__bottom_right__wide.float16.npz")
    for case in base_cases():
        data = json.loads(json.dumps(case.to_json()))
        rebuilt = golden.case_from_json(data)
        assert rebuilt.to_json() == case.to_json()
        assert np.array_equal(rebuilt.keep(), case.keep())


# --- (c), (f) the shipped corpus ---------------------------------------------------------------

SAMPLE = [
    "full/k_len_0@float64", "full/large_magnitude@bfloat16", "causal/bottom_right/tall@float16",
    "window/fa_2_0/bottom_right_wide@float32", "documents/position_ids@bfloat16",
    "padding/all_keys_padded@float64", "per_head/causal_and_window@float16",
    "softcap/window_bottom_right@bfloat16", "alibi/signed_causal_6_heads@float32",
    "sinks/window_with_empty_rows@float16", "dropout/full@bfloat16",
    "combined/gqa_softcap_window_sink_bthd@float64",
]


def test_shipped_manifest_lists_the_catalog():
    path = golden.shipped_corpus_path()
    manifest = manifest_of(path)
    assert [entry["id"] for entry in manifest["cases"]] == [case.id for case in catalog()]
    for entry, case in zip(manifest["cases"], catalog(), strict=True):
        assert entry["case"] == json.loads(json.dumps(case.to_json()))
    assert manifest["spec_version"] == refmask.SPEC_VERSION
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [golden.MANIFEST] + [entry["file"] for entry in manifest["cases"]])
    assert len(golden.load(path)) == len(catalog())


def test_shipped_sample_regenerates_bit_for_bit():
    corpus = golden.load(golden.shipped_corpus_path())
    for case_id in SAMPLE:
        stored = corpus[case_id]
        case = stored.case()
        inputs = case_inputs(case)
        for name, value in inputs.items():
            assert stored.inputs[name].tobytes() == value.tobytes(), (case_id, name)
        fresh = exact.exact_attention(case, inputs)
        assert sorted(fresh) == sorted(stored.expected)
        for name, value in fresh.items():
            assert stored.expected[name].tobytes() == value.tobytes(), (case_id, name)


@pytest.mark.slow
def test_shipped_corpus_verifies_completely():
    assert golden.verify(golden.shipped_corpus_path()) == []


@pytest.mark.parametrize("policy", ["zero", "nan", "uniform", "unmasked"])
def test_minus_inf_bias_and_sinks_agree_with_refmask_attention(policy):
    """An additive -inf removes a key like the mask; a -inf sink means no sink (spec 2.2, 3)."""
    case = replace(by_id("combined/gqa_softcap_window_sink_bthd@float64"), empty_rows=policy)
    inputs = case_inputs(case)
    inputs["bias"] = inputs["bias"].copy()
    inputs["bias"][0, 1, 2, :] = -np.inf  # a row left with no finite score: empty
    inputs["bias"][1, 0, :, 8] = -np.inf  # one kept key removed from every row
    inputs["sinks"] = inputs["sinks"].copy()
    inputs["sinks"][1] = -np.inf
    kwargs = attention_kwargs(case, inputs)
    result = attention(inputs["q"], inputs["k"], inputs["v"], **kwargs)
    grads = attention_vjp(inputs["q"], inputs["k"], inputs["v"], inputs["d_out"], **kwargs)
    reference = {"out": result.out, "lse": result.lse, "dq": grads.dq, "dk": grads.dk,
                 "dv": grads.dv, "dbias": grads.dbias, "dsinks": grads.dsinks}
    got = exact.exact_attention(case, inputs)
    assert got["lse"][0, 1, 2] == -np.inf
    for key, value in got.items():
        assert_specials_equal(value, reference[key], f"{policy} {key}")
        assert normwise(value, reference[key]) < 1e-14, (policy, key)
