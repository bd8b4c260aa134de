"""One judging configuration for every way in: CLI, pytest plugin, fixture, fuzz, Python API.

    judging = Judging(dtypes=("bfloat16",), grads=True, framework="torch")
    report = refmask.conformance.check("my_kernels:attention", judging=judging)

A :class:`Judging` says *which* cases run (dtypes, filter, corpus), *against what* (the exact
golden values of the shipped corpus, or of ``corpus``), *how* a user function is called
(framework, device, a hand-written backward) and *how divergences are judged* (grads,
allow_policy). Every entry point builds one and hands it to the runner, so the same function
gets the same verdicts everywhere.

The verdict rule for an output that misses the golden value but matches a named convention
(``runner._explain``): ``policy`` when the backend declares that convention (its
:class:`~refmask.adapters.Profile`; a user function's ``refmask_conventions``) or it is in
``allow_policy``; otherwise ``fail``, naming the convention. A composed convention ("causal=
top_left + empty_rows=uniform") needs each part declared or allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .cases import DTYPES, Case

#: Per-case time limit (seconds) of the backend's call (``Judging.timeout``, ``refmask check
#: --timeout``): far above what any catalog or sweep case takes on a naive NumPy implementation
#: (well under a second for the catalog), short enough that a hung kernel cannot stall a run.
DEFAULT_CASE_TIMEOUT = 300.0


def _check_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            0 < timeout < float("inf")):
        raise ValueError(f"check: timeout (--timeout) must be a finite number of seconds > 0 "
                         f"or None, got {timeout!r}")
    return float(timeout)


def _names(where: str, value, *, allowed: Iterable[str] | None = None) -> tuple | None:
    """A comma-separated string or an iterable of strings -> a tuple (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str) and not isinstance(value, Iterable):
        raise TypeError(f"{where} must be a comma-separated string or a list of strings, got "
                        f"{type(value).__name__}")
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"{where} must hold strings, got {items!r:.80}")
    names = tuple(part.strip() for item in items for part in item.split(",") if part.strip())
    if allowed is not None:
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ValueError(f"{where} must be among {list(allowed)}, got {bad}")
    return names


def _known_conventions(adapter):
    """``adapter``, after checking that every convention it declares is one the runner knows
    (a misspelt declaration would otherwise excuse nothing, silently)."""
    known = set(policy_names())
    unknown = sorted(set(adapter.profile.conventions) - known)
    if unknown:
        raise ValueError(f"{adapter.name} declares unknown conventions {unknown}; known: "
                         f"{sorted(known)}")
    return adapter


def policy_names() -> tuple:
    """Every named convention (kind "policy") the runner can recognise."""
    from .explanations import explanations

    return tuple(e.name for e in explanations() if e.kind == "policy" and " + " not in e.name)


