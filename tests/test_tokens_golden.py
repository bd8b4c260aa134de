"""The shipped golden token-mask corpus is intact, byte-reproducible and tamper-evident."""

from __future__ import annotations

import json
import shutil

import pytest

from refmask.conformance import token_golden


def test_shipped_corpus_verifies():
    assert token_golden.verify() == []


def test_regeneration_is_byte_identical(tmp_path):
    token_golden.generate(tmp_path)
    shipped = token_golden.shipped_path()
    for entry in json.loads((shipped / "manifest.json").read_text())["cases"]:
        assert (tmp_path / entry["file"]).read_bytes() == (shipped / entry["file"]).read_bytes()
    assert (tmp_path / "manifest.json").read_bytes() == (shipped / "manifest.json").read_bytes()


def test_tampering_is_detected(tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(token_golden.shipped_path(), copy)
    target = copy / "mlm__exact_count.npz"
    data = bytearray(target.read_bytes())
    data[-40] ^= 1
    target.write_bytes(bytes(data))
    problems = token_golden.verify(copy)
    assert any("mlm__exact_count.npz: sha256 differs" in p for p in problems)


def test_generate_refuses_to_overwrite(tmp_path):
    token_golden.generate(tmp_path)
    try:
        token_golden.generate(tmp_path)
    except FileExistsError as error:
        assert "already exists" in str(error)
    else:
        raise AssertionError("generate overwrote an existing corpus")


def test_generate_refuses_a_directory_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        token_golden.generate(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        token_golden.generate(tmp_path / "file")


def test_cli_verify_refuses_a_missing_directory_with_exit_2(tmp_path, capsys):
    from refmask.conformance.cli import main

    assert main(["token-golden", "verify", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["token-golden", "verify", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
