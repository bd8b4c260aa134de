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
from typing import TYPE_CHECKING, Any

from refmask.case import reference_outputs, to_bhtd

from .cases import DTYPES, Case, catalog

if TYPE_CHECKING:
    from refmask.adapters import Adapter

    from .golden import Corpus

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
    from .scores_judging import SCORE_CONVENTIONS

    return tuple(e.name for e in explanations()
                 if e.kind in ("policy", "empty_rows_only") and " + " not in e.name) + tuple(
        SCORE_CONVENTIONS)


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
    merge: a user function's merge kernel for split-KV cases, a callable
      ``merge(outs, lses, call) -> (out, lse)`` or "module:function" (None: its
      ``refmask_merge`` attribute, else refmask's merge; conformance/split_kv.py).
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
    merge: object = None

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

    def replace(self, **changes: Any) -> Judging:
        return replace(self, **changes)

    # --- which cases ------------------------------------------------------------------------

    def cases(self, source: Iterable[Case] | None = None) -> list[Case]:
        """The cases this judging runs: ``source`` (default: the corpus's cases, or the
        catalog) restricted to :attr:`dtypes` and :attr:`filter`."""
        if source is None and self.corpus is not None:
            source = self._corpus_cases()
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
        if self.corpus is None:
            return shipped_golden()
        from .golden import load

        return corpus_golden(load(self.corpus))

    # --- whom -------------------------------------------------------------------------------

    def adapter(self, target: Any) -> Adapter:
        """The adapter for a backend name, "module:function", an Adapter or a function; a user
        function is called in :attr:`framework` on :attr:`device` with :attr:`backward`."""
        from refmask.adapters import Adapter
        from refmask.adapters import load as load_adapter
        from refmask.adapters.user import UserFunction

        if isinstance(target, Adapter):
            # a user function's adapter built by this judging (the CLI resolves every target
            # before running) already carries the user options
            if self._user_options() and not isinstance(target.run, UserFunction):
                raise ValueError(f"framework/device/backward/merge apply to user functions; "
                                 f"{target.name} is an adapter")
            return _known_conventions(target)
        if isinstance(target, str) and ":" not in target:
            if self._user_options():
                raise ValueError(f"framework/device/backward/merge apply to user functions "
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
        backward, merge = self.backward, self.merge
        if isinstance(backward, str):
            backward = import_target(backward, "--backward")
        if isinstance(merge, str):
            merge = import_target(merge, "--merge")
        adapter = from_function(function, name=name, framework=self.framework,
                                device=self.device, backward=backward, merge=merge)
        if self.grads and not adapter.profile.backward:  # a usage error, said at once
            raise ValueError(
                f"--grads: {adapter.name} runs in {adapter.run.framework}, which has no "
                "autograd; give it a hand-written backward (fn.refmask_backward = backward, or "
                "--backward module:function) or call it in torch or jax (--framework)")
        return adapter

    def _user_options(self) -> bool:
        return any(x is not None for x in (self.framework, self.device, self.backward,
                                           self.merge))

    # --- how --------------------------------------------------------------------------------

    def accepts(self, convention: str, declared: Iterable[str]) -> bool:
        """Whether a divergence matching ``convention`` (a policy name, possibly composed with
        " + ") is ``policy``: each part declared by the backend or allowed here."""
        accepted = set(declared) | set(self.allow_policy)
        return all(part in accepted for part in convention.split(" + "))

    def grads_unavailable(self, adapter: Adapter) -> str | None:
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
                getattr(self.backward, "__qualname__", repr(self.backward)),
                **({} if self.merge is None else {"merge": self.merge if isinstance(
                    self.merge, str) else getattr(self.merge, "__qualname__",
                                                  repr(self.merge))})}


# --- which cases and against what (used by Judging, re-exported by the runner) -------------

def select_cases(cases: Iterable[Case] | None = None, *, dtypes: Iterable[str] | None = None,
                 filter: str | None = None) -> list[Case]:
    """Catalog cases (or the given ones) restricted to ``dtypes`` and to ``filter``:
    comma-separated texts, each matching a case whose id contains it, one of whose flags or
    whose family equals it (``"sliding_window"`` selects the family whose ids start
    ``window/``).

    cases: Case records; dtypes: a list of dtype names (a bare string is refused, not read as
    its characters; unknown names are refused); filter: a string or None."""
    from refmask.case import DTYPES

    where = "check"
    if isinstance(cases, (str, bytes)):
        raise TypeError(f"{where}: cases must be a list of Case records, got a string")
    chosen = list(catalog() if cases is None else cases)
    for index, case in enumerate(chosen):
        if not isinstance(case, Case):
            raise TypeError(f"{where}: cases[{index}] must be a refmask Case, got "
                            f"{type(case).__name__}")
    if dtypes is not None:
        if isinstance(dtypes, (str, bytes)):
            raise TypeError(f"{where}: dtypes must be a list of dtype names, e.g. "
                            f"[{dtypes!r}], got the string {dtypes!r}")
        dtypes = list(dtypes)
        unknown = [d for d in dtypes if not isinstance(d, str) or d not in DTYPES]
        if unknown:
            raise ValueError(f"{where}: dtypes must be among {list(DTYPES)}, got {unknown}")
        chosen = [c for c in chosen if c.dtype in set(dtypes)]
    if filter is not None and not isinstance(filter, str):
        raise TypeError(f"{where}: filter must be a string or None, got {type(filter).__name__}")
    if filter:
        parts = [p.strip() for p in filter.split(",") if p.strip()]
        chosen = [c for c in chosen
                  if any(p in c.id or p in c.flags or p == c.family for p in parts)]
    return chosen


def _golden_from_reference(case: Case, inputs: dict, grads: bool) -> dict:
    return reference_outputs(case, inputs, float64=True, grads=grads)


def corpus_golden(corpus: Corpus) -> Callable:
    """A golden source reading the exact values of a loaded corpus (``golden.load``).

    A case is taken from the corpus only when its stored JSON equals the case's own JSON (so
    an edited catalog never meets stale values); other cases get the float64 reference.
    """
    def golden(case: Case, inputs: dict, grads: bool) -> dict:
        entry = corpus.manifest_entry(case.id) if hasattr(corpus, "manifest_entry") else None
        if entry is None or entry["case"] != case.to_json():
            return _golden_from_reference(case, inputs, grads)
        expected = corpus[case.id].expected
        return {name: to_bhtd(case, value) if name in ("out", "dq", "dk", "dv") else value
                for name, value in expected.items()}

    return golden


def shipped_golden() -> Callable:
    """The golden source of the corpus shipped with refmask (verified on load)."""
    from .golden import load, shipped_corpus_path

    return corpus_golden(load(shipped_corpus_path()))


__all__ = ["DEFAULT_CASE_TIMEOUT", "Judging", "corpus_golden", "policy_names", "select_cases",
           "shipped_golden"]
