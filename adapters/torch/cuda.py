"""PyTorch on CUDA: SDPA under each forced backend, and compiled FlexAttention.

The translations are the CPU adapters' own (sdpa.py ``_call``, flex.py ``_call``), run with
``device="cuda"``; nothing about the masks changes. What each adapter adds:

=============================  =============================================================
adapter                        call
=============================  =============================================================
``torch.sdpa.cuda.flash``      torch.sdpa's call in ``sdpa_kernel(SDPBackend.FLASH_ATTENTION)``
``torch.sdpa.cuda.efficient``  the same in ``sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)``
``torch.sdpa.cuda.cudnn``      the same in ``sdpa_kernel(SDPBackend.CUDNN_ATTENTION)``
``torch.sdpa.cuda.math``       the same in ``sdpa_kernel(SDPBackend.MATH)``
``torch.flex.cuda``            torch.flex's call through ``torch.compile(flex_attention,
                               dynamic=False)``; LSE (natural log) and autograd (dq, dk, dv,
                               and dbias through the score_mod's captured bias)
=============================  =============================================================

Each backend's constraints, from the ``can_use_*`` filters of
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (read at pytorch commit 001f694a, the
2.13 line; the CPU wheel installed here ships no CUDA sources) and from the installed
torch/nn/attention/bias.py. ``sdpa_kernel`` leaves only the forced backend enabled, so a case
it cannot run raises ``RuntimeError: No available kernel. Aborting execution.``, after one
``TORCH_WARN`` per failed filter:

=========  ===========  =======================================  ===========================
backend    dtypes       masks and bias                           head dims and lengths
=========  ===========  =======================================  ===========================
flash      fp16, bf16   no ``attn_mask`` at all                  Dqk = Dv <= 256; Tq, Tk > 0;
           (sm80+)      (check_for_attn_mask); ``is_causal``     sm80..sm121; no training
                        only with Tq = Tk (check_flash_causal_   with D in (192, 224] on
                        non_square_seqlens); bias.py runs        sm86/89/120
                        ``causal_lower_right`` as flash's own
                        bottom-right ``is_causal``
efficient  fp16, bf16,  bool or float ``attn_mask``; bias.py     Dqk, Dv multiples of 8
           fp32         runs ``causal_lower_right`` through      (fp16/bf16) or 4 (fp32)
                        ``_efficient_attention_forward``         on sm80+; Tq, Tk > 0
                        (``custom_mask_type``)
cudnn      fp16, bf16   ``attn_mask`` allowed                    Dqk, Dv multiples of 8,
           (sm80+)      (check_attn_mask_shape)                  <= 128 (256 on sm90/sm100
                                                                 with cuDNN > 9.22); Tk != 1;
                                                                 Tq, Tk > 0
math       all floats   everything: dense masks, ``is_causal``,  none
           (fp64 too)   float masks
=========  ===========  =======================================  ===========================

* Refusals are verdicts, not failures: the ``No available kernel`` RuntimeError becomes
  ``unsupported`` with torch's own text, followed by the reasons torch warned for the forced
  backend (its section of the warnings, the "(Triggered internally at ...)" suffix removed).
  Any other error stays a ``fail``: it is a finding (e.g. a bottom-right causal GQA/MQA case on
  the efficient backend, where bias.py calls ``_efficient_attention_forward`` without
  expanding the kv heads: expected to raise there, to be confirmed on a GPU).
* float32 stays float32: torch's defaults (``torch.backends.cuda.matmul.fp32_precision``
  "none" -> ``get_float32_matmul_precision() == "highest"``) keep TF32 off for the math
  backend and make inductor's flex template use ``'ieee'`` dots
  (torch/_inductor/kernel/flex/flex_attention.py ``get_float32_precision``).
* Empty rows: declared ``zero`` (SDPA >= 2.5 ``_safe_softmax`` for math, FlashAttention's 0
  output, flex's 0); the fused kernels' actual behaviour is measured by the GPU run
  (tests/test_adapters_gpu.py), not assumed.

``torch.flex.cuda`` specifics: the compiled Triton kernel needs head dims >= 16 ("NYI:
embedding dimension of the query, key, and value must be at least 16",
torch/_inductor/kernel/flex/flex_attention.py), so smaller Dqk / Dv are zero-padded to 16 and
the scale is passed for the unpadded Dqk: zero columns add nothing to ``q . k``, and the
padded output columns (zero value columns) are sliced off; autograd of the pad and the slice
gives back exactly the unpadded gradients. Every case compiles anew (new mask_mod / score_mod
closures, ``dynamic=False``), so the call raises dynamo's recompile limit inside a
``torch._dynamo.config.patch`` and sets ``fail_on_recompile_limit_hit``: it never falls back
silently to the eager path. Unsupported, as for torch.flex: sinks, a dropout keep-mask,
Tk = 0.

Availability: "torch is not installed ..." or "torch has no CUDA device
(torch.cuda.is_available() is False)"; ``torch.flex.cuda`` also needs triton.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..common import Adapter, Profile, Unsupported
from . import common as tc
from . import flex, sdpa

if TYPE_CHECKING:
    import torch

    from refmask.case import Case


DEVICE = "cuda"

#: adapter suffix -> (SDPBackend member, header of its section in torch's refusal warnings).
SDPA_BACKENDS = {
    "flash": ("FLASH_ATTENTION", "Flash attention kernel not used because"),
    "efficient": ("EFFICIENT_ATTENTION", "Memory efficient kernel not used because"),
    "cudnn": ("CUDNN_ATTENTION", "cuDNN attention kernel not used because"),
    "math": ("MATH", None),
}
#: the text of the RuntimeError select_sdp_backend raises when no enabled kernel can run.
NO_KERNEL = "No available kernel"
_SECTION_HEADERS = tuple(header for _, header in SDPA_BACKENDS.values() if header)
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?\s*$")

FLEX_MIN_HEAD_DIM = 16
#: dynamo limits while the compiled flex runs (one compilation per case, see the docstring).
FLEX_RECOMPILE_LIMIT = 100_000


# --- availability ----------------------------------------------------------------------------

def flex_unavailable() -> str | None:
    reason = tc.cuda_unavailable()
    if reason:
        return reason
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return "triton is not installed: torch.compile(flex_attention) on CUDA needs it"
    return None


def _renamed(unsupported, cpu_name: str, name: str):
    """The CPU adapter's ``unsupported`` with its reasons naming this adapter instead."""
    def renamed(case) -> str | None:
        reason = unsupported(case)
        return reason.replace(cpu_name, name, 1) if reason else None

    return renamed


