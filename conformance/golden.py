"""Golden corpora: attention outputs on disk, with their inputs, verifiable by re-derivation.

A *corpus* is a directory holding one ``manifest.json`` and one ``.npz`` file per case. This
module writes (:func:`generate`), reads (:func:`load`) and checks (:func:`verify`) corpora; the
package ships one for the whole :func:`~refmask.conformance.cases.catalog`
(:func:`shipped_corpus_path`). The format below is a public contract, schema version 1.

Two engines compute the golden outputs (``generate(..., engine=...)``):

* ``"exact"`` (default; the shipped corpus): :mod:`~refmask.conformance.exact`, mpmath at 50
  digits, correctly rounded to float64. Every machine derives the same bits, so
  :func:`verify` compares BIT FOR BIT. Practical for the catalog's small cases only.
* ``"reference"`` (long-sequence sweeps, :mod:`~refmask.conformance.sweeps`): refmask's own
  float64 reference, :func:`refmask.attention.attention` and ``attention_vjp`` on the inputs
  upcast to float64 (``runner.reference_outputs(case, inputs, float64=True, grads=True)``),
  within the error bound of spec section 3.6 of the exact values. The same machine re-derives
  the same bits, but another BLAS may sum in another order, so :func:`verify` compares the
  inputs bit for bit and each output array with the *reference rule*: NaN, +inf and -inf at
  exactly the same entries, and elsewhere ``|stored - recomputed| <= REFERENCE_RTOL *
  max|recomputed|`` (the largest finite magnitude of that array; ``REFERENCE_RTOL = 1e-12``,
  the scale of the section 3.6 bound at Tk = 2048, Dqk = 64; other summation orders (another
  BLAS, torch CPU, a blocked kernel) stay below 2e-14 of max|value| on the "long" sweep, and a
  real defect is far larger).

manifest.json
-------------
A UTF-8 JSON object (strict JSON: no NaN/Infinity) with the keys::

    schema_version   1 (an int); a reader refuses any version it does not know
    refmask_version  the refmask version that wrote the corpus, e.g. "0.1.0"
    spec_version     refmask.SPEC_VERSION of the semantics the values follow, e.g. "0.1"
    generator        what computed the golden outputs, for people:
                     "refmask.conformance.exact (mpmath, 50 digits)" or
                     "refmask.attention float64 reference"
    engine           "exact" or "reference" (see above); optional: a manifest without it was
                     written by the exact engine (refmask 0.1.0 corpora). An unknown engine
                     can be loaded but not re-derived by verify.
    created          the UTC date of writing, ISO 8601 ("2025-11-21")
    cases            a list, one object per case, in the order written:
        id       the case id ("causal/bottom_right/wide@float16"), unique in the corpus
        file     the case's file name in the corpus directory: [A-Za-z0-9._-]+ ending in
                 ".npz", not starting with ".", unique (also ignoring letter case)
        sha256   lowercase hex SHA-256 of the file's bytes
        case     the case's JSON (``Case.to_json()``): everything needed to rebuild the case
                 and regenerate its inputs; its "id" equals the entry's id

Readers ignore keys they do not know. Writers name each file after its id: "/" -> "__",
"@" -> ".", any other character outside [A-Za-z0-9._-] -> "_", a leading "." -> "_", then
".npz" (ids longer than 100 characters are cut and get "-" plus 16 hex digits of their SHA-256).

<file>.npz
----------
An uncompressed NumPy ``.npz`` archive (what ``np.savez`` writes; members written in a fixed
order with a fixed 1980-01-01 timestamp, so equal arrays give equal bytes) of little-endian
arrays, loadable with ``np.load(path, allow_pickle=False)``; object arrays are never used.
Member names:

    input.q, input.k, input.v, input.d_out        always
    input.bias                                    iff case["bias"]
    input.sinks                                   iff case["sinks"]
    input.dropout_keep                            iff case["dropout_rate"] is not null
    exact.out, exact.lse, exact.dq, exact.dk, exact.dv     always
    exact.dbias                                   iff case["bias"]
    exact.dsinks                                  iff case["sinks"]

``input.*`` are the inputs exactly as :func:`~refmask.conformance.cases.case_inputs` generates
them, shaped by the case's layout: float64/float32/float16 in the case's dtype; bfloat16 as the
uint16 bit patterns (``a.view(ml_dtypes.bfloat16)`` restores them); ``dropout_keep`` bool.
``exact.*`` are float64, the golden outputs (the member names are the same for both engines):
with engine "exact" those of :func:`~refmask.conformance.exact.exact_attention`, each the
50-digit value correctly rounded to float64; with engine "reference" those of the float64
reference. Shapes (see :mod:`~refmask.conformance.exact` for the semantics): out/dq/dk/dv in
the case's layout, lse (B, Hq, Tq), dbias (B, Hq, Tq, Tk), dsinks (Hq,). NaN and +-inf appear
exactly where the semantics put them.

Integrity rules
---------------
* :func:`load` checks the manifest and the SHA-256 of every file *before* parsing any array,
  and parses only with ``allow_pickle=False``; every defect (missing, truncated, corrupted or
  modified file or manifest, unknown schema version, wrong members, dtypes or shapes) raises
  :class:`CorpusError` naming the file and the defect.
* :func:`verify` lists every defect instead of stopping at the first, and (by default)
  regenerates every case's inputs and outputs with the corpus's engine and compares them: bit
  for bit for an exact corpus; inputs bit for bit and outputs by the reference rule above for a
  reference corpus (each problem names the rule it broke).
* :func:`generate` never leaves a partial corpus under the target name: it writes a hidden
  temporary sibling directory (each file fsynced), then renames it into place.

Only the exact engine (``generate(engine="exact")``, ``verify(regenerate=True)`` of an exact
corpus) needs mpmath; reading needs NumPy (and ml_dtypes for bfloat16 inputs).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.resources
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from refmask import SPEC_VERSION, __version__
from refmask.attention import Alibi
from refmask.masks import from_json as mask_from_json

from .cases import Case, derive_flags, numpy_dtype

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST = "manifest.json"
GENERATOR = "refmask.conformance.exact (mpmath, 50 digits)"
REFERENCE_GENERATOR = "refmask.attention float64 reference"
#: engine -> the manifest's "generator" text.
ENGINES = {"exact": GENERATOR, "reference": REFERENCE_GENERATOR}
#: verify's bound for a reference corpus (see the module docstring):
#: |stored - recomputed| <= REFERENCE_RTOL * max|recomputed| per array.
REFERENCE_RTOL = 1e-12

INPUT_NAMES = ("q", "k", "v", "d_out", "bias", "sinks", "dropout_keep")
EXACT_NAMES = ("out", "lse", "dq", "dk", "dv", "dbias", "dsinks")
_FILE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.npz")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class CorpusError(ValueError):
    """A golden corpus is missing, malformed or does not match its manifest.

    ``path`` is the offending file (or directory), ``problem`` what is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --- file names and case JSON ------------------------------------------------------------------

