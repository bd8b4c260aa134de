"""The mask algebra: primitives, combinators, alignment and block classification.

Every mask answers ``keep(b, h, i, j)`` (True = attend) on positions ``pq = i + offset(b)``,
``pk = j``; see ``docs/spec.md`` for the normative formulas and :mod:`.alignment` for offsets.
"""

from ._base import Block, Mask
from .alignment import Alignment, as_alignment, bottom_right
from .block_causal import block_causal
from .causal import causal
from .chunked import chunked
from .combine import all_of, any_of
from .documents import documents, documents_from_cu_seqlens, documents_from_position_ids
from .explicit import explicit
from .full import full
from .global_tokens import global_tokens
from .padding import key_padding, query_padding
from .predicate import predicate
from .prefix_lm import prefix_lm
from .select import per_batch, per_head
from .serialize import from_json
from .sliding_window import sliding_window
from .strided import strided
from .tree import ancestor_matrix, parents_from_ancestors, tree
from .varlen import (
    SequenceLayout,
    gappy_keys_layout,
    padded_keys_layout,
    paged_layout,
    varlen,
    varlen_layout,
)

__all__ = [
    "Alignment",
    "Block",
    "Mask",
    "SequenceLayout",
    "all_of",
    "ancestor_matrix",
    "any_of",
    "as_alignment",
    "block_causal",
    "bottom_right",
    "causal",
    "chunked",
    "documents",
    "documents_from_cu_seqlens",
    "documents_from_position_ids",
    "explicit",
    "from_json",
    "full",
    "gappy_keys_layout",
    "global_tokens",
    "key_padding",
    "padded_keys_layout",
    "paged_layout",
    "parents_from_ancestors",
    "per_batch",
    "per_head",
    "predicate",
    "prefix_lm",
    "query_padding",
    "sliding_window",
    "strided",
    "tree",
    "varlen",
    "varlen_layout",
]
