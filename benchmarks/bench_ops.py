"""Side-by-side timing of cnnfast's memory-bound ops against PyTorch.

A driver: it imports every ``benchmarks/_cases_*.py`` beside it; each defines

    CASES = [dict(name=str, bytes=int, cnnfast=callable, torch=callable), ...]

where ``bytes`` is the memory the op must move at least (inputs read plus
outputs written, forward and backward together for "fwd+bwd" cases) and the two
callables do the same work with no arguments. Both libraries run on 2 threads;
each callable is warmed up, then the two are timed in turn ``--repeats`` times
and each one's median kept.
Printed per case: milliseconds, GB/s moved, and the ratio torch_time /
cnnfast_time (> 1 means cnnfast is faster); at the end the geometric mean of the
ratios and the cases under 0.9x.

    python benchmarks/bench_ops.py            # full shapes (N=32)
    python benchmarks/bench_ops.py --quick    # small shapes, few repeats (smoke run)
    python benchmarks/bench_ops.py -k pool    # only cases whose name contains "pool"

Case modules read the environment variable CNNFAST_BENCH_QUICK ("1" under
--quick) to choose their shapes. This is a benchmark, not a test: other jobs on
the machine make the numbers noisy, so compare ratios from one run.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import math
import os
import statistics
import sys
import time

from _common import header


def load_cases(folder: str) -> list[dict]:
    cases = []
    for path in sorted(glob.glob(os.path.join(folder, "_cases_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for case in getattr(module, "CASES", []):
            missing = {"name", "bytes", "cnnfast", "torch"} - set(case)
            if missing:
                raise ValueError(f"{name}: case {case.get('name')!r} lacks {sorted(missing)}")
            cases.append(dict(case, module=name))
    return cases


def median_times(fns, warmup: int, repeats: int, settle: float = 0.0) -> list[float]:
    """Median seconds of each callable. The callables take turns within every
    repeat, so a burst of load from other jobs hits both sides alike. Before
    each timed call the same callable runs untimed for at least ``settle``
    seconds: PyTorch's OpenMP workers spin-wait for several ms after every op
    (libgomp's default wait policy), and on a 2-core machine a worker still
    spinning after PyTorch's turn would take a core from cnnfast's timed call.
    Idling instead would time both from cold (sleeping threads, idle cores)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t_end = time.perf_counter() + settle
            while settle and time.perf_counter() < t_end:
                fn()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes and few repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 15, quick 3)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    ap.add_argument("-k", dest="filter", default="", help="only cases whose name contains this")
    ap.add_argument("--settle", type=float, default=0.03,
                    help="seconds each callable runs untimed right before its timed call, so the other "
                         "library's spinning OpenMP workers have stopped (default 0.03; 0 to disable)")
    args = ap.parse_args(argv)
    if args.quick:
        os.environ["CNNFAST_BENCH_QUICK"] = "1"
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3

    import torch

    import cnnfast

    cnnfast.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    here = os.path.dirname(os.path.abspath(__file__))
    cases = [c for c in load_cases(here) if args.filter in c["name"]]
    if not cases:
        print("no cases found")
        return 1
    print(header(args.threads, f"median of {repeats} interleaved calls, each after {args.settle * 1e3:g} ms of untimed calls of the same op"))
    # Each library's instruction-set level: ours from the dispatch layer (lowered by
    # CNNFAST_SIMD), torch's from ATen (capped by ATEN_CPU_CAPABILITY).
    print(f"cnnfast {cnnfast.__version__} (simd {cnnfast.simd_level()}), torch {torch.__version__} "
          f"(cpu capability {torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} threads, median of {repeats}{' (quick)' if args.quick else ''}, "
          f"each timed call after {args.settle * 1e3:g} ms of untimed calls of the same op")
    head = f"{'case':<44} {'cnnfast ms':>10} {'torch ms':>9} {'cnnfast GB/s':>12} {'torch GB/s':>10} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    ratios, slow = [], []
    for case in cases:
        t_ours, t_ref = median_times([case["cnnfast"], case["torch"]], warmup, repeats, args.settle)
        ratio = t_ref / t_ours
        ratios.append(ratio)
        if ratio < 0.9:
            slow.append(case["name"])
        gb = case["bytes"] / 1e9
        print(f"{case['name']:<44} {t_ours * 1e3:>10.3f} {t_ref * 1e3:>9.3f} {gb / t_ours:>12.2f} "
              f"{gb / t_ref:>10.2f} {ratio:>5.2f}x", flush=True)
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print("-" * len(head))
    print(f"geometric mean ratio (torch time / cnnfast time) over {len(ratios)} cases: {geo:.2f}x")
    if slow:
        print(f"under 0.9x: {', '.join(slow)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