def case_file_name(case_id: str) -> str:
    """The file name a writer uses for ``case_id`` (rule in the module docstring)."""
    if not isinstance(case_id, str) or not case_id:
        raise ValueError(f"case_file_name: case_id must be a non-empty str, got {case_id!r}")
    name = case_id.replace("/", "__").replace("@", ".")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > 100:
        name = name[:100] + "-" + hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:16]
    return name + ".npz"


#: Modules whose predicate functions a corpus's case JSON may name without the caller's
#: ``trust``: the catalog's own (refmask.conformance.cases).
CATALOG_TRUST = ("refmask.conformance.cases",)


def case_from_json(data: Mapping, *, trust=()) -> Case:
    """Rebuild a :class:`Case` from ``Case.to_json()`` output (e.g. a manifest's "case").

    trust: further modules whose functions a ``predicate`` mask may name (see
    :func:`refmask.masks.from_json`); CATALOG_TRUST is always allowed, nothing else is imported.
    Raises ValueError when the JSON is malformed or does not describe exactly one case (the
    rebuilt case's JSON must equal ``data``).
    """
    where = "case_from_json"
    if isinstance(trust, str):
        raise TypeError(f"{where}: trust must be a list of module names, got {trust!r}")
    trust = (*CATALOG_TRUST, *trust)
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: data must be a JSON object, got {type(data).__name__}")
    try:
        shape = data["shape"]
        alibi = data["alibi"]
        case = Case(
            name=data["name"], family=data["family"],
            mask=None if data["mask"] is None else mask_from_json(data["mask"], trust=trust),
            batch=shape["B"], q_heads=shape["Hq"], kv_heads=shape["Hkv"], q_len=shape["Tq"],
            k_len=shape["Tk"], qk_dim=shape["Dqk"], v_dim=shape["Dv"], dtype=data["dtype"],
            layout=data["layout"], scale=data["scale"], softcap=data["softcap"],
            bias=data["bias"],
            alibi=None if alibi is None else Alibi(alibi["slopes"],
                                                   convention=alibi["convention"],
                                                   align=alibi["align"]),
            sinks=data["sinks"], dropout_rate=data["dropout_rate"],
            input_scale=data["input_scale"], empty_rows=data["empty_rows"], seed=data["seed"],
            notes=data["notes"],
        )
        extra = set(data["flags"]) - set(derive_flags(case))
        case = replace(case, extra_flags=tuple(sorted(extra)))
        rebuilt = json.loads(json.dumps(case.to_json()))
    except KeyError as missing:
        raise ValueError(f"{where}: case JSON lacks the key {missing}") from None
    except (TypeError, AttributeError) as error:
        raise ValueError(f"{where}: malformed case JSON ({error})") from None
    if rebuilt != json.loads(json.dumps(dict(data))):
        differing = sorted(key for key in set(rebuilt) | set(data)
                           if rebuilt.get(key) != data.get(key))
        raise ValueError(f"{where}: case {data.get('id')!r} does not round-trip; the rebuilt "
                         f"case differs in {differing}")
    return case


