"""PyTorch adapters: SDPA, nn.MultiheadAttention and FlexAttention, each in its native
mask features: ``torch.sdpa``, ``torch.sdpa.is_causal`` (sdpa.py), ``torch.mha``,
``torch.mha.need_weights``, ``torch.mha.fastpath`` (mha.py), ``torch.flex`` (flex.py); on
CUDA ``torch.sdpa.cuda.{flash,efficient,cudnn,math}`` and ``torch.flex.cuda`` (cuda.py);
shared helpers in common.py.

torch is imported lazily inside the adapters; without it they report
"torch is not installed (pip install 'refmask[torch]')", and the CUDA ones without a CUDA
device "torch has no CUDA device (torch.cuda.is_available() is False)".
"""

from __future__ import annotations

from .cuda import ADAPTERS as _CUDA
from .flex import ADAPTERS as _FLEX
from .mha import ADAPTERS as _MHA
from .sdpa import ADAPTERS as _SDPA

ADAPTERS = _SDPA + _MHA + _FLEX + _CUDA

__all__ = ["ADAPTERS"]
