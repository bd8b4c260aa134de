"""Writing a corpus (:func:`generate`): every file fsynced in a hidden temporary sibling
directory that replaces the target crash-safely under a lock
(:func:`refmask.conformance._corpus_fs.replace_directory`), so no partial corpus ever carries
the target name.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from refmask import SPEC_VERSION, __version__
from refmask.case import Case

from .._corpus_fs import crash_point, manifest_digest, replace_directory, write_new_file
from ._engines import ENGINES, check_engine, compute
from ._format import (
    MANIFEST,
    SCHEMA_VERSION,
    CorpusError,
    as_directory,
    case_file_name,
    case_members,
    npz_bytes,
    read_manifest,
    sha256_hex,
)


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

    Crash-safe (:mod:`refmask.conformance._corpus_fs`): a lock file ``.<name>.lock`` next to
    ``directory`` keeps writers apart (a second writer gets FileExistsError); leftovers of an
    interrupted run are recovered first; files go to a hidden sibling ``.<name>.<random>.tmp``
    (each fsynced), which becomes ``directory`` in one atomic exchange (Linux; elsewhere two
    renames that the next run completes), so ``directory`` holds the old or the new complete
    corpus at every instant; the old corpus is deleted last. With ``overwrite`` an existing
    corpus is replaced only if it holds nothing but the files its manifest lists. On any error
    the temporary directory is removed and ``directory`` is left as it was.
    """
    where = "generate"
    if not isinstance(overwrite, bool):
        raise TypeError(f"{where}: overwrite must be a bool, got {overwrite!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"{where}: progress must be callable(done, total) or None, got "
                        f"{progress!r}")
    check_engine(where, engine)
    target = as_directory(where, directory)
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

    def may_replace() -> None:
        """Refuse a ``target`` that is not absent, empty, or (with ``overwrite``) a corpus
        holding only the files its manifest lists: --overwrite deletes nothing it did not
        write."""
        if not os.path.lexists(target):
            return
        if not target.is_dir() or target.is_symlink():
            raise FileExistsError(f"{where}: directory {str(target)!r} exists and is not a "
                                  "directory")
        present = sorted(p.name for p in target.iterdir())
        if not present:
            return
        if not overwrite:
            raise FileExistsError(f"{where}: directory {str(target)!r} is not empty; pass "
                                  "overwrite=True to replace the corpus in it")
        try:
            listed = {entry["file"] for entry in read_manifest(target)["cases"]} | {MANIFEST}
        except CorpusError as error:
            raise FileExistsError(f"{where}: directory {str(target)!r} is not empty and holds "
                                  f"no readable {MANIFEST} ({error.problem}): refusing to "
                                  "replace a directory that is not a golden corpus") from None
        foreign = [name for name in present if name not in listed]
        if foreign:
            raise FileExistsError(f"{where}: {str(target)!r} holds files its corpus did not "
                                  f"write ({foreign[:5]}{' ...' if len(foreign) > 5 else ''}); "
                                  "refusing to delete them with the old corpus: move them "
                                  "away first")

    def fill(temp: Path) -> None:
        total = len(cases)
        if progress is not None:
            progress(0, total)
        entries = []
        for done, (case, inputs, outputs) in enumerate(
                compute(cases, engine, processes), start=1):
            data = npz_bytes(case_members(case, inputs, outputs))
            file = case_file_name(case.id)
            write_new_file(temp / file, data)
            crash_point("file-written")
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
        manifest["manifest_sha256"] = manifest_digest(manifest)
        text = json.dumps(manifest, indent=1, ensure_ascii=True, allow_nan=False) + "\n"
        write_new_file(temp / MANIFEST, text.encode("utf-8"))
        crash_point("manifest-written")

    may_replace()
    replace_directory(target, fill, where=where, may_replace=may_replace)
    return target
