"""ResNet-18 (torchvision layout, 10 classes, 3x32x32 inputs) trained on the GPU: first
checked against the same run on the CPU, then timed against PyTorch eager on the same GPU.

1. Agreement: the same initial weights (copied from a seeded torch model), the same
   batches and SGD (momentum 0.9), --steps steps on the CPU and on the GPU, in float32 and
   in float64. Reports the largest relative loss difference over the steps and the largest
   relative weight difference after them (||w_gpu - w_cpu|| / ||w_cpu||, per tensor). The
   float32 run is the acceptance check (<= 1e-4 relative); the float64 run shows whether a
   float32 gap is rounding amplified by training or a real difference between the kernels.
   The CPU side takes its accurate convolution path (im2col + GEMM, no Winograd).
2. Throughput: images/s of a whole training step (host batch to the device, forward,
   backward, SGD step, loss read back) for cnnfast on the GPU and for torch eager on the
   GPU, same weights and batches, interleaved repeats; TF32 off on both sides, then on.

    python benchmarks/bench_cuda_train.py [--steps 20] [--batch 128] [--out results.md]

Exits 2 where there is no GPU for cnnfast or torch, 1 when the float32 check fails.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def _models(dtype, torch, TorchResNet18, copy_weights):
    from cnnfast.models import resnet18

    torch.manual_seed(0)
    tm = TorchResNet18(10)
    cpu = resnet18(num_classes=10)
    copy_weights(tm, cpu)
    cpu.to(dtype)
    gpu = resnet18(num_classes=10)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(dtype).cuda()
    return tm, cpu, gpu


def _step(model, opt, device):
    import cnnfast
    from cnnfast import functional as F

    def step(x, y):
        loss = F.cross_entropy(model(cnnfast.tensor(x, device=device)), cnnfast.tensor(y, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())
    return step


def agreement(dtype, steps, batch, torch, TorchResNet18, copy_weights):
    """(max relative loss difference, max relative weight difference, cpu losses, gpu losses)."""
    import cnnfast

    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((batch, 3, 32, 32)).astype(dtype), rng.integers(0, 10, batch))
               for _ in range(steps)]
    _, cpu, gpu = _models(dtype, torch, TorchResNet18, copy_weights)
    runs = {}
    # The CPU reference takes im2col + GEMM everywhere: its default Winograd layers carry
    # ~6e-6 relative error, which 20 training steps would amplify past the tolerance.
    before = cnnfast.get_conv_algorithm()
    cnnfast.set_conv_algorithm("gemm")
    try:
        for name, model, device in (("cpu", cpu, "cpu"), ("gpu", gpu, "cuda")):
            model.train()
            step = _step(model, cnnfast.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), device)
            runs[name] = [step(x, y) for x, y in batches]
    finally:
        cnnfast.set_conv_algorithm(before)
    lc, lg = np.array(runs["cpu"]), np.array(runs["gpu"])
    loss_rel = float(np.max(np.abs(lg - lc) / np.abs(lc)))
    wc = {k: v.cpu().numpy() for k, v in cpu.state_dict().items() if v.dtype.kind == "f"}
    wg = {k: v.cpu().numpy() for k, v in gpu.state_dict().items() if v.dtype.kind == "f"}
    w_rel = max(float(np.linalg.norm(wg[k] - wc[k]) / max(np.linalg.norm(wc[k]), 1e-30)) for k in wc)
    return loss_rel, w_rel, runs["cpu"], runs["gpu"]


def throughput(batch, steps, repeats, tf32, torch, TorchResNet18, copy_weights):
    """(cnnfast images/s per repeat, torch images/s per repeat, first-step loss difference)."""
    import cnnfast

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    cnnfast.cuda.set_allow_tf32(tf32)
    rng = np.random.default_rng(2)
    batches = [(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, batch))
               for _ in range(4)]
    tm, _, gpu = _models(np.float32, torch, TorchResNet18, copy_weights)
    tm = tm.cuda().train()
    gpu.train()
    t_opt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
    c_step = _step(gpu, cnnfast.optim.SGD(gpu.parameters(), lr=0.01, momentum=0.9), "cuda")

    def t_step(x, y):
        out = tm(torch.from_numpy(x).cuda(non_blocking=False))
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y).cuda())
        t_opt.zero_grad()
        loss.backward()
        t_opt.step()
        return float(loss.item())

    first = abs(c_step(*batches[0]) - t_step(*batches[0]))
    for _ in range(3):  # warm-up: allocator caches, cuDNN's algorithm search, module loads
        for xb, yb in batches:
            c_step(xb, yb)
            t_step(xb, yb)
    rates = {"cnnfast": [], "torch": []}
    for _ in range(repeats):
        for name, step in (("cnnfast", c_step), ("torch", t_step)):
            torch.cuda.synchronize()
            cnnfast.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(steps):
                step(*batches[i % len(batches)])
            rates[name].append(steps * batch / (time.perf_counter() - t0))
    cnnfast.cuda.set_allow_tf32(False)
    return rates["cnnfast"], rates["torch"], first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="steps of the CPU/GPU agreement runs")
    p.add_argument("--check-batch", type=int, default=32, help="batch of the agreement runs")
    p.add_argument("--batch", type=int, default=128, help="batch of the throughput runs")
    p.add_argument("--bench-steps", type=int, default=30, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-float64", action="store_true")
    p.add_argument("--out", default=None, help="append the results (markdown) to this file")
    a = p.parse_args(argv)

    import cnnfast
    try:
        import torch
    except ImportError:
        print("bench_cuda_train: PyTorch is not installed")
        return 2
    if not cnnfast.cuda.is_available() or not torch.cuda.is_available():
        print(f"bench_cuda_train: no GPU (cnnfast CUDA build {cnnfast.cuda.is_compiled()}, device count "
              f"{cnnfast.cuda.device_count()}; torch CUDA {torch.cuda.is_available()})")
        return 2
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_train import TorchResNet18, copy_weights

    lines = [f"### ResNet-18 on the GPU (issue 18): {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
             f"cnnfast {cnnfast.__version__}", ""]
    ok = True
    for dtype in (np.float32,) if a.skip_float64 else (np.float32, np.float64):
        t0 = time.perf_counter()
        loss_rel, w_rel, lc, lg = agreement(dtype, a.steps, a.check_batch, torch, TorchResNet18, copy_weights)
        verdict = "PASS" if max(loss_rel, w_rel) <= 1e-4 else "FAIL"
        if dtype == np.float32:
            ok = verdict == "PASS"
        lines.append(f"- GPU vs CPU, {np.dtype(dtype).name}, {a.steps} SGD steps, batch {a.check_batch}: max relative "
                     f"loss difference {loss_rel:.2e}, max relative weight difference {w_rel:.2e} -> {verdict} "
                     f"(<= 1e-4); losses cpu {lc[0]:.6f}..{lc[-1]:.6f}, gpu {lg[0]:.6f}..{lg[-1]:.6f} "
                     f"({time.perf_counter() - t0:.0f} s)")
        print(lines[-1], flush=True)
    for tf32 in (False, True):
        c, t, first = throughput(a.batch, a.bench_steps, a.repeats, tf32, torch, TorchResNet18, copy_weights)
        mc, mt = statistics.median(c), statistics.median(t)
        lines.append(f"- training throughput, batch {a.batch}, TF32 {'on' if tf32 else 'off'} (both): cnnfast "
                     f"{mc:.0f} images/s (repeats {min(c):.0f}-{max(c):.0f}), torch eager {mt:.0f} "
                     f"({min(t):.0f}-{max(t):.0f}): ratio {mc / mt:.2f} (target >= 0.7); first-step loss "
                     f"difference {first:.2e}")
        print(lines[-1], flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
