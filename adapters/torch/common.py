"""What the PyTorch adapters share: availability, tensor conversion, layout, masks, gradients.

torch is imported inside the functions, never at import time, so ``import
refmask.adapters.torch`` works (and reports the adapters unavailable) without torch.

Conversions are exact: float64/float32/float16 arrays become tensors of the same dtype;
bfloat16 (an ``ml_dtypes`` array) goes through float32, which holds every bfloat16 value
exactly, and is cast back to ``torch.bfloat16``. Outputs come back as float64 NumPy arrays
(again exact), in BHTD layout, as :class:`~refmask.adapters.common.Output` wants.

Every tensor the adapters make is placed on a ``device`` ("cpu" unless told otherwise; the
CUDA adapters in cuda.py pass "cuda"), and :func:`run_autograd` can run the forward and the
backward pass inside a ``context`` (cuda.py: ``sdpa_kernel(SDPBackend.X)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import numpy as np

from refmask.case import to_bhtd
from refmask.masks import Mask

from ..common import Output

if TYPE_CHECKING:
    import torch

    from refmask.case import Case


MISSING = "torch is not installed (pip install 'refmask[torch]')"
NO_CUDA = "torch has no CUDA device (torch.cuda.is_available() is False)"

#: torch warnings that the adapters trigger on purpose; the verdict reports the behaviour.
QUIET = (
    # torch/nn/attention/bias.py causal_lower_right, when Tq > Tk (CPU gives 0, see sdpa.py)
    r"Lower right causal bias will produce NaNs",
    # torch/nn/attention/flex_attention.py: the eager (unfused) path is what torch.flex runs
    r"flex_attention called without torch.compile",
)


def unavailable() -> str | None:
    """Why the torch adapters cannot run here (None when torch imports)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return MISSING
    return None


def cuda_unavailable() -> str | None:
    """Why the CUDA adapters cannot run here (None when torch sees a CUDA device)."""
    reason = unavailable()
    if reason:
        return reason
    import torch

    return None if torch.cuda.is_available() else NO_CUDA


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the torch warnings in :data:`QUIET` (and only those)."""
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]


def to_torch(x: np.ndarray, dtype_name: str | None = None, device: str = "cpu") -> torch.Tensor:
    """A tensor on ``device`` holding exactly the values of ``x`` (bool stays bool)."""
    import torch

    x = np.asarray(x)
    if x.dtype == np.bool_:
        return torch.from_numpy(np.array(x, dtype=bool)).to(device)
    if dtype_name == "bfloat16" or x.dtype.name == "bfloat16":
        # bfloat16 -> float32 is exact, and so is the cast back.
        return torch.from_numpy(np.array(x, dtype=np.float32)).to(device=device,
                                                                  dtype=torch.bfloat16)
    return torch.from_numpy(np.array(x)).to(device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """float64 NumPy copy of a floating tensor (exact for every torch float dtype here)."""
    import torch

    return t.detach().to(torch.float64).cpu().numpy()


# --- what a case uses --------------------------------------------------------------------

def score_reasons(case: Case, backend: str, *, softcap: str | None, sinks: str | None,
                  dropout: str | None) -> str | None:
    """The first reason among the score features the case uses and the backend lacks.

    Each keyword is the reason for that feature, or None when the backend has it.
    """
    for used, reason in ((case.softcap is not None, softcap), (case.sinks, sinks),
                         (case.dropout_rate is not None, dropout)):
        if used and reason is not None:
            return f"{backend}: {reason}"
    return None


def has_additive(case: Case) -> bool:
    return bool(case.bias) or case.alibi is not None


def plain_causal(mask: Mask | None) -> str | None:
    """``"top_left"`` / ``"bottom_right"`` when ``mask`` is exactly ``causal(align=...)`` with
    one of those alignments (no valid-length tables); None for anything else."""
    if mask is None or mask.kind != "causal":
        return None
    align = mask.align
    if align.kind in ("top_left", "bottom_right") and align.q_lengths is None and (
        align.k_lengths is None
    ):
        return align.kind
    return None


def conjuncts(mask: Mask | None) -> tuple:
    """The parts of a top-level ``&`` (the mask itself when it is not one)."""
    if mask is None:
        return ()
    return tuple(mask.masks) if mask.kind == "and" else (mask,)


def reduced_keep(keep: np.ndarray) -> np.ndarray:
    """``keep`` (B, H, Tq, Tk) with the batch and head axes cut to 1 where the mask does not
    vary along them (the backend then broadcasts it: its own feature, exercised)."""
    if keep.shape[0] > 1 and (keep == keep[:1]).all():
        keep = keep[:1]
    if keep.shape[1] > 1 and (keep == keep[:, :1]).all():
        keep = keep[:, :1]
    return np.ascontiguousarray(keep)


def alibi_tensor(case: Case, dtype_name: str, device: str = "cpu") -> torch.Tensor:
    """The case's ALiBi bias (B, Hq, Tq, Tk) as a torch tensor in the case dtype on ``device``,
    computed by refmask's :meth:`Alibi.bias` on the torch namespace (slope times distance
    rounded once, on the CPU; the move to the device is exact)."""
    import array_api_compat.torch as xp

    return case.alibi.bias(case.batch, case.q_heads, case.q_len, case.k_len, xp=xp,
                           dtype=torch_dtype(dtype_name)).to(device)


# --- running with autograd ---------------------------------------------------------------

def run_autograd(case: Case, inputs: dict, grads: bool, forward: Callable, *, device: str = "cpu",
                 context: Callable = nullcontext) -> Output:
    """Convert the inputs (onto ``device``), call ``forward(q, k, v, bias)`` and (with
    ``grads``) backpropagate the case's ``d_out`` with torch autograd, both inside
    ``context()`` (e.g. an ``sdpa_kernel`` backend selection).

    q, k, v are passed in BHTD (views of the case-layout leaves); ``bias`` is the (B, Hq, Tq,
    Tk) tensor of a ``bias=True`` case, else None. ``forward`` returns ``(out, lse)``: out
    (B, Hq, Tq, Dv) tensor, lse (B, Hq, Tq) tensor or None. Gradients are taken with respect
    to the leaves, so dq/dk/dv (BHTD) and dbias are the true ones whatever the adapter did in
    between (projections, reshapes, transposes).
    """
    import torch

    dtype = case.dtype
    leaves = {name: to_torch(inputs[name], dtype, device) for name in ("q", "k", "v")}
    if "bias" in inputs:
        leaves["bias"] = to_torch(inputs["bias"], dtype, device)
    if grads:
        for tensor in leaves.values():
            tensor.requires_grad_(True)
    with quiet(), context(), torch.set_grad_enabled(grads):
        out, lse = forward(to_bhtd(case, leaves["q"]), to_bhtd(case, leaves["k"]),
                           to_bhtd(case, leaves["v"]), leaves.get("bias"))
    gradients = None
    if grads:
        d_out = to_bhtd(case, to_torch(inputs["d_out"], dtype, device))
        names = list(leaves)
        with quiet(), context():
            values = torch.autograd.grad(out, [leaves[n] for n in names], grad_outputs=d_out,
                                         allow_unused=True)
        gradients = {}
        for name, value in zip(names, values, strict=True):
            if value is None:
                value = torch.zeros_like(leaves[name])
            key = "d" + name
            gradients[key] = to_numpy(to_bhtd(case, value) if name in ("q", "k", "v") else value)
    lse_out = None if lse is None else to_numpy(lse)
    return Output(out=to_numpy(out), lse=lse_out, grads=gradients)