# --- array encoding ----------------------------------------------------------------------------

def _little_endian(array: np.ndarray) -> np.ndarray:
    dtype = array.dtype
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def _encode_input(name: str, array: np.ndarray, dtype_name: str) -> np.ndarray:
    """An input as stored: bfloat16 -> uint16 bit patterns; little-endian."""
    array = np.asarray(array)
    if name != "dropout_keep" and dtype_name == "bfloat16":
        array = array.view(np.uint16)
    return _little_endian(array)


def _members(case: Case, inputs: Mapping, outputs: Mapping) -> dict:
    """The .npz members of one case, in the order they are written."""
    members = {}
    for name in INPUT_NAMES:
        if name in inputs:
            members[f"input.{name}"] = _encode_input(name, inputs[name], case.dtype)
    for name in EXACT_NAMES:
        if name in outputs:
            members[f"exact.{name}"] = _little_endian(np.asarray(outputs[name], np.float64))
    return members


def npz_bytes(members: Mapping) -> bytes:
    """The bytes of an uncompressed .npz of ``members`` (name -> array), deterministic: the
    members in the given order, fixed timestamps and attributes, no pickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, data.getvalue())
    return buffer.getvalue()


def _expected_members(case_json: Mapping) -> dict:
    """Member name -> (dtype, shape) required by a case's JSON."""
    shape = case_json["shape"]
    b, hq, hkv, tq, tk = shape["B"], shape["Hq"], shape["Hkv"], shape["Tq"], shape["Tk"]
    dqk, dv = shape["Dqk"], shape["Dv"]

    def laid(heads, length, dim):
        return (b, length, heads, dim) if case_json["layout"] == "BTHD" else (b, heads, length,
                                                                              dim)

    stored = "uint16" if case_json["dtype"] == "bfloat16" else case_json["dtype"]
    floating = np.dtype(stored).newbyteorder("<")
    f64 = np.dtype("<f8")
    scores = (b, hq, tq, tk)
    expected = {
        "input.q": (floating, laid(hq, tq, dqk)), "input.k": (floating, laid(hkv, tk, dqk)),
        "input.v": (floating, laid(hkv, tk, dv)), "input.d_out": (floating, laid(hq, tq, dv)),
        "exact.out": (f64, laid(hq, tq, dv)), "exact.lse": (f64, (b, hq, tq)),
        "exact.dq": (f64, laid(hq, tq, dqk)), "exact.dk": (f64, laid(hkv, tk, dqk)),
        "exact.dv": (f64, laid(hkv, tk, dv)),
    }
    if case_json["bias"]:
        expected["input.bias"] = (floating, scores)
        expected["exact.dbias"] = (f64, scores)
    if case_json["sinks"]:
        expected["input.sinks"] = (floating, (hq,))
        expected["exact.dsinks"] = (f64, (hq,))
    if case_json["dropout_rate"] is not None:
        expected["input.dropout_keep"] = (np.dtype(bool), scores)
    return expected


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
        return case_from_json(self.case_json)


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
        return _read_case(self.directory, self._entries[case_id])

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


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(path, f"missing ({what} listed in the manifest)" if what != MANIFEST
                          else "missing: no manifest.json, not a refmask golden corpus") from None
    except IsADirectoryError:
        raise CorpusError(path, "is a directory, expected a file") from None
    except OSError as error:
        raise CorpusError(path, f"cannot be read ({error.strerror or error})") from None


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_manifest(directory: Path) -> dict:
    """Parse and validate ``directory/manifest.json`` (structure only, not the files)."""
    if not directory.exists():
        raise CorpusError(directory, "does not exist")
    if not directory.is_dir():
        raise CorpusError(directory, "is not a directory")
    path = directory / MANIFEST
    raw = _read_bytes(path, MANIFEST)
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise CorpusError(path, f"is not UTF-8 ({error})") from None
    except ValueError as error:
        raise CorpusError(path, f"is not valid JSON ({error}); truncated or corrupted?") from None

    def bad(problem):
        return CorpusError(path, problem)

    if not isinstance(manifest, dict):
        raise bad(f"must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise bad(f"schema_version must be an int, got {version!r}")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise bad(f"schema_version {version} is not supported: refmask {__version__} reads "
                  f"schema_version {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}")
    for key in ("refmask_version", "spec_version", "generator", "created"):
        if not isinstance(manifest.get(key), str):
            raise bad(f"{key} must be a string, got {manifest.get(key)!r}")
    if not isinstance(manifest.get("engine", "exact"), str):
        raise bad(f"engine must be a string, got {manifest['engine']!r}")
    cases = manifest.get("cases")
    if not isinstance(cases, list):
        raise bad(f"cases must be a list, got {type(cases).__name__}")
    ids, files = set(), set()
    for index, entry in enumerate(cases):
        where = f"cases[{index}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object, got {type(entry).__name__}")
        case_id, file, sha, case = (entry.get(k) for k in ("id", "file", "sha256", "case"))
        if not isinstance(case_id, str) or not case_id:
            raise bad(f"{where}.id must be a non-empty string, got {case_id!r}")
        where = f"{where} ({case_id!r})"
        if not isinstance(file, str) or not _FILE_RE.fullmatch(file):
            raise bad(f"{where}.file must be a plain file name [A-Za-z0-9._-]+.npz not starting "
                      f"with '.', got {file!r}")
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits, got {sha!r}")
        if not isinstance(case, dict) or case.get("id") != case_id:
            raise bad(f"{where}.case must be the case's JSON object with the same id")
        try:
            _expected_members(case)
        except (KeyError, TypeError, ValueError) as error:
            raise bad(f"{where}.case is malformed ({error!r})") from None
        if case_id in ids:
            raise bad(f"{where}: duplicate case id")
        if file.lower() in files:
            raise bad(f"{where}: file {file!r} is listed twice (names compared ignoring case)")
        ids.add(case_id)
        files.add(file.lower())
    return manifest


