"""BLAS used by the Numba kernels: availability, and single-threaded calls while tiles run.

Numba's ``np.dot`` calls the ``dgemm`` of ``scipy.linalg.cython_blas``. SciPy's bundled
OpenBLAS multi-threads every product above m * n * k = 262144 (a 128 x 256 x 64 tile is
above it); called from several worker threads at once, those products oversubscribe the
cores and run 30 to 100 times slower (measured: 0.3 GFLOP/s instead of 40). The tile
kernels therefore run with that OpenBLAS set to one thread: parallelism comes from the
worker threads, one tile product per thread.

OpenBLAS's thread count is process-wide (``openblas_set_num_threads_local`` is global too in
SciPy's pthreads build), so :func:`single_threaded_blas` sets it to 1 for the duration of a
fast-path call and restores the previous value when the last concurrent call leaves. NumPy's
own OpenBLAS is a different library and is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import threading

#: Thread-count setters/getters of the OpenBLAS builds SciPy ships or links, in trial order.
_SETTERS = (("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))

# One process-wide resource needs one lock and a count of the calls holding it.
_LOCK = threading.Lock()
_HOLDERS = {"count": 0, "previous": None}


def blas_unavailable() -> str | None:
    """Why Numba cannot call BLAS here (None when it can)."""
    if importlib.util.find_spec("scipy") is None:
        return ("SciPy is not installed: Numba calls BLAS (np.dot on tiles) through "
                "scipy.linalg.cython_blas (pip install scipy)")
    return None


@functools.cache
def _openblas_controls():
    """(set, get) ctypes functions of the OpenBLAS behind scipy.linalg.cython_blas, or None.

    Looked up once per process among the loaded shared libraries (Linux /proc/self/maps);
    other platforms and non-OpenBLAS builds (MKL, Accelerate) get None: their products then
    run with the library's own threading.
    """
    import scipy.linalg.cython_blas  # noqa: F401 - loads the library whose symbols we need

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        if "scipy" not in path:
            continue
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SETTERS:
            setter = getattr(library, set_name, None)
            getter = getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with SciPy's OpenBLAS on one thread; restore it when the last holder
    leaves (safe for concurrent fast-path calls from several Python threads)."""
    controls = _openblas_controls()
    if controls is None:
        yield
        return
    setter, getter = controls
    with _LOCK:
        if _HOLDERS["count"] == 0:
            _HOLDERS["previous"] = int(getter())
            setter(1)
        _HOLDERS["count"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _HOLDERS["count"] -= 1
            if _HOLDERS["count"] == 0:
                setter(_HOLDERS["previous"])
