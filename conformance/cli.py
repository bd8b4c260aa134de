"""The ``refmask`` command line.

    refmask check BACKEND... [--impl module:function] [--dtype D,...] [--filter TEXT,...]
                  [--grads] [--allow-policy NAME] [--framework F] [--device D]
                  [--backward module:function] [--merge module:function] [--corpus DIR]
                  [--report out.html|.md|.json] [--expect FILE] [--write-expect FILE]
                  [--overwrite] [--quiet] [-v]        the conformance suite; exit 1 on a fail
                                                      (with --expect: on a changed verdict)
    refmask cases [--filter TEXT,...] [--dtype D,...] the case ids, families and flags
    refmask golden generate DIR [--sweep NAME] [--engine E] [--dtype D ...] [--filter TEXT]
                   [--overwrite]                      default: the catalog, exact engine
    refmask golden verify [DIR] [--no-regenerate]     default DIR: the shipped corpus
    refmask fuzz BACKEND [--examples N] [--seed S] [--dtype D,...] [--grads] ...
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


def _judging(args, *, corpus: bool = True):
    """The one :class:`~.judging.Judging` of a command line (check, fuzz, matrix, cases)."""
    from .judging import Judging

    def get(name):
        return getattr(args, name, None)

    return Judging(dtypes=_joined(get("dtype")), filter=get("filter"),
                   grads=bool(get("grads")), allow_policy=_joined(get("allow_policy")) or (),
                   corpus=get("corpus") if corpus else None, framework=get("framework"),
                   device=get("device"), backward=get("backward"), merge=get("merge"),
                   timeout=get("timeout") if get("timeout") is not None else
                   DEFAULT_CASE_TIMEOUT, trust=tuple(get("trust") or ()))


def _joined(values):
    """Repeatable options that may also hold comma-separated lists -> one tuple (or None)."""
    if not values:
        return None
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _check_output_paths(args) -> None:
    """Refuse before the run (not after it) an output path that exists without --overwrite,
    whose folder does not exist or cannot be written, or whose suffix names no format."""
    from . import report as reports

    if args.report is not None:
        reports.check_suffix(args.report)
        check_output_path(args.report, args.overwrite, where="check", name="--report")
    if args.write_expect is not None:
        check_output_path(args.write_expect, args.overwrite, where="check",
                          name="--write-expect")
    if args.expect is not None and not os.path.isfile(args.expect):
        raise ValueError(f"--expect {args.expect}: no such file (record one with "
                         "--write-expect)")


def _check(args) -> int:
    from refmask.adapters import expand

    from . import expect
    from . import report as reports
    from .runner import check

    targets = expand(list(args.backends)) + list(args.impl or [])
    if not targets:
        raise ValueError("check: name at least one BACKEND or --impl module:function")
    judging = _judging(args)
    if not args.impl and any(x is not None for x in (args.framework, args.device,
                                                     args.backward, args.merge)):
        raise ValueError("check: --framework, --device, --backward and --merge apply to "
                         "--impl functions; none is given")
    _check_output_paths(args)
    expected = expect.load(args.expect) if args.expect else None
    if not judging.cases():
        raise ValueError(f"check: no case matches --filter {args.filter!r} and --dtype "
                         f"{args.dtype}")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if args.corpus:  # what recovery did to an interrupted golden generate there
        from .golden import recover_leftovers

        _notes(recover_leftovers(Path(args.corpus)))
    golden = judging.golden()
    adapters = [judging.adapter(target) for target in targets]  # every name, before running
    results = []
    for adapter in adapters:
        with progress_bar(f"check {adapter.name}") as progress:
            result = check(adapter, judging=judging, golden=golden, progress=progress)
        print(reports.terminal(result, colour=colour, details=not args.quiet,
                               verbose=args.verbose))
        results.append(result)
        if result.interrupted:
            break
    if args.report:
        reports.write_many(results, args.report, overwrite=args.overwrite)
        print(f"wrote {args.report}")
    if args.write_expect:
        expect.write(args.write_expect, results, overwrite=args.overwrite)
        print(f"wrote {args.write_expect}")
    if expected is not None:
        changes, warnings = expect.compare(results, expected)
        print(expect.summary(changes, warnings))
        return 1 if changes else 0
    return 1 if any(r.failed or r.interrupted for r in results) else 0


def _notes(notes: list) -> None:
    """What recovery did (leftovers of an interrupted golden generate), on stderr."""
    for note in notes:
        print(f"refmask: note: {note}", file=sys.stderr)


def _cases(args) -> int:
    """``refmask cases``: the ids, families and flags of the cases a check would run."""
    judging = _judging(args)
    chosen = judging.cases()
    if not chosen:
        raise ValueError(f"cases: no case matches --filter {args.filter!r} and --dtype "
                         f"{args.dtype}")
    width = max(len(c.id) for c in chosen)
    family = max(len(c.family) for c in chosen)
    for case in chosen:
        print(f"{case.id:<{width}}  {case.family:<{family}}  {' '.join(case.flags)}")
    print(f"{len(chosen)} cases")
    return 0


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """``progress(done, total)`` drawing a tqdm bar with rate and ETA on stderr when stderr is
    a terminal (and tqdm is installed); None otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = None

    def show(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="case", leave=False, file=sys.stderr)
        elif done < bar.n or total != bar.total:  # the next backend of a matrix run
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        yield show
    finally:
        if bar is not None:
            bar.close()


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
        cases = select_cases(source, dtypes=_joined(args.dtype), filter=args.filter)
        if not cases:
            raise ValueError(f"golden generate: no case matches --filter {args.filter!r} and "
                             f"--dtype {args.dtype}")
        _notes(golden.recover_leftovers(Path(args.directory)))
        with progress_bar(f"generating ({engine})") as progress:
            path = golden.generate(args.directory, cases, overwrite=args.overwrite,
                                   engine=engine, progress=progress)
        print(f"wrote {len(cases)} cases to {path} (engine {engine})")
        return 0
    directory = args.directory or golden.shipped_corpus_path()
    _notes(golden.recover_leftovers(Path(directory)))
    golden.corpus_engine(directory)  # no readable manifest: a refusal (exit 2), not a defect
    with progress_bar("verifying") as progress:
        problems = golden.verify(directory, regenerate=not args.no_regenerate,
                                 progress=progress, trust=args.trust or ())
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
    from .strategies import fuzz

    if args.examples < 1:
        raise ValueError(f"fuzz: --examples must be an int >= 1, got {args.examples}")
    judging = _judging(args, corpus=False)
    with progress_bar(f"fuzz {args.backend}") as progress:
        found = fuzz(args.backend, max_examples=args.examples, seed=args.seed,
                     judging=judging, progress=progress)
    if found.case is None:
        print(f"no failing case: {found.summary()}")
        return 0
    print(f"fail on {found.case.id}: {found.result.reason}")
    if found.result.picture:
        print(found.result.picture)
    print(f"({found.summary()})")
    print("\nreproducer:\n")
    print(found.code)
    return 1


