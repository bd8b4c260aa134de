"""Argument checks shared by every public function.

Each helper raises ``ValueError`` (or ``TypeError`` for a wrong kind of value) with a
message that names the argument and the rule it broke, e.g.
``sliding_window: left must be an int >= 0 or None, got -1``.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_int(where: str, name: str, value, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, rejecting bools, floats and values below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value}")
    return value


def check_optional_int(where: str, name: str, value, *, minimum: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` passes through (it means 'unbounded')."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{where}: {name} must be an int >= {minimum} or None, got {value!r} "
            f"({type(value).__name__})"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum} or None, got {value}")
    return value


def check_int_vector(where: str, name: str, values, *, minimum: int | None = None) -> tuple:
    """Return a 1-D sequence of ints as a tuple, rejecting bools, floats and short values."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D (one entry per batch), got shape "
                         f"{array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {array.dtype}")
    if minimum is not None and array.size and array.min() < minimum:
        bad = int(np.argmin(array))
        raise ValueError(f"{where}: {name}[{bad}] must be >= {minimum}, got {int(array[bad])}")
    return tuple(int(x) for x in array)


def check_int_matrix(where: str, name: str, values) -> tuple:
    """Return a 2-D (B, T) integer array as a tuple of tuples."""
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{where}: {name} must have shape (B, T), got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {array.dtype}")
    return tuple(tuple(int(x) for x in row) for row in array)


def check_bool_array(where: str, name: str, values) -> np.ndarray:
    """Return a read-only NumPy bool copy; anything that is not bool is refused, not cast."""
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{where}: {name} must be a bool array (True = attend), got dtype {array.dtype}; "
            "convert additive or integer masks explicitly with refmask.convert"
        )
    array = np.array(array, dtype=bool, copy=True)
    array.setflags(write=False)
    return array


def check_choice(where: str, name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {sorted(choices)}, got {value!r}")
    return value
