"""The ``refmask check-masking`` and ``refmask token-golden`` commands."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_commands"]


def _load(path: str):
    from refmask.adapters.user import import_target

    return import_target(path, "check-masking: --impl")


def _check_masking(args) -> int:
    from refmask.adapters.tokens import MASKERS, T5_CORRUPTERS

    from .masking import MaskingSpec, check_masker
    from .masking_report import write_report
    from .masking_t5 import check_t5

    if args.report:  # refuse a bad output path before any work
        folder = os.path.dirname(os.path.abspath(args.report))
        if not os.path.isdir(folder):
            raise ValueError(f"check-masking: the folder of --report {args.report!r} does not "
                             f"exist")
        if os.path.lexists(args.report) and not args.overwrite:
            raise FileExistsError(f"check-masking: --report {args.report!r} already exists; "
                                  f"pass --overwrite to replace it")
    names = args.maskers or ([] if args.impl or args.t5_impl else ["reference"])
    unknown = [n for n in names if n not in MASKERS and n not in T5_CORRUPTERS]
    if unknown:
        raise ValueError(f"check-masking: unknown masker(s) {', '.join(unknown)}; known: "
                         f"{', '.join([*MASKERS, *T5_CORRUPTERS])}")
    t5_jobs = [(n, T5_CORRUPTERS[n]()) for n in names if n in T5_CORRUPTERS]
    t5_jobs += [(path, _load(path)) for path in args.t5_impl or []]
    names = [n for n in names if n in MASKERS]
    jobs = []
    for name in names:
        try:
            masker, declared = MASKERS[name]()
            spec = MaskingSpec(**declared)
        except ImportError as error:
            print(f"{name}: skipped ({error})")
            continue
        jobs.append((name, masker, spec))
    for path in args.impl or []:
        spec = MaskingSpec(vocab_size=args.vocab_size, mask_id=args.mask_id,
                           special_ids=tuple(args.special_ids), pad_id=args.pad_id,
                           rate=args.rate, whole_word=args.whole_word,
                           spans=(0.2, 10) if args.spans else None)
        jobs.append((path, _load(path), spec))
    verdicts = []
    for name, masker, spec in jobs:
        verdict = check_masker(masker, spec, name=name, rows=args.rows, length=args.length,
                               epochs=args.epochs, seed=args.seed, alpha=args.alpha)
        verdicts.append(verdict)
        print(verdict.summary() if not args.quiet else
              f"{name}: {'PASS' if verdict.passed else 'FAIL'}")
    for name, corrupt in t5_jobs:
        verdict = check_t5(corrupt, name=name, rows=args.rows, length=args.length,
                           epochs=args.epochs, seed=args.seed, alpha=args.alpha)
        verdicts.append(verdict)
        print(verdict.summary() if not args.quiet else
              f"{name}: {'PASS' if verdict.passed else 'FAIL'}")
    if args.report:
        for path in write_report(verdicts, args.report, overwrite=args.overwrite,
                                 plots=not args.no_plots):
            print(f"wrote {path}")
    return 1 if any(not v.passed for v in verdicts) else 0


def _token_golden(args) -> int:
    from . import token_golden

    if args.action == "generate":
        print(f"wrote {token_golden.generate(args.directory, overwrite=args.overwrite)}")
        return 0
    if args.directory is not None and not os.path.isdir(args.directory):  # a refusal (exit 2)
        what = "is not a directory" if os.path.lexists(args.directory) else "does not exist"
        raise FileNotFoundError(f"token-golden verify: {args.directory!r} {what}")
    problems = token_golden.verify(args.directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    print("token corpus: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``check-masking`` and ``token-golden`` on the ``refmask`` parser."""
    from refmask.adapters.tokens import MASKERS

    mk = commands.add_parser("check-masking", help="judge token maskers (MLM, whole words, "
                             "spans) by exact invariants and statistical tests")
    mk.add_argument("maskers", nargs="*", help=f"named maskers: {', '.join(MASKERS)}, "
                    "reference.t5 (default: reference)")
    mk.add_argument("--impl", action="append", metavar="MODULE:FUNCTION",
                    help="your masker fn(input_ids, *, seed, epoch, word_ids) -> "
                         "(masked_ids, labels)")
    mk.add_argument("--t5-impl", action="append", metavar="MODULE:FUNCTION",
                    help="your T5 span corruption fn(input_ids, *, seed, epoch) -> (inputs, "
                         "targets), vocabulary 1000, eos 1, pad 0 (docs/spec.md 6.8)")
    mk.add_argument("--vocab-size", type=int, default=100, help="--impl: ids (default 100)")
    mk.add_argument("--mask-id", type=int, default=3, help="--impl: mask id (default 3)")
    mk.add_argument("--special-ids", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                    help="--impl: special ids (default 0 1 2 3 4)")
    mk.add_argument("--pad-id", type=int, default=0, help="--impl: padding id (default 0)")
    mk.add_argument("--rate", type=float, default=0.15, help="--impl: rate (default 0.15)")
    mk.add_argument("--whole-word", action="store_true", help="--impl: whole-word masker")
    mk.add_argument("--spans", action="store_true", help="--impl: SpanBERT spans (0.2, 10)")
    mk.add_argument("--rows", type=int, default=64, help="probe rows (default 64)")
    mk.add_argument("--length", type=int, default=128, help="probe length (default 128)")
    mk.add_argument("--epochs", type=int, default=4, help="epochs (default 4)")
    mk.add_argument("--seed", type=int, default=0, help="probe and masker seed (default 0)")
    mk.add_argument("--alpha", type=float, default=1e-3,
                    help="family-wise false-alarm rate per verdict (default 1e-3)")
    mk.add_argument("--report", help="write a report: .json or .md (+ PNG histograms)")
    mk.add_argument("--no-plots", action="store_true", help="no histograms in a .md report")
    mk.add_argument("--overwrite", action="store_true", help="replace existing report files")
    mk.add_argument("--quiet", action="store_true", help="one line per masker")
    mk.set_defaults(run=_check_masking)

    gold = commands.add_parser("token-golden", help="generate or verify the golden "
                               "token-mask corpus")
    gold.add_argument("action", choices=["generate", "verify"])
    gold.add_argument("directory", nargs="?", help="corpus directory (default: the shipped "
                      "refmask/conformance/token_corpus)")
    gold.add_argument("--overwrite", action="store_true", help="generate: replace files")
    gold.set_defaults(run=_token_golden)
