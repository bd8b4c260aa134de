"""xformers adapters: ``xformers.attn_bias`` (attn_bias.py), the meaning of xformers'
attention-bias classes checked on the CPU; imported lazily, like every backend."""

from __future__ import annotations

from .attn_bias import ADAPTERS

__all__ = ["ADAPTERS"]
