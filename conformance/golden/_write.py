"""Writing a corpus (:func:`generate`): every file fsynced in a hidden temporary sibling
directory that is renamed into place, so no partial corpus ever carries the target name.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from refmask import SPEC_VERSION, __version__
from refmask.case import Case

from ._engines import ENGINES, check_engine, compute
from ._format import MANIFEST, SCHEMA_VERSION, case_file_name, case_members, npz_bytes, sha256_hex


def _fsync_directory(path: Path) -> None:
    """fsync a directory entry (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def generate(directory, cases: Iterable[Case], *, overwrite: bool = False,
             progress: Callable[[int, int], object] | None = None,
             processes: int | None = None, engine: str = "exact") -> Path:
    """Write the golden corpus of ``cases`` to ``directory``; return its path.

    directory: created if absent (with its parents). If it exists and is not empty, it must be
      a corpus (hold a manifest.json) and ``overwrite=True`` is required: otherwise
      FileExistsError naming ``directory`` (a directory that is not a corpus is never replaced).
    cases: :class:`Case` records with unique ids (and file names, see :func:`case_file_name`).
    progress: optional ``progress(done, total)``, called with 0 first and after each case.
    processes: worker processes for the exact engine (default None: this process; see
      :func:`~refmask.conformance.exact.exact_many`); the reference engine ignores it.
    engine: "exact" (default; mpmath, bit-reproducible everywhere, small cases only) or
      "reference" (the float64 reference, for long sequences); recorded in the manifest's
      "engine" and "generator" and decides how :func:`verify` compares (module docstring).

    Atomic: files go to a hidden temporary sibling ``.<name>.<random>.tmp`` (each fsynced),
    which is renamed to ``directory`` at the end; an existing corpus is first renamed to
    ``.<name>.<random>.old`` and deleted after the swap (restored if the swap fails). On any
    error the temporary directory is removed and ``directory`` is left as it was.
    """
    where = "generate"
    if not isinstance(overwrite, bool):
        raise TypeError(f"{where}: overwrite must be a bool, got {overwrite!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"{where}: progress must be callable(done, total) or None, got "
                        f"{progress!r}")
    check_engine(where, engine)
    target = Path(directory)
    cases = list(cases)
    seen, files = {}, {}
    for index, case in enumerate(cases):
        if not isinstance(case, Case):
            raise TypeError(f"{where}: cases[{index}] must be a refmask Case, got "
                            f"{type(case).__name__}")
        if case.id in seen:
            raise ValueError(f"{where}: cases[{index}] repeats the id {case.id!r}")
        seen[case.id] = index
        file = case_file_name(case.id)
        if file.lower() in files:
            raise ValueError(f"{where}: cases {files[file.lower()]!r} and {case.id!r} map to "
                             f"the same file name {file!r}")
        files[file.lower()] = case.id

    def check_target() -> bool:
        """True when ``target`` exists (and may be replaced)."""
        if not target.exists() and not target.is_symlink():
            return False
        if not target.is_dir() or target.is_symlink():
            raise FileExistsError(f"{where}: directory {str(target)!r} exists and is not a "
                                  "directory")
        if any(target.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{where}: directory {str(target)!r} is not empty; pass "
                                      "overwrite=True to replace the corpus in it")
            if not (target / MANIFEST).is_file():
                raise FileExistsError(f"{where}: directory {str(target)!r} is not empty and "
                                      f"holds no {MANIFEST}: refusing to replace a directory "
                                      "that is not a golden corpus")
        return True

    check_target()
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    temp = parent / f".{target.name}.{token}.tmp"
    backup = parent / f".{target.name}.{token}.old"
    temp.mkdir()
    try:
        total = len(cases)
        if progress is not None:
            progress(0, total)
        entries = []
        for done, (case, inputs, outputs) in enumerate(
                compute(cases, engine, processes), start=1):
            data = npz_bytes(case_members(case, inputs, outputs))
            file = case_file_name(case.id)
            _write_file(temp / file, data)
            entries.append({"id": case.id, "file": file, "sha256": sha256_hex(data),
                            "case": case.to_json()})
            if progress is not None:
                progress(done, total)
        manifest = {
            "schema_version": SCHEMA_VERSION, "refmask_version": __version__,
            "spec_version": SPEC_VERSION, "generator": ENGINES[engine], "engine": engine,
            "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            "cases": entries,
        }
        text = json.dumps(manifest, indent=1, ensure_ascii=True, allow_nan=False) + "\n"
        _write_file(temp / MANIFEST, text.encode("utf-8"))
        _fsync_directory(temp)
        if check_target():
            if any(target.iterdir()):
                os.rename(target, backup)
            else:
                target.rmdir()
        try:
            os.rename(temp, target)
        except BaseException:
            if backup.exists() and not target.exists():
                os.rename(backup, target)
            raise
        _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)
    return target