# --- SDPA under a forced backend ------------------------------------------------------------

def refusal_reason(name: str, error: BaseException, warned: list[str], header: str | None) -> str:
    """The unsupported reason for a ``No available kernel`` refusal: torch's error text, then
    the warnings torch gave for the forced backend (the section after ``header``; every
    warning when no section is found)."""
    messages = [_TRIGGERED.sub("", message).strip() for message in warned]
    section, inside = [], False
    for message in messages:
        if message.startswith(_SECTION_HEADERS):
            inside = header is not None and message.startswith(header)
            continue
        if inside:
            section.append(message)
    found = section or [m for m in messages if m and not m.startswith(_SECTION_HEADERS)]
    text = f"{name}: torch refused the case: {str(error).strip()}"
    return text + (f" ({'; '.join(found)})" if found else "")


def _sdpa_runner(name: str, backend: str, device: str):
    member, header = SDPA_BACKENDS[backend]

    def context():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, member))

    def run(case, inputs, *, grads: bool):
        warned: list[str] = []

        def forward(q, k, v, bias):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    return sdpa._call(case, q, k, v, bias, always_is_causal=False,
                                      device=device), None
                finally:
                    warned.extend(str(w.message) for w in caught)

        try:
            return tc.run_autograd(case, inputs, grads, forward, device=device, context=context)
        except RuntimeError as error:
            if NO_KERNEL not in str(error):
                raise
            raise Unsupported(refusal_reason(name, error, warned, header)) from error

    return run


