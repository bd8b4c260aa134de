"""The pytest plugin, run in a fresh pytest session (pytester)."""

from __future__ import annotations

import textwrap

pytest_plugins = ["pytester"]

GOOD = textwrap.dedent('''
    import numpy as np

    def attention(q, k, v, call):
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.where(call.keep, call.scale * q @ np.swapaxes(k, -1, -2), -np.inf)
        top = s.max(-1, keepdims=True)
        w = np.exp(s - np.where(np.isfinite(top), top, 0.0))
        total = w.sum(-1, keepdims=True)
        return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0) @ v

    attention.refmask_unsupported = {"softcap", "bias", "sinks", "dropout"}

    def nan_rows(q, k, v, call):
        out = attention(q, k, v, call)
        empty = ~call.keep.any(-1)
        return np.where(empty[..., None], np.nan, out)

    nan_rows.refmask_unsupported = attention.refmask_unsupported
''')


def test_plugin_adds_one_test_per_case(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.syspathinsert()
    result = pytester.runpytest(
                                "--refmask-impl", "my_attention:attention",
                                "--refmask-dtype", "float64", "--refmask-filter",
                                "causal/top_left,window/symmetric")
    # causal/top_left/{square,wide,tall} and window/symmetric_2_2
    result.assert_outcomes(passed=4)


def test_plugin_fails_a_policy_unless_allowed(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.syspathinsert()
    args = ["--refmask-impl", "my_attention:nan_rows",
            "--refmask-dtype", "float64", "--refmask-filter", "causal/bottom_right/tall"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*policy: empty_rows=nan*"])
    result = pytester.runpytest(*args, "--refmask-allow-policy", "empty_rows=nan")
    result.assert_outcomes(passed=1)


def test_fixture_runs_the_suite(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.makepyfile(test_mine=textwrap.dedent('''
        from my_attention import attention

        def test_conforms(refmask_check):
            report = refmask_check(attention, dtypes=["float64"], filter="window/")
            assert report.results and not report.failed
    '''))
    pytester.syspathinsert()
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
