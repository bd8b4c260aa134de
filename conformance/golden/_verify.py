"""Reading a corpus (:func:`load`, hash-checked before parsing) and checking it
(:func:`verify`: structure, hashes, and the re-derived values under the engine's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refmask import SPEC_VERSION, __version__
from refmask.case import Case, numpy_dtype
from refmask.case import case_from_json as _case_from_json

from .._corpus_fs import CorpusFileError, member_bound, read_npz
from ._engines import ENGINES, compute
from ._format import (
    MANIFEST,
    CorpusError,
    as_directory,
    case_members,
    corpus_engine,
    expected_members,
    read_file,
    read_manifest,
)

#: Modules whose predicate functions a corpus's case JSON may name without the caller's
#: ``trust``: the catalog's own (refmask.conformance.cases).
CATALOG_TRUST = ("refmask.conformance.cases",)


def case_from_json(data: Mapping, *, trust: Iterable[str] = ()) -> Case:
    """:func:`refmask.case.case_from_json` for corpus data: a predicate may name functions of
    CATALOG_TRUST and of the modules in ``trust`` only; nothing else is imported."""
    if isinstance(trust, str):
        raise TypeError(f"case_from_json: trust must be a list of module names, got {trust!r}")
    return _case_from_json(data, trust=(*CATALOG_TRUST, *trust))


#: verify's bound for a reference corpus (see the module docstring):
#: |stored - recomputed| <= REFERENCE_RTOL * max|recomputed| per array.
REFERENCE_RTOL = 1e-12


# --- reading -----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GoldenCase:
    """One case of a corpus, verified against the manifest's SHA-256.

    id: the case id; file: the .npz path; case_json: the manifest's case JSON; arrays: the
    members as stored (name -> read-only array, e.g. "input.q", "exact.out").
    """

    id: str
    file: Path
    case_json: dict
    arrays: dict

    @property
    def inputs(self) -> dict:
        """Tensor name -> input array in the case's dtype (bfloat16 needs ml_dtypes)."""
        dtype = numpy_dtype(self.case_json["dtype"])
        result = {}
        for key, array in self.arrays.items():
            if key.startswith("input."):
                name = key[len("input."):]
                result[name] = array if name == "dropout_keep" else array.view(dtype)
        return result

    @property
    def expected(self) -> dict:
        """Output name -> exact float64 array ("out", "lse", "dq", ...)."""
        return {key[len("exact."):]: array for key, array in self.arrays.items()
                if key.startswith("exact.")}

    def case(self) -> Case:
        """The :class:`Case`, rebuilt from its JSON."""
        return case_from_json(self.case_json)  # CATALOG_TRUST only


