"""Golden corpora: attention outputs on disk, with their inputs, verifiable by re-derivation.

One module per job, all public names re-exported here: ``_format`` (names, manifest, .npz
encoding), ``_engines`` (deriving the outputs), ``_write`` (:func:`generate`), ``_verify``
(:func:`load`, :func:`verify`).

A *corpus* is a directory holding one ``manifest.json`` and one ``.npz`` file per case. This
module writes (:func:`generate`), reads (:func:`load`) and checks (:func:`verify`) corpora; the
package ships one for the whole :func:`~refmask.conformance.cases.catalog`
(:func:`shipped_corpus_path`). The format below is a public contract, schema version 1.

Two engines compute the golden outputs (``generate(..., engine=...)``):

* ``"exact"`` (default; the shipped corpus): :mod:`~refmask.conformance.exact`, mpmath at 50
  digits, correctly rounded to float64. Every machine derives the same bits, so
  :func:`verify` compares BIT FOR BIT. Practical for the catalog's small cases only.
* ``"reference"`` (long-sequence sweeps, :mod:`~refmask.conformance.sweeps`): refmask's own
  float64 reference, :func:`refmask.attention.attention` and ``attention_vjp`` on the exact
  path (``path="exact"`` whatever the size, never ``refmask.fast``) on the inputs
  upcast to float64 (``refmask.case.reference_outputs(case, inputs, float64=True, grads=True)``),
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
    manifest_sha256  lowercase hex SHA-256 of the manifest's canonical JSON without this key
                 (``json.dumps(body, sort_keys=True, separators=(",", ":"),
                 ensure_ascii=True)``): it covers every field that steers verification.
                 Written since refmask 0.1.x; a manifest without it is read only when its
                 engine is "exact" (absent or explicit).

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
    input.query_scale                             iff case has "query_scale" (not null)
    exact.out, exact.lse, exact.dq, exact.dk, exact.dv     always
    exact.dbias                                   iff case["bias"]
    exact.dsinks                                  iff case["sinks"]
    exact.partial_out, exact.partial_lse          iff case["key_splits"] (split-KV cases)
    exact.scores_<stage>                          for each stage in case["scores"] (a list,
                                                  absent = none; stages raw, softcapped,
                                                  masked, probs)

``input.*`` are the inputs exactly as :func:`~refmask.case.case_inputs` generates
them, shaped by the case's layout: float64/float32/float16 in the case's dtype; bfloat16 as the
uint16 bit patterns (``a.view(ml_dtypes.bfloat16)`` restores them); ``dropout_keep`` bool.
``exact.*`` are float64, the golden outputs (the member names are the same for both engines):
with engine "exact" those of :func:`~refmask.conformance.exact.exact_attention`, each the
50-digit value correctly rounded to float64; with engine "reference" those of the float64
reference. Shapes (see :mod:`~refmask.conformance.exact` for the semantics): out/dq/dk/dv in
the case's layout, lse (B, Hq, Tq), dbias (B, Hq, Tq, Tk), dsinks (Hq,), scores_<stage>
(B, Hq, Tq, Tk), input.query_scale (Tq,), partial_out (P, B, Hq, Tq, Dv) and partial_lse
(P, B, Hq, Tq): out and lse of each of the P partials of a split-KV case
(``refmask.case.partial_cases``), BHTD whatever the layout. NaN and +-inf appear
exactly where the semantics put them.

Integrity rules
---------------
* :func:`load` checks the manifest (and its manifest_sha256) and the SHA-256 of every file
  *before* parsing any array; files are read only if they are regular files within a size
  bound derived from their case, hashed while read, and parsed by hand without pickle, every
  npy header checked against the case before its array is allocated (docs/spec.md section
  4.2, rule ``corpus-files``); every defect (missing, truncated, corrupted or modified file or
  manifest, a symlink, FIFO or device, unknown schema version, wrong members, dtypes or
  shapes) raises :class:`CorpusError` naming the file and the defect.
* :func:`verify` lists every defect instead of stopping at the first, and (by default)
  regenerates every case's inputs and outputs with the corpus's engine and compares them: bit
  for bit for an exact corpus; inputs bit for bit and outputs by the reference rule above for a
  reference corpus (each problem names the rule it broke).
* :func:`generate` never leaves a partial corpus under the target name: under a lock it
  writes a hidden temporary sibling directory (each file fsynced) and swaps it into place
  atomically; a killed run's leftovers are recovered by the next command
  (:func:`recover_leftovers`; rule ``corpus-write``).

Only the exact engine (``generate(engine="exact")``, ``verify(regenerate=True)`` of an exact
corpus) needs mpmath; reading needs NumPy (and ml_dtypes for bfloat16 inputs).
"""

from __future__ import annotations

from .._corpus_fs import recover_leftovers
from ._engines import ENGINES, GENERATOR, REFERENCE_GENERATOR
from ._format import (
    EXACT_NAMES,
    INPUT_NAMES,
    MANIFEST,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    CorpusError,
    case_file_name,
    corpus_engine,
    npz_bytes,
    shipped_corpus_path,
)
from ._verify import (
    CATALOG_TRUST,
    REFERENCE_RTOL,
    Corpus,
    GoldenCase,
    case_from_json,
    load,
    verify,
)
from ._write import generate

__all__ = [
    "CATALOG_TRUST", "ENGINES", "EXACT_NAMES", "GENERATOR", "INPUT_NAMES", "MANIFEST",
    "REFERENCE_GENERATOR",
    "REFERENCE_RTOL", "SCHEMA_VERSION", "SUPPORTED_SCHEMA_VERSIONS", "Corpus", "CorpusError",
    "GoldenCase", "case_file_name", "case_from_json", "corpus_engine", "generate", "load",
    "npz_bytes", "recover_leftovers", "shipped_corpus_path", "verify",
]
