"""Argument checks shared by every public function.

Each helper raises ``ValueError`` (or ``TypeError`` for a wrong kind of value) with a
message that names the argument and the rule it broke, e.g.
``sliding_window: left must be an int >= 0 or None, got -1``.

Integer bounds (docs/spec.md section 4): every integer that enters position arithmetic
(lengths, offsets, window bounds, sizes, strides, prefixes, positions, indices) must lie in
``[-INDEX_LIMIT, INDEX_LIMIT]`` with ``INDEX_LIMIT = 2**60``, so that sums and differences of
a few of them never leave int64; segment ids, which are only compared, must fit int64.
Floats, bools and other non-integers are never cast to indices.
"""

from __future__ import annotations

import numbers

import numpy as np

#: Largest magnitude of an integer that enters position arithmetic (see the module docstring).
INDEX_LIMIT = 2**60
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _bounds(minimum: int | None, maximum: int | None) -> tuple[int, int]:
    low = -INDEX_LIMIT if minimum is None else max(minimum, -INDEX_LIMIT)
    high = INDEX_LIMIT if maximum is None else min(maximum, INDEX_LIMIT)
    return low, high


def _range_text(low: int, high: int) -> str:
    def shown(value):
        return {INDEX_LIMIT: "2**60", -INDEX_LIMIT: "-2**60"}.get(value, str(value))

    return f">= {low}" if high == INDEX_LIMIT and low >= 0 else f"in [{shown(low)}, {shown(high)}]"


def check_int(where: str, name: str, value, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as a Python int, rejecting bools, floats and values outside
    ``[minimum, maximum]`` (each clipped to the INDEX_LIMIT range)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r:.80} "
                        f"({type(value).__name__})")
    value = int(value)
    low, high = _bounds(minimum, maximum)
    if not low <= value <= high:
        raise ValueError(f"{where}: {name} must be an int {_range_text(low, high)}, got "
                         f"{value}")
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
    low, high = _bounds(minimum, None)
    if not low <= value <= high:
        raise ValueError(f"{where}: {name} must be an int {_range_text(low, high)} or None, "
                         f"got {value}")
    return value


def _integer_array(where: str, name: str, values) -> np.ndarray:
    """``values`` as a NumPy array of Python-int-exact integers; bools, floats, strings,
    ragged or nested-object input are refused (never cast)."""
    if isinstance(values, (str, bytes, dict, set)) or values is None:
        raise TypeError(f"{where}: {name} must be a sequence of ints, got "
                        f"{type(values).__name__}")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{where}: {name} must be a rectangular array of ints ({error})") from None
    if array.dtype == object:  # Python ints beyond int64, or a mix of kinds
        flat = array.reshape(-1)
        if not all(isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))
                   for x in flat):
            raise TypeError(f"{where}: {name} must hold integers, got {values!r:.80}")
        if flat.size and not all(INT64_MIN <= int(x) <= INT64_MAX for x in flat):
            raise ValueError(f"{where}: {name} holds an integer outside int64, got "
                             f"{values!r:.80}")
        array = array.astype(np.int64)
    if array.size and (array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and int(array.max()) > INT64_MAX:
        raise ValueError(f"{where}: {name} holds an integer outside int64, got "
                         f"{int(array.max())}")
    return array


def _check_array_bounds(where: str, name: str, array: np.ndarray, low: int, high: int) -> None:
    if not array.size:
        return
    small, large = int(array.min()), int(array.max())
    if small < low or large > high:
        bad = np.unravel_index(int(np.argmin(array) if small < low else np.argmax(array)),
                               array.shape)
        index = ", ".join(str(int(n)) for n in bad)
        raise ValueError(f"{where}: {name}[{index}] must be {_range_text(low, high)}, got "
                         f"{int(array[bad])}")


def check_int_vector(where: str, name: str, values, *, minimum: int | None = None) -> tuple:
    """Return a 1-D sequence of ints as a tuple, rejecting bools, floats and values outside
    ``[minimum, INDEX_LIMIT]``."""
    array = _integer_array(where, name, values)
    if array.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D (one entry per batch), got shape "
                         f"{array.shape}")
    _check_array_bounds(where, name, array, *_bounds(minimum, None))
    return tuple(int(x) for x in array)


def check_int_matrix(where: str, name: str, values) -> tuple:
    """Return a 2-D (B, T) integer array (each entry within int64) as a tuple of tuples."""
    array = _integer_array(where, name, values)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{where}: {name} must have shape (B, T), got shape {array.shape}")
    return tuple(tuple(int(x) for x in row) for row in array)


def check_index_array(where: str, name: str, value):
    """An index argument (int or integer array of any array-API namespace) as given;
    bools, floats and other kinds are refused instead of being cast to int64."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be an int or an integer array, got {value!r}")
    if isinstance(value, numbers.Integral):
        return check_int(where, name, value)
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        value = _integer_array(where, name, value)
        dtype = value.dtype
    kind = getattr(dtype, "kind", None)
    if kind is None:  # torch / other namespaces: ask the array API
        import array_api_compat

        xp = array_api_compat.array_namespace(value)
        ok = xp.isdtype(dtype, "integral")
    else:
        ok = kind in "iu"
    if not ok:
        raise TypeError(f"{where}: {name} must be an int or an integer array, got dtype {dtype}")
    return value


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
    try:
        known = any(isinstance(value, type(choice)) and bool(value == choice)
                    for choice in choices)
    except (TypeError, ValueError):  # e.g. an array compared elementwise
        known = False
    if not known:
        raise ValueError(f"{where}: {name} must be one of {sorted(choices)}, got {value!r:.80}")
    return value
