"""ONNX interoperability cost: a ResNet-18 exported by PyTorch, run on the same input by
the PyTorch module itself, by the same module with BatchNorm folded into the convolutions,
by the file imported with cnnfast.onnx.load, and by onnxruntime; plus the time cnnfast
takes to load the file and to export its own ResNet-18.

torch.onnx.export in eval mode folds every BatchNorm into the convolution before it, so
the file that cnnfast and onnxruntime run has no BN layers while the PyTorch module runs
20 of them. The BN-folded PyTorch copy (torch.fx's conv-BN fusion, checked to give the
same outputs) is the like-for-like baseline; the unfolded module is shown for reference.
The four are timed interleaved: one inference of each in turn, every round.

    python benchmarks/bench_onnx.py [--quick] [--one-thread]   # 2 threads (or 1), median of repeats after warm-up
"""
import io
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch.fx.experimental.optimization import fuse as fuse_conv_bn

import cnnfast
import cnnfast.onnx

from _common import header, interleaved, median

QUICK = "--quick" in sys.argv
THREADS = 1 if "--one-thread" in sys.argv else 2
N, SIDE, REPEATS = (1, 112, 3) if QUICK else (8, 224, 7)


def median_time(fn, repeats=REPEATS):
    return median(interleaved({"fn": fn}, repeats, warmup=1)["fn"])


def torch_resnet18():
    """torchvision's ResNet-18 layout, written out (torchvision is not a dependency)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + idt)

    layers, cin = [], 64
    for i, c in enumerate([64, 128, 256, 512]):
        layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
        cin = c
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, 1000)).eval()


def main():
    cnnfast.set_num_threads(THREADS)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((N, 3, SIDE, SIDE)).astype(np.float32)
    net = torch_resnet18()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.from_numpy(x), f, dynamo=False, opset_version=17)
    data = f.getvalue()
    t_load = median_time(lambda: cnnfast.onnx.load(data), 3)
    model = cnnfast.onnx.load(data)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    fused = fuse_conv_bn(net)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    n_bn_fused = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
        assert np.allclose(fused(torch.from_numpy(x)).numpy(), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    with cnnfast.no_grad():
        assert np.allclose(model(x).numpy(), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())

    def run_in(module):
        def run():
            with torch.no_grad():
                module(torch.from_numpy(x))
        return run

    def run_cnnfast():
        with cnnfast.no_grad():
            model(x)

    times = interleaved({"torch": run_in(net), "fused": run_in(fused), "cnnfast": run_cnnfast,
                         "ort": lambda: sess.run(None, {sess.get_inputs()[0].name: x})}, REPEATS, warmup=1)
    t = {k: median(v) for k, v in times.items()}
    base = t["fused"]
    print(header(THREADS, f"median of {REPEATS} interleaved runs"))
    print(f"ResNet-18 inference, batch {N}, {SIDE}x{SIDE} (times relative to the BN-folded PyTorch module):")
    rows = [(f"PyTorch module, BN folded ({n_bn_fused} BN)", "fused"), (f"PyTorch module as trained ({n_bn} BN)", "torch"),
            ("cnnfast.onnx.load(file)", "cnnfast"), ("onnxruntime", "ort")]
    for label, key in rows:
        print(f"  {label:36s} {t[key] * 1e3:8.1f} ms   ({t[key] / base:.2f}x)")
    print(f"  {'cnnfast.onnx.load itself':36s} {t_load * 1e3:8.1f} ms")
    ours = cnnfast.models.resnet18().eval()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        cnnfast.onnx.export(ours, x[:1], os.path.join(d, "r18.onnx"))
    print(f"  cnnfast.onnx.export(resnet18, with its check) {(time.perf_counter() - t):.2f} s")


if __name__ == "__main__":
    main()
