"""Per-kernel CPU-time comparison of cnnfast and PyTorch that holds up on a loaded machine.

bench_conv and bench_ops time wall clock on 2 threads, so on a machine shared with other
jobs (load average 5-10 on 2 cores) a run's ratios move by 30% or more. Here both
libraries run on ONE thread and each call is timed with time.thread_time(), the CPU time
of the calling thread: time spent descheduled is not counted, so the ratio measures the
kernels themselves. It does not see threading effects (load balance, parallel
overheads): check those with bench_conv / bench_ops on a quiet machine.

The calls alternate (ours, torch, ours, ...) and each side keeps its median over
--repeats calls. Convolution layers are bench_conv's (forward, then forward+backward);
memory-bound ops are bench_ops' case files.

    python benchmarks/kernel_cpu_times.py                   # conv layers and ops
    python benchmarks/kernel_cpu_times.py --conv -k c512    # conv layers whose name has c512
    python benchmarks/kernel_cpu_times.py --ops -k tanh     # ops whose name has tanh
    CNNFAST_SIMD=avx2 python benchmarks/kernel_cpu_times.py --conv
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

from _common import header, interleaved


def cpu_medians(fns, repeats: int, warmup: int = 2) -> list[float]:
    """Median thread CPU seconds of each callable, the callables taking turns."""
    times = interleaved(dict(enumerate(fns)), repeats, warmup, clock=time.thread_time)
    return [statistics.median(times[i]) for i in range(len(fns))]


def conv_rows(filt: str, quick: bool, repeats: int):
    import numpy as np
    import torch
    import torch.nn.functional as TF

    from cnnfast import _C
    from bench_conv import LAYERS

    for name, N, C, H, K, k, s, p, g, transposed, d in LAYERS:
        if filt not in name:
            continue
        N = max(1, N // 4) if quick else N
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        wshape = (C, K // g, k, k) if transposed else (K, C // g, k, k)
        w = (rng.standard_normal(wshape) * 0.05).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        pads = [[p, p], [p, p]]
        if transposed:
            fwd = lambda: _C.conv_transpose_forward(x, w, b, [s, s], pads, [0, 0], [1, 1], g, "auto")
        else:
            fwd = lambda: _C.conv_forward(x, w, b, [s, s], pads, [d, d], g, "auto")
        gy = rng.standard_normal(fwd().shape).astype(np.float32)
        if transposed:
            bwd = lambda: _C.conv_transpose_backward(gy, x, w, [s, s], pads, [0, 0], [1, 1], g, algo="auto")
        else:
            bwd = lambda: _C.conv_backward(gy, x, w, [s, s], pads, [d, d], g, algo="auto")
        op = TF.conv_transpose2d if transposed else TF.conv2d
        kw = {} if transposed else {"dilation": d}
        tx, tw, tb, tgy = (torch.tensor(a) for a in (x, w, b, gy))
        txg, twg, tbg = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

        def t_fwd():
            with torch.no_grad():
                op(tx, tw, tb, stride=s, padding=p, groups=g, **kw)

        def t_both():
            txg.grad = twg.grad = tbg.grad = None
            op(txg, twg, tbg, stride=s, padding=p, groups=g, **kw).backward(tgy)

        def o_both():
            fwd()
            bwd()

        of, tf_ = cpu_medians([fwd, t_fwd], repeats)
        ob, tb_ = cpu_medians([o_both, t_both], repeats)
        yield f"conv {name} fwd", of, tf_
        yield f"conv {name} f+b", ob, tb_


def op_rows(filt: str, quick: bool, repeats: int):
    from bench_ops import load_cases

    if quick:
        os.environ["CNNFAST_BENCH_QUICK"] = "1"
    for case in load_cases(os.path.dirname(os.path.abspath(__file__))):
        if filt in case["name"]:
            ours, ref = cpu_medians([case["cnnfast"], case["torch"]], repeats)
            yield case["name"], ours, ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conv", action="store_true", help="only the convolution layers")
    ap.add_argument("--ops", action="store_true", help="only the memory-bound ops")
    ap.add_argument("-k", dest="filter", default="", help="only rows whose name contains this")
    ap.add_argument("--quick", action="store_true", help="smaller batches")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    import torch

    import cnnfast

    cnnfast.set_num_threads(1)
    torch.set_num_threads(1)
    print(header(1, f"median thread CPU time (time.thread_time) of {args.repeats} alternating calls"))
    head = f"{'kernel':<48} {'cnnfast ms':>10} {'torch ms':>9} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    ratios = []
    gens = []
    if not args.ops:
        gens.append(conv_rows(args.filter, args.quick, args.repeats))
    if not args.conv:
        gens.append(op_rows(args.filter, args.quick, args.repeats))
    for gen in gens:
        for name, ours, ref in gen:
            ratios.append(ref / ours)
            print(f"{name:<48} {ours * 1e3:>10.3f} {ref * 1e3:>9.3f} {ref / ours:>5.2f}x", flush=True)
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print("-" * len(head))
        print(f"geometric mean ratio (torch CPU time / cnnfast CPU time) over {len(ratios)} rows: {geo:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
