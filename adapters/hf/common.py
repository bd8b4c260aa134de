"""What the transformers adapter shares: availability and the minimal model config that
``transformers.masking_utils`` reads.

Read from transformers 5.23.0 (src/transformers/masking_utils.py, utils/generic.py): the
``create_*_mask`` functions read only these config attributes:

* ``_attn_implementation`` -- the key of ``ALL_MASK_ATTENTION_FUNCTIONS`` ("sdpa" gives a
  bool (B, 1, Tq, Tk) mask, True = attend; "eager" the same as 0 / finfo.min) and of
  ``is_flash_attention_requested``;
* ``is_causal`` (``getattr(config, "is_causal", True)``; False turns the causal builders into
  their bidirectional twins);
* ``sliding_window`` (create_sliding_window_causal_mask, create_bidirectional_sliding_window_mask);
* ``attention_chunk_size`` (create_chunked_causal_mask).

A ``types.SimpleNamespace`` with those attributes is therefore a complete config.
"""

from __future__ import annotations

from types import SimpleNamespace

INSTALL_HINT = "pip install 'refmask[hf]'"


def unavailable() -> str | None:
    """Why transformers' masking_utils cannot run here, or None."""
    try:
        import torch  # noqa: F401
        from transformers import masking_utils  # noqa: F401
    except ImportError as error:
        return f"transformers (with torch) is not installed ({INSTALL_HINT}): {error}"
    return None


def mask_config(*, sliding_window: int | None = None, chunk_size: int | None = None,
                is_causal: bool = True) -> SimpleNamespace:
    """The minimal config of ``masking_utils`` (see the module docstring), SDPA masks."""
    return SimpleNamespace(_attn_implementation="sdpa", is_causal=is_causal,
                           sliding_window=sliding_window, attention_chunk_size=chunk_size)
