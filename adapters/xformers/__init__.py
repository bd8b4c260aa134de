"""xformers adapters: ``xformers.attn_bias`` (attn_bias.py), the meaning of xformers'
attention-bias classes checked on the CPU; imported lazily, like every backend. paged.py
converts paged varlen masks to and from the ``PagedBlockDiagonal*`` bias objects."""

from __future__ import annotations

from .attn_bias import ADAPTERS

__all__ = ["ADAPTERS"]
