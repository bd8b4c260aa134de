"""Argument checks shared by every public function of refmask (the only copy).

Each helper raises ``TypeError`` for a wrong kind of value and ``ValueError`` for a value that
breaks a rule, with a message that starts with the public function (``where``), names the
argument and states the rule, e.g.
``sliding_window: left must be an int >= 0 or None, got -1``.
Helpers return the value normalised (a Python int, a float, an int64 array, ...), never a
silently cast or clipped one.

Integer bounds (docs/spec.md section 4): an integer that enters position arithmetic (lengths,
offsets, window bounds, sizes, strides, prefixes, positions, indices) must lie in
``[-INDEX_LIMIT, INDEX_LIMIT]`` with ``INDEX_LIMIT = 2**60`` unless the caller states its own
bound (e.g. a seed < 2**64), so that sums and differences of a few of them never leave int64;
integer arrays (segment ids, which are only compared) must fit int64. Floats, bools, strings
and other non-integers are never cast to integers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Largest magnitude of an integer that enters position arithmetic (see the module docstring).
INDEX_LIMIT = 2**60
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``Integral`` in Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


# -- scalars ------------------------------------------------------------------------------------
def check_int(where: str, name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None, rule: str | None = None) -> int:
    """Return ``value`` as a Python int in ``[minimum, maximum]`` (either bound optional).

    Bools and floats are refused. ``rule`` replaces the default wording of the rule in both
    messages (e.g. ``"an int with 0 <= seed < 2**64"``). A bound left as None is
    ``+-INDEX_LIMIT`` (module docstring).
    """
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be {rule or 'an int'}, got {value!r:.80} "
                        f"({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if rule is None:
            rule = (f"an int >= {minimum}" if maximum is None else
                    f"an int <= {maximum}" if minimum is None else
                    f"an int with {minimum} <= {name} <= {maximum}")
        raise ValueError(f"{where}: {name} must be {rule}, got {value}")
    if (maximum is None and value > INDEX_LIMIT) or (minimum is None and value < -INDEX_LIMIT):
        raise ValueError(f"{where}: {name} must lie in [-2**60, 2**60] (refmask's integer "
                         f"bound, so that positions never overflow int64), got {value}")
    return value


def check_optional_int(where: str, name: str, value: Any, *,
                       minimum: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` passes through (it means 'unbounded')."""
    if value is None:
        return None
    rule = "an int or None" if minimum is None else f"an int >= {minimum} or None"
    return check_int(where, name, value, minimum=minimum, rule=rule)


def check_int_pair(where: str, name: str, value: Any) -> tuple[int, int]:
    """A ``(first, second)`` pair of ints, e.g. a window ``(left, right)``."""
    try:
        first, second = value
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: {name} must be a (left, right) pair of ints, got {value!r}"
                        ) from error
    return (check_int(where, f"{name}[0]", first), check_int(where, f"{name}[1]", second))


def check_rows(where: str, rows: Any, length: int) -> tuple[int, int]:
    """``rows = (start, stop)``, a range of query rows with 0 <= start <= stop <= length."""
    try:
        start, stop = rows
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: rows must be a (start, stop) pair of ints, got {rows!r}"
                        ) from error
    start, stop = check_int(where, "rows[0]", start), check_int(where, "rows[1]", stop)
    if not 0 <= start <= stop <= length:
        raise ValueError(f"{where}: rows must be (start, stop) with 0 <= start <= stop <= "
                         f"Tq = {length}, got {rows!r}")
    return start, stop


