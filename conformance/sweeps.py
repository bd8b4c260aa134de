"""Named sweeps: long-sequence cases that are generated on demand, not shipped.

The shipped corpus (:func:`~refmask.conformance.golden.shipped_corpus_path`) holds the
catalog's small cases with exact (mpmath) golden values. A kernel is also worth judging at the
lengths it is written for -- thousands of keys, windows and chunks of hundreds, many documents
in one packed row -- where the exact engine is far too slow. A *sweep* is a named list of such
cases; ``refmask golden generate DIR --sweep NAME`` writes its corpus with the float64
reference engine (``golden.generate(..., engine="reference")``: ``refmask.attention`` on its
exact path, never ``refmask.fast``; error bound: spec section 3.6) and ``refmask check BACKEND
--corpus DIR`` judges a backend (``refmask.fast`` included) on exactly those cases.

Sweeps (:func:`sweep_names`):

* ``"long"`` -- causal at 512 and 2048 tokens in both alignments (square, wide and tall),
  sliding windows (FlashAttention ``window_size=(255, 0)`` = HF ``sliding_window=256``, and
  attention-gym ``w=256``) at 2048 and at Tq = 128 < Tk = 2048 bottom-right, Llama-4 chunked
  attention (256) with causal, packed documents (``cu_seqlens`` of five lengths) with causal,
  left-padded keys with causal, GQA 8:2, softcap and sinks; B = 1, one or two heads (eight
  query heads for GQA), D = 64; each case in float64, float32 and bfloat16 (float64 first).
  42 cases; about 30 s to generate and 250 MB on disk on a 2-core machine.
* ``"smoke"`` -- three cases of 256 keys (one per dtype), for tests and quick trials.

Case names start with the sweep's name (``long/causal/top_left/2048@float32``), so a sweep
case never shares an id with a catalog case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from refmask import masks as m

from .cases import Case

#: The dtypes of the "long" sweep, float64 first.
LONG_DTYPES = ("float64", "float32", "bfloat16")
_TL, _BR = "top_left", "bottom_right"
_LONG = dict(batch=1, q_heads=1, kv_heads=1, qk_dim=64, v_dim=64)


def _long(name: str, family: str, mask, *, length: int = 2048, **fields) -> Case:
    """A base case of the "long" sweep: B = 1, one head, D = 64, Tq = Tk = ``length`` unless
    ``fields`` say otherwise."""
    shape = dict(_LONG, q_len=length, k_len=length)
    shape.update(fields)
    return Case(name=f"long/{name}", family=family, mask=mask, **shape)


def _long_base() -> list[Case]:
    causal_tl, causal_br = m.causal(align=_TL), m.causal(align=_BR)
    cu_seqlens = [0, 300, 812, 1000, 1536, 2048]
    return [
        # -- causal: both alignments, square / wide / tall
        _long("causal/top_left/512", "causal", causal_tl, length=512, q_heads=2, kv_heads=2),
        _long("causal/top_left/2048", "causal", causal_tl),
        _long("causal/top_left/wide_512x2048", "causal", causal_tl, q_len=512),
        _long("causal/bottom_right/wide_512x2048", "causal", causal_br, q_len=512,
              notes="prefill of 512 tokens after a 1536-token cache"),
        _long("causal/bottom_right/tall_2048x512", "causal", causal_br, k_len=512,
              notes="the first 1536 rows keep nothing (FlashAttention: output 0)"),
        # -- sliding windows
        _long("window/fa_255_0/2048", "sliding_window", m.sliding_window(255, 0, align=_TL),
              extra_flags=("WindowConvention",),
              notes="FA window_size=(255, 0) = HF sliding_window=256 (256 keys incl. self)"),
        _long("window/fa_255_0/bottom_right_128x2048", "sliding_window",
              m.sliding_window(255, 0, align=_BR), q_len=128, q_heads=2, kv_heads=2),
        _long("window/gym_256/bottom_right_128x2048", "sliding_window",
              m.sliding_window(256, 0, align=_BR), q_len=128, extra_flags=("WindowConvention",),
              notes="attention-gym sliding window w=256: q - kv <= 256 = 257 keys"),
        # -- chunked, documents, padding
        _long("chunked/llama4_256/2048", "chunked", m.chunked(256, align=_TL) & causal_tl),
        _long("documents/cu_seqlens_causal/2048", "documents",
              m.documents_from_cu_seqlens(cu_seqlens) & causal_tl,
              notes=f"five packed documents, cu_seqlens = {cu_seqlens}"),
        _long("padding/keys_left_causal/2048", "padding",
              m.key_padding([1792], side="left") & causal_tl,
              notes="256 left-padded keys: the first 256 query rows are empty"),
        # -- heads and score features
        _long("gqa/8_to_2_causal_bottom_right_256x2048", "gqa", causal_br, q_len=256,
              q_heads=8, kv_heads=2),
        _long("softcap/causal/2048", "softcap", causal_tl, softcap=20.0, input_scale=4.0,
              notes="scores up to ~60 before a softcap of 20 (applied before the mask)"),
        _long("sinks/window_127_0/bottom_right_512x2048", "sinks",
              m.sliding_window(127, 0, align=_BR), sinks=True, q_len=512, q_heads=2,
              kv_heads=2, notes="gpt-oss style: a 128-key window plus a per-head sink"),
    ]


def _long_sweep() -> list[Case]:
    base = _long_base()
    return [replace(case, dtype=dtype) for dtype in LONG_DTYPES for case in base]


def _smoke_sweep() -> list[Case]:
    small = dict(batch=1, qk_dim=64, v_dim=64)
    return [
        Case(name="smoke/causal/top_left/256", family="causal", mask=m.causal(align=_TL),
             q_heads=1, kv_heads=1, q_len=256, k_len=256, **small),
        Case(name="smoke/gqa_window_sinks/bottom_right_64x256", family="combined",
             mask=m.sliding_window(63, 0, align=_BR), q_heads=4, kv_heads=2, q_len=64,
             k_len=256, sinks=True, dtype="float32", **small),
        Case(name="smoke/documents_padding_causal/256", family="documents",
             mask=m.documents_from_cu_seqlens([0, 40, 150, 256]) & m.causal(align=_TL)
             & m.key_padding([224], side="left"),
             q_heads=1, kv_heads=1, q_len=256, k_len=256, dtype="bfloat16", **small),
    ]


_SWEEPS: dict[str, tuple[str, Callable[[], list[Case]]]] = {
    "long": ("long sequences (512-2048 keys), every major mask family, float64/float32/bfloat16",
             _long_sweep),
    "smoke": ("three 256-key cases, one per dtype (tests, quick trials)", _smoke_sweep),
}


def sweep_names() -> tuple:
    """The names of the known sweeps, e.g. ``("long", "smoke")``."""
    return tuple(_SWEEPS)


def describe(name: str) -> str:
    """A one-line description of the sweep ``name``."""
    return _SWEEPS[_checked(name)][0]


def _checked(name) -> str:
    if not isinstance(name, str) or name not in _SWEEPS:
        raise ValueError(f"sweep: unknown sweep {name!r}; known sweeps: {list(_SWEEPS)}")
    return name


def sweep(name: str) -> list[Case]:
    """The cases of the sweep ``name`` (see :func:`sweep_names`), in generation order.

    Raises ValueError naming ``sweep`` for an unknown name.
    """
    cases = _SWEEPS[_checked(name)][1]()
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"sweep: sweep {name!r} repeats the case ids {duplicates}")
    return cases


__all__ = ["LONG_DTYPES", "describe", "sweep", "sweep_names"]
