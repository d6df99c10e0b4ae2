"""cnnfast CUDA kernels side by side with PyTorch (cuDNN / ATen) on the same GPU.

    python benchmarks/bench_cuda.py [--quick]

1. ResNet-50 convolution shapes at batch 64: forward, backward-data and backward-weights,
   exact FP32 (torch.backends.cudnn.allow_tf32 = False, cudnn.benchmark = True, vs our
   allow_tf32=False), then TF32 against cuDNN TF32. Prints ms and the ratio ours/torch
   (< 1 means cnnfast is faster) and our TFLOP/s.
2. Memory-bound kernels (ReLU, BatchNorm, max pooling, dropout) as a percentage of the
   device-to-device copy bandwidth measured first in the same run.

Timing: CUDA events, median of repeats after warm-up. Our kernels run on cnnfast's own
stream, so their events are recorded on that stream (torch.cuda.ExternalStream); torch's
on torch's current stream. Inputs are torch tensors viewed as cnnfast DeviceArrays once
(no copies, no per-call stream handshakes). Exits with a message where there is no GPU.
"""
import statistics
import sys

import numpy as np


def main():
    try:
        import torch
    except ImportError:
        print("bench_cuda: PyTorch is not installed; nothing to compare with.")
        return 0
    import cnnfast

    if not cnnfast.cuda.is_available():
        print("bench_cuda: no CUDA device for cnnfast (built with CUDA: %s); skipping." % cnnfast.cuda.is_compiled())
        return 0
    if not torch.cuda.is_available():
        print("bench_cuda: this PyTorch build has no CUDA (%s); cuDNN comparison needs a CUDA torch." %
              torch.__version__)
        return 0
    quick = "--quick" in sys.argv
    cu = cnnfast._C.cuda
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    our_stream = torch.cuda.ExternalStream(cu.empty([1]).__cuda_array_interface__["stream"])
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")

    def timed(fn, stream, warmup=2, reps=7):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        cnnfast.cuda.synchronize()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def view(t):
        return cnnfast.cuda.as_device_array(t.contiguous())

    # ---- copy bandwidth ----------------------------------------------------------------
    big = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    big2 = torch.empty_like(big)
    ms = timed(lambda: big2.copy_(big), torch.cuda.current_stream())
    copy_bw = 2 * big.numel() / (ms * 1e-3)
    print(f"device-to-device copy bandwidth: {copy_bw / 1e9:.0f} GB/s\n")
    del big, big2

    # ---- ResNet-50 convolutions -----------------------------------------------------------
    # (C_in, H, C_out, kernel, stride, pad); W = H.
    layers = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 1, 1, 0), (64, 56, 64, 3, 1, 1), (64, 56, 256, 1, 1, 0),
              (256, 56, 64, 1, 1, 0), (256, 56, 128, 1, 1, 0), (128, 56, 128, 3, 2, 1), (128, 28, 512, 1, 1, 0),
              (256, 56, 512, 1, 2, 0), (512, 28, 128, 1, 1, 0), (128, 28, 128, 3, 1, 1), (512, 28, 256, 1, 1, 0),
              (256, 28, 256, 3, 2, 1), (256, 14, 1024, 1, 1, 0), (1024, 14, 256, 1, 1, 0), (256, 14, 256, 3, 1, 1),
              (1024, 14, 512, 1, 1, 0), (512, 14, 512, 3, 2, 1), (512, 7, 2048, 1, 1, 0), (2048, 7, 512, 1, 1, 0),
              (512, 7, 512, 3, 1, 1)]
    if quick:
        layers = layers[:3] + layers[-3:]
    N = 64
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        print(f"ResNet-50 convolutions, batch {N}, {'TF32' if tf32 else 'exact FP32'} "
              f"(ratio = cnnfast time / cuDNN time)")
        print(f"{'layer':<28}{'pass':<8}{'cnnfast ms':>11}{'cuDNN ms':>10}{'ratio':>7}{'TFLOP/s':>9}")
        ratios = []
        for C, H, K, k, s, p in layers:
            x = torch.randn(N, C, H, H, device=dev)
            w = torch.randn(K, C, k, k, device=dev) * 0.05
            y = torch.nn.functional.conv2d(x, w, None, s, p)
            gy = torch.randn_like(y)
            xd, wd, gyd = view(x), view(w), view(gy)
            Ho = y.shape[2]
            flops = 2.0 * N * K * Ho * Ho * C * k * k
            pads = [[p, p], [p, p]]
            passes = {
                "fwd": (lambda: cu.conv_forward(xd, wd, None, [s, s], pads, [1, 1], 1, allow_tf32=tf32),
                        lambda: torch.nn.functional.conv2d(x, w, None, s, p)),
                "bwd-dat": (lambda: cu.conv_backward(gyd, xd, wd, [s, s], pads, [1, 1], 1, need_weight=False,
                                                     need_bias=False, allow_tf32=tf32),
                            lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], False,
                                                                        [0, 0], 1, [True, False, False])),
                "bwd-wt": (lambda: cu.conv_backward(gyd, xd, wd, [s, s], pads, [1, 1], 1, need_input=False,
                                                    need_bias=False, allow_tf32=tf32),
                           lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], False,
                                                                       [0, 0], 1, [False, True, False])),
            }
            for name, (ours, ref) in passes.items():
                t_ours = timed(ours, our_stream, reps=3 if quick else 5)
                t_ref = timed(ref, torch.cuda.current_stream(), reps=3 if quick else 5)
                ratios.append(t_ours / t_ref)
                print(f"{f'{C}x{H}x{H}->{K} k{k} s{s}':<28}{name:<8}{t_ours:>11.3f}{t_ref:>10.3f}"
                      f"{t_ours / t_ref:>7.2f}{flops / (t_ours * 1e-3) / 1e12:>9.1f}")
            del x, w, y, gy, xd, wd, gyd
        print(f"geometric-mean ratio: {float(np.exp(np.mean(np.log(ratios)))):.2f}\n")
    torch.backends.cudnn.allow_tf32 = False

    # ---- memory-bound kernels --------------------------------------------------------------
    print("memory-bound kernels (% of copy bandwidth = bytes moved / time / copy bandwidth)")
    print(f"{'kernel':<34}{'cnnfast ms':>11}{'torch ms':>10}{'ratio':>7}{'cnnfast %':>10}{'torch %':>9}")
    x = torch.randn(64, 256, 56, 56, device=dev)
    xd = view(x)
    nbytes = x.numel() * 4
    gamma, beta = torch.randn(256, device=dev), torch.randn(256, device=dev)
    rm, rv = torch.zeros(256, device=dev), torch.ones(256, device=dev)
    gd, bd, rmd, rvd = view(gamma), view(beta), view(rm.clone()), view(rv.clone())
    xp = torch.randn(64, 64, 112, 112, device=dev)
    xpd = view(xp)
    cases = [
        ("relu forward", 2 * nbytes, lambda: cu.relu_forward(xd), lambda: torch.relu(x)),
        ("batch_norm forward (training)", 3 * nbytes,
         lambda: cu.batch_norm_forward(xd, gd, bd, rmd, rvd, True, 0.1, 1e-5),
         lambda: torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5)),
        ("batch_norm forward (eval)", 2 * nbytes,
         lambda: cu.batch_norm_forward(xd, gd, bd, rmd, rvd, False, 0.1, 1e-5),
         lambda: torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, False, 0.1, 1e-5)),
        ("max_pool2d 3x3 s2 (64,64,112,112)", xp.numel() * 4 + xp.numel() * 4 // 4 * 3,
         lambda: cu.max_pool2d_forward(xpd, [3, 3], [2, 2], [1, 1]),
         lambda: torch.nn.functional.max_pool2d(xp, 3, 2, 1, return_indices=True)),
        ("dropout p=0.5 forward", 2 * nbytes, lambda: cu.dropout_forward(xd, 0.5, 1, 2),
         lambda: torch.nn.functional.dropout(x, 0.5, True)),
    ]
    for name, moved, ours, ref in cases:
        t_ours = timed(ours, our_stream)
        t_ref = timed(ref, torch.cuda.current_stream())
        pct = lambda t: 100.0 * moved / (t * 1e-3) / copy_bw  # noqa: E731
        print(f"{name:<34}{t_ours:>11.3f}{t_ref:>10.3f}{t_ours / t_ref:>7.2f}{pct(t_ours):>9.0f}%{pct(t_ref):>8.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
