"""JAX adapters: ``jax.dpa`` (``jax.nn.dot_product_attention``) and ``flax.mask`` (Flax's mask
builders feeding it). jax and flax are imported only when an adapter runs."""

from .dpa import ADAPTER as DPA
from .flax_masks import ADAPTER as FLAX_MASK

ADAPTERS = (DPA, FLAX_MASK)

__all__ = ["ADAPTERS"]
