"""The ``refmask`` command line.

    refmask check BACKEND... [--impl module:function] [--dtype D ...] [--filter TEXT]
                  [--grads] [--corpus DIR] [--report out.html|.md|.json] [--overwrite]
                  [--quiet]                           the conformance suite; exit 1 on a fail
    refmask golden generate DIR [--sweep NAME] [--engine E] [--dtype D ...] [--filter TEXT]
                   [--overwrite]                      default: the catalog, exact engine
    refmask golden verify [DIR] [--no-regenerate]     default DIR: the shipped corpus
    refmask fuzz BACKEND [--examples N] [--seed S] [--dtype D ...]
                                                      random cases; prints a reproducer
    refmask matrix BACKEND... [--update docs/conformance.md] [--dtype D ...]
                                                      the published backend x family matrix
    refmask gallery [--ascii]                         every primitive, drawn
    refmask render MASK_JSON --q-len N --k-len N      one mask (JSON as written by to_json)
                   [--batch B] [--head H] [--png PATH] [--cell PX] [--overwrite]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from refmask import SPEC_VERSION, __version__, render
from refmask._files import check_output_path
from refmask.masks import from_json

from .gallery import gallery
from .runner import DEFAULT_CASE_TIMEOUT


def _picture(mask, q_len: int, k_len: int, batch: int, head: int, ascii_only: bool) -> str:
    batches = mask.batch_size or 1
    heads = mask.num_heads or 1
    keep = mask.materialize(batches, heads, q_len, k_len)
    return render.to_text(keep, batch=batch, head=head, ascii=ascii_only)


def _gallery(args) -> int:
    print(f"refmask {__version__} (spec {SPEC_VERSION}): the mask primitives")
    print("positions: pq = i + offset(b), pk = j; top_left offset 0, bottom_right Tk - Tq\n")
    for entry in gallery():
        print(f"{entry.name}\n  rule: {entry.rule}\n  mask: {entry.mask!r}")
        print(_picture(entry.mask, entry.q_len, entry.k_len, 0, 0, args.ascii))
        print()
    return 0


def _render(args) -> int:
    mask = from_json(args.mask, trust=args.trust or ())
    batches, heads = mask.batch_size or 1, mask.num_heads or 1
    for option, value, size in (("--batch", args.batch, batches), ("--head", args.head, heads)):
        if not 0 <= value < size:
            raise ValueError(f"render: {option} must lie in [0, {size}) for this mask "
                             f"({batches} batch entries, {heads} heads), got {value}")
    if args.cell < 1:
        raise ValueError(f"render: --cell must be an int >= 1, got {args.cell}")
    if args.png is not None:
        check_output_path(args.png, args.overwrite, where="render", name="--png")
        keep = mask.materialize(batches, heads, args.q_len, args.k_len)
        render.to_png(keep, args.png, batch=args.batch, head=args.head, cell=args.cell,
                      overwrite=args.overwrite)
        print(f"wrote {args.png}")
        return 0
    print(_picture(mask, args.q_len, args.k_len, args.batch, args.head, args.ascii))
    return 0


def _report_paths(args, targets: list) -> list:
    """The --report path of each target (one file per target when there are several),
    checked before anything runs."""
    if not args.report:
        return [None] * len(targets)
    from . import report as reports

    reports.check_suffix(args.report)
    if len(targets) == 1:
        paths = [args.report]
    else:
        stem, suffix = os.path.splitext(args.report)
        paths = [f"{stem}.{n}-{str(target).replace(':', '_').replace('/', '_')}{suffix}"
                 for n, target in enumerate(targets)]
    for path in paths:
        check_output_path(path, args.overwrite, where="check", name="--report")
    return paths


def _check(args) -> int:
    from refmask.adapters import expand

    from . import report as reports
    from .cases import DTYPES
    from .runner import check

    targets = expand(list(args.backends)) + list(args.impl or [])
    if not targets:
        raise ValueError("check: name at least one BACKEND or --impl module:function")
    for dtype in args.dtype or ():
        if dtype not in DTYPES:
            raise ValueError(f"check: --dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"check: --timeout must be a number of seconds > 0, got {args.timeout}")
    report_paths = _report_paths(args, targets)
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    corpus = {}
    if args.corpus:  # exactly the corpus's cases, judged against its stored golden values
        from .golden import case_from_json, load, recover_leftovers
        from .runner import corpus_golden

        _notes(recover_leftovers(Path(args.corpus)))
        loaded = load(args.corpus)
        corpus = {"cases": [case_from_json(loaded.manifest_entry(i)["case"],
                                           trust=args.trust or ()) for i in loaded],
                  "golden": corpus_golden(loaded)}
    failed = False
    for target, path in zip(targets, report_paths, strict=True):
        result = check(target, dtypes=args.dtype, filter=args.filter, grads=args.grads,
                       timeout=args.timeout, **corpus)
        if not result.results:
            raise ValueError(f"check: no case matches --filter {args.filter!r} and --dtype "
                             f"{args.dtype}")
        print(reports.terminal(result, colour=colour, details=not args.quiet))
        if path is not None:
            reports.write(result, path, overwrite=args.overwrite)
            print(f"wrote {path}")
        failed = failed or result.failed or result.interrupted
        if result.interrupted:
            break
    return 1 if failed else 0


def _notes(notes: list) -> None:
    """What recovery did (leftovers of an interrupted golden generate), on stderr."""
    for note in notes:
        print(f"refmask: note: {note}", file=sys.stderr)


def _progress_bar(label: str):
    """A one-line progress bar on stderr (only when stderr is a terminal)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _golden(args) -> int:
    from . import golden
    from .runner import select_cases

    if args.action == "generate":
        if not args.directory:
            raise ValueError("golden generate: DIR is required")
        source = None  # the catalog
        if args.sweep is not None:
            from .sweeps import sweep, sweep_names

            if args.sweep not in sweep_names():
                raise ValueError(f"golden generate: --sweep must be one of "
                                 f"{list(sweep_names())}, got {args.sweep!r}")
            source = sweep(args.sweep)
        engine = args.engine or ("exact" if source is None else "reference")
        cases = select_cases(source, dtypes=args.dtype, filter=args.filter)
        if not cases:
            raise ValueError(f"golden generate: no case matches --filter {args.filter!r} and "
                             f"--dtype {args.dtype}")
        _notes(golden.recover_leftovers(Path(args.directory)))
        path = golden.generate(args.directory, cases, overwrite=args.overwrite, engine=engine,
                               progress=_progress_bar(f"generating ({engine})"))
        print(f"wrote {len(cases)} cases to {path} (engine {engine})")
        return 0
    directory = args.directory or golden.shipped_corpus_path()
    _notes(golden.recover_leftovers(Path(directory)))
    golden.corpus_engine(directory)  # no readable manifest: a refusal (exit 2), not a defect
    problems = golden.verify(directory, regenerate=not args.no_regenerate,
                             progress=_progress_bar("verifying"), trust=args.trust or ())
    for problem in problems:
        print(f"problem: {problem}")
    what = "hashes"
    if not args.no_regenerate:
        try:
            engine = golden.corpus_engine(directory)
        except golden.CorpusError:
            engine = None
        what = {"exact": "hashes and bit-identical regeneration",
                "reference": f"hashes, bit-identical inputs, reference outputs within "
                             f"{golden.REFERENCE_RTOL:g} of max|value| per array"}.get(
                                 engine, "hashes and regeneration")
    print(f"{directory}: {'OK' if not problems else f'{len(problems)} problems'} ({what})")
    return 1 if problems else 0


