"""GPU benchmark: refmask's float64 reference on CuPy against torch SDPA on the same GPU.

    python benchmarks/gpu.py            the table below (needs CUDA, CuPy; torch for its rows)
    python benchmarks/gpu.py --quick    sequence lengths / 4, for a smoke test

Without CuPy or a CUDA device it prints why and exits 0 (so it can run anywhere).

==============  =====  ======  ===  ==  ======================================================
case            T      window  H    D   mask (B = 1)
==============  =====  ======  ===  ==  ======================================================
sliding window  8192   1024    8    64  ``causal(align="bottom_right") & sliding_window(1023,
                                        0, align="bottom_right")`` (1024 keys including self)
dense causal    4096   -       8    64  ``causal(align="top_left")``
==============  =====  ======  ===  ==  ======================================================

================================  ===========================================================
implementation                    call
================================  ===========================================================
``refmask cupy float64``          ``refmask.attention.attention`` on CuPy float64 arrays (the
                                  exact array-API path; the mask materialises on the GPU)
``torch sdpa math float64``       ``F.scaled_dot_product_attention`` in
                                  ``sdpa_kernel(SDPBackend.MATH)``, float64: ``is_causal=True``
                                  for dense causal, the dense bool keep mask otherwise
``torch sdpa flash float16``      the same call in ``sdpa_kernel(SDPBackend.FLASH_ATTENTION)``,
                                  float16 (flash takes no ``attn_mask``: the window case shows
                                  torch's refusal)
``torch sdpa efficient float16``  the same in ``sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)``,
                                  float16: the fused kernel that does take the window mask
================================  ===========================================================

Columns: time = best of ``REPEATS`` calls after one warm-up, each bracketed by a device
synchronisation; ratio = time / time of ``refmask cupy float64`` on the same case; useful
GFLOP/s = 4 * D * (kept (query, key) pairs) / time, as in benchmarks/run.py; max |diff| = the
largest absolute difference from the refmask output (float64), a sanity check of the call.
Inputs: float64 standard normal from CuPy's generator (seed 0), cast to float16 for the
float16 rows and shared with torch through DLPack (no copy).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

REPEATS = 3
REFERENCE = "refmask cupy float64"


@dataclass(frozen=True)
class Case:
    """One benchmark problem: B = 1, H heads, T = Tq = Tk, D, a mask kind and its window."""

    name: str
    heads: int
    length: int
    dim: int
    mask: str          # "window" | "causal"
    window: int = 0    # keys per query including itself, for "window"

    def kept_pairs(self) -> int:
        """(query, key) pairs the mask keeps, over the heads (B = 1)."""
        t = self.length
        if self.mask == "causal":
            return self.heads * t * (t + 1) // 2
        w = min(self.window, t)
        return self.heads * (w * (w + 1) // 2 + (t - w) * w)


def cases(quick: bool) -> list[Case]:
    scale = 4 if quick else 1
    return [Case("sliding window", 8, 8192 // scale, 64, "window", 1024 // scale),
            Case("dense causal", 8, 4096 // scale, 64, "causal")]


# --- environment ------------------------------------------------------------------------------

def cupy_unavailable() -> str | None:
    """Why the CuPy rows cannot run here (the ``cupy`` adapter's own answer), or None."""
    from refmask.adapters import load

    return load("cupy").unavailable()


def torch_unavailable() -> str | None:
    """Why the torch rows cannot run here, or None."""
    from refmask.adapters import load

    return load("torch.sdpa.cuda.math").unavailable()


def _driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, or the CUDA driver API version."""
    import cupy

    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    api = cupy.cuda.runtime.driverGetVersion()
    return f"CUDA driver API {api // 1000}.{api % 1000 // 10}"


def environment(torch_ok: bool) -> list[str]:
    """Lines naming the GPU, the driver and the library versions."""
    import cupy
    import numpy

    import refmask

    properties = cupy.cuda.runtime.getDeviceProperties(0)
    name = properties["name"]
    name = name.decode() if isinstance(name, bytes) else name
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    lines = [f"GPU: {name} ({properties['totalGlobalMem'] / 2 ** 30:.0f} GiB, compute "
             f"capability {properties['major']}.{properties['minor']})",
             f"driver: {_driver_version()}; CUDA runtime (CuPy) {runtime // 1000}."
             f"{runtime % 1000 // 10}",
             f"refmask {refmask.__version__}, numpy {numpy.__version__}, cupy {cupy.__version__}"]
    if torch_ok:
        import torch

        lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
                     f"{torch.backends.cudnn.version()})")
    return lines


# --- the calls --------------------------------------------------------------------------------

def refmask_mask(case: Case):
    from refmask import masks as m

    if case.mask == "causal":
        return m.causal(align="top_left")
    return m.causal(align="bottom_right") & m.sliding_window(case.window - 1, 0,
                                                             align="bottom_right")


def cupy_inputs(case: Case):
    """q, k, v as CuPy float64 (1, H, T, D) arrays."""
    import cupy

    generator = cupy.random.default_rng(0)
    shape = (1, case.heads, case.length, case.dim)
    return tuple(generator.standard_normal(shape, dtype=cupy.float64) for _ in range(3))


def refmask_call(case: Case, q, k, v):
    from refmask.attention import attention

    mask = refmask_mask(case)
    return lambda: attention(q, k, v, mask=mask).out


def torch_call(case: Case, q, k, v, backend: str, dtype: str):
    """A no-argument function running SDPA on the DLPack views of q, k, v in ``dtype``, inside
    ``sdpa_kernel(SDPBackend.<backend>)``."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tq, tk, tv = (torch.from_dlpack(x).to(getattr(torch, dtype)) for x in (q, k, v))
    kwargs = {"is_causal": True}
    if case.mask == "window":  # (1, 1, T, T) bool keep mask, built by refmask, moved once
        keep = refmask_mask(case).materialize(1, 1, case.length, case.length)
        kwargs = {"attn_mask": torch.from_numpy(keep).to(tq.device)}

    def call():
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return F.scaled_dot_product_attention(tq, tk, tv, **kwargs)

    return call


def best_time(call, synchronize, repeats: int = REPEATS) -> tuple[float, object]:
    """(best seconds over ``repeats`` synchronised calls after one warm-up, last output)."""
    out = call()
    synchronize()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        out = call()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


def implementations(torch_ok: bool) -> list[tuple[str, str | None, str | None]]:
    """(row name, SDPBackend member, torch dtype); (REFERENCE, None, None) first."""
    rows = [(REFERENCE, None, None)]
    if torch_ok:
        rows += [("torch sdpa math float64", "MATH", "float64"),
                 ("torch sdpa flash float16", "FLASH_ATTENTION", "float16"),
                 ("torch sdpa efficient float16", "EFFICIENT_ATTENTION", "float16")]
    return rows


def _refusal(name: str, backend: str, error: BaseException, warned: list) -> str:
    """An SDPA refusal as refmask's torch.sdpa.cuda adapters word it (torch's error text and
    the reasons it warned for the forced backend); any other error as its type and text."""
    from refmask.adapters.torch import cuda

    if not isinstance(error, RuntimeError) or cuda.NO_KERNEL not in str(error):
        return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    header = next(h for member, h in cuda.SDPA_BACKENDS.values() if member == backend)
    return cuda.refusal_reason(name, error, [str(w.message) for w in warned], header)


def measure(case: Case, torch_ok: bool) -> list[dict]:
    """One record per implementation: seconds and max |diff|, or why it did not run."""
    import cupy

    synchronize = cupy.cuda.Device().synchronize
    q, k, v = cupy_inputs(case)
    records, reference = [], None
    for name, backend, dtype in implementations(torch_ok):
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                if backend is None:
                    seconds, out = best_time(refmask_call(case, q, k, v), synchronize)
                    reference, diff = out, 0.0
                else:
                    seconds, out = best_time(torch_call(case, q, k, v, backend, dtype),
                                             synchronize)
                    out = cupy.from_dlpack(out.double().contiguous())
                    diff = None if reference is None else float(cupy.abs(out - reference).max())
            except Exception as error:  # noqa: BLE001 - a refusal or an OOM is a row
                records.append({"impl": name, "error": _refusal(name, backend, error, warned)})
                continue
            finally:
                out = None
                cupy.get_default_memory_pool().free_all_blocks()
        records.append({"impl": name, "seconds": seconds, "diff": diff})
    return records


def table(case: Case, records: list[dict]) -> list[str]:
    """Markdown rows of one case."""
    reference = next((r["seconds"] for r in records if r["impl"] == REFERENCE and "seconds" in r),
                     None)
    rows = []
    for record in records:
        if "error" in record:
            rows.append(f"| {case.name} | {record['impl']} | - | - | - | - | {record['error']} |")
            continue
        seconds = record["seconds"]
        ratio = f"{seconds / reference:.3g}" if reference else "-"
        gflops = 4 * case.dim * case.kept_pairs() / seconds / 1e9
        diff = "-" if record["diff"] is None else f"{record['diff']:.2e}"
        rows.append(f"| {case.name} | {record['impl']} | {seconds * 1e3:.2f} ms | {ratio} | "
                    f"{gflops:.1f} | {diff} | |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sequence lengths / 4")
    args = parser.parse_args(argv)

    reason = cupy_unavailable()
    if reason:
        print(f"benchmarks/gpu.py: nothing to time here: {reason}")
        return 0
    torch_reason = torch_unavailable()
    print("# refmask on the GPU: float64 reference (CuPy) against torch SDPA\n")
    for line in environment(torch_reason is None):
        print(f"- {line}")
    if torch_reason:
        print(f"- torch rows skipped: {torch_reason}")
    print("\n| case | implementation | time | ratio | useful GFLOP/s | max abs diff | note |")
    print("|---|---|---|---|---|---|---|")
    for case in cases(args.quick):
        shape = f"T={case.length}, H={case.heads}, D={case.dim}" + (
            f", window {case.window}" if case.mask == "window" else "")
        print(f"| **{case.name}** ({shape}) | | | | | | |")
        for row in table(case, measure(case, torch_reason is None)):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
