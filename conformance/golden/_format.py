"""The golden corpus format (schema version 1, specified in the package docstring): names,
manifest structure and the .npz encoding; no computing, no writing of directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import io
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from refmask import __version__
from refmask.case import Case

from .._corpus_fs import (
    MAX_MANIFEST_BYTES,
    CorpusFileError,
    manifest_digest,
    read_regular_file,
    strict_json,
)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST = "manifest.json"

INPUT_NAMES = ("q", "k", "v", "d_out", "bias", "sinks", "dropout_keep", "query_scale")
SCORE_NAMES = ("scores_raw", "scores_softcapped", "scores_masked", "scores_probs")
EXACT_NAMES = ("out", "lse", "dq", "dk", "dv", "dbias", "dsinks", "partial_out",
               "partial_lse", *SCORE_NAMES)
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


# --- file names -----------------------------------------------------------------------------

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


def sha256_hex(data: bytes) -> str:
    """The lowercase hex SHA-256 of ``data`` (the manifest's "sha256")."""
    return hashlib.sha256(data).hexdigest()


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


def case_members(case: Case, inputs: Mapping, outputs: Mapping) -> dict:
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


def expected_members(case_json: Mapping) -> dict:
    """Member name -> (dtype, shape) required by a case's JSON.

    Raises ValueError unless the JSON's dtype is a case dtype, its layout BTHD or BHTD and
    every dimension an int >= 0 (so nothing a hostile manifest says can name another dtype)."""
    shape = case_json["shape"]
    dims = [shape[key] for key in ("B", "Hq", "Hkv", "Tq", "Tk", "Dqk", "Dv")]
    for key, dim in zip(("B", "Hq", "Hkv", "Tq", "Tk", "Dqk", "Dv"), dims, strict=True):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ValueError(f"shape.{key} must be an int >= 0, got {dim!r:.40}")
    b, hq, hkv, tq, tk, dqk, dv = dims
    if case_json["layout"] not in ("BTHD", "BHTD"):
        raise ValueError(f"layout must be 'BTHD' or 'BHTD', got {case_json['layout']!r:.40}")
    if case_json["dtype"] not in ("float64", "float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float64, float32, float16 or bfloat16, got "
                         f"{case_json['dtype']!r:.40}")

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
    splits = case_json.get("key_splits")
    if splits:
        if not isinstance(splits, list) or len(splits) > 64:
            raise ValueError(f"key_splits must be a list of at most 64 ranges, got "
                             f"{splits!r:.40}")
        expected["exact.partial_out"] = (f64, (len(splits), b, hq, tq, dv))
        expected["exact.partial_lse"] = (f64, (len(splits), b, hq, tq))
    if case_json.get("query_scale") is not None:
        expected["input.query_scale"] = (floating, (tq,))
    stages = case_json.get("scores") or []
    if not isinstance(stages, list) or not all(
            isinstance(stage, str) and f"scores_{stage}" in SCORE_NAMES for stage in stages):
        raise ValueError(f"scores must be a list of score stages, got {stages!r:.60}")
    for stage in stages:
        expected[f"exact.scores_{stage}"] = (f64, scores)
    return expected


# --- the manifest ------------------------------------------------------------------------------

def as_directory(where: str, directory: object) -> Path:
    """``directory`` as a Path; anything that is not a path (str or os.PathLike) is a
    TypeError naming ``where``."""
    if isinstance(directory, bytes) or not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{where}: directory must be a path (str or os.PathLike), got "
                        f"{type(directory).__name__}")
    if not os.fspath(directory):
        raise ValueError(f"{where}: directory must be a non-empty path")
    return Path(directory)


def read_file(path: Path, what: str, max_bytes: int) -> tuple[bytearray, str]:
    """``(bytes, sha256 hex)`` of a corpus file, read safely (regular files only, at most
    ``max_bytes``, hashed while read; see :mod:`.._corpus_fs`); CorpusError otherwise."""
    missing = (f"missing ({what} listed in the manifest)" if what != MANIFEST
               else "missing: no manifest.json, not a refmask golden corpus")
    try:
        return read_regular_file(path, max_bytes, missing=missing)
    except CorpusFileError as error:
        raise CorpusError(error.path, error.problem) from None


def read_manifest(directory: Path) -> dict:
    """Parse and validate ``directory/manifest.json`` (structure only, not the files).

    A manifest with "manifest_sha256" must hash to it (:func:`manifest_digest`); one without
    (refmask 0.1 corpora) is read only when nothing in it loosens verification: its engine
    must be absent or "exact" (whose bit-for-bit regeneration checks every other field).
    """
    if not directory.exists():
        raise CorpusError(directory, "does not exist")
    if not directory.is_dir():
        raise CorpusError(directory, "is not a directory")
    path = directory / MANIFEST
    raw, _ = read_file(path, MANIFEST, MAX_MANIFEST_BYTES)
    try:
        manifest = strict_json(raw, path)
    except CorpusFileError as error:
        raise CorpusError(error.path, error.problem) from None

    def bad(problem):
        return CorpusError(path, problem)

    if not isinstance(manifest, dict):
        raise bad(f"must hold a JSON object, got {type(manifest).__name__}")
    if "manifest_sha256" in manifest:
        stated = manifest["manifest_sha256"]
        actual = manifest_digest(manifest)
        if stated != actual:
            raise bad(f"manifest_sha256 is {str(stated)[:64]!r} but the manifest hashes to "
                      f"{actual}: it was edited after it was written (engine, versions or "
                      "case entries changed)")
    elif manifest.get("engine", "exact") != "exact":
        raise bad(f"engine {manifest.get('engine')!r:.40} is not covered by a manifest_sha256: "
                  "only an exact corpus may omit the hash (a manifest edit must not loosen "
                  "verification)")
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
            expected_members(case)
        except (KeyError, TypeError, ValueError) as error:
            raise bad(f"{where}.case is malformed ({error})") from None
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
        corpus = read_manifest(as_directory("corpus_engine", corpus))
    return corpus.get("engine", "exact")


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