def _matrix(args) -> int:
    from refmask.adapters import expand

    from . import matrix

    if args.update:
        matrix.read_block_file(args.update)  # refuse a bad --update FILE before measuring
    with progress_bar("measuring") as progress:
        reports = matrix.measure(expand(args.backends), dtypes=_joined(args.dtype),
                                 progress=progress)
    block = matrix.render(reports)
    if args.update:
        matrix.update_file(args.update, block)
        print(f"updated {args.update}")
    else:
        print(block)
    return 1 if any(r.failed for r in reports) else 0


FILTER_HELP = ("only cases whose id contains one of these comma-separated texts, or whose "
               "family or a flag equals one (e.g. sliding_window,EmptyRow)")


def _add_judging(parser, *, filters: bool = True) -> None:
    """The options of :class:`~.judging.Judging`, the same on every command that judges."""
    parser.add_argument("--dtype", action="append", metavar="DTYPE",
                        help="only these dtypes (repeatable or comma-separated; default: all)")
    if filters:
        parser.add_argument("--filter", help=FILTER_HELP)
    parser.add_argument("--grads", action="store_true",
                        help="also judge dq, dk, dv (and dbias, dsinks where the case has them)")
    parser.add_argument("--allow-policy", action="append", metavar="NAME",
                        help="accept this named convention as policy although the backend "
                             "does not declare it (repeatable, e.g. empty_rows=nan)")
    parser.add_argument("--framework", choices=["numpy", "torch", "jax", "cupy"],
                        help="--impl: the arrays the function receives (default: its "
                             "refmask_framework attribute, else numpy)")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        help="--impl: the device of those arrays (default: its refmask_device "
                             "attribute, else cpu)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_CASE_TIMEOUT,
                        metavar="SECONDS", help="per-case time limit of the backend's call; a "
                        f"case over it fails (default {DEFAULT_CASE_TIMEOUT:g})")
    parser.add_argument("--backward", metavar="MODULE:FUNCTION",
                        help="--impl: a hand-written backward(q, k, v, d_out, call, saved) "
                             "for --grads (default: refmask_backward, else the framework's "
                             "autograd)")
    parser.add_argument("--merge", metavar="MODULE:FUNCTION",
                        help="--impl: a merge kernel merge(outs, lses, call) -> (out, lse) "
                             "for the split-KV cases (default: refmask_merge, else refmask's "
                             "merge)")


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
    _add_judging(run)
    run.add_argument("--corpus", metavar="DIR", help="run exactly the cases of this golden "
                     "corpus (e.g. from 'golden generate --sweep') against its stored values")
    run.add_argument("--report", help="write one report of every backend: .json, .md or .html")
    run.add_argument("--expect", metavar="FILE", help="exit 1 only on verdicts that differ "
                     "from those recorded in FILE (see --write-expect)")
    run.add_argument("--write-expect", metavar="FILE", help="record the verdicts and the "
                     "backend versions in FILE (for --expect)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing --report / --write-expect file")
    run.add_argument("--quiet", action="store_true", help="only the summary table")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="one line per non-passing case, besides the groups")
    run.add_argument("--trust", action="append", metavar="MODULE",
                     help="--corpus: let its predicate masks import functions of MODULE "
                     "(repeatable; nothing named in a corpus is imported otherwise)")
    run.set_defaults(run=_check)

    listing = commands.add_parser("cases", help="list the catalog's case ids, families, flags")
    listing.add_argument("--dtype", action="append", metavar="DTYPE",
                         help="only these dtypes (repeatable or comma-separated)")
    listing.add_argument("--filter", help=FILTER_HELP)
    listing.add_argument("--corpus", metavar="DIR", help="list this golden corpus's cases")
    listing.add_argument("--trust", action="append", metavar="MODULE",
                         help="--corpus: modules its predicate masks may import")
    listing.set_defaults(run=_cases)

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
    _add_judging(fz, filters=False)
    fz.set_defaults(run=_fuzz)

    mx = commands.add_parser("matrix", help="the backend x family conformance matrix")
    mx.add_argument("backends", nargs="+", help="backend names")
    mx.add_argument("--update", metavar="FILE",
                    help="replace the <!-- matrix:begin/end --> block of FILE")
    mx.add_argument("--dtype", action="append", metavar="DTYPE",
                    help="only these dtypes (repeatable or comma-separated)")
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
