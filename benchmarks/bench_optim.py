"""Fused optimizer updates vs torch.optim: its single-tensor, foreach and fused CPU paths,
2 threads.

Run: PYTHONPATH=python python benchmarks/bench_optim.py [--size N]
Prints the median time of one optimizer step over a few parameter tensors and the ratio
torch / cnnfast for each torch path (> 1 means cnnfast is faster). The four contenders
are timed interleaved (one step of each in turn, every round). torch's ``fused=True`` CPU
kernels exist for SGD, Adam and AdamW only; the column says "-" for the others.
"""
import argparse

import numpy as np
import torch

import cnnfast
from cnnfast import nn, optim

from _common import header, interleaved, median

CASES = [
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-4)),
    ("AdamW", dict(lr=1e-3, amsgrad=True)),
    ("Adagrad", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4_000_000, help="total parameter count")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="threads for both libraries")
    args = ap.parse_args()
    cnnfast.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    # A realistic mix: one big weight, a few medium ones, many small biases.
    sizes = [args.size // 2, args.size // 4, args.size // 8] + [args.size // 8 // 32] * 32
    print(header(args.threads, f"median of {args.repeats} interleaved steps, 20 ms pause before each"))
    print(f"{sum(sizes):,} float32 parameters in {len(sizes)} tensors")
    print(f"{'optimizer':10s} {'cnnfast ms':>11s} {'torch ms':>9s} {'foreach ms':>11s} {'fused ms':>9s} "
          f"{'ratio':>7s} {'ratio fe':>9s} {'ratio fu':>9s}")
    for name, kw in CASES:
        data = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        ours = [nn.Parameter(d.copy()) for d in data]
        for p, g in zip(ours, grads):
            p.grad = cnnfast.tensor(g.copy())
        steps = {"cnnfast": getattr(optim, name)(ours, **kw).step}
        paths = {"torch": dict(foreach=False), "foreach": dict(foreach=True)}
        if name in ("SGD", "Adam", "AdamW"):
            paths["fused"] = dict(fused=True)
        for label, path in paths.items():
            theirs = [torch.tensor(d.copy(), requires_grad=True) for d in data]
            for p, g in zip(theirs, grads):
                p.grad = torch.from_numpy(g.copy())
            steps[label] = getattr(torch.optim, name)(theirs, **path, **kw).step
        times = interleaved(steps, args.repeats, warmup=3, pause=0.02)
        ms = {k: median(v) * 1e3 for k, v in times.items()}
        fused = f"{ms['fused']:9.2f}" if "fused" in ms else f"{'-':>9s}"
        fused_ratio = f"{ms['fused'] / ms['cnnfast']:9.2f}" if "fused" in ms else f"{'-':>9s}"
        print(f"{name:10s} {ms['cnnfast']:11.2f} {ms['torch']:9.2f} {ms['foreach']:11.2f} {fused} "
              f"{ms['torch'] / ms['cnnfast']:7.2f} {ms['foreach'] / ms['cnnfast']:9.2f} {fused_ratio}")


if __name__ == "__main__":
    main()
