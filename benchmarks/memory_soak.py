"""Memory soak: thousands of forward/backward/optimizer steps of a small network must keep
the resident set size (RSS) flat. A leak in the autograd graph (a Node kept alive by a
cycle, saved arrays never released, a growing cache in a binding) shows up here as a
steady climb.

A small convolutional network (conv, batch norm, ReLU, max-pooling, dropout, linear,
cross-entropy; Adam) trains on fixed random batches. RSS is read from /proc/self/statm
after a warm-up (allocator pools and caches filled) and then at regular intervals; the
drift is (RSS at the end - RSS after warm-up) / RSS after warm-up, and the slope is a
least-squares fit of RSS against the iteration count over the measured part.

    python benchmarks/memory_soak.py                 # 10,000 iterations (the issue's figure)
    python benchmarks/memory_soak.py --iters 1000    # quicker
    python benchmarks/memory_soak.py --json soak.json

The same routine backs tests/test_memory.py (1,000 iterations in CI, 10,000 under -m slow).
Linux only (/proc).

What it measured, and why the growth it shows is fragmentation and not a leak:
benchmarks/RESULTS.md, "Memory soak".
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (field 2, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def small_network():
    from cnnfast import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 4 * 4, 10))


def soak(iters: int = 10_000, warmup: int = 1000, samples: int = 20, batch: int = 16, seed: int = 0,
         step_hook=None) -> dict:
    """Run ``warmup + iters`` training steps and sample RSS ``samples + 1`` times over the
    last ``iters``. ``step_hook(i)``, if given, runs after every step (the tests use it to
    inject a deliberate leak and show the measurement catches one).

    Returns {"iters", "warmup", "baseline_bytes", "final_bytes", "peak_bytes", "drift",
    "slope_bytes_per_iter", "samples": [(iteration, rss_bytes), ...], "seconds"}."""
    import cnnfast
    from cnnfast import functional as F
    from cnnfast import optim

    cnnfast.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = small_network()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xs = [cnnfast.tensor(rng.standard_normal((batch, 1, 12, 12)).astype(np.float32)) for _ in range(4)]
    ys = [cnnfast.tensor(rng.integers(0, 10, batch)) for _ in range(4)]

    def step(i: int) -> None:
        loss = F.cross_entropy(model(xs[i % 4]), ys[i % 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step_hook is not None:
            step_hook(i)

    for i in range(warmup):
        step(i)
    gc.collect()
    every = max(1, iters // samples)
    points = [(0, rss_bytes())]
    start = time.perf_counter()
    for i in range(1, iters + 1):
        step(warmup + i)
        if i % every == 0 or i == iters:
            points.append((i, rss_bytes()))
    seconds = time.perf_counter() - start
    gc.collect()
    points.append((iters, rss_bytes()))
    base, final = points[0][1], points[-1][1]
    it = np.array([p[0] for p in points], np.float64)
    rs = np.array([p[1] for p in points], np.float64)
    slope = float(np.polyfit(it, rs, 1)[0]) if len(points) > 2 else 0.0
    return {"iters": iters, "warmup": warmup, "baseline_bytes": base, "final_bytes": final,
            "peak_bytes": int(rs.max()), "drift": (final - base) / base, "slope_bytes_per_iter": slope,
            "samples": points, "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--leak-kb", type=int, default=0,
                   help="keep this many KB per measured step on purpose (shows that the measurement catches a leak)")
    a = p.parse_args(argv)
    import cnnfast

    cnnfast.set_num_threads(a.threads)
    kept = []
    hook = (lambda i: kept.append(np.ones(a.leak_kb * 256, np.float32)) if i > a.warmup else None) if a.leak_kb else None
    r = soak(a.iters, a.warmup, step_hook=hook)
    mib = 1 << 20
    print(f"{a.iters:,} forward/backward/Adam steps after {a.warmup} warm-up steps, {a.threads} threads, "
          f"{r['seconds']:.1f} s")
    for i, b in r["samples"]:
        print(f"  iter {i:>6}: RSS {b / mib:8.2f} MiB")
    print(f"RSS after warm-up {r['baseline_bytes'] / mib:.2f} MiB, at the end {r['final_bytes'] / mib:.2f} MiB, "
          f"peak {r['peak_bytes'] / mib:.2f} MiB")
    print(f"drift {100 * r['drift']:+.2f}% (limit 5%), slope {r['slope_bytes_per_iter']:+.1f} bytes/iteration")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if abs(r["drift"]) <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
