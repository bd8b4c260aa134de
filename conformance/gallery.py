"""The mask gallery: one named example per primitive, with its rule, shown as a picture.

It is what ``refmask gallery`` prints and what the spec's worked examples are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refmask import masks as m


@dataclass(frozen=True)
class GalleryEntry:
    name: str
    rule: str
    mask: m.Mask
    q_len: int
    k_len: int
    batch: int = 1


def gallery() -> list[GalleryEntry]:
    """The examples, in the order of docs/spec.md."""
    articles_dynamic = np.array([[0] * 5] + [[1] * 5] * 4, dtype=bool)
    return [
        GalleryEntry("full", "keep all", m.full(), 4, 6),
        GalleryEntry("causal, top-left (SDPA is_causal, JAX, Keras)", "pk <= pq, offset 0",
                     m.causal(align="top_left"), 4, 6),
        GalleryEntry("causal, bottom-right (FlashAttention >= 2.1, xformers *FromBottomRight)",
                     "pk <= pq, offset Tk - Tq", m.causal(align="bottom_right"), 4, 6),
        GalleryEntry("causal, bottom-right, Tq > Tk: empty rows", "pk <= pq, offset Tk - Tq",
                     m.causal(align="bottom_right"), 6, 4),
        GalleryEntry("sliding window of 3 keys incl. self = FA (2, 0) = HF W=3",
                     "pq - 2 <= pk <= pq", m.sliding_window(2, 0, align="top_left"), 6, 6),
        GalleryEntry("sliding window (1, 1), bidirectional", "pq - 1 <= pk <= pq + 1",
                     m.sliding_window(1, 1, align="top_left"), 6, 6),
        GalleryEntry("chunked (Llama 4) with causal", "floor(pq/3) == floor(pk/3) and pk <= pq",
                     m.chunked(3, align="top_left") & m.causal(align="top_left"), 6, 6),
        GalleryEntry("block-causal: sub-sequences of length 2 exposed progressively",
                     "floor(pk/2) <= floor(pq/2)", m.block_causal(2, align="top_left"), 6, 6),
        GalleryEntry("prefix-LM, prefix 3", "pk < 3 or pk <= pq",
                     m.prefix_lm(3, align="top_left"), 6, 6),
        GalleryEntry("documents (packed: lengths 2, 3, 1) with causal",
                     "seg_q[i] == seg_k[j] and pk <= pq",
                     m.documents_from_cu_seqlens([0, 2, 5, 6]) & m.causal(align="top_left"),
                     6, 6),
        GalleryEntry("key padding, 4 valid keys, right-padded", "j < 4",
                     m.key_padding(4, side="right"), 3, 6),
        GalleryEntry("query padding, 2 valid queries, left-padded: empty rows", "i >= Tq - 2",
                     m.query_padding(2, side="left"), 4, 6),
        GalleryEntry("strided 2 with causal (Sparse Transformer)", "(pq - pk) mod 2 == 0",
                     m.strided(2, align="top_left") & m.causal(align="top_left"), 6, 6),
        GalleryEntry("global tokens {0} with a (1, 1) window (Longformer)",
                     "pk in G or pq in G or |pq - pk| <= 1",
                     m.global_tokens([0], align="top_left")
                     | m.sliding_window(1, 1, align="top_left"), 6, 6),
        GalleryEntry("articles' static mask: triu(ones(5,5), 1) are the masked positions",
                     "keep = not triu(ones, 1) = causal", m.causal(align="top_left"), 5, 5),
        GalleryEntry("articles' dynamic mask: the first row keeps nothing (an empty row)",
                     "explicit bool array", m.explicit(articles_dynamic), 5, 5),
    ]
