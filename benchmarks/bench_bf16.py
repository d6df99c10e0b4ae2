"""bfloat16 mixed precision vs float32, cnnfast and PyTorch side by side, 2 threads.

1. Convolution layers (ResNet-18 3x3 layers at 32x32 input, batch 32): forward,
   backward-data and backward-weight GFLOP/s in float32 and bf16 (cnnfast:
   _C.conv_*_bf16; torch: the same op on bf16 tensors, its AMX/oneDNN path), and the
   fraction of the machine's bf16 peak that bf16 reaches: our own TDPBF16PS tile loop
   (_C.amx_peak_gflops) on AMX CPUs, else our own VDPBF16PS loop (_C.dpbf16_peak_gflops).
2. Training images/s, fp32 vs bf16 for both libraries: ResNet-18 32x32 batch 32 (SGD)
   and LeNet-5 32x32 batch 64 (Adam); cnnfast's bf16 is cnnfast.autocast, torch's is
   torch.autocast("cpu", dtype=torch.bfloat16). The four runs are timed alternately, one
   repeat each in turn, each keeping its best, so load from other jobs hits all alike.

    python benchmarks/bench_bf16.py [--quick] [--threads 2] [--cpu-time] [--part all|layers|training]

--cpu-time times the calling thread's CPU seconds (time.thread_time; needs --threads 1):
figures that mean something on a loaded machine, labelled as such.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch
import torch.nn as tnn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnnfast  # noqa: E402
from cnnfast import _C  # noqa: E402
from cnnfast import functional as F  # noqa: E402
from cnnfast.models import lenet5, resnet18  # noqa: E402
from _common import interleaved  # noqa: E402
from bench_train import TorchResNet18, copy_weights, torch_lenet5  # noqa: E402

LAYERS = [(64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (256, 256, 8, 1), (512, 512, 4, 1)]


CLOCK = time.perf_counter


def best_of(fns, repeats):
    """Best seconds of each function, timed alternately (one call of each per round)."""
    return [min(v) for v in interleaved(dict(enumerate(fns)), repeats, warmup=1, clock=CLOCK).values()]


def bench_layers(repeats, peak):
    rng = np.random.default_rng(0)
    print(f"\n3x3 conv layers, batch 32 (GFLOP/s; bf16 as % of the bf16 peak {peak:.0f} GFLOP/s)")
    print(f"{'layer':<22}{'pass':<7}{'cnnfast f32':>12}{'cnnfast bf16':>13}{'torch f32':>10}{'torch bf16':>11}"
          f"{'ours %pk':>9}{'torch %pk':>10}{'ours bf16/f32':>14}")
    for cin, cout, hw, stride in LAYERS:
        x = rng.standard_normal((32, cin, hw, hw)).astype(np.float32)
        w = (0.05 * rng.standard_normal((cout, cin, 3, 3))).astype(np.float32)
        args = ([stride] * 2, [[1, 1], [1, 1]], [1, 1], 1)
        y = _C.conv_forward(x, w, None, *args)
        flops = 2.0 * y.size * cin * 9 / 1e9
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        xb, wb = xt.bfloat16(), wt.bfloat16()
        gyt = torch.from_numpy(y)
        gyb = gyt.bfloat16()
        conv_bwd = torch.ops.aten.convolution_backward

        def tb(g, xx, ww, mask):
            return lambda: conv_bwd(g, xx, ww, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1, mask)

        passes = {
            "fwd": (lambda: _C.conv_forward(x, w, None, *args), lambda: _C.conv_forward_bf16(x, w, None, *args),
                    lambda: torch.conv2d(xt, wt, None, stride, 1), lambda: torch.conv2d(xb, wb, None, stride, 1)),
            "bwd_x": (lambda: _C.conv_backward(y, x, w, *args, need_weight=False, need_bias=False),
                      lambda: _C.conv_backward_bf16(y, x, w, *args, need_weight=False, need_bias=False),
                      tb(gyt, xt, wt, [True, False, False]), tb(gyb, xb, wb, [True, False, False])),
            "bwd_w": (lambda: _C.conv_backward(y, x, w, *args, need_input=False, need_bias=False),
                      lambda: _C.conv_backward_bf16(y, x, w, *args, need_input=False, need_bias=False),
                      tb(gyt, xt, wt, [False, True, False]), tb(gyb, xb, wb, [False, True, False])),
        }
        for name, fns in passes.items():
            g = [flops / t for t in best_of(fns, repeats)]
            pk = (f"{100 * g[1] / peak:8.1f}%{100 * g[3] / peak:9.1f}%" if peak else "")
            print(f"{f'{cin}->{cout} {hw}x{hw} s{stride}':<22}{name:<7}{g[0]:12.0f}{g[1]:13.0f}{g[2]:10.0f}{g[3]:11.0f}"
                  f"{pk}{g[1] / g[0]:13.2f}x")


def cf_step(model, opt, bf16):
    def step(x, y):
        with cnnfast.autocast(enabled=bf16):
            loss = F.cross_entropy(model(cnnfast.tensor(x)), cnnfast.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def t_step(model, opt, bf16):
    def step(x, y):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = tnn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def bench_training(name, torch_ctor, cf_ctor, shape, batch, steps, repeats, opt_name):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((batch,) + shape).astype(np.float32), rng.integers(0, 10, batch))
               for _ in range(steps)]
    runs = {}
    for lib in ("torch", "cnnfast"):
        for prec in ("fp32", "bf16"):
            torch.manual_seed(0)
            tm = torch_ctor()
            if lib == "torch":
                opt = (torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9) if opt_name == "sgd"
                       else torch.optim.Adam(tm.parameters(), lr=2e-3))
                step = t_step(tm, opt, prec == "bf16")
            else:
                cm = cf_ctor()
                copy_weights(tm, cm)
                opt = (cnnfast.optim.SGD(cm.parameters(), lr=0.01, momentum=0.9) if opt_name == "sgd"
                       else cnnfast.optim.Adam(cm.parameters(), lr=2e-3))
                step = cf_step(cm, opt, prec == "bf16")
            for xb, yb in batches[:2]:
                step(xb, yb)

            def run(step=step):
                for xb, yb in batches:
                    step(xb, yb)
            runs[f"{lib} {prec}"] = run
    best = {k: min(v) for k, v in interleaved(runs, repeats, warmup=0, clock=CLOCK).items()}
    ips = {k: steps * batch / v for k, v in best.items()}
    print(f"\n{name} training, batch {batch}, images/s")
    for k, v in ips.items():
        print(f"  {k:<14}{v:9.0f}")
    print(f"  cnnfast bf16 / cnnfast fp32 = {ips['cnnfast bf16'] / ips['cnnfast fp32']:.2f}x, "
          f"cnnfast bf16 / torch bf16 = {ips['cnnfast bf16'] / ips['torch bf16']:.2f}x, "
          f"torch bf16 / torch fp32 = {ips['torch bf16'] / ips['torch fp32']:.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true", help="time thread CPU seconds (needs --threads 1)")
    ap.add_argument("--part", choices=("all", "layers", "training"), default="all",
                    help="only the convolution layers, or only the training runs")
    a = ap.parse_args(argv)
    if a.cpu_time:
        if a.threads != 1:
            ap.error("--cpu-time needs --threads 1 (thread CPU time misses other threads' work)")
        global CLOCK
        CLOCK = time.thread_time
    cnnfast.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    print(f"bf16 path: {_C.bf16_path()} (AMX: {_C.amx_permission()}), threads {a.threads}, "
          f"cpu: {_C.cpu_model()}, clock: {'thread CPU time' if a.cpu_time else 'wall'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    paths = _C.bf16_paths()
    if "amx" in paths:
        peak, what = _C.amx_peak_gflops(a.threads), "AMX TDPBF16PS"
    elif "avx512_bf16" in paths:
        peak, what = _C.dpbf16_peak_gflops(a.threads), "VDPBF16PS"
    else:
        peak, what = 0.0, "none (no bf16 hardware)"
    print(f"bf16 peak ({what}, our own loop): {peak:.0f} GFLOP/s; float32 FMA peak: "
          f"{_C.fma_peak_gflops(a.threads):.0f} GFLOP/s; torch: {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}")
    reps = 2 if a.quick else 5
    if a.part != "training":
        bench_layers(reps, peak)
    if a.part == "layers":
        return
    bench_training("ResNet-18 32x32", lambda: TorchResNet18(10), lambda: resnet18(num_classes=10), (3, 32, 32), 32,
                   3 if a.quick else 10, reps, "sgd")
    bench_training("LeNet-5 32x32", lambda: torch_lenet5(10), lambda: lenet5(num_classes=10, activation="relu",
                   pool="max", in_channels=1), (1, 32, 32), 64, 5 if a.quick else 20, reps, "adam")


if __name__ == "__main__":
    main()
