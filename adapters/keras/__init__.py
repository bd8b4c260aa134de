"""Keras 3 adapters on the TensorFlow backend: ``keras.mha`` (``keras.layers.MultiHeadAttention``
with identity projections) and ``keras.dpa`` (``keras.ops.dot_product_attention``). Keras and
TensorFlow are imported only when an adapter runs."""

from .dpa import ADAPTER as DPA
from .mha import ADAPTER as MHA

ADAPTERS = (MHA, DPA)

__all__ = ["ADAPTERS"]
