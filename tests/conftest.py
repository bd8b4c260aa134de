"""Suite-wide test settings.

REFMASK_FAST_POISON=1 for the whole run: every scratch buffer of the fast path
(``refmask.fast``) starts as NaN, so a kernel that reads an entry it did not write fails its
test deterministically instead of intermittently (docs/performance.md, "Debug switch").
"""

from __future__ import annotations

import pytest

from refmask.fast._run import POISON_ENV


@pytest.fixture(autouse=True, scope="session")
def _poisoned_fast_path_scratch():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POISON_ENV, "1")
        yield
