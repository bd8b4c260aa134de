"""One array-API implementation: NumPy, array-api-strict, torch and JAX agree; low precision
runs the same code naively in its own dtype."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from refmask.attention import Alibi, attention, attention_vjp
from refmask.masks import causal


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _strict(x):
    import array_api_strict as xp

    return xp.asarray(x)


@pytest.fixture(autouse=True)
def _restore_jax_x64():
    """These tests switch JAX to 64-bit mode; later test modules must find it as it was."""
    jax = sys.modules.get("jax")
    before = None if jax is None else jax.config.jax_enable_x64
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", bool(before))


def _torch(x):
    torch = pytest.importorskip("torch")
    return torch.asarray(x)


def _jax(x):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jnp.asarray(x)


CONVERTERS = {"numpy": np.asarray, "array_api_strict": _strict, "torch": _torch, "jax": _jax}


def case(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "q": rng.standard_normal((2, 4, 5, 3)),
        "k": rng.standard_normal((2, 2, 4, 3)),
        "v": rng.standard_normal((2, 2, 4, 2)),
        "bias": rng.standard_normal((4, 5, 4)),
        "sinks": rng.standard_normal(4),
        "dropout_keep": rng.random((2, 4, 5, 4)) < 0.8,
        "mask": rng.random((2, 1, 5, 4)) < 0.7,
        "d_out": rng.standard_normal((2, 4, 5, 2)),
        "d_lse": rng.standard_normal((2, 4, 5)),
    }
    arrays["mask"][0, 0, 0] = False  # one empty row (in every head of batch 0)
    return arrays


def run(convert, arrays, *, layout="BHTD", sinks=True, policy="uniform", mask_object=False):
    c = {name: convert(x) for name, x in arrays.items()}
    kwargs = dict(
        mask=causal(align="bottom_right") if mask_object else c["mask"],
        scale=0.8, softcap=2.0, bias=c["bias"], sinks=c["sinks"] if sinks else None,
        alibi=Alibi(4, convention="abs", align="bottom_right"), dropout_keep=c["dropout_keep"],
        dropout_rate=0.1, empty_rows=policy, layout=layout,
    )
    q, k, v, d_out = c["q"], c["k"], c["v"], c["d_out"]
    if layout == "BTHD":
        q, k, v, d_out = (_swap(x) for x in (q, k, v, d_out))
    result = attention(q, k, v, return_probs=True, **kwargs)
    grads = attention_vjp(q, k, v, d_out, d_lse=c["d_lse"], **kwargs)
    return {
        "out": result.out, "lse": result.lse, "probs": result.probs, "dq": grads.dq,
        "dk": grads.dk, "dv": grads.dv, "dbias": grads.dbias, "dsinks": grads.dsinks,
    }


def _swap(x):
    import array_api_compat

    return array_api_compat.array_namespace(x).permute_dims(x, (0, 2, 1, 3))


def to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "detach"):
        return x.detach().numpy()
    if type(x).__module__.startswith("array_api_strict"):
        return np.asarray(x._array)  # the strict wrapper refuses implicit conversion
    return np.asarray(x)


@pytest.mark.parametrize("namespace", ["array_api_strict", "torch", "jax"])
@pytest.mark.parametrize("layout, sinks, policy, mask_object", [
    ("BHTD", False, "uniform", False),
    ("BTHD", True, "zero", False),
    ("BHTD", False, "unmasked", True),
    ("BHTD", False, "nan", True),
])
def test_same_results_as_numpy(namespace, layout, sinks, policy, mask_object):
    arrays = case()
    expected = run(np.asarray, arrays, layout=layout, sinks=sinks, policy=policy,
                   mask_object=mask_object)
    found = run(CONVERTERS[namespace], arrays, layout=layout, sinks=sinks, policy=policy,
                mask_object=mask_object)
    for name, value in expected.items():
        got = to_numpy(found[name])
        if value is None:
            assert got is None, name
            continue
        assert type(found[name]).__module__.split(".")[0] != "numpy", name
        assert got.shape == value.shape, name
        # Different BLAS and exp implementations: agreement to float64 rounding, NaN and inf
        # in the same places.
        np.testing.assert_allclose(got, value, rtol=1e-12, atol=1e-13, err_msg=name)


def test_jax_arrays_are_never_written_and_work_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    arrays = case(1)
    q, k, v = (jnp.asarray(arrays[name]) for name in ("q", "k", "v"))

    @jax.jit
    def forward(q, k, v):
        result = attention(q, k, v, mask=causal(align="bottom_right"), softcap=3.0)
        return result.out, result.lse

    out, lse = forward(q, k, v)
    reference = attention(arrays["q"], arrays["k"], arrays["v"],
                          mask=causal(align="bottom_right"), softcap=3.0)
    np.testing.assert_allclose(np.asarray(out), reference.out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(lse), reference.lse, rtol=1e-12)


@pytest.mark.parametrize("dtype_name, tolerance", [
    ("float32", 1e-5), ("float16", 1e-2), ("bfloat16", 6e-2),
])
def test_low_precision_runs_naively_in_its_dtype(dtype_name, tolerance):
    if dtype_name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(dtype_name)
    arrays = case(2)
    names = ("q", "k", "v", "bias", "sinks", "d_out")
    low = {name: arrays[name].astype(dtype) for name in names}
    high = {name: low[name].astype(np.float64) for name in names}  # same rounded inputs
    kwargs = dict(mask=arrays["mask"], softcap=2.0, alibi=Alibi(4, convention="signed",
                                                               align="bottom_right"))
    result = attention(low["q"], low["k"], low["v"], bias=low["bias"], sinks=low["sinks"],
                       return_probs=True, **kwargs)
    reference = attention(high["q"], high["k"], high["v"], bias=high["bias"],
                          sinks=high["sinks"], **kwargs)
    for value in (result.out, result.lse, result.probs):
        assert value.dtype == dtype
    np.testing.assert_allclose(result.out.astype(np.float64), reference.out, atol=tolerance,
                               rtol=tolerance)
    grads = attention_vjp(low["q"], low["k"], low["v"], low["d_out"], bias=low["bias"],
                          sinks=low["sinks"], **kwargs)
    for value in (grads.dq, grads.dk, grads.dv, grads.dbias, grads.dsinks):
        assert value.dtype == dtype and np.all(np.isfinite(value.astype(np.float64)))


def test_float16_overflow_propagates_without_warnings():
    """|q.k| above 65504 overflows float16 scores to inf; the result is NaN/inf, silently."""
    q = np.full((1, 1, 1, 4), 200.0, dtype=np.float16)
    k = np.full((1, 1, 2, 4), 200.0, dtype=np.float16)
    v = np.ones((1, 1, 2, 1), dtype=np.float16)
    result = attention(q, k, v, scale=1.0)
    assert not np.all(np.isfinite(result.out)) or not np.all(np.isfinite(result.lse))


def test_refmask_attention_imports_no_framework():
    code = (
        "import sys, refmask.attention, refmask.attention.alibi;"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'cupy') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("namespace, dtype_name", [
    ("torch", "float16"), ("torch", "bfloat16"), ("jax", "bfloat16"),  # eager JAX is slow
])
def test_framework_low_precision_keeps_its_dtype(namespace, dtype_name):
    arrays = case(3)
    if namespace == "torch":
        torch = pytest.importorskip("torch")
        dtype = getattr(torch, dtype_name)

        def convert(x):
            return torch.asarray(x).to(dtype)

        def back(x):
            return x.float().numpy()
    else:
        pytest.importorskip("jax")
        import jax.numpy as jnp

        dtype = getattr(jnp, dtype_name)

        def convert(x):
            return jnp.asarray(x).astype(dtype)

        def back(x):
            return np.asarray(x.astype(jnp.float32))
    names = ("q", "k", "v", "sinks", "d_out")
    low = {name: convert(arrays[name]) for name in names}
    high = {name: back(low[name]).astype(np.float64) for name in names}
    mask = arrays["mask"]
    kwargs = dict(softcap=2.0, alibi=Alibi(4, convention="abs", align="bottom_right"))
    result = attention(low["q"], low["k"], low["v"], sinks=low["sinks"],
                       mask=CONVERTERS[namespace](mask), **kwargs)
    reference = attention(high["q"], high["k"], high["v"], sinks=high["sinks"], mask=mask,
                          **kwargs)
    assert result.out.dtype == dtype and result.lse.dtype == dtype
    np.testing.assert_allclose(back(result.out), reference.out, atol=6e-2, rtol=6e-2)
    grads = attention_vjp(low["q"], low["k"], low["v"], low["d_out"], sinks=low["sinks"],
                          mask=CONVERTERS[namespace](mask), **kwargs)
    assert grads.dq.dtype == dtype and grads.dsinks.dtype == dtype