def check_real(where: str, name: str, value: Any, *, positive: bool = False,
               optional: bool = False) -> float:
    """A finite real number (``> 0`` when ``positive``) as a Python float; bools refused.

    ``optional`` only changes the wording (``... or None``): the caller handles ``None``.
    """
    rule = ("a finite real number > 0" if positive else "a finite real number") + (
        " or None" if optional else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be {rule}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{where}: {name} must be {rule}, got {value!r}")
    return value


def check_rate(where: str, name: str, value: Any, *, open_low: bool = False) -> float:
    """A probability: a real number in ``[0, 1]`` (``(0, 1]`` when ``open_low``), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a float in [0, 1], got {value!r}")
    value = float(value)
    if not (0.0 <= value <= 1.0) or (open_low and value == 0.0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{where}: {name} must be a float in {interval}, got {value}")
    return value


def check_flag(where: str, name: str, value: Any) -> bool:
    """A bool switch (Python or NumPy bool); 0/1 and None are refused, not read as False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool (True or False), got {value!r}")
    return bool(value)


def check_str(where: str, name: str, value: Any) -> str:
    """A ``str`` (bytes and other objects are refused, not converted)."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a str, got {value!r} ({type(value).__name__})")
    return value


def check_choice(where: str, name: str, value: Any, choices: Any) -> Any:
    """``value`` must be one of ``choices`` (the message lists them sorted); an unhashable or
    array value is refused by the same message, not by a TypeError of ``in``."""
    try:
        known = any(isinstance(value, type(choice)) and bool(value == choice)
                    for choice in choices)
    except (TypeError, ValueError):  # e.g. an array compared elementwise
        known = False
    if not known:
        raise ValueError(f"{where}: {name} must be one of {sorted(choices)}, got {value!r:.80}")
    return value


def check_shape(where: str, name: str, shape: Any) -> tuple[int, ...]:
    """A shape: a non-negative int or a sequence of non-negative ints, as a tuple."""
    items = (shape,) if _is_int(shape) else shape
    rule = "a non-negative int or a sequence of non-negative ints"
    if isinstance(shape, (bool, np.bool_)) or not isinstance(items, (Sequence, np.ndarray)):
        raise TypeError(f"{where}: {name} must be {rule}, got {shape!r}")
    out = []
    for dim in items:
        if not _is_int(dim):
            raise TypeError(f"{where}: {name} must be {rule}, got {shape!r}")
        if int(dim) < 0:
            raise ValueError(f"{where}: {name} must be {rule}, got {shape!r}")
        out.append(int(dim))
    return tuple(out)


# -- dtypes ----------------------------------------------------------------------------------
#: The floating dtypes refmask computes in (docs/spec.md section 3.5); float8 formats, float128
#: and complex dtypes are refused, never cast.
SUPPORTED_FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


def dtype_name(dtype: Any) -> str:
    """"float16" for numpy.float16, torch.float16, jax's and array-api-strict's float16."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


def is_real_floating(xp: Any, dtype: Any) -> bool:
    """True for a floating dtype refmask supports: SUPPORTED_FLOAT_DTYPES.

    ml_dtypes' bfloat16 is not an array-API dtype (``xp.isdtype`` refuses it); it is a NumPy
    void-kind dtype named "bfloat16". Other extension floats (float8_*) are not supported.
    ``xp`` None: ``dtype`` is a NumPy dtype.
    """
    if dtype_name(dtype) not in SUPPORTED_FLOAT_DTYPES:
        return False
    kind = getattr(dtype, "kind", None)
    if kind == "V":
        return dtype_name(dtype) == "bfloat16"
    if xp is None:
        return kind == "f"
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except (TypeError, ValueError):
        return False


def float_dtype_rule(where: str, name: str, dtype: Any) -> str:
    """The message for an unsupported dtype of ``name``."""
    return (f"{where}: {name} must have a real floating dtype "
            f"(supported: {', '.join(SUPPORTED_FLOAT_DTYPES)}), got {dtype}")


# -- arrays -------------------------------------------------------------------------------------
def _require_integer_dtype(where: str, name: str, array: np.ndarray) -> None:
    if array.dtype == np.bool_ or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {array.dtype}")


def _integer_array(where: str, name: str, values: Any) -> np.ndarray:
    """``values`` as a NumPy integer array whose entries fit int64; bools, floats, strings,
    ragged input and Python ints beyond int64 are refused (never cast or wrapped)."""
    if values is None or isinstance(values, (str, bytes, dict, set)):
        raise TypeError(f"{where}: {name} must be a sequence of ints, got "
                        f"{type(values).__name__}")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{where}: {name} must be a rectangular array of ints ({error})"
                         ) from None
    if array.dtype == object:  # Python ints beyond int64, or a mix of kinds
        flat = array.reshape(-1)
        if not all(_is_int(x) for x in flat):
            raise TypeError(f"{where}: {name} must hold integers, got {values!r:.80}")
        if not all(INT64_MIN <= int(x) <= INT64_MAX for x in flat):
            raise ValueError(f"{where}: {name} holds an integer outside int64, got "
                             f"{values!r:.80}")
        array = array.astype(np.int64)
    _require_integer_dtype(where, name, array)
    if array.dtype == np.uint64 and array.size and int(array.max()) > INT64_MAX:
        raise ValueError(f"{where}: {name} holds an integer outside int64, got "
                         f"{int(array.max())}")
    return array


