"""What every adapter shares: its declared profile, its output, and the way it says no.

An adapter translates a conformance case into one backend's *native* features, calls the
backend, and returns plain NumPy arrays. It never judges: the runner compares its output with
the golden values. Every backend module exposes the same names (``ADAPTERS``, a tuple of
:class:`Adapter`), so ``refmask.adapters.load(name)`` treats them alike.
"""

from .adapter import Adapter, Output, Profile, Unsupported

__all__ = ["Adapter", "Output", "Profile", "Unsupported"]
