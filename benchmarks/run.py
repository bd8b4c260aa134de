"""Benchmarks of refmask's attention paths against torch SDPA float64 and the matmul ceiling.

    python benchmarks/run.py            the whole table (a few minutes on 2 cores)
    python benchmarks/run.py --quick    smaller sequence lengths, for a smoke test

Every measurement runs in a fresh worker process (``--worker NAME IMPL``) so that its peak
resident memory (``ru_maxrss``) is its own; times are the best of several repetitions, after
one warm-up call (Numba's compiled kernels are cached on disk, so the warm-up is not a
compilation). Every row is measured twice (implementations alternately) and the best is
kept; the matmul ceiling is measured at the start and at the end of the run, best kept: the
development machine is shared and its load varies.

Useful GFLOP/s = 4 * D * (kept (query, key) pairs) / time: two products of 2 * D flops per
kept pair (Q K^T and P V), whatever an implementation computes besides (masked pairs,
padding). The float64 matmul ceiling is NumPy's (OpenBLAS) square matmul on the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

THREADS = 2
EXACT_MEMORY_BUDGET = 8 << 30  # bytes the exact path may need before its row is skipped


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

    def exact_bytes(self) -> int:
        """About what the exact path holds at once: ~6 float64 (B, H, T, T) arrays."""
        return 6 * 8 * self.batch * self.heads * self.length * self.length


def cases(quick: bool) -> list:
    scale = 4 if quick else 1
    return [
        Case("causal", 1, 8, 4096 // scale, 64, "causal"),
        Case("causal window 256", 1, 8, 4096 // scale, 64, "window", 256),
        Case("full (no mask)", 1, 8, 2048 // scale, 64, "full"),
        Case("causal window 4096, H=1", 1, 1, 131072 // scale ** 2, 64, "window", 4096,
             impls=("fast",)),
        Case("backward: causal window 4096, H=1", 1, 1, 32768 // scale, 64, "window", 4096,
             backward=True, impls=("fast", "exact")),
    ]


def crossover_cases(quick: bool) -> list:
    lengths = (64, 128, 256) if quick else (32, 64, 128, 256, 512, 1024)
    return [Case(f"crossover causal T={t}", 1, 8, t, 64, "causal", impls=("fast", "exact"))
            for t in lengths]


# --- worker side ---------------------------------------------------------------------------

def _inputs(case: Case):
    rng = np.random.default_rng(0)
    shape = (case.batch, case.heads, case.length, case.dim)
    return tuple(rng.standard_normal(shape) for _ in range(4))


def _refmask_mask(case: Case):
    from refmask import masks as m

    if case.mask == "full":
        return None
    if case.mask == "causal":
        return m.causal(align="top_left")
    return m.sliding_window(case.window - 1, 0, align="top_left")


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (loads cached kernels, touches memory)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _torch_call(case: Case, q, k, v):
    import torch
    import torch.nn.functional as functional

    torch.set_num_threads(THREADS)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    if case.mask == "causal":
        return lambda: functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    if case.mask == "full":
        return lambda: functional.scaled_dot_product_attention(tq, tk, tv)
    i = torch.arange(case.length)
    distance = i[:, None] - i[None, :]
    keep = (distance >= 0) & (distance < case.window)
    return lambda: functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=keep)


def worker(name: str, impl: str, quick: bool, repeats: int) -> dict:
    """Time one (case, implementation) in this process; returns the JSON record."""
    if name == "matmul":
        n = 2048 if quick else 4096
        a, b = np.random.default_rng(0).standard_normal((2, n, n))
        seconds = _best(lambda: a @ b, repeats)
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

        seconds = _best(run, repeats)
        codes = run()
        return {"seconds": seconds, "tiles": int(codes.size),
                "counts": [int((codes == c).sum()) for c in (0, 1, 2)],
                "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    case = next(c for c in cases(quick) + crossover_cases(quick) if c.name == name)
    q, k, v, d_out = _inputs(case)
    if impl == "torch":
        call = _torch_call(case, q, k, v)
    else:
        from refmask.attention import attention, attention_vjp

        mask = _refmask_mask(case)
        path = "fast" if impl == "fast" else "exact"
        if case.backward:
            def call():
                return attention_vjp(q, k, v, d_out, mask=mask, path=path)
        else:
            def call():
                return attention(q, k, v, mask=mask, path=path)
    seconds = _best(call, repeats)
    return {"seconds": seconds, "gflops": 4 * case.dim * case.kept_pairs() / seconds / 1e9,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# --- parent side ---------------------------------------------------------------------------

def measure(name: str, impl: str, quick: bool, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS), NUMBA_NUM_THREADS=str(THREADS))
    command = [sys.executable, __file__, "--worker", name, impl, "--repeats", str(repeats)]
    if quick:
        command.append("--quick")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.quick, args.repeats)))
        return 0

    torch_ok = _torch_available()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# refmask attention benchmarks: {THREADS} threads, float64, "
          f"load average at start {load:.2f}\n")
    matmul = measure("matmul", "numpy", args.quick, 3)
    ceiling = matmul.get("gflops", float("nan"))
    print("| case | Tq x Tk | implementation | useful GFLOP/s | time | peak RSS | note |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for case in cases(args.quick):
        impls = [i for i in case.impls if i != "torch" or torch_ok]
        best: dict = {}
        rounds = 2
        for _ in range(rounds):
            for impl in impls:
                if impl == "exact" and case.exact_bytes() > EXACT_MEMORY_BUDGET:
                    best[impl] = {"error": f"skipped: needs ~{case.exact_bytes() / 2**30:.0f} "
                                           "GiB"}
                    continue
                if impl == "exact" and "exact" in best:
                    continue  # seconds per call: one round is enough
                record = measure(case.name, impl, args.quick, 1 if impl == "exact" else 3)
                if "error" in record or impl not in best or (
                        record["seconds"] < best[impl].get("seconds", float("inf"))):
                    best[impl] = record
        for impl in impls:
            print(_row(case, impl, best[impl]))
        results[case.name] = best
    print()
    again = measure("matmul", "numpy", args.quick, 3)  # the ceiling again, at the end: best of both
    ceiling = max(ceiling, again.get("gflops", float("nan")))
    print(f"float64 matmul ceiling (NumPy {matmul.get('n')}^3, best of the start and the end of "
          f"the run): {ceiling:.1f} GFLOP/s\n")
    classify = measure("classify", "numpy", args.quick, 3)
    print(f"classify 131072 x 131072 causal window 4096, tile 128 (1024 x 1024 tiles): "
          f"{classify.get('seconds', float('nan')):.3f} s, codes E/P/F = "
          f"{classify.get('counts')}")
    print("\n| crossover | Tq x Tk | fast | exact | exact / fast |")
    print("|---|---|---|---|---|")
    for case in crossover_cases(args.quick):
        fast = exact = None
        for _ in range(2):
            f = measure(case.name, "fast", args.quick, 5)["seconds"]
            e = measure(case.name, "exact", args.quick, 3)["seconds"]
            fast, exact = min(fast or f, f), min(exact or e, e)
        print(f"| {case.name} | {case.length} x {case.length} | {fast * 1e3:.1f} ms | "
              f"{exact * 1e3:.1f} ms | {exact / fast:.2f} |")
    print()
    for name, best in results.items():
        fast, torch_record = best.get("fast", {}), best.get("torch", {})
        if "seconds" in fast and "seconds" in torch_record:
            print(f"{name}: fast / torch time = {fast['seconds'] / torch_record['seconds']:.2f}")
        if "gflops" in fast:
            print(f"{name}: fast at {100 * fast['gflops'] / ceiling:.0f}% of the matmul ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
