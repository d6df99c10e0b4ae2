"""Convolution benchmark: cnnfast vs PyTorch side by side, float32, 2 threads.

For each layer prints the median time after warm-up of the forward pass and of
forward + backward (grad input, weight and bias), the GFLOP/s in direct-
convolution FLOPs (2*N*K*C/g*kh*kw*Ho*Wo per pass, x3 for forward+backward),
the percent of this machine's FMA peak at its widest level (AVX-512 where the
CPU has it, measured by cnnfast._C.fma_peak_gflops, whatever level cnnfast runs
at), the ratio PyTorch time / cnnfast time (> 1: cnnfast is faster), and the
forward's error against float64 (relative L2 norm) for the GEMM path and, on
3x3 stride-1 layers, the Winograd path; then the geometric means. The header
names the SIMD level each library ran at (cnnfast.simd_level(), PyTorch's
torch.backends.cpu.get_cpu_capability()): compare CNNFAST_SIMD=avx2 against
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 for like with like.

    python benchmarks/bench_conv.py            # full run
    python benchmarks/bench_conv.py --quick    # smaller batches, fewer repeats
    python benchmarks/bench_conv.py --algo gemm
    python benchmarks/bench_conv.py --only depthwise
    python benchmarks/bench_conv.py --set small   # weight-bound layers at batch 1-8
    python benchmarks/bench_conv.py --isolated    # each library in its own process
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C

from _common import header

# name, N, C, H(=W), K, kernel, stride, pad, groups, transposed, dilation
LAYERS = [
    ("resnet 3x3 c64", 8, 64, 56, 64, 3, 1, 1, 1, False, 1),
    ("resnet 3x3 c128", 16, 128, 28, 128, 3, 1, 1, 1, False, 1),
    ("resnet 3x3 c256", 32, 256, 14, 256, 3, 1, 1, 1, False, 1),
    ("resnet 3x3 c512 7x7", 32, 512, 7, 512, 3, 1, 1, 1, False, 1),
    ("3x3 s2 c64->128", 16, 64, 56, 128, 3, 2, 1, 1, False, 1),
    ("1x1 c256->64", 8, 256, 56, 64, 1, 1, 0, 1, False, 1),
    ("1x1 c64->256", 8, 64, 56, 256, 1, 1, 0, 1, False, 1),
    ("dilated 3x3 d2 c64", 8, 64, 56, 64, 3, 1, 2, 1, False, 2),
    ("32-group 3x3 c256", 8, 256, 28, 256, 3, 1, 1, 32, False, 1),
    ("alexnet 11x11 s4", 8, 3, 227, 96, 11, 4, 0, 1, False, 1),
    ("alexnet 5x5 c96->256", 8, 96, 27, 256, 5, 1, 2, 1, False, 1),
    ("cifar 5x5", 64, 3, 32, 32, 5, 1, 2, 1, False, 1),
    ("depthwise 3x3 c128", 8, 128, 56, 128, 3, 1, 1, 128, False, 1),
    ("transposed 4x4 s2", 8, 128, 28, 64, 4, 2, 1, 1, True, 1),
]

# --set small: layers bound by their weights or by small maps, at the batch sizes of
# inference and of small-batch or per-rank training (ResNet-18/50 at 224x224 and 1-8 images).
SMALL_LAYERS = [
    ("3x3 c512 7x7", 1, 512, 7, 512, 3, 1, 1, 1, False, 1),
    ("3x3 c512 7x7", 4, 512, 7, 512, 3, 1, 1, 1, False, 1),
    ("3x3 c512 7x7", 8, 512, 7, 512, 3, 1, 1, 1, False, 1),
    ("3x3 c256 14x14", 1, 256, 14, 256, 3, 1, 1, 1, False, 1),
    ("3x3 c256 14x14", 4, 256, 14, 256, 3, 1, 1, 1, False, 1),
    ("3x3 c128 28x28", 1, 128, 28, 128, 3, 1, 1, 1, False, 1),
    ("3x3 s2 c256->512", 1, 256, 14, 512, 3, 2, 1, 1, False, 1),
    ("3x3 s2 c128->256", 2, 128, 28, 256, 3, 2, 1, 1, False, 1),
    ("3x3 s2 c512 14x14", 8, 512, 14, 512, 3, 2, 1, 1, False, 1),
    ("3x3 s2 c256 28x28", 8, 256, 28, 256, 3, 2, 1, 1, False, 1),
    ("1x1 c2048->512 7x7", 2, 2048, 7, 512, 1, 1, 0, 1, False, 1),
    ("1x1 c2048->512 7x7", 8, 2048, 7, 512, 1, 1, 0, 1, False, 1),
    ("1x1 c512->2048 7x7", 8, 512, 7, 2048, 1, 1, 0, 1, False, 1),
    ("1x1 s2 c1024->2048", 8, 1024, 14, 2048, 1, 2, 0, 1, False, 1),
    ("5x5 c256 7x7", 1, 256, 7, 256, 5, 1, 2, 1, False, 1),
    ("3x3 c16->32 128x128", 4, 16, 128, 32, 3, 1, 1, 1, False, 1),
]


PAUSE_S = 0.02


def median_times(fns, repeats: int, warmup: int) -> list:
    """Median seconds of each fn; the fns take turns in every repeat, so a burst of
    load from other processes hits both libraries alike rather than one of them.
    A short pause before each timed call lets the previous library's worker
    threads stop spin-waiting (PyTorch's OpenMP workers spin for a while after a
    parallel region and, on 2 cores, take CPU from whichever call comes next)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def layer_flops(N, C, H, K, k, s, p, g, transposed, d=1) -> float:
    if transposed:  # the direct FLOPs of the equivalent convolution: every input pixel meets every tap
        return 2.0 * N * C * (K // g) * k * k * H * H
    Ho = (H + 2 * p - d * (k - 1) - 1) // s + 1
    return 2.0 * N * K * (C // g) * k * k * Ho * Ho


def run_layer(layer, quick: bool, algo: str, repeats: int, only: str | None = None):
    name, N, C, H, K, k, s, p, g, transposed, d = layer
    if quick:
        N = max(1, N // 4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    if transposed:
        w = (rng.standard_normal((C, K // g, k, k)) * 0.05).astype(np.float32)
    else:
        w = (rng.standard_normal((K, C // g, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    pads = [[p, p], [p, p]]
    use_algo = algo
    if use_algo == "winograd" and not (k == 3 and s == 1):
        use_algo = "auto"

    if transposed:
        fwd = lambda: _C.conv_transpose_forward(x, w, b, [s, s], pads, [0, 0], [1, 1], g, use_algo)
    else:
        fwd = lambda: _C.conv_forward(x, w, b, [s, s], pads, [d, d], g, use_algo)
    y = fwd()
    gy = rng.standard_normal(y.shape).astype(np.float32)
    if transposed:
        bwd = lambda: _C.conv_transpose_backward(gy, x, w, [s, s], pads, [0, 0], [1, 1], g, algo=use_algo)
    else:
        bwd = lambda: _C.conv_backward(gy, x, w, [s, s], pads, [d, d], g, algo=use_algo)

    def ours_both():
        fwd()
        bwd()

    tx = torch.tensor(x)
    tw = torch.tensor(w)
    tb = torch.tensor(b)
    tgy = torch.tensor(gy)
    op = TF.conv_transpose2d if transposed else TF.conv2d
    dil = {} if transposed else {"dilation": d}

    def torch_fwd():
        with torch.no_grad():
            op(tx, tw, tb, stride=s, padding=p, groups=g, **dil)

    txg, twg, tbg = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def torch_both():
        txg.grad = twg.grad = tbg.grad = None
        op(txg, twg, tbg, stride=s, padding=p, groups=g, **dil).backward(tgy)

    warm = 1 if quick else 2
    if only:  # one library in this process (--isolated's child)
        f, fb = (fwd, ours_both) if only == "ours" else (torch_fwd, torch_both)
        return {f"{only}_f": median_times([f], repeats, warm)[0], f"{only}_fb": median_times([fb], repeats, warm)[0]}
    t = dict(zip(("ours_f", "torch_f"), median_times([fwd, torch_fwd], repeats, warm)))
    t.update(zip(("ours_fb", "torch_fb"), median_times([ours_both, torch_both], repeats, warm)))
    return name, N, layer_flops(N, C, H, K, k, s, p, g, transposed, d), t, layer_errors(layer, x, w, b)


def layer_errors(layer, x, w, b) -> dict:
    """The forward's error against float64 for the GEMM path and, on 3x3 stride-1 layers, Winograd."""
    name, N, C, H, K, k, s, p, g, transposed, d = layer
    pads = [[p, p], [p, p]]
    op = TF.conv_transpose2d if transposed else TF.conv2d
    dil = {} if transposed else {"dilation": d}
    tx, tw, tb = torch.tensor(x), torch.tensor(w), torch.tensor(b)
    errors = {}
    if not transposed:
        ref = op(tx.double(), tw.double(), tb.double(), stride=s, padding=p, groups=g, **dil).numpy()
        algos = ["gemm"] + (["winograd"] if k == 3 and s == 1 and d == 1 else [])
        for a in algos:
            y = _C.conv_forward(x, w, b, [s, s], pads, [d, d], g, a)
            errors[a] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    return errors


def run_layer_isolated(layer, args, index: int, rounds: int = 3):
    """Each library timed alone in its own process, the two alternating for `rounds` rounds
    (median of the rounds' medians). Both libraries in one process disturb each other on a
    2-core machine: cnnfast pins its worker threads, and PyTorch's OpenMP workers, spin-waiting
    at a barrier, then sometimes share a core with the caller for a whole time slice (its
    3x3 stride-2 C256->512 at 14x14 forward read 10.9 ms after a cnnfast call, 0.6 alone)."""
    import json
    import os
    import subprocess
    import sys
    t = {}
    for _ in range(rounds):
        for lib in ("ours", "torch"):
            cmd = [sys.executable, os.path.abspath(__file__), "--set", args.set, "--threads", str(args.threads),
                   "--algo", args.algo, "--child", f"{lib}:{index}"] + (["--quick"] if args.quick else []) + (
                   ["--repeats", str(args.repeats)] if args.repeats else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for key, v in json.loads(out.strip().splitlines()[-1]).items():
                t.setdefault(key, []).append(v)
    t = {key: float(np.median(v)) for key, v in t.items()}
    name, N, C, H, K, k, s, p, g, transposed, d = layer
    rng = np.random.default_rng(0)
    N = max(1, N // 4) if args.quick else N
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((C, K // g, k, k) if transposed else (K, C // g, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    return name, N, layer_flops(N, C, H, K, k, s, p, g, transposed, d), t, layer_errors(layer, x, w, b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch/4 and 5 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--algo", default="auto", choices=["auto", "gemm", "winograd"])
    ap.add_argument("--only", default=None, help="run only the layers whose name contains this text")
    ap.add_argument("--set", default="issue", choices=["issue", "small", "all"],
                    help="issue: the layers above (the default); small: weight-bound and small-map layers at "
                         "batch 1-8; all: both")
    ap.add_argument("--isolated", action="store_true",
                    help="time each library alone in its own process (alternating, 3 rounds) instead of "
                         "interleaved in one")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    repeats = args.repeats or (5 if args.quick else 11)
    cnnfast.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    layers = {"issue": LAYERS, "small": SMALL_LAYERS, "all": LAYERS + SMALL_LAYERS}[args.set]
    if args.child:
        import json
        lib, index = args.child.split(":")
        print(json.dumps(run_layer(layers[int(index)], args.quick, args.algo, repeats, only=lib)))
        return
    how = (f"each library alone in its own process, 3 alternating rounds of {repeats} calls (median)" if args.isolated
           else f"median of {repeats} interleaved calls")
    print(header(args.threads, f"{how}, {PAUSE_S * 1e3:g} ms pause before each"))
    widest = cnnfast.simd_levels()[-1]
    peaks = {lvl: _C.fma_peak_gflops(args.threads, lvl) for lvl in cnnfast.simd_levels() if lvl != "scalar"}
    peak = peaks.get(widest) or _C.fma_peak_gflops(args.threads)
    print(f"cnnfast {cnnfast.__version__} at {cnnfast.simd_level()}, torch {torch.__version__} at "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, algo={args.algo}")
    print("measured FMA peak " + ", ".join(f"{lvl} {v:.1f}" for lvl, v in peaks.items())
          + f" GFLOP/s; %pk is of the {widest} peak")
    hdr = (f"{'layer':<22}{'N':>4} | {'fwd ms':>8}{'torch':>8}{'GF/s':>7}{'%pk':>5}{'ratio':>7} | "
           f"{'f+b ms':>8}{'torch':>8}{'GF/s':>7}{'%pk':>5}{'ratio':>7} | {'err gemm':>9}{'err wino':>9}")
    print(hdr)
    print("-" * len(hdr))
    rf, rfb = [], []
    for i, layer in enumerate(layers):
        if args.only and args.only not in layer[0]:
            continue
        name, N, flops, t, err = (run_layer_isolated(layer, args, i) if args.isolated
                                  else run_layer(layer, args.quick, args.algo, repeats))
        gf, gfb = flops / t["ours_f"] * 1e-9, 3 * flops / t["ours_fb"] * 1e-9
        r1, r2 = t["torch_f"] / t["ours_f"], t["torch_fb"] / t["ours_fb"]
        rf.append(r1)
        rfb.append(r2)
        print(f"{name:<22}{N:>4} | {t['ours_f'] * 1e3:>8.2f}{t['torch_f'] * 1e3:>8.2f}{gf:>7.1f}"
              f"{100 * gf / peak:>5.0f}{r1:>7.2f} | {t['ours_fb'] * 1e3:>8.2f}{t['torch_fb'] * 1e3:>8.2f}"
              f"{gfb:>7.1f}{100 * gfb / peak:>5.0f}{r2:>7.2f} | {_err(err, 'gemm')}{_err(err, 'winograd')}",
              flush=True)
    geo = lambda v: math.exp(sum(math.log(r) for r in v) / len(v))
    print("-" * len(hdr))
    print(f"geometric mean ratio (torch time / cnnfast time): forward {geo(rf):.2f}, forward+backward {geo(rfb):.2f}")
    print(f"worst: forward {min(rf):.2f}, forward+backward {min(rfb):.2f}")


def _err(errors: dict, algo: str) -> str:
    return f"{errors[algo]:>9.1e}" if algo in errors else f"{'-':>9}"


if __name__ == "__main__":
    main()