@dataclass(frozen=True)
class Judging:
    """How a run is judged (see the module docstring). Every field has one meaning everywhere.

    dtypes: case dtypes to run (None: all of :data:`~.cases.DTYPES`); a comma-separated string
      or an iterable.
    filter: comma-separated texts; a case runs when one of them occurs in its id, equals one
      of its flags, or equals its family ("sliding_window" selects the ``window/...`` cases).
    grads: also judge dq, dk, dv (and dbias, dsinks where the case has them).
    allow_policy: convention names accepted as ``policy`` even when the backend does not
      declare them (e.g. "empty_rows=nan").
    corpus: a golden corpus directory: run exactly its cases against its stored values
      (None: the catalog against the shipped exact corpus).
    framework, device, backward: how a user function is called (None: what the function
      declares, else "numpy" on "cpu" through autograd where there is one); backward is a
      callable or "module:function".
    timeout: seconds the backend's call may take per case (None: no limit, run in the
      caller's thread); over it the case fails.
    trust: modules whose functions the predicate masks of :attr:`corpus` may import.
    """

    dtypes: tuple | None = None
    filter: str | None = None
    grads: bool = False
    allow_policy: frozenset = field(default_factory=frozenset)
    corpus: str | None = None
    framework: str | None = None
    device: str | None = None
    backward: object = None
    timeout: float | None = DEFAULT_CASE_TIMEOUT
    trust: tuple = ()

    def __post_init__(self):
        if isinstance(self.trust, str):
            raise TypeError(f"trust must be a list of module names, got {self.trust!r}")
        object.__setattr__(self, "trust", tuple(self.trust))
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        object.__setattr__(self, "dtypes", _names("dtypes (--dtype)", self.dtypes,
                                                  allowed=DTYPES))
        if self.dtypes == ():
            raise ValueError("dtypes (--dtype): name at least one dtype")
        if self.filter is not None and not isinstance(self.filter, str):
            object.__setattr__(self, "filter", ",".join(_names("filter", self.filter)))
        allowed = _names("allow_policy", self.allow_policy or ()) or ()
        known = policy_names()
        unknown = [a for a in allowed if a not in known]
        if unknown:
            raise ValueError(f"allow_policy (--allow-policy): unknown convention {unknown}; "
                             f"known: {list(known)}")
        object.__setattr__(self, "allow_policy", frozenset(allowed))
        if not isinstance(self.grads, bool):
            raise TypeError(f"grads must be True or False, got {self.grads!r}")
        if self.framework is not None or self.device is not None:
            from refmask.adapters.native import check_target

            check_target(self.framework or "numpy", self.device or "cpu", where="Judging")

    def replace(self, **changes) -> Judging:
        return replace(self, **changes)

    # --- which cases ------------------------------------------------------------------------

    def cases(self, source: Iterable[Case] | None = None) -> list[Case]:
        """The cases this judging runs: ``source`` (default: the corpus's cases, or the
        catalog) restricted to :attr:`dtypes` and :attr:`filter`."""
        if source is None and self.corpus is not None:
            source = self._corpus_cases()
        from .runner import select_cases

        return select_cases(source, dtypes=self.dtypes, filter=self.filter)

    def _corpus_cases(self) -> list[Case]:
        from .golden import case_from_json, load

        loaded = load(self.corpus)
        return [case_from_json(loaded.manifest_entry(i)["case"], trust=self.trust)
                for i in loaded]

    # --- against what -----------------------------------------------------------------------

    def golden(self) -> Callable:
        """``golden(case, inputs, grads) -> dict``: the stored exact values of the corpus
        (shipped, or :attr:`corpus`), the float64 reference for cases it does not hold."""
        from .runner import corpus_golden, shipped_golden

        if self.corpus is None:
            return shipped_golden()
        from .golden import load

        return corpus_golden(load(self.corpus))

    # --- whom -------------------------------------------------------------------------------

    def adapter(self, target):
        """The adapter for a backend name, "module:function", an Adapter or a function; a user
        function is called in :attr:`framework` on :attr:`device` with :attr:`backward`."""
        from refmask.adapters import Adapter
        from refmask.adapters import load as load_adapter

        if isinstance(target, Adapter):
            if self._user_options():
                raise ValueError(f"framework/device/backward apply to user functions; "
                                 f"{target.name} is an adapter")
            return _known_conventions(target)
        if isinstance(target, str) and ":" not in target:
            if self._user_options():
                raise ValueError(f"framework/device/backward apply to user functions "
                                 f"(--impl); {target!r} is a backend")
            return _known_conventions(load_adapter(target))
        return _known_conventions(self._user_adapter(target))

    def _user_adapter(self, target):
        from refmask.adapters.user import from_function, import_target

        name = target if isinstance(target, str) else None
        function = import_target(target) if isinstance(target, str) else target
        if not callable(function):
            raise TypeError(f"check: target must be a backend name, 'module:function', an "
                            f"Adapter or a function, got {type(target).__name__}")
        backward = self.backward
        if isinstance(backward, str):
            backward = import_target(backward, "--backward")
        adapter = from_function(function, name=name, framework=self.framework,
                                device=self.device, backward=backward)
        if self.grads and not adapter.profile.backward:  # a usage error, said at once
            raise ValueError(
                f"--grads: {adapter.name} runs in {adapter.run.framework}, which has no "
                "autograd; give it a hand-written backward (fn.refmask_backward = backward, or "
                "--backward module:function) or call it in torch or jax (--framework)")
        return adapter

    def _user_options(self) -> bool:
        return any(x is not None for x in (self.framework, self.device, self.backward))

    # --- how --------------------------------------------------------------------------------

    def accepts(self, convention: str, declared: Iterable[str]) -> bool:
        """Whether a divergence matching ``convention`` (a policy name, possibly composed with
        " + ") is ``policy``: each part declared by the backend or allowed here."""
        accepted = set(declared) | set(self.allow_policy)
        return all(part in accepted for part in convention.split(" + "))

    def grads_unavailable(self, adapter) -> str | None:
        """Why gradients cannot be judged for ``adapter`` (None when they can or are not
        asked for)."""
        if self.grads and not adapter.profile.backward:
            notes = adapter.profile.notes or "Profile.backward is False"
            return f"--grads: {adapter.name} has no backward pass ({notes})"
        return None

    def to_json(self) -> dict:
        return {"dtypes": list(self.dtypes) if self.dtypes else None, "filter": self.filter,
                "grads": self.grads, "allow_policy": sorted(self.allow_policy),
                "corpus": self.corpus, "framework": self.framework, "device": self.device,
                "timeout": self.timeout, "trust": list(self.trust),
                "backward": self.backward if isinstance(self.backward, str | None) else
                getattr(self.backward, "__qualname__", repr(self.backward))}


__all__ = ["DEFAULT_CASE_TIMEOUT", "Judging", "policy_names"]