class Corpus(Mapping):
    """A loaded corpus: a read-only mapping case id -> :class:`GoldenCase`, in manifest order.

    :func:`load` has checked the manifest and every file's SHA-256; looking a case up reads
    its file again, re-checks the hash of exactly the bytes it parses, and parses them.
    """

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        self.manifest = manifest
        self._entries = {entry["id"]: entry for entry in manifest["cases"]}

    def __getitem__(self, case_id: str) -> GoldenCase:
        return read_case(self.directory, self._entries[case_id])

    @property
    def engine(self) -> str:
        """The engine that computed the golden outputs: "exact" or "reference"."""
        return corpus_engine(self.manifest)

    def manifest_entry(self, case_id: str) -> dict | None:
        """The manifest's entry for ``case_id`` (id, file, sha256, case), or None."""
        return self._entries.get(case_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Corpus({str(self.directory)!r}, {len(self)} cases)"


def checked_bytes(directory: Path, entry: dict) -> tuple[Path, bytearray]:
    """The hash-checked bytes of one case file: a regular file no larger than its case's
    members can need (:func:`member_bound`), hashed while it is read."""
    path = directory / entry["file"]
    bound = member_bound(expected_members(entry["case"]))
    data, digest = read_file(path, f"case {entry['id']!r}", bound)
    if digest != entry["sha256"]:
        raise CorpusError(path, f"sha256 is {digest}, the manifest says {entry['sha256']} "
                          f"(file of {len(data)} bytes is corrupted, truncated or modified, or "
                          "the manifest was edited)")
    return path, data


def read_case(directory: Path, entry: dict) -> GoldenCase:
    """Hash-check, parse (no pickle; every npy header checked before its array is allocated)
    and validate one case file."""
    path, data = checked_bytes(directory, entry)
    expected = expected_members(entry["case"])
    try:
        arrays = read_npz(path, data, expected)
    except CorpusFileError as error:
        raise CorpusError(error.path, f"{error.problem} (case {entry['id']!r})") from None
    return GoldenCase(id=entry["id"], file=path, case_json=entry["case"], arrays=arrays)


def load(directory) -> Corpus:
    """Open the corpus in ``directory``; raise :class:`CorpusError` for any defect.

    Checks the manifest (schema version, structure) and that every listed file exists with the
    listed SHA-256. Arrays are parsed (``allow_pickle=False``) and validated when a case is
    looked up in the returned :class:`Corpus`, again from hash-checked bytes.
    """
    directory = as_directory("load", directory)
    manifest = read_manifest(directory)
    for entry in manifest["cases"]:
        checked_bytes(directory, entry)
    return Corpus(directory, manifest)


# --- verifying ---------------------------------------------------------------------------------

def _first_difference(stored: np.ndarray, fresh: np.ndarray) -> str:
    if stored.dtype != fresh.dtype or stored.shape != fresh.shape:
        return (f"is {stored.dtype.str} {stored.shape}, recomputed {fresh.dtype.str} "
                f"{fresh.shape}")
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[stored.dtype.itemsize]
    differ = stored.view(width) != fresh.view(width)
    first = tuple(int(n) for n in np.argwhere(differ)[0])
    return (f"differs bitwise in {int(differ.sum())} of {differ.size} entries (first at "
            f"{first}: stored {stored[first]!r}, recomputed {fresh[first]!r})")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


_REFERENCE_RULE = (f"rule for a reference corpus: NaN/inf placement exact, elsewhere "
                   f"|stored - recomputed| <= {REFERENCE_RTOL:g} * max|recomputed|")


def reference_difference(stored: np.ndarray, fresh: np.ndarray) -> str | None:
    """Why ``stored`` breaks the reference rule against ``fresh`` (None if it keeps it)."""
    if stored.dtype != fresh.dtype or stored.shape != fresh.shape:
        return _first_difference(stored, fresh)
    special = ~np.isfinite(fresh)
    same_special = (np.isnan(stored) == np.isnan(fresh)) & (
        np.where(np.isinf(fresh), stored == fresh, ~np.isinf(stored)))
    if not same_special.all():
        bad = ~same_special
        first = tuple(int(n) for n in np.argwhere(bad)[0])
        return (f"has NaN/inf at other entries than recomputed in {int(bad.sum())} of "
                f"{bad.size} entries (first at {first}: stored {stored[first]!r}, recomputed "
                f"{fresh[first]!r}); {_REFERENCE_RULE}")
    finite = ~special
    if not finite.any():
        return None
    scale = float(np.max(np.abs(fresh[finite])))
    bound = REFERENCE_RTOL * scale
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.where(finite, np.abs(stored - fresh), 0.0)
    bad = error > bound
    if not bad.any():
        return None
    first = tuple(int(n) for n in np.argwhere(bad)[0])
    return (f"differs by up to {float(error.max()):.3g} > {REFERENCE_RTOL:g} * "
            f"max|recomputed| = {bound:.3g} in {int(bad.sum())} of {bad.size} entries (first "
            f"at {first}: stored {stored[first]!r}, recomputed {fresh[first]!r}); "
            f"{_REFERENCE_RULE}")


def compare_members(golden: GoldenCase, members: Mapping, engine: str) -> list:
    """Problems of one stored case against its recomputed members, under ``engine``'s rule."""
    problems = []
    for name in sorted(set(members) | set(golden.arrays)):
        if name not in members or name not in golden.arrays:
            problems.append(f"{golden.file}: member {name!r} is "
                            f"{'not recomputed' if name not in members else 'missing'}")
            continue
        stored, recomputed = golden.arrays[name], members[name]
        if engine == "reference" and name.startswith("exact."):
            why = reference_difference(stored, recomputed)
        elif not _same_bits(stored, recomputed):
            why = _first_difference(stored, recomputed)
        else:
            why = None
        if why is not None:
            problems.append(f"{golden.file}: {name} {why}")
    return problems


def verify(directory, *, regenerate: bool = True, processes: int | None = None,
           progress: Callable[[int, int], object] | None = None,
           trust: Iterable[str] = ()) -> list:
    """Every defect of the corpus in ``directory``, as messages naming the file; [] if none.

    Checks the manifest, that each listed file exists with its SHA-256 and parses into the
    members its case requires, that each case JSON rebuilds a case, and reports files in the
    directory that the manifest does not list. With ``regenerate`` (default) it also recomputes
    every case's inputs and outputs with the corpus's engine (manifest "engine"; absent means
    "exact") and compares them with the stored arrays: an exact corpus BIT FOR BIT (NaN, inf
    and signed zeros included; ``processes`` workers, see
    :func:`~refmask.conformance.exact.exact_many`); a reference corpus's inputs bit for bit
    and its outputs by the reference rule of the module docstring (``processes`` unused).
    progress: optional ``progress(done, total)`` over the recomputed cases (0 first).
    trust: modules whose functions predicate masks may name besides CATALOG_TRUST (see
    :func:`case_from_json`); a corpus naming any other module is reported, never imported.
    """
    directory = as_directory("verify", directory)
    if progress is not None and not callable(progress):
        raise TypeError(f"verify: progress must be callable(done, total) or None, got "
                        f"{type(progress).__name__}")
    try:
        manifest = read_manifest(directory)
    except CorpusError as error:
        return [str(error)]
    problems = []
    listed = {entry["file"] for entry in manifest["cases"]} | {MANIFEST}
    for path in sorted(directory.iterdir()):
        if path.name not in listed:
            problems.append(f"{path}: not listed in the manifest")
    if regenerate and manifest["spec_version"] != SPEC_VERSION:
        problems.append(f"{directory / MANIFEST}: spec_version {manifest['spec_version']!r} "
                        f"differs from this refmask's {SPEC_VERSION!r}; regenerated values "
                        "follow the newer spec")
    readable = []  # (manifest entry, case); arrays are read again one case at a time below
    for entry in manifest["cases"]:
        try:
            golden = read_case(directory, entry)
        except CorpusError as error:
            problems.append(str(error))
            continue
        try:
            case = case_from_json(entry["case"], trust=trust)
        except (ValueError, TypeError) as error:
            problems.append(f"{golden.file}: {error}")
            continue
        readable.append((entry, case))
        del golden
    if not regenerate or not readable:
        return problems
    engine = corpus_engine(manifest)
    if engine not in ENGINES:
        problems.append(f"{directory / MANIFEST}: engine {engine!r} is unknown to refmask "
                        f"{__version__} (known: {', '.join(ENGINES)}); the values cannot be "
                        "re-derived")
        return problems

    fresh = compute([case for _, case in readable], engine, processes)
    if progress is not None:
        progress(0, len(readable))
    done = 0
    try:
        for (entry, _), (case, inputs, outputs) in zip(readable, fresh, strict=True):
            try:
                golden = read_case(directory, entry)
            except CorpusError as error:  # changed since the first pass
                problems.append(str(error))
            else:
                problems.extend(compare_members(golden, case_members(case, inputs, outputs),
                                                engine))
            done += 1
            if progress is not None:
                progress(done, len(readable))
    except MemoryError:
        entry = readable[done][0]
        problems.append(f"{directory / entry['file']}: regenerating case {entry['id']!r} does "
                        "not fit in memory; the remaining cases were not re-derived")
    return problems


