"""pytest plugin: run the conformance suite inside a user's own test suite.

Two ways in (the plugin is registered through the ``pytest11`` entry point, so installing
refmask is enough):

* command line: ``pytest --refmask-impl mypkg.attn:my_attention`` adds one test per case,
  ``<module file>::<function>[<case id>]``, a node id that re-runs the case (``pytest
  'mypkg/attn.py::my_attention[causal/top_left/wide@float16]' --refmask-impl
  mypkg.attn:my_attention``). The other options are those of ``refmask check`` (the same
  :class:`~.judging.Judging`): ``--refmask-dtype``, ``--refmask-filter``, ``--refmask-grads``,
  ``--refmask-allow-policy``, ``--refmask-framework``, ``--refmask-device``,
  ``--refmask-backward``, ``--refmask-merge``, ``--refmask-corpus``, ``--refmask-timeout``.
  A ``fail`` verdict fails the test with a short report (diagnosis, worst element, mask rows, re-run
  command), ``unsupported`` skips it, ``pass`` and ``policy`` (a declared or allowed
  convention) pass: the verdicts of ``refmask check``.
* fixture: ``refmask_check(fn_or_backend, **judging_fields) -> Report`` judges under the
  same options; ``refmask_check(my_attention).assert_ok()`` raises with the report text.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .judging import Judging
    from .results import CaseResult, Report

_OPTIONS = ("dtype", "filter", "grads", "allow_policy", "framework", "device", "backward",
            "merge", "corpus", "timeout")



def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("refmask", "refmask conformance suite")
    group.addoption("--refmask-impl", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="check this attention function against every refmask case")
    group.addoption("--refmask-dtype", action="append", default=None, metavar="DTYPE",
                    help="only cases of these dtypes (repeatable or comma-separated)")
    group.addoption("--refmask-filter", default=None, metavar="TEXT",
                    help="only cases whose id contains one of these comma-separated texts, or "
                         "whose family or a flag equals one")
    group.addoption("--refmask-grads", action="store_true", default=False,
                    help="also judge dq, dk, dv (and dbias, dsinks where the case has them)")
    group.addoption("--refmask-allow-policy", action="append", default=[], metavar="NAME",
                    help="accept this named convention as policy although the function does "
                         "not declare it")
    group.addoption("--refmask-framework", default=None,
                    choices=["numpy", "torch", "jax", "cupy"],
                    help="the arrays the function receives (default: refmask_framework, "
                         "else numpy)")
    group.addoption("--refmask-device", default=None, choices=["cpu", "cuda"],
                    help="their device (default: refmask_device, else cpu)")
    group.addoption("--refmask-backward", default=None, metavar="MODULE:FUNCTION",
                    help="a hand-written backward for --refmask-grads")
    group.addoption("--refmask-merge", default=None, metavar="MODULE:FUNCTION",
                    help="a merge kernel for the split-KV cases (default: refmask_merge)")
    group.addoption("--refmask-corpus", default=None, metavar="DIR",
                    help="judge the cases of this golden corpus against its stored values")
    group.addoption("--refmask-timeout", default=None, type=float, metavar="SECONDS",
                    help="per-case time limit of the function's call (default: "
                         "refmask.conformance.judging.DEFAULT_CASE_TIMEOUT)")


def _joined(values):
    if not values:
        return None
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def judging_from_config(config: pytest.Config) -> Judging:
    """The :class:`~.judging.Judging` the command-line options describe."""
    from .judging import DEFAULT_CASE_TIMEOUT, Judging

    get = config.getoption
    timeout = get("refmask_timeout")
    return Judging(timeout=DEFAULT_CASE_TIMEOUT if timeout is None else timeout,
                   dtypes=_joined(get("refmask_dtype")), filter=get("refmask_filter"),
                   grads=bool(get("refmask_grads")),
                   allow_policy=_joined(get("refmask_allow_policy")) or (),
                   corpus=get("refmask_corpus"), framework=get("refmask_framework"),
                   device=get("refmask_device"), backward=get("refmask_backward"),
                   merge=get("refmask_merge"))


@pytest.fixture
def refmask_check(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """``refmask_check(fn_or_backend, **judging_fields) -> Report`` under the session's
    --refmask-* options (fields given here win); ``report.assert_ok()`` raises on a fail."""
    from .runner import check

    base = judging_from_config(request.config)

    def run(target, **options):
        return check(target, judging=base, **options)

    return run


class RefmaskFailure(AssertionError):
    """A ``fail`` verdict; its message is the short report :meth:`RefmaskCase.repr_failure`
    shows instead of a traceback through refmask."""


def _rerun_command(item) -> str:
    options = ["--refmask-impl", item.target]
    config = item.config
    for name in _OPTIONS:
        value = config.getoption(f"refmask_{name}")
        flag = f"--refmask-{name.replace('_', '-')}"
        if name == "filter" or value in (None, False, []):
            continue
        if value is True:
            options.append(flag)
        elif isinstance(value, list):
            options += [flag, ",".join(value)]
        else:
            options += [flag, str(value)]
    return shlex.join(["pytest", item.nodeid, *options])


def failure_text(result: CaseResult, rerun: str) -> str:
    """The short report of one failing case (at most ~40 lines)."""
    lines = [f"refmask: {result.case.id} ({result.backend}) fails: {result.reason}"]
    bad = [c for c in result.checks if not c.ok]
    for check in bad[:3]:
        where = "" if check.first_bad is None else f", first bad index {tuple(check.first_bad)}"
        lines.append(f"  {check.name}: max error {check.max_abs:.3g} ({check.max_ulps:.3g} ulps)"
                     f" > tolerance {check.tolerance:.3g}{where}")
    lines.append(f"  mask: {result.case.mask!r}"[:300])
    if result.picture:
        lines += ["  " + row for row in result.picture.splitlines()[:12]]
    if result.traceback:
        lines += ["  " + row for row in result.traceback.splitlines()[-14:]]
    lines.append(f"re-run: {rerun}")
    return "\n".join(lines)


@pytest.fixture
def refmask_check_masker() -> Callable:
    """``refmask.conformance.masking.check_masker``: judge a token masker (MLM, whole words,
    spans); ``assert refmask_check_masker(my_masker, spec).passed``."""
    from .masking import check_masker

    return check_masker


class RefmaskCase(pytest.Item):
    def __init__(self, *, target, case, judging, **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.case = case
        self.judging = judging

    def runtest(self) -> None:
        from .runner import run_case

        adapter = self.config.stash[_ADAPTERS][self.target]
        result = run_case(adapter, self.case, judging=self.judging,
                          golden=self.config.stash[_GOLDEN])
        if result.verdict == "unsupported":
            pytest.skip(result.reason)
        if result.verdict == "fail":
            raise RefmaskFailure(failure_text(result, _rerun_command(self)))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: str | None = None) -> str | Any:
        if isinstance(excinfo.value, RefmaskFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, None, str]:
        return self.path, None, f"{self.name} with {self.target}"


class RefmaskFile(pytest.File):
    """The refmask cases of the functions of one module file given to --refmask-impl."""

    def collect(self) -> Iterator[RefmaskCase]:
        for target in self.config.stash[_TARGETS].get(str(self.path), ()):
            yield from _items(self, target)


def _items(parent, target):
    judging = parent.config.stash[_JUDGING]
    function = target.partition(":")[2]
    for case in parent.config.stash[_CASES]:
        yield RefmaskCase.from_parent(parent, name=f"{function}[{case.id}]", target=target,
                                      case=case, judging=judging)


_JUDGING = pytest.StashKey()
_CASES = pytest.StashKey()
_GOLDEN = pytest.StashKey()
_ADAPTERS = pytest.StashKey()
_TARGETS = pytest.StashKey()


def _module_file(target: str) -> str:
    """The file of the module a ``module:function`` target names (imported to find it)."""
    import importlib

    module = importlib.import_module(target.partition(":")[0])
    return os.path.realpath(module.__file__)


def pytest_configure(config: pytest.Config) -> None:
    targets = config.getoption("refmask_impl")
    if not targets:
        return
    if os.getcwd() not in sys.path:  # module:function names a module of the user's project
        sys.path.insert(0, os.getcwd())
    judging = judging_from_config(config)
    config.stash[_JUDGING] = judging
    config.stash[_ADAPTERS] = {t: judging.adapter(t) for t in targets}
    config.stash[_CASES] = judging.cases()
    if not config.stash[_CASES]:
        raise pytest.UsageError(f"--refmask-filter {config.getoption('refmask_filter')!r} and "
                                f"--refmask-dtype {config.getoption('refmask_dtype')} match "
                                "no case")
    config.stash[_GOLDEN] = judging.golden()
    by_file: dict = {}
    for target in targets:
        by_file.setdefault(_module_file(target), []).append(target)
    config.stash[_TARGETS] = by_file


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> RefmaskFile | None:
    """A module file named by --refmask-impl (given on the command line, e.g. to re-run one
    case by node id) is collected as its refmask cases."""
    by_file = parent.config.stash.get(_TARGETS, None)
    if by_file and str(os.path.realpath(file_path)) in by_file and (
            parent.session.isinitpath(file_path)):
        return RefmaskFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                   items: list[pytest.Item]) -> None:
    """Add the cases of every --refmask-impl function whose module file was not collected."""
    by_file = config.stash.get(_TARGETS, None)
    if not by_file:
        return
    from pathlib import Path

    collected = {os.path.realpath(item.path) for item in items
                 if isinstance(item, RefmaskCase)}
    for path, targets in by_file.items():
        if path in collected:
            continue
        node = RefmaskFile.from_parent(session, path=Path(path))
        for target in targets:
            items.extend(_items(node, target))
