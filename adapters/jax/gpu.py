"""``jax.nn.dot_product_attention`` on a GPU, one adapter per ``implementation``.

The translation is ``jax.dpa``'s (dpa.py :func:`~.dpa.translate`, :func:`~.dpa.call`); the
arrays are placed on the first GPU (``jax.device_put``) and the jitted call asks for one
implementation (checked against jax 0.10.2, jax/_src/nn/functions.py and
jax/_src/cudnn/fused_attention_stablehlo.py):

=================  ==========================================================================
adapter            call and what differs from ``jax.dpa``
=================  ==========================================================================
``jax.dpa.xla``    ``implementation='xla'``: the same XLA graph as jax.dpa, compiled for the
                   GPU; jitted for every dtype (the F16_F16_F32 refusal is CPU-only); float32
                   runs under ``jax.default_matmul_precision("float32")``, because JAX's GPU
                   default lets float32 dots use TF32 on Ampere and later (JAX docs, "Matmul
                   precision"), which is not float32 attention
``jax.dpa.cudnn``  ``implementation='cudnn'`` (cuDNN flash attention): the bool ``mask`` and
                   the ``bias`` are summed into one bias, masked logits getting
                   ``get_large_negative_number(dtype)`` (-2**41 bf16, -2**15 fp16) *added*;
                   ``is_causal`` -> ``MaskType.CAUSAL``; seq lengths -> ``PADDING`` (or
                   ``PADDING_CAUSAL``); ``local_window_size=(l, 0)`` (or any ``(l, r)`` with a
                   plain causal mask) -> ``sliding_window_length = l + 1``
=================  ==========================================================================

``jax.dpa.cudnn`` constraints:

======================================  ===================================================
constraint                              where it is handled
======================================  ===================================================
fp16 / bf16 only ("Q must be            unsupported, up front (float32 and float64)
fp16/bf16/fp8_e4m3fn/fp8_e5m2")
head dim a multiple of 8                unsupported, up front
head dim <= 128 (<= 256 on Hopper+);    jax raises NotImplementedError while tracing ->
training with a bias needs even Tq, Tk  unsupported with jax's text
a right window without a causal mask    jax raises ValueError("cuDNN doesn't support right
(``local_window_size=(l, r)``, r > 0)   window ...") -> unsupported with jax's text
softcap, sinks, dropout, float64,       unsupported, as for jax.dpa
Dqk != Dv
======================================  ===================================================

Any other error (an XLA or cuDNN runtime error) stays a ``fail``: it is a finding. Profiles:
``jax.dpa.xla`` declares jax.dpa's conventions (top-left ``is_causal`` and window, empty rows
the mean of V); ``jax.dpa.cudnn`` declares top-left and empty rows ``uniform`` (bf16: the
added -2**41 swamps every logit in float32) -- both to be measured on a GPU
(tests/test_adapters_gpu.py), where the runner names whatever convention the output follows.

Availability: "jax is not installed ..." or "jax has no GPU backend (jax.devices('gpu')
failed: ...)".
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING

from ..common import Adapter, Profile, Unsupported
from . import dpa
from .common import unavailable, unsupported_scores

if TYPE_CHECKING:
    from refmask.case import Case


IMPLEMENTATIONS = ("cudnn", "xla")
#: messages of the errors jax's cuDNN path raises for a case it cannot run (-> unsupported).
CUDNN_REFUSALS = ("cuDNN doesn't support",)


def gpu_unavailable() -> str | None:
    """Why JAX cannot run on a GPU here, or None."""
    reason = unavailable()
    if reason:
        return reason
    import jax

    try:
        devices = jax.devices("gpu")
    except RuntimeError as error:
        return f"jax has no GPU backend (jax.devices('gpu') failed: {error})"
    return None if devices else "jax has no GPU backend (jax.devices('gpu') is empty)"


def unsupported(case: Case, implementation: str) -> str | None:
    name = f"jax.dpa.{implementation}"
    reason = unsupported_scores(case, f"{name}: jax.nn.dot_product_attention")
    if reason or implementation != "cudnn":
        return reason
    if case.dtype not in ("float16", "bfloat16"):
        return (f"{name}: cuDNN attention takes fp16/bf16 only, got {case.dtype} ('Q must be "
                "fp16/bf16/fp8_e4m3fn/fp8_e5m2', jax/_src/cudnn/fused_attention_stablehlo.py "
                "check_layout)")
    if case.qk_dim % 8:
        return (f"{name}: cuDNN attention needs a head dim that is a multiple of 8, got "
                f"{case.qk_dim} (fused_attention_stablehlo.py check_is_flash_attention)")
    return None


def _first_device(platform: str):
    import jax

    return jax.devices(platform)[0]


def _runner(implementation: str, platform: str):
    def run(case, inputs, *, grads: bool):
        import jax

        name = f"jax.dpa.{implementation}"
        reason = unsupported(case, implementation)
        if reason:
            raise Unsupported(reason)
        device = _first_device(platform)
        precision = (jax.default_matmul_precision("float32")
                     if implementation == "xla" and case.dtype == "float32" else nullcontext())
        try:
            with precision:
                return dpa.call(case, inputs, grads=grads,
                                functions=dpa._compiled(implementation)["jit"],
                                put=lambda x: jax.device_put(x, device))
        except NotImplementedError as error:
            if implementation != "cudnn":
                raise
            raise Unsupported(f"{name}: jax refused the case: {error}") from error
        except ValueError as error:
            if implementation != "cudnn" or not str(error).startswith(CUDNN_REFUSALS):
                raise
            raise Unsupported(f"{name}: jax refused the case: {error}") from error

    return run


def gpu_adapter(implementation: str, *, platform: str = "gpu") -> Adapter:
    """``jax.dpa`` with ``implementation`` on the first device of ``platform`` ("gpu"; the
    tests also build the xla one on "cpu", where its machinery can be checked)."""
    name = f"jax.dpa.{implementation}"
    notes = {"xla": "jax.nn.dot_product_attention(implementation='xla') on the GPU; softmax in "
                    "float32; masked logits replaced by -0.7*finfo(float32).max; float32 "
                    "dots at precision 'float32' (no TF32)",
             "cudnn": "jax.nn.dot_product_attention(implementation='cudnn'): cuDNN flash "
                      "attention, fp16/bf16; masks become a large negative additive bias"}
    return Adapter(
        name=name,
        profile=Profile(empty_rows="uniform", causal_alignment="top_left", lse_base=None,
                        backward=True, notes=notes[implementation]),
        run=_runner(implementation, platform),
        unsupported=lambda case: unsupported(case, implementation),
        unavailable=gpu_unavailable if platform == "gpu" else unavailable,
        description=f"jax.nn.dot_product_attention, implementation={implementation!r}, on a "
                    f"{platform.upper()}",
    )


ADAPTERS = tuple(gpu_adapter(implementation) for implementation in IMPLEMENTATIONS)
