"""Golden token-mask vectors: a small hashed corpus of refmask.tokens outputs.

A case (Wycheproof style) is a named, flagged record: the masker, its parameters, the input
batch (rebuilt from ``refmask.rng`` so the file never has to be trusted for it), seed, epoch and
example ids. ``token_corpus/`` (next to this module) holds one ``<case id>.npz`` per case --
uncompressed, no pickle, fixed zip timestamps (:func:`refmask.conformance.golden.npz_bytes`),
members ``input_ids`` and the masker's outputs -- and ``manifest.json``::

    {"schema_version": 1, "spec_version": "0.1", "kind": "refmask.tokens",
     "cases": [{"id": ..., "file": ..., "sha256": ..., "case": {...}}, ...]}

``verify`` checks each file's SHA-256 against the manifest, that the stored inputs are the
ones the case rebuilds, and that refmask.tokens still computes the stored outputs bit for bit.
The attention corpus (``corpus/``) is separate and untouched by this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refmask import SPEC_VERSION, tokens
from refmask._files import write_atomic
from refmask.rng import randint

from ._corpus_fs import (
    MAX_MANIFEST_BYTES,
    CorpusFileError,
    member_bound,
    read_npz,
    read_regular_file,
    strict_json,
)
from .golden import npz_bytes
from .golden._format import _FILE_RE

__all__ = ["CASES", "TokenCase", "generate", "inputs_of", "outputs_of", "shipped_path", "verify"]

SCHEMA_VERSION = 1
VOCAB, PAD, CLS, SEP, MASK = 64, 0, 1, 2, 3
SPECIALS = (CLS, SEP, MASK)


@dataclass(frozen=True)
class TokenCase:
    """A golden token-masking case: ``masker`` is a refmask.tokens function name."""

    id: str
    masker: str
    flags: tuple[str, ...]
    rows: int
    length: int
    params: dict = field(default_factory=dict)
    seed: int = 0
    epoch: int = 0
    words: bool = False

    def to_json(self) -> dict:
        return {"id": self.id, "masker": self.masker, "flags": list(self.flags),
                "rows": self.rows, "length": self.length, "params": self.params,
                "seed": self.seed, "epoch": self.epoch, "words": self.words}


def _mlm(**extra) -> dict:
    return {"mask_id": MASK, "vocab_size": VOCAB, "special_ids": list(SPECIALS),
            "pad_id": PAD, **extra}


CASES = (
    TokenCase("mlm__bernoulli_default", "mask_tokens", ("Bernoulli", "8010010"), 4, 32, _mlm()),
    TokenCase("mlm__exact_count", "mask_tokens", ("ExactCount",), 4, 32,
              _mlm(selection="exact_count"), seed=1),
    TokenCase("mlm__epoch_3_dynamic", "mask_tokens", ("Dynamic",), 4, 32, _mlm(), epoch=3),
    TokenCase("mlm__epoch_3_static_copies_2", "mask_tokens", ("Static",), 4, 32,
              _mlm(static_copies=2), epoch=3),
    TokenCase("mlm__non_special_random_bool_labels", "mask_tokens", ("NonSpecialRandom",),
              4, 32, _mlm(rate=0.5, random_vocabulary="non_special", labels="bool"), seed=2),
    TokenCase("mlm__specials_and_padding_eligible", "mask_tokens", ("SpecialsEligible",),
              4, 32, _mlm(specials_eligible=True, padding_eligible=True), seed=3),
    TokenCase("whole_word__bernoulli", "mask_whole_words", ("WholeWord",), 4, 32,
              _mlm(rate=0.3), seed=4, words=True),
    TokenCase("whole_word__exact_count", "mask_whole_words", ("WholeWord", "ExactCount"),
              4, 32, _mlm(rate=0.3, selection="exact_count"), seed=5, words=True),
    TokenCase("spans__spanbert", "mask_spans", ("Spans",), 4, 48, _mlm(), seed=6),
    TokenCase("spans__whole_words_half", "mask_spans", ("Spans", "WholeWord"), 4, 48,
              _mlm(rate=0.5), seed=7, words=True),
    TokenCase("t5__default", "corrupt_spans", ("T5",), 4, 64,
              {"vocab_size": 100, "pad_id": PAD, "eos_id": SEP}, seed=8),
    TokenCase("t5__dense_short_spans", "corrupt_spans", ("T5",), 4, 64,
              {"vocab_size": 100, "pad_id": PAD, "noise_density": 0.5,
               "mean_span_length": 1.5}, seed=9),
)


def inputs_of(case: TokenCase) -> dict[str, np.ndarray]:
    """The case's input batch: [CLS] body [SEP] then padding (row b is 3*b tokens shorter),
    body ids from ``randint(case.seed, "<id>/ids", ..., 4, VOCAB)``; for T5 no [CLS]/[SEP]."""
    ids = randint(case.seed, f"{case.id}/ids", (case.rows, case.length), 4, VOCAB)
    t5 = case.masker == "corrupt_spans"
    for b in range(case.rows):
        end = case.length - 3 * b
        if not t5:
            ids[b, 0], ids[b, end - 1] = CLS, SEP
        ids[b, end:] = PAD
    out = {"input_ids": ids}
    if case.words:
        continuation = randint(case.seed, f"{case.id}/continuation", ids.shape, 0, 3) == 0
        out["continuation"] = continuation
    return out


def outputs_of(case: TokenCase, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    fn = getattr(tokens, case.masker)
    kwargs = dict(case.params, seed=case.seed, epoch=case.epoch,
                  example_ids=list(range(case.rows)))
    if case.words:
        kwargs["continuation"] = given["continuation"]
    result = fn(given["input_ids"], **kwargs)
    if isinstance(result, tokens.T5Batch):
        return {"inputs": result.inputs, "targets": result.targets, "noise": result.noise,
                "input_lengths": result.input_lengths, "target_lengths": result.target_lengths}
    return {"masked_ids": result.input_ids, "labels": result.labels,
            "selected": result.selected, "replacement": result.replacement}


def _file_of(case: TokenCase) -> str:
    return f"{case.id}.npz"


def _members(case: TokenCase) -> dict[str, np.ndarray]:
    given = inputs_of(case)
    outputs = outputs_of(case, given)
    little = {name: np.asarray(a).astype(np.asarray(a).dtype.newbyteorder("<"))
              for name, a in {**given, **outputs}.items()}
    return little


def shipped_path() -> Path:
    """The corpus shipped with refmask: ``refmask/conformance/token_corpus``."""
    return Path(__file__).resolve().parent / "token_corpus"


def _refuse_foreign(target: Path) -> None:
    """A token corpus is written only into a new directory or one holding nothing but token
    corpus files: never among someone else's files (``generate /etc`` must not scatter npz)."""
    where = "token golden generate"
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{where}: {str(target)!r} exists and is not a directory")
    ours = {_file_of(case) for case in CASES} | {"manifest.json"}
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in ours)
    if foreign:
        raise FileExistsError(f"{where}: {str(target)!r} holds files that are not a token "
                              f"corpus's ({foreign[:5]}{' ...' if len(foreign) > 5 else ''}); "
                              "refusing to write a corpus among them: give a new or empty "
                              "directory")