def corpus_engine(corpus) -> str:
    """The engine of a corpus: its manifest's "engine", or "exact" when the key is absent.

    corpus: a manifest (dict), or a corpus directory (only its manifest is read and checked;
    :class:`CorpusError` if it is unusable).
    """
    if not isinstance(corpus, Mapping):
        corpus = _read_manifest(Path(corpus))
    return corpus.get("engine", "exact")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked_bytes(directory: Path, entry: dict) -> tuple[Path, bytes]:
    path = directory / entry["file"]
    data = _read_bytes(path, f"case {entry['id']!r}")
    digest = _sha256(data)
    if digest != entry["sha256"]:
        raise CorpusError(path, f"sha256 is {digest}, the manifest says {entry['sha256']} "
                          f"(file of {len(data)} bytes is corrupted, truncated or modified, or "
                          "the manifest was edited)")
    return path, data


def _read_case(directory: Path, entry: dict) -> GoldenCase:
    """Hash-check, parse (no pickle) and validate one case file."""
    path, data = _checked_bytes(directory, entry)
    arrays = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as error:  # object arrays: "allow_pickle=False"
                    raise CorpusError(path, f"member {name!r} cannot be loaded without pickle "
                                      f"({error})") from None
    except CorpusError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise CorpusError(path, f"is not a valid .npz archive ({error})") from None
    expected = _expected_members(entry["case"])
    missing = sorted(set(expected) - set(arrays))
    unknown = sorted(set(arrays) - set(expected))
    if missing or unknown:
        raise CorpusError(path, f"members do not match case {entry['id']!r}: missing {missing}, "
                          f"unexpected {unknown}")
    for name, (dtype, shape) in expected.items():
        array = arrays[name]
        if array.dtype != dtype or array.shape != shape:
            raise CorpusError(path, f"member {name!r} is {array.dtype.str} {array.shape}, "
                              f"expected {dtype.str} {shape}")
        array.flags.writeable = False
    ordered = {name: arrays[name] for name in expected}
    return GoldenCase(id=entry["id"], file=path, case_json=entry["case"], arrays=ordered)


