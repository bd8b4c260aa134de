"""Type aliases used in refmask's annotations.

refmask computes on arrays of any array-API namespace (NumPy, CuPy, torch, JAX,
``array_api_strict``) without importing a framework, so there is no one class to name:
``Array`` documents "an array of some array-API namespace" and is ``Any`` to a type checker.
Functions that take only NumPy input use :data:`numpy.typing.ArrayLike` instead.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Array: TypeAlias = Any
"""An array of any array-API namespace (NumPy, CuPy, torch, JAX, ``array_api_strict``)."""
Namespace: TypeAlias = Any
"""An array-API namespace module, as returned by ``array_api_compat.array_namespace``."""
DType: TypeAlias = Any
"""A dtype of some array namespace (NumPy dtypes include ml_dtypes' bfloat16)."""
Device: TypeAlias = Any
"""A device of some array namespace (``None`` = the namespace's default)."""