def generate(directory: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Write every case and the manifest (atomically, manifest last) into ``directory``.

    directory: created if absent; an existing one may hold only this corpus's files
    (FileExistsError otherwise), and existing files are replaced only with ``overwrite``."""
    target = Path(directory) if directory is not None else shipped_path()
    _refuse_foreign(target)
    target.mkdir(parents=True, exist_ok=True)
    entries = []
    for case in CASES:
        data = npz_bytes(_members(case))
        write_atomic(data, target / _file_of(case), overwrite, where="token golden generate",
                     name="directory file")
        entries.append({"id": case.id, "file": _file_of(case),
                        "sha256": hashlib.sha256(data).hexdigest(), "case": case.to_json()})
    manifest = {"schema_version": SCHEMA_VERSION, "spec_version": SPEC_VERSION,
                "kind": "refmask.tokens", "cases": entries}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_atomic(text.encode("utf-8"), target / "manifest.json", overwrite,
                 where="token golden generate", name="directory file")
    return target


def verify(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Problems found (empty: the corpus is intact and still what refmask.tokens computes).

    Files are read as a golden corpus's are (docs/spec.md section 4.2, ``corpus-files``):
    regular files only, within a size bound (the manifest's fixed, a case file's from the
    arrays its catalogue case needs), hashed while read, npy headers checked before any array
    is allocated; a malformed manifest is one problem naming it, never an exception.
    """
    target = Path(directory) if directory is not None else shipped_path()
    path = target / "manifest.json"
    try:
        raw, _ = read_regular_file(path, MAX_MANIFEST_BYTES,
                                   missing="missing: not a refmask.tokens corpus")
        manifest = strict_json(raw, path)
    except CorpusFileError as error:
        return [str(error)]
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION or \
            manifest.get("kind") != "refmask.tokens" or not isinstance(manifest.get("cases"),
                                                                        list):
        return [f"{target}: not a schema {SCHEMA_VERSION} refmask.tokens manifest"]
    problems = []
    known = {case.id: case for case in CASES}
    for index, entry in enumerate(manifest["cases"]):
        fields = entry if isinstance(entry, dict) else {}
        case_id, file, sha = (fields.get(key) for key in ("id", "file", "sha256"))
        if not (isinstance(case_id, str) and isinstance(file, str) and isinstance(sha, str)
                and _FILE_RE.fullmatch(file)):
            problems.append(f"{path}: cases[{index}] must have a string id, sha256 and a plain "
                            f"file name [A-Za-z0-9._-]+.npz, got {entry!r:.120}")
            continue
        case = known.get(case_id)
        file_path = target / file
        if case is None or case.to_json() != fields.get("case"):
            problems.append(f"{file_path}: case {case_id!r} is not in this refmask's catalogue")
            continue
        expected = _members(case)
        layout = {name: (array.dtype, array.shape) for name, array in expected.items()}
        try:
            data, digest = read_regular_file(file_path, member_bound(layout),
                                             missing="missing (listed in the manifest)")
            if digest != sha:
                problems.append(f"{file_path}: sha256 differs from the manifest")
                continue
            stored = read_npz(file_path, data, layout)
        except CorpusFileError as error:
            problems.append(str(error))
            continue
        for name, array in expected.items():
            if not np.array_equal(stored[name], array):
                problems.append(f"{file_path}: {name} is not what refmask.tokens computes now")
    listed = {entry.get("id") for entry in manifest["cases"] if isinstance(entry, dict)}
    missing = sorted(set(known) - listed)
    problems.extend(f"{target}: case {m!r} missing from the manifest" for m in missing)
    return problems
