"""Hugging Face transformers adapter: ``hf.masks`` (the masks of ``masking_utils``, judged
through refmask's own attention). transformers and torch are imported only when it runs."""

from .masks import ADAPTER as MASKS

ADAPTERS = (MASKS,)

__all__ = ["ADAPTERS"]