def _fuzz(args) -> int:
    from .cases import DTYPES
    from .strategies import fuzz

    if args.examples < 1:
        raise ValueError(f"fuzz: --examples must be an int >= 1, got {args.examples}")
    found = fuzz(args.backend, max_examples=args.examples, seed=args.seed,
                 dtypes=args.dtype or DTYPES)
    if found is None:
        print(f"no failing case in {args.examples} random cases")
        return 0
    case, result, code = found
    print(f"fail on {case.id}: {result.reason}")
    if result.picture:
        print(result.picture)
    print("\nreproducer:\n")
    print(code)
    return 1


def _matrix(args) -> int:
    from refmask.adapters import expand

    from . import matrix

    if args.update:
        matrix.read_block_file(args.update)  # refuse a bad --update FILE before measuring
    reports = matrix.measure(expand(args.backends), dtypes=args.dtype,
                             progress=_progress_bar("measuring"))
    block = matrix.render(reports)
    if args.update:
        matrix.update_file(args.update, block)
        print(f"updated {args.update}")
    else:
        print(block)
    return 1 if any(r.failed for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refmask", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version",
                        version=f"refmask {__version__} (spec {SPEC_VERSION})")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("check", help="run the conformance suite against backends")
    run.add_argument("backends", nargs="*",
                     help="backend names (numpy, torch.sdpa, ...) or families (torch, jax, "
                          "keras, onnxruntime, hf, gpu)")
    run.add_argument("--impl", action="append", metavar="MODULE:FUNCTION",
                     help="check your own function fn(q, k, v, call) (see README)")
    run.add_argument("--dtype", action="append", metavar="DTYPE",
                     help="only these dtypes (repeatable; default: all)")
    run.add_argument("--filter", help="only cases whose id or flags contain one of these "
                     "comma-separated texts")
    run.add_argument("--grads", action="store_true", help="also check gradients")
    run.add_argument("--corpus", metavar="DIR", help="run exactly the cases of this golden "
                     "corpus (e.g. from 'golden generate --sweep') against its stored values")
    run.add_argument("--report", help="write a report: .json, .md or .html")
    run.add_argument("--overwrite", action="store_true", help="replace an existing report")
    run.add_argument("--quiet", action="store_true", help="only the summary table")
    run.add_argument("--timeout", type=float, default=DEFAULT_CASE_TIMEOUT, metavar="SECONDS",
                     help="per-case time limit of the backend's call; a case over it fails "
                     f"(default {DEFAULT_CASE_TIMEOUT:g})")
    run.add_argument("--trust", action="append", metavar="MODULE",
                     help="--corpus: let its predicate masks import functions of MODULE "
                     "(repeatable; nothing named in a corpus is imported otherwise)")
    run.set_defaults(run=_check)

    gold = commands.add_parser("golden", help="generate or verify a golden corpus")
    gold.add_argument("action", choices=["generate", "verify"])
    gold.add_argument("directory", nargs="?", help="corpus directory")
    from .sweeps import sweep_names

    gold.add_argument("--sweep", metavar="NAME", help="generate: the cases of a named sweep "
                      f"({', '.join(sweep_names())}; see refmask.conformance.sweeps) instead "
                      "of the catalog")
    gold.add_argument("--engine", choices=["exact", "reference"],
                      help="generate: golden engine (default: exact for the catalog, reference "
                      "for a sweep)")
    gold.add_argument("--dtype", action="append", metavar="DTYPE",
                      help="generate: only these dtypes (narrows the catalog or the sweep)")
    gold.add_argument("--filter", help="generate: only matching cases (catalog or sweep)")
    gold.add_argument("--overwrite", action="store_true", help="generate: replace DIR")
    gold.add_argument("--no-regenerate", action="store_true",
                      help="verify: check hashes only, do not recompute")
    gold.add_argument("--trust", action="append", metavar="MODULE",
                      help="verify: let predicate masks import functions of MODULE "
                      "(repeatable; nothing named in a corpus is imported otherwise)")
    gold.set_defaults(run=_golden)

    fz = commands.add_parser("fuzz", help="judge a backend on random cases (hypothesis)")
    fz.add_argument("backend", help="backend name or module:function")
    fz.add_argument("--examples", type=int, default=200, help="random cases (default 200)")
    fz.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    fz.add_argument("--dtype", action="append", metavar="DTYPE", help="only these dtypes")
    fz.set_defaults(run=_fuzz)

    mx = commands.add_parser("matrix", help="the backend x family conformance matrix")
    mx.add_argument("backends", nargs="+", help="backend names")
    mx.add_argument("--update", metavar="FILE",
                    help="replace the <!-- matrix:begin/end --> block of FILE")
    mx.add_argument("--dtype", action="append", metavar="DTYPE", help="only these dtypes")
    mx.set_defaults(run=_matrix)

    show = commands.add_parser("gallery", help="draw every mask primitive")
    show.add_argument("--ascii", action="store_true", help="use '#' and '.' only")
    show.set_defaults(run=_gallery)

    one = commands.add_parser("render", help="draw one mask given as JSON")
    one.add_argument("mask", help='mask JSON, e.g. \'{"kind": "causal", "align": "top_left"}\'')
    one.add_argument("--q-len", type=int, required=True, help="Tq")
    one.add_argument("--k-len", type=int, required=True, help="Tk")
    one.add_argument("--batch", type=int, default=0, help="batch entry to draw (default 0)")
    one.add_argument("--head", type=int, default=0, help="head to draw (default 0)")
    one.add_argument("--png", help="write a PNG to this path instead of printing text")
    one.add_argument("--cell", type=int, default=8, help="PNG pixels per cell (default 8)")
    one.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    one.add_argument("--ascii", action="store_true", help="use '#' and '.' only")
    one.add_argument("--trust", action="append", metavar="MODULE",
                     help="let a predicate mask import functions of MODULE (repeatable)")
    one.set_defaults(run=_render)
    from .masking_cli import add_commands  # check-masking, token-golden (token masking)

    add_commands(commands)
    return parser


