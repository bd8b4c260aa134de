"""PyTorch adapters: SDPA, nn.MultiheadAttention and FlexAttention, each in its native
mask features: ``torch.sdpa``, ``torch.sdpa.is_causal`` (sdpa.py), ``torch.mha``,
``torch.mha.need_weights``, ``torch.mha.fastpath`` (mha.py), ``torch.flex`` (flex.py);
shared helpers in common.py.

torch is imported lazily inside the adapters; without it they report
"torch is not installed (pip install 'refmask[torch]')".
"""

from __future__ import annotations

from .flex import ADAPTERS as _FLEX
from .mha import ADAPTERS as _MHA
from .sdpa import ADAPTERS as _SDPA

ADAPTERS = _SDPA + _MHA + _FLEX

__all__ = ["ADAPTERS"]
