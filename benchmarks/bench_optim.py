"""Fused optimizer updates vs torch.optim (single-tensor and foreach paths), 2 threads.

Run: PYTHONPATH=python python benchmarks/bench_optim.py [--size N]
Prints the median time of one optimizer step over a few parameter tensors and the
ratio torch / cnnfast (> 1 means cnnfast is faster)."""
import argparse
import statistics
import time

import numpy as np
import torch

import cnnfast
from cnnfast import nn, optim

CASES = [
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-4)),
    ("AdamW", dict(lr=1e-3, amsgrad=True)),
    ("Adagrad", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True)),
]


def median_time(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4_000_000, help="total parameter count")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    cnnfast.set_num_threads(2)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    # A realistic mix: one big weight, a few medium ones, many small biases.
    sizes = [args.size // 2, args.size // 4, args.size // 8] + [args.size // 8 // 32] * 32
    print(f"{sum(sizes):,} float32 parameters in {len(sizes)} tensors, 2 threads")
    print(f"{'optimizer':10s} {'cnnfast ms':>11s} {'torch ms':>9s} {'torch foreach ms':>17s} {'ratio':>7s} {'ratio fe':>9s}")
    for name, kw in CASES:
        data = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        ours = [nn.Parameter(d.copy()) for d in data]
        for p in ours:
            p.grad = cnnfast.tensor(rng.standard_normal(p.shape).astype(np.float32))
        o = getattr(optim, name)(ours, **kw)
        timings = [median_time(o.step, args.repeats)]
        for foreach in (False, True):
            theirs = [torch.tensor(d.copy(), requires_grad=True) for d in data]
            for p in theirs:
                p.grad = torch.randn(p.shape)
            t = getattr(torch.optim, name)(theirs, foreach=foreach, **kw)
            timings.append(median_time(t.step, args.repeats))
        ms = [x * 1e3 for x in timings]
        print(f"{name:10s} {ms[0]:11.2f} {ms[1]:9.2f} {ms[2]:17.2f} {ms[1] / ms[0]:7.2f} {ms[2] / ms[0]:9.2f}")


if __name__ == "__main__":
    main()
