"""pytest plugin: run the conformance suite inside a user's own test suite.

Two ways in (the plugin is registered through the ``pytest11`` entry point, so installing
refmask is enough):

* command line: ``pytest --refmask-impl mypkg.attn:my_attention [--refmask-dtype float16]
  [--refmask-filter causal]`` adds one test per catalog case, ``refmask[<case id>]``;
  a ``fail`` verdict fails the test, ``unsupported`` skips it, ``policy`` fails unless
  ``--refmask-allow-policy`` names that convention (e.g. ``empty_rows=nan``).
* fixture: ``refmask_check`` is ``refmask.conformance.check``; write
  ``def test_mine(refmask_check): assert not refmask_check(my_attention).failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .runner import Report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("refmask", "refmask conformance suite")
    group.addoption("--refmask-impl", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="check this attention function against every refmask case")
    group.addoption("--refmask-dtype", action="append", default=None, metavar="DTYPE",
                    help="only cases of this dtype (repeatable)")
    group.addoption("--refmask-filter", default=None, metavar="TEXT",
                    help="only cases whose id or flags contain one of these comma-separated "
                         "texts")
    group.addoption("--refmask-allow-policy", action="append", default=[], metavar="NAME",
                    help="accept a policy verdict with this convention name")


@pytest.fixture
def refmask_check() -> Callable[..., Report]:
    """``refmask.conformance.check``: ``refmask_check(fn_or_backend, **options) -> Report``."""
    from .runner import check

    return check


@pytest.fixture
def refmask_check_masker() -> Callable:
    """``refmask.conformance.masking.check_masker``: judge a token masker (MLM, whole words,
    spans); ``assert refmask_check_masker(my_masker, spec).passed``."""
    from .masking import check_masker

    return check_masker


class RefmaskCase(pytest.Item):
    def __init__(self, *, target, case, allowed, **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.case = case
        self.allowed = allowed

    def runtest(self) -> None:
        from .runner import resolve_backend, run_case

        result = run_case(resolve_backend(self.target), self.case)
        if result.verdict == "unsupported":
            pytest.skip(result.reason)
        if result.verdict == "policy" and result.convention in self.allowed:
            return
        if result.verdict != "pass":
            message = f"{result.verdict}: {result.reason}"
            if result.picture:
                message += "\n" + result.picture
            raise AssertionError(message)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"refmask[{self.case.id}] with {self.target}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Append one :class:`RefmaskCase` per (target, case) when --refmask-impl is given."""
    targets = config.getoption("refmask_impl")
    if not targets:
        return
    from .runner import select_cases

    cases = select_cases(dtypes=config.getoption("refmask_dtype"),
                         filter=config.getoption("refmask_filter"))
    allowed = set(config.getoption("refmask_allow_policy"))
    items.extend(RefmaskCase.from_parent(session, name=f"{target}[{case.id}]", target=target,
                                         case=case, allowed=allowed)
                 for target in targets for case in cases)