def _names_user_code(args) -> bool:
    """The command names modules of the user's project: --impl / --t5-impl, --trust, or
    fuzz's module:function. Only then does the working directory go on sys.path."""
    return bool(getattr(args, "impl", None) or getattr(args, "t5_impl", None)
                or getattr(args, "trust", None) or ":" in (getattr(args, "backend", "") or ""))


def _refusal(error: BaseException) -> str:
    """One line for an error that refuses the command (no traceback)."""
    if isinstance(error, OSError) and not str(error).startswith("refmask") and (
            error.filename is not None or error.strerror):
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror or error}"
    if isinstance(error, MemoryError):
        return "out of memory (MemoryError); the input is larger than this machine can hold"
    if isinstance(error, RecursionError):
        return f"input nested too deeply ({error})"
    return str(error) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code: 0 success, 1 a conformance failure or a
    corpus problem, 2 a refusal (bad argument, unreadable or unwritable file, any error: one
    line on stderr naming the argument or file and the rule), 130 interrupted."""
    args = build_parser().parse_args(argv)
    # --impl module:function names a module of the user's project, as pytest would find it;
    # golden corpora and --corpus never put the working directory on sys.path.
    if _names_user_code(args) and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("refmask: interrupted", file=sys.stderr)
        return 130
    except SystemExit as error:  # refmask never exits from inside a command: user code did
        print(f"refmask: error: code under test called sys.exit({error.code!r}); the command "
              "was stopped", file=sys.stderr)
        return 2
    except (ValueError, TypeError, LookupError, OSError, RuntimeError, MemoryError,
            ArithmeticError) as error:
        print(f"refmask: error: {_refusal(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - never a traceback; say it is refmask's fault
        if os.environ.get("REFMASK_TRACEBACK"):
            raise
        print(f"refmask: internal error: {type(error).__name__}: {error} (a refmask bug; "
              "set REFMASK_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