def check_index_array(where: str, name: str, value: Any) -> Any:
    """An index argument: an int (within INDEX_LIMIT) or an integer array of any array-API
    namespace, returned as given; bools, floats and other kinds are refused, never cast."""
    if _is_int(value):
        return check_int(where, name, value)
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return _integer_array(where, name, value)
    kind = getattr(dtype, "kind", None)
    if kind is None:  # torch and other non-NumPy dtypes: ask the array API
        import array_api_compat

        ok = array_api_compat.array_namespace(value).isdtype(dtype, "integral")
    else:
        ok = kind in "iu"
    if not ok:
        raise TypeError(f"{where}: {name} must be an int or an integer array, got dtype {dtype}")
    return value


def check_int_array(where: str, name: str, values: Any, *, ndim: int | None = None) -> np.ndarray:
    """An integer array (bools and floats refused, also when empty of a float dtype; entries
    within int64), as int64; ``ndim`` given: exactly that many dims."""
    array = _integer_array(where, name, values)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{where}: {name} must be {ndim}-D, got shape {array.shape}")
    return array.astype(np.int64)


def check_int_vector(where: str, name: str, values: Any, *,
                     minimum: int | None = None) -> tuple[int, ...]:
    """Return a 1-D sequence of ints (one per batch entry) as a tuple, each >= ``minimum``
    (default -INDEX_LIMIT) and <= INDEX_LIMIT."""
    array = _integer_array(where, name, values)
    if array.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D (one entry per batch), got shape "
                         f"{array.shape}")
    if minimum is not None and array.size and array.min() < minimum:
        bad = int(np.argmin(array))
        raise ValueError(f"{where}: {name}[{bad}] must be >= {minimum}, got {int(array[bad])}")
    if array.size and (int(array.max()) > INDEX_LIMIT or int(array.min()) < -INDEX_LIMIT):
        bad = int(np.argmax(np.abs(array.astype(object))))
        raise ValueError(f"{where}: {name}[{bad}] must lie in [-2**60, 2**60] (refmask's "
                         f"integer bound, so that positions never overflow int64), got "
                         f"{int(array[bad])}")
    return tuple(int(x) for x in array)


def check_int_table(where: str, name: str, values: Any, *,
                    minimum: int | None = None) -> tuple[int, ...]:
    """An int (one value shared by every batch entry) or a 1-D sequence of ints (one per
    batch entry), as a tuple; each within ``[minimum, INDEX_LIMIT]``."""
    if _is_int(values) or (isinstance(values, np.ndarray) and values.ndim == 0):
        values = [values.item() if isinstance(values, np.ndarray) else values]
    return check_int_vector(where, name, values, minimum=minimum)


def check_int_matrix(where: str, name: str, values: Any) -> tuple[tuple[int, ...], ...]:
    """Return a 2-D (B, T) integer array (a 1-D one is read as B = 1; entries within int64) as
    a tuple of tuples."""
    array = _integer_array(where, name, values)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{where}: {name} must have shape (B, T), got shape {array.shape}")
    return tuple(tuple(int(x) for x in row) for row in array)


def check_bool_dtype(where: str, name: str, array: Any, xp: Any = None, *,
                     meaning: str = "attend", hint: str = "") -> None:
    """``array`` (of NumPy, or of array namespace ``xp``) must have a bool dtype.

    meaning: what True stands for, named in the message; hint: a sentence appended to it
    (how to convert what was given). 0/1 integers and float masks are refused, never cast:
    their polarity is a convention refmask does not guess.
    """
    is_bool = array.dtype == (np.bool_ if xp is None else xp.bool)
    if not is_bool:
        raise TypeError(f"{where}: {name} must be a bool array (True = {meaning}), got dtype "
                        f"{array.dtype}" + (f"; {hint}" if hint else ""))


_CONVERT_HINT = "convert additive or integer masks explicitly with refmask.convert"


def check_bool_numpy(where: str, name: str, values: Any, *, min_ndim: int = 0) -> np.ndarray:
    """A NumPy bool array (True = attend) with at least ``min_ndim`` dims (no copy)."""
    array = np.asarray(values)
    check_bool_dtype(where, name, array, hint=_CONVERT_HINT)
    if array.ndim < min_ndim:
        raise ValueError(f"{where}: {name} must have at least {min_ndim} dims, got shape "
                         f"{array.shape}")
    return array


def check_bool_array(where: str, name: str, values: Any) -> np.ndarray:
    """Return a read-only NumPy bool copy; anything that is not bool is refused, not cast."""
    array = np.array(check_bool_numpy(where, name, values), dtype=bool, copy=True)
    array.setflags(write=False)
    return array