def sdpa_adapter(backend: str, *, device: str = DEVICE, name: str | None = None) -> Adapter:
    """``torch.sdpa``'s translation on ``device`` inside ``sdpa_kernel`` of one backend
    (``device="cpu"`` gives the same machinery on the CPU, where MATH and FLASH_ATTENTION
    exist: the tests run it there)."""
    name = name or f"torch.sdpa.cuda.{backend}"
    member = SDPA_BACKENDS[backend][0]
    return Adapter(
        name=name,
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base=None,
                        backward=True,
                        notes=f"F.scaled_dot_product_attention on {device} inside "
                              f"sdpa_kernel(SDPBackend.{member}); torch.sdpa's translation; "
                              "refusals ('No available kernel') are unsupported with torch's "
                              "reasons; no LSE returned"),
        run=_sdpa_runner(name, backend, device),
        unsupported=_renamed(lambda case: sdpa._unsupported(case, always_is_causal=False),
                             "torch.sdpa", name),
        unavailable=tc.cuda_unavailable if device == DEVICE else tc.unavailable,
        description=f"SDPA forced to SDPBackend.{member} on {device}",
    )


# --- compiled FlexAttention ---------------------------------------------------------------------

@functools.cache
def compiled_flex() -> Callable[..., Any]:
    """``torch.compile(flex_attention, dynamic=False)``, built once per process."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _padded(x, width: int):
    """``x`` with its last axis zero-padded to ``width`` (itself when already that wide)."""
    import torch.nn.functional as F

    extra = width - x.shape[-1]
    return F.pad(x, (0, extra)) if extra > 0 else x


def flex_forward(case: Case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 bias: torch.Tensor | None, *, device: str, attend: Callable[...,
                 Any]) -> torch.Tensor:
    """torch.flex's call with head dims zero-padded to FLEX_MIN_HEAD_DIM (see the docstring)."""
    qk_width = max(case.qk_dim, FLEX_MIN_HEAD_DIM)
    v_width = max(case.v_dim, FLEX_MIN_HEAD_DIM)
    scale = case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim)
    out, lse = flex._call(case, _padded(q, qk_width), _padded(k, qk_width), _padded(v, v_width),
                          bias, device=device, attend=attend, scale=scale)
    return out[..., :case.v_dim], lse


def _flex_runner(device: str, compiled: bool):
    def run(case, inputs, *, grads: bool):
        import torch

        attend = compiled_flex() if compiled else None

        def forward(q, k, v, bias):
            return flex_forward(case, q, k, v, bias, device=device, attend=attend)

        limits = torch._dynamo.config.patch(
            recompile_limit=FLEX_RECOMPILE_LIMIT,
            accumulated_recompile_limit=FLEX_RECOMPILE_LIMIT,
            fail_on_recompile_limit_hit=True)
        with limits:
            return tc.run_autograd(case, inputs, grads, forward, device=device)

    return run


def flex_adapter(*, device: str = DEVICE, compiled: bool = True,
                 name: str = "torch.flex.cuda") -> Adapter:
    """FlexAttention on ``device``, compiled (the CUDA adapter) or eager (``compiled=False,
    device="cpu"``: the same padding and translation on the CPU, forward only, for tests)."""
    on_cuda = device == DEVICE
    return Adapter(
        name=name,
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e",
                        backward=on_cuda,
                        notes=f"flex_attention {'compiled' if compiled else 'eager'} on "
                              f"{device}; torch.flex's mask_mod/score_mod translation; head "
                              f"dims zero-padded to {FLEX_MIN_HEAD_DIM}; LSE natural log"),
        run=_flex_runner(device, compiled),
        unsupported=_renamed(flex._unsupported, "torch.flex", name),
        unavailable=flex_unavailable if on_cuda else tc.unavailable,
        description="FlexAttention compiled with torch.compile on CUDA: mask_mod/BlockMask, "
                    "score_mod, enable_gqa, LSE, autograd",
    )


ADAPTERS = tuple(sdpa_adapter(backend) for backend in SDPA_BACKENDS) + (flex_adapter(),)
