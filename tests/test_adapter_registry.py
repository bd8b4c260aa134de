"""Backends registered through the entry-point group ``refmask.adapters``.

A third-party package is built for real in a temporary folder -- its module and a
``.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, exactly what pip installs --
and put on ``sys.path``; nothing of refmask is replaced or mocked.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from refmask import adapters
from refmask.conformance.cli import main

#: A correct attention written here, independent of refmask.attention: masked scores are
#: -inf, a row that keeps no key gives 0 (refmask's default empty_rows="zero").
THIRD_PARTY_MODULE = textwrap.dedent('''
    import numpy as np

    from refmask.adapters.user import from_function


    def attention(q, k, v, call):
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.where(call.keep, call.scale * (q @ np.swapaxes(k, -1, -2)), -np.inf)
        top = s.max(-1, keepdims=True)
        p = np.where(call.keep, np.exp(s - np.where(np.isfinite(top), top, 0.0)), 0.0)
        total = p.sum(-1, keepdims=True)
        return (p / np.where(total > 0, total, 1.0)) @ v


    def multiplicative(q, k, v, call):
        """The classic bug: scores times the 0/1 mask instead of -inf where dropped."""
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = call.scale * (q @ np.swapaxes(k, -1, -2)) * call.keep
        p = np.exp(s - s.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ v


    for fn in (attention, multiplicative):
        fn.refmask_unsupported = {"softcap", "bias", "sinks", "dropout", "length0"}

    ADAPTERS = (from_function(attention, name="thirdparty.numpy"),
                from_function(multiplicative, name="thirdparty.multiplicative"))
    LONE = from_function(attention, name="thirdparty.lone")
''')


def install_distribution(site: Path, dist: str, modules: dict[str, str],
                         entry_points: dict[str, str]) -> None:
    """Write a minimal installed distribution (as pip lays it out) into ``site``."""
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[refmask.adapters]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(site, "thirdparty_kernel", {"thirdparty_kernel": THIRD_PARTY_MODULE}, {
        "thirdparty.numpy": "thirdparty_kernel:ADAPTERS",
        "thirdparty.multiplicative": "thirdparty_kernel:ADAPTERS",
        "thirdparty.lone": "thirdparty_kernel:LONE",
        "thirdparty.misnamed": "thirdparty_kernel:ADAPTERS",
    })
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "thirdparty_kernel", raising=False)
    return site


def test_builtins_are_registered_through_the_entry_point_group():
    from importlib import metadata

    declared = {ep.name for ep in metadata.entry_points(group=adapters.ENTRY_POINT_GROUP)
                if ep.value.startswith("refmask.adapters.")}
    assert {"numpy", "refmask.fast", "torch.sdpa", "jax.dpa", "cupy"} <= declared
    assert declared <= set(adapters.names())
    for members in adapters.ALIASES.values():
        assert set(members) <= set(adapters.names())


def test_third_party_names_are_listed_without_importing_the_package(third_party):
    names = adapters.names()
    assert {"thirdparty.numpy", "thirdparty.multiplicative", "thirdparty.lone"} <= set(names)
    assert "numpy" in names  # the built-ins stay
    assert "thirdparty_kernel" not in sys.modules


def test_loading_a_builtin_does_not_import_a_third_party_package(third_party):
    assert adapters.load("numpy").name == "numpy"
    assert "thirdparty_kernel" not in sys.modules


def test_load_picks_the_named_adapter_from_a_tuple_or_a_single_adapter(third_party):
    adapter = adapters.load("thirdparty.multiplicative")
    assert isinstance(adapter, adapters.Adapter) and adapter.name == "thirdparty.multiplicative"
    assert adapters.load("thirdparty.lone").name == "thirdparty.lone"
    with pytest.raises(ValueError, match="'thirdparty.misnamed' = 'thirdparty_kernel:ADAPTERS' "
                                         "defines no Adapter named 'thirdparty.misnamed'"):
        adapters.load("thirdparty.misnamed")


def test_unknown_name_lists_builtin_and_third_party_names(third_party):
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; known backends: \[.*"
                                         r"'numpy'.*'thirdparty.numpy'.*families"):
        adapters.load("nope")


def test_a_name_registered_twice_is_an_error_naming_both_targets(third_party):
    install_distribution(third_party, "other_kernel", {"other_kernel": "ADAPTERS = ()\n"},
                         {"thirdparty.numpy": "other_kernel:ADAPTERS"})
    with pytest.raises(ValueError, match=r"'thirdparty.numpy' is registered more than once.*"
                                         r"\['other_kernel:ADAPTERS', "
                                         r"'thirdparty_kernel:ADAPTERS'\]"):
        adapters.load("thirdparty.numpy")


def test_refmask_check_runs_a_third_party_adapter_by_its_name(third_party, capsys):
    argv = ["--dtype", "float64", "--filter", "causal/"]
    assert main(["check", "thirdparty.numpy", *argv]) == 0
    assert "0 fail" in capsys.readouterr().out
    assert main(["check", "thirdparty.multiplicative", *argv]) == 1
    assert "thirdparty.multiplicative" in capsys.readouterr().out


def test_a_broken_entry_point_is_a_clear_error_naming_it(third_party, capsys):
    install_distribution(third_party, "broken_kernel", {"broken_kernel": "def fn(q, k, v, call):\n"
                                                        "    return q\n"},
                         {"broken.function": "broken_kernel:fn",
                          "broken.module": "no_such_module_for_refmask:ADAPTERS",
                          "broken.attribute": "broken_kernel:NOPE"})
    with pytest.raises(ValueError, match="'broken.function' = 'broken_kernel:fn' defines no "
                                         "Adapter named 'broken.function'"):
        adapters.load("broken.function")
    with pytest.raises(ValueError, match=r"'broken.module' = 'no_such_module_for_refmask:ADAPTERS'"
                                         r" cannot be loaded \(ModuleNotFoundError"):
        adapters.load("broken.module")
    with pytest.raises(ValueError, match=r"'broken.attribute' = 'broken_kernel:NOPE' cannot be "
                                         r"loaded \(AttributeError"):
        adapters.load("broken.attribute")
    assert main(["check", "broken.attribute"]) == 2  # a refusal, not "a refmask bug"
    assert "internal error" not in capsys.readouterr().err
