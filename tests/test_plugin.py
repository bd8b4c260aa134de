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


def test_plugin_fails_an_undeclared_convention_unless_allowed(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.syspathinsert()
    args = ["--refmask-impl", "my_attention:nan_rows",
            "--refmask-dtype", "float64", "--refmask-filter", "causal/bottom_right/tall"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*matches the convention empty_rows=nan, which *does not "
                                 "declare*"])
    result = pytester.runpytest(*args, "--refmask-allow-policy", "empty_rows=nan")
    result.assert_outcomes(passed=1)


def test_a_declared_convention_passes_as_in_the_cli(pytester):
    pytester.makepyfile(my_attention=GOOD + textwrap.dedent('''
        def declared(q, k, v, call):
            return nan_rows(q, k, v, call)

        declared.refmask_unsupported = attention.refmask_unsupported
        declared.refmask_conventions = {"empty_rows": "nan"}
    '''))
    pytester.syspathinsert()
    result = pytester.runpytest("--refmask-impl", "my_attention:declared", "--refmask-dtype",
                                "float64", "--refmask-filter", "causal/bottom_right/tall")
    result.assert_outcomes(passed=1)


def test_failure_is_short_and_its_node_id_reruns(pytester):
    """One failing case prints the diagnosis, the worst element, the mask rows and a re-run
    command in well under 40 lines; the printed node id re-runs exactly that case."""
    pytester.makepyfile(my_attention=GOOD + textwrap.dedent('''
        def multiplied(q, k, v, call):
            import numpy as np
            q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
            s = call.scale * q @ np.swapaxes(k, -1, -2) * call.keep
            w = np.exp(s - s.max(-1, keepdims=True))
            return w / w.sum(-1, keepdims=True) @ v

        multiplied.refmask_unsupported = attention.refmask_unsupported
    '''))
    pytester.syspathinsert()
    result = pytester.runpytest("--refmask-impl", "my_attention:multiplied",
                                "--refmask-dtype", "float64", "--refmask-filter",
                                "causal/top_left/square")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    section = text.split("_ multiplied[causal", 1)[1].split("short test summary")[0]
    assert len(section.strip().splitlines()) <= 40, section
    assert "mask_multiplied" in section and "ulps" in section and "first bad row" in section
    assert "Traceback" not in section and "site-packages" not in section
    rerun = next(line for line in section.splitlines() if line.startswith("re-run: "))
    command = rerun.removeprefix("re-run: ").split()
    assert command[1] == "'my_attention.py::multiplied[causal/top_left/square@float64]'"
    result = pytester.runpytest(command[1].strip("'"), *command[2:])
    result.assert_outcomes(failed=1)  # exactly that case, not the whole suite


def test_plugin_options_reach_the_judging(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.syspathinsert()
    result = pytester.runpytest("--refmask-impl", "my_attention:attention", "--refmask-dtype",
                                "float64,float32", "--refmask-filter", "sliding_window")
    # the family name selects the 11 sliding_window cases per dtype; GOOD declares no ALiBi
    # ("bias"), so long_rows/window_kv_cache_masked_high is skipped in both dtypes
    result.assert_outcomes(passed=20, skipped=2)
    result = pytester.runpytest("--refmask-impl", "my_attention:attention", "--refmask-grads",
                                "--refmask-filter", "full/square")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--grads*no autograd*"])


def test_fixture_runs_the_suite(pytester):
    pytester.makepyfile(my_attention=GOOD)
    pytester.makepyfile(test_mine=textwrap.dedent('''
        from my_attention import attention

        def test_conforms(refmask_check):
            report = refmask_check(attention, dtypes=["float64"], filter="window/")
            assert report.results and not report.failed
            report.assert_ok()

        def test_nan_rows_fail_in_the_fixture_too(refmask_check):
            from my_attention import nan_rows
            report = refmask_check(nan_rows, dtypes=["float64"], filter="empty_rows")
            assert report.failed
            try:
                report.assert_ok()
            except AssertionError as error:
                assert "empty_rows=nan" in str(error)
            else:
                raise AssertionError("assert_ok passed a failing report")
    '''))
    pytester.syspathinsert()
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