def load(directory) -> Corpus:
    """Open the corpus in ``directory``; raise :class:`CorpusError` for any defect.

    Checks the manifest (schema version, structure) and that every listed file exists with the
    listed SHA-256. Arrays are parsed (``allow_pickle=False``) and validated when a case is
    looked up in the returned :class:`Corpus`, again from hash-checked bytes.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    for entry in manifest["cases"]:
        _checked_bytes(directory, entry)
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


def _reference_difference(stored: np.ndarray, fresh: np.ndarray) -> str | None:
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


def _compare_members(golden: GoldenCase, members: Mapping, engine: str) -> list:
    """Problems of one stored case against its recomputed members, under ``engine``'s rule."""
    problems = []
    for name in sorted(set(members) | set(golden.arrays)):
        if name not in members or name not in golden.arrays:
            problems.append(f"{golden.file}: member {name!r} is "
                            f"{'not recomputed' if name not in members else 'missing'}")
            continue
        stored, recomputed = golden.arrays[name], members[name]
        if engine == "reference" and name.startswith("exact."):
            why = _reference_difference(stored, recomputed)
        elif not _same_bits(stored, recomputed):
            why = _first_difference(stored, recomputed)
        else:
            why = None
        if why is not None:
            problems.append(f"{golden.file}: {name} {why}")
    return problems


def _reference_outputs(case: Case, inputs: Mapping) -> dict:
    """The float64 reference's golden outputs, laid out like the exact engine's."""
    from .runner import reference_outputs

    arrays = reference_outputs(case, dict(inputs), float64=True, grads=True)
    if case.layout == "BTHD":
        arrays = {name: np.swapaxes(value, 1, 2) if name in ("out", "dq", "dk", "dv")
                  else value for name, value in arrays.items()}
    return {name: np.ascontiguousarray(value, np.float64) for name, value in arrays.items()}


def _reference_many(cases: Iterable[Case]) -> Iterator[tuple]:
    from .cases import case_inputs

    for case in cases:
        inputs = case_inputs(case)
        yield case, inputs, _reference_outputs(case, inputs)


def _compute(cases: list, engine: str, processes: int | None) -> Iterator[tuple]:
    """``(case, inputs, outputs)`` per case, from ``engine``."""
    if engine == "reference":
        return _reference_many(cases)
    from .exact import exact_many

    return exact_many(cases, processes=processes)


def _check_engine(where: str, engine) -> str:
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"{where}: engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine


def verify(directory, *, regenerate: bool = True, processes: int | None = None,
           progress: Callable[[int, int], object] | None = None, trust=()) -> list:
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
    directory = Path(directory)
    try:
        manifest = _read_manifest(directory)
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
            golden = _read_case(directory, entry)
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

    fresh = _compute([case for _, case in readable], engine, processes)
    if progress is not None:
        progress(0, len(readable))
    for done, ((entry, _), (case, inputs, outputs)) in enumerate(
            zip(readable, fresh, strict=True), start=1):
        try:
            golden = _read_case(directory, entry)
        except CorpusError as error:  # changed since the first pass
            problems.append(str(error))
        else:
            problems.extend(_compare_members(golden, _members(case, inputs, outputs), engine))
        if progress is not None:
            progress(done, len(readable))
    return problems


# --- writing -----------------------------------------------------------------------------------

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
    _check_engine(where, engine)
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
                _compute(cases, engine, processes), start=1):
            data = npz_bytes(_members(case, inputs, outputs))
            file = case_file_name(case.id)
            _write_file(temp / file, data)
            entries.append({"id": case.id, "file": file, "sha256": _sha256(data),
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


# --- the shipped corpus ------------------------------------------------------------------------

def shipped_corpus_path() -> Path:
    """The corpus installed with refmask (every case of ``catalog()``), as a directory path.

    Needs refmask installed as files (not inside a zip archive).
    """
    resource = importlib.resources.files("refmask.conformance").joinpath("corpus")
    with contextlib.suppress(TypeError):
        path = Path(os.fspath(resource))
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"shipped_corpus_path: the shipped corpus is not a directory on disk ({resource!r}); "
        "install refmask as files, not inside a zip archive"
    )
