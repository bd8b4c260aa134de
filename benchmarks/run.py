"""Benchmarks of refmask's attention paths against torch SDPA float64 and the matmul ceiling.

    python benchmarks/run.py            the whole table (a few minutes on 2 cores)
    python benchmarks/run.py --quick    smaller sequence lengths, for a smoke test
    python benchmarks/run.py --million  also T = 1,048,576, H = 1, D = 64, causal window 4096:
                                        forward (timed) and backward (timed once); ~3.5 GiB
                                        forward, ~7 GiB backward, several minutes
    --only TEXT   only the cases (and sweep rows) whose name contains TEXT (repeatable), e.g.
                  --only "causal window 256" (the 1M cases still need --million); the
                  records are then written only with --json
    --cpu-time    CPU time (time.process_time) of one thread instead of wall time on 2: the
                  worker is pinned to one CPU (OMP/OpenBLAS/MKL/Numba/torch threads = 1),
                  far less sensitive to other load on a shared machine than wall time
    --json PATH   where the records go (default benchmarks/results.json, written atomically)
    --plot PATH   GFLOP/s vs T for fast, exact and torch (default docs/performance.png; needs
                  matplotlib, skipped with a note without it)

Every measurement runs in a fresh worker process (``--worker NAME IMPL``) so that its peak
resident memory (``ru_maxrss``) is its own; times are the best of several repetitions, after
one warm-up call (Numba's compiled kernels are cached on disk, so the warm-up is not a
compilation). Every row is measured twice (implementations alternately) and the best is
kept; the matmul ceiling is measured at the start and at the end of the run, best kept: the
development machine is shared and its load varies.

Useful GFLOP/s = F * D * (kept (query, key) pairs) / time, whatever an implementation
computes besides (masked pairs, padding): forward F = 4 (two products of 2 D flops per kept
pair, Q K^T and P V); gradients F = 14 (``attention_vjp`` and torch's autograd both run the
forward and then five products: S = Q K^T again, dV = P^T dO, dP = dO V^T, dQ = dS K,
dK = dS^T Q; FlashAttention's "backward = 2.5 x forward" plus the forward). The float64
matmul ceiling is NumPy's (OpenBLAS) square matmul on the same threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

THREADS = 2
EXACT_MEMORY_BUDGET = 8 << 30  # bytes the exact path may need before its row is skipped
EXACT_TIME_BUDGET = 120.0      # seconds per exact call above which its row is skipped
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Case:
    """One benchmark problem: B, H, T (= Tq = Tk), D, a mask and what to run it through."""

    name: str
    batch: int
    heads: int
    length: int
    dim: int
    mask: str            # "causal" | "window" | "full"
    window: int = 0      # keys per query including itself, for "window"
    backward: bool = False
    impls: tuple = ("fast", "exact", "torch")
    repeats: int = 3      # timed calls after the warm-up (best kept)
    warm_up: str = "same"  # "same": one untimed call of the case; "small": a 4096-token slice

    def kept_pairs(self) -> int:
        """(query, key) pairs the mask keeps, over batch and heads."""
        t = self.length
        if self.mask == "full":
            per_head = t * t
        elif self.mask == "causal":
            per_head = t * (t + 1) // 2
        else:
            w = min(self.window, t)
            per_head = w * (w + 1) // 2 + (t - w) * w
        return per_head * self.batch * self.heads

    def flops_per_pair(self) -> int:
        """Useful flops per kept pair: 4 D forward, 14 D forward + gradients."""
        return (14 if self.backward else 4) * self.dim

    def exact_bytes(self) -> int:
        """About what the exact path holds at once: ~8 float64 (B, H, block, T) arrays per
        query block (refmask.attention.forward.EXACT_BLOCK_SCORES scores), the bool mask of
        (T, T), and the inputs."""
        from refmask.attention.forward import EXACT_BLOCK_SCORES

        scores = min(self.batch * self.heads * self.length * self.length,
                     max(EXACT_BLOCK_SCORES, self.batch * self.heads * self.length))
        return 8 * 8 * scores + self.length * self.length + 8 * 8 * self.batch * self.heads * (
            self.length * self.dim)

    def exact_seconds(self) -> float:
        """A guess of the exact path's time (~20 ns per (query, key) pair per head, ~3x that
        with gradients), to skip rows that would take minutes."""
        return (3 if self.backward else 1) * 20e-9 * self.batch * self.heads * self.length ** 2


#: The 1M-token case of ``--million`` (issue #17): H = 1, D = 64, causal window 4096.
MILLION = 1 << 20


def cases(quick: bool, million: bool = False) -> list:
    scale = 4 if quick else 1
    listed = [
        Case("causal", 1, 8, 4096 // scale, 64, "causal"),
        Case("causal window 256", 1, 8, 4096 // scale, 64, "window", 256),
        Case("full (no mask)", 1, 8, 2048 // scale, 64, "full"),
        Case("causal window 4096, H=1", 1, 1, 131072 // scale ** 2, 64, "window", 4096,
             impls=("fast",)),
        Case("gradients: causal", 1, 8, 4096 // scale, 64, "causal", backward=True),
        Case("gradients: causal window 4096, H=1", 1, 1, 32768 // scale, 64, "window", 4096,
             backward=True, impls=("fast", "exact")),
    ]
    if million:
        listed += [
            Case("causal window 4096, H=1, 1M", 1, 1, MILLION // scale ** 2, 64, "window",
                 4096, impls=("fast",), repeats=2, warm_up="small"),
            Case("gradients: causal window 4096, H=1, 1M", 1, 1, MILLION // scale ** 2, 64,
                 "window", 4096, backward=True, impls=("fast",), repeats=1, warm_up="small"),
        ]
    return listed


def sweep_cases(quick: bool) -> list:
    """Causal, B = 1, H = 8, D = 64 at growing T: the crossover of fast and exact, and the
    GFLOP/s-vs-T plot of fast, exact and torch."""
    lengths = (64, 128, 256, 512) if quick else (32, 64, 128, 256, 512, 1024, 2048, 4096)
    return [Case(f"sweep causal T={t}", 1, 8, t, 64, "causal",
                 repeats=5 if t <= 1024 else 3) for t in lengths]


# --- worker side ---------------------------------------------------------------------------

def _inputs(case: Case, length: int | None = None):
    """q, k, v (and d_out for a gradient case), standard normal, float64."""
    rng = np.random.default_rng(0)
    shape = (case.batch, case.heads, case.length if length is None else length, case.dim)
    return tuple(rng.standard_normal(shape) for _ in range(4 if case.backward else 3))


def _refmask_mask(case: Case):
    from refmask import masks as m

    if case.mask == "full":
        return None
    if case.mask == "causal":
        return m.causal(align="top_left")
    return m.sliding_window(case.window - 1, 0, align="top_left")


def _best(fn, repeats: int, warm_up=None, clock=time.perf_counter) -> float:
    (fn if warm_up is None else warm_up)()  # loads cached kernels, touches memory
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def _torch_call(case: Case, arrays, threads: int = THREADS):
    """torch SDPA float64: ``is_causal`` for causal, the dense bool mask for windows; for a
    gradient case, the forward and ``torch.autograd.grad`` of (q, k, v) with d_out."""
    import torch
    import torch.nn.functional as functional

    torch.set_num_threads(threads)
    tq, tk, tv = (torch.from_numpy(x) for x in arrays[:3])
    options: dict = {}
    if case.mask == "causal":
        options["is_causal"] = True
    elif case.mask == "window":
        i = torch.arange(case.length)
        distance = i[:, None] - i[None, :]
        options["attn_mask"] = (distance >= 0) & (distance < case.window)
    if not case.backward:
        return lambda: functional.scaled_dot_product_attention(tq, tk, tv, **options)
    d_out = torch.from_numpy(arrays[3])

    def gradients():
        leaves = [x.detach().requires_grad_() for x in (tq, tk, tv)]
        out = functional.scaled_dot_product_attention(*leaves, **options)
        return torch.autograd.grad(out, leaves, d_out)

    return gradients


def worker(name: str, impl: str, quick: bool, repeats: int, cpu_time: bool = False) -> dict:
    """Time one (case, implementation) in this process; returns the JSON record (with
    ``cpu_time``: CPU seconds of this process pinned to one CPU, see ``--cpu-time``)."""
    clock = time.perf_counter
    if cpu_time:
        clock = time.process_time
        if hasattr(os, "sched_setaffinity"):  # refmask.fast then runs one thread
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if name == "matmul":
        n = 2048 if quick else 4096
        a, b = np.random.default_rng(0).standard_normal((2, n, n))
        seconds = _best(lambda: a @ b, repeats, clock=clock)
        return {"seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9, "n": n,
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if name == "classify":
        from refmask import masks as m

        length, tile = (131072, 128)
        mask = m.sliding_window(4095, 0, align="top_left")
        start = np.arange(0, length, tile)
        stop = np.minimum(start + tile, length)

        def run():
            return mask.classify(start[:, None], stop[:, None], start[None, :], stop[None, :],
                                 q_len=length, k_len=length, batch=0, head=0)

        seconds = _best(run, repeats, clock=clock)
        codes = run()
        return {"seconds": seconds, "tiles": int(codes.size),
                "counts": [int((codes == c).sum()) for c in (0, 1, 2)],
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    case = next(c for c in cases(quick, True) + sweep_cases(quick) if c.name == name)
    arrays = _inputs(case)
    if impl == "torch":
        call = _torch_call(case, arrays, 1 if cpu_time else THREADS)
        warm_up = None
    else:
        path = "fast" if impl == "fast" else "exact"
        call = _refmask_call(case, arrays, path)
        warm_up = None
        if case.warm_up == "small":
            warm_up = _refmask_call(case, _inputs(case, min(case.length, 4096)), path)
    seconds = _best(call, repeats, warm_up, clock)
    return {"seconds": seconds,
            "gflops": case.flops_per_pair() * case.kept_pairs() / seconds / 1e9,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _refmask_call(case: Case, arrays, path: str):
    from refmask.attention import attention, attention_vjp

    mask = _refmask_mask(case)
    if case.backward:
        q, k, v, d_out = arrays
        return lambda: attention_vjp(q, k, v, d_out, mask=mask, path=path)
    q, k, v = arrays
    return lambda: attention(q, k, v, mask=mask, path=path)


# --- parent side ---------------------------------------------------------------------------

def measure(name: str, impl: str, quick: bool, repeats: int, cpu_time: bool = False) -> dict:
    threads = str(1 if cpu_time else THREADS)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads)
    command = [sys.executable, __file__, "--worker", name, impl, "--repeats", str(repeats)]
    if quick:
        command.append("--quick")
    if cpu_time:
        command.append("--cpu-time")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _row(case: Case, impl: str, record: dict) -> str:
    shape = f"{case.length} x {case.length}"
    if "error" in record:
        return f"| {case.name} | {shape} | {impl} | - | - | - | {record['error']} |"
    return (f"| {case.name} | {shape} | {impl} | {record['gflops']:.1f} | "
            f"{record['seconds']:.3f} s | {record['rss'] / 2 ** 20:.0f} MiB | |")


def _skip_reason(case: Case, impl: str) -> str | None:
    """Why a row is not measured (the exact path where it would need too much or too long)."""
    if impl != "exact":
        return None
    if case.exact_bytes() > EXACT_MEMORY_BUDGET:
        return f"skipped: needs ~{case.exact_bytes() / 2 ** 30:.0f} GiB"
    if case.exact_seconds() > EXACT_TIME_BUDGET:
        return f"skipped: ~{case.exact_seconds():.0f} s per call"
    return None


def measure_case(case: Case, impls: list, quick: bool, rounds: int = 2,
                 cpu_time: bool = False) -> dict:
    """Best record per implementation, implementations measured alternately ``rounds`` times
    (the exact path and single-repeat cases once: seconds per call)."""
    best: dict = {}
    for _ in range(rounds):
        for impl in impls:
            reason = _skip_reason(case, impl)
            if reason:
                best[impl] = {"error": reason}
                continue
            if impl in best and (impl == "exact" or case.repeats == 1):
                continue
            record = measure(case.name, impl, quick, 1 if impl == "exact" else case.repeats,
                             cpu_time)
            if "error" in record or impl not in best or (
                    record["seconds"] < best[impl].get("seconds", float("inf"))):
                best[impl] = record
    return best


def write_json(path: str, document: dict) -> None:
    """Write ``document`` to ``path`` atomically (a temporary file in the same folder, then
    a rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".run-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=1)
            stream.write("\n")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a results file is not
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def plot(path: str, sweep: list, ceiling: float) -> str:
    """GFLOP/s vs T (log-log) of fast, exact and torch on the causal sweep; returns what was
    done (matplotlib is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    figure, axes = plt.subplots(figsize=(6, 4))
    for impl, style in (("fast", "o-"), ("exact", "s--"), ("torch", "^:")):
        points = [(r["T"], r[impl]["gflops"]) for r in sweep if "gflops" in r.get(impl, {})]
        if points:
            axes.plot(*zip(*points, strict=True), style,
                      label={"torch": "torch SDPA is_causal"}.get(impl, impl))
    axes.axhline(ceiling, color="grey", linewidth=0.8, label="float64 matmul ceiling")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("T (causal, B = 1, H = 8, D = 64, float64)")
    axes.set_ylabel(f"useful GFLOP/s ({THREADS} threads)")
    axes.legend()
    axes.grid(True, which="both", linewidth=0.3)
    figure.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".plot-", suffix=".png", dir=folder)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        plt.close(figure)
    return f"plot written to {path}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument("--million", action="store_true",
                        help="also the 1M-token causal window 4096 case (H=1, D=64)")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="only cases whose name contains TEXT (repeatable); records are "
                             "then written only with --json")
    parser.add_argument("--cpu-time", action="store_true",
                        help="CPU time of one pinned thread instead of wall time on 2 threads")
    parser.add_argument("--json", default=None,
                        help="where to write the records (default: benchmarks/results.json; "
                             "none with --only)")
    parser.add_argument("--plot", default=os.path.join(HERE, "..", "docs", "performance.png"),
                        help="where to write the GFLOP/s-vs-T plot (default: %(default)s)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.quick, args.repeats,
                                args.cpu_time)))
        return 0
    if args.json is None and not args.only:
        args.json = os.path.join(HERE, "results.json")

    def chosen(listed):
        return [c for c in listed if not args.only or any(t in c.name for t in args.only)]

    cpu = args.cpu_time
    threads = 1 if cpu else THREADS

    torch_ok = _torch_available()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# refmask attention benchmarks, {started}: {threads} thread(s), float64, "
          f"{'CPU' if cpu else 'wall'} time, load average at start {load:.2f}\n")
    matmul = measure("matmul", "numpy", args.quick, 3, cpu)
    ceiling = matmul.get("gflops", float("nan"))
    print("| case | Tq x Tk | implementation | useful GFLOP/s | time | peak RSS | note |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for case in chosen(cases(args.quick, args.million)):
        impls = [i for i in case.impls if i != "torch" or torch_ok]
        best = measure_case(case, impls, args.quick, cpu_time=cpu)
        for impl in impls:
            print(_row(case, impl, best[impl]), flush=True)
        rows.append({"case": case.name, "B": case.batch, "H": case.heads, "T": case.length,
                     "D": case.dim, "mask": case.mask, "window": case.window,
                     "gradients": case.backward, "kept_pairs": case.kept_pairs(),
                     "flops_per_pair": case.flops_per_pair(), **best})
    print()
    again = measure("matmul", "numpy", args.quick, 3, cpu)  # the ceiling again, at the end
    ceiling = max(ceiling, again.get("gflops", float("nan")))
    print(f"float64 matmul ceiling (NumPy {matmul.get('n')}^3, best of the start and the end of "
          f"the run): {ceiling:.1f} GFLOP/s\n")
    classify = {} if args.only else measure("classify", "numpy", args.quick, 3, cpu)
    if classify:
        print(f"classify 131072 x 131072 causal window 4096, tile 128 (1024 x 1024 tiles): "
              f"{classify.get('seconds', float('nan')):.3f} s, codes E/P/F = "
              f"{classify.get('counts')}")

    sweep_rows = chosen(sweep_cases(args.quick))
    if sweep_rows:
        print("\n| sweep | Tq x Tk | fast | exact | torch | exact / fast | fast / torch |")
        print("|---|---|---|---|---|---|---|")
    sweep = []
    for case in sweep_rows:
        impls = ["fast", "exact"] + (["torch"] if torch_ok else [])
        best = measure_case(case, impls, args.quick, cpu_time=cpu)
        sweep.append({"case": case.name, "T": case.length, "kept_pairs": case.kept_pairs(),
                      "flops_per_pair": case.flops_per_pair(), **best})
        ms = {impl: best[impl].get("seconds", float("nan")) * 1e3 for impl in impls}
        torch_ms = ms.get("torch", float("nan"))
        print(f"| {case.name} | {case.length} x {case.length} | {ms['fast']:.1f} ms | "
              f"{ms['exact']:.1f} ms | {torch_ms:.1f} ms | {ms['exact'] / ms['fast']:.2f} | "
              f"{ms['fast'] / torch_ms:.2f} |", flush=True)
    print()
    ratios = {}
    for row in rows:
        fast, torch_record = row.get("fast", {}), row.get("torch", {})
        if "seconds" in fast and "seconds" in torch_record:
            ratios[f"{row['case']}: fast / torch time"] = fast["seconds"] / torch_record[
                "seconds"]
        if "gflops" in fast:
            ratios[f"{row['case']}: fast / matmul ceiling"] = fast["gflops"] / ceiling
    for name, value in ratios.items():
        print(f"{name} = {value:.2f}")
    document = {"started": started, "threads": threads, "clock": "cpu" if cpu else "wall",
                "load_average_at_start": load,
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "matmul_ceiling_gflops": ceiling,
                "matmul": [matmul, again], "classify": classify, "cases": rows,
                "sweep": sweep, "ratios": ratios}
    if args.json is None:
        print("\nrecords not written (--only without --json)")
        return 0
    write_json(args.json, document)
    drawn = plot(args.plot, sweep, ceiling) if sweep else "no sweep rows, no plot"
    print(f"\nrecords written to {args.json}; {drawn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
