"""Training throughput: cnnfast vs PyTorch side by side, same model, same initial weights,
same data, same optimizer, 2 threads, float32.

1. LeNet-5 (the `cnnfast train` default: ReLU, max-pooling) for one epoch over the digits
   training split (1,259 images, 32x32), batch 64, Adam lr 2e-3. The torch model's initial
   weights are copied into the cnnfast model, both see the batches in the same order, and
   the loss trajectories are compared (they should agree to float32 rounding).
2. ResNet-18 (torchvision layout, 10 classes) on random 3x32x32 inputs, batch 32, SGD with
   momentum 0.9, for a few hundred steps (--quick: fewer).

Prints images/s for each framework and the ratio cnnfast / PyTorch (> 1: cnnfast is
faster). The two frameworks are timed alternately, one repeat each in turn, and each
keeps its best repeat, so a burst of load from other jobs on the machine hits both
alike and the ratio stays meaningful. A LeNet repeat is --lenet-epochs passes over the
training split (the issue's setup: same weights, data order, batch 64 and optimizer; a
single 20-batch epoch is too short to time reliably).

    python benchmarks/bench_train.py            # full run
    python benchmarks/bench_train.py --quick    # fewer repeats and steps
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as tnn

import cnnfast
from cnnfast import functional as F
from cnnfast.data import channel_stats, load_digits, split_indices
from cnnfast.models import lenet5, resnet18


def torch_lenet5(num_classes=10):
    """The same layers and state-dict names as cnnfast.models.lenet5(activation="relu", pool="max")."""
    m = tnn.Module()
    m.features = tnn.Sequential(tnn.Conv2d(1, 6, 5), tnn.ReLU(), tnn.MaxPool2d(2, 2),
                                tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2, 2))
    m.classifier = tnn.Sequential(tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                                  tnn.Linear(84, num_classes))
    m.forward = lambda x: m.classifier(m.features(x).flatten(1))
    return m


class _TorchBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class TorchResNet18(tnn.Module):
    """torchvision's ResNet-18 (names and layers), written out because torchvision is optional."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        widths, cin = [64, 128, 256, 512], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", tnn.Sequential(_TorchBlock(cin, w, stride), _TorchBlock(w, w, 1)))
            cin = w
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def copy_weights(torch_model, cnnfast_model):
    """torch -> cnnfast, by state-dict name (the layouts are the same)."""
    state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    own = cnnfast_model.state_dict()
    missing = set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")}
    if missing:
        raise RuntimeError(f"weights missing for {sorted(missing)[:5]}")
    cnnfast_model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def cnnfast_step(model, opt):
    def step(x, y):
        loss = F.cross_entropy(model(cnnfast.tensor(x)), cnnfast.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())
    return step


def torch_step(model, opt):
    def step(x, y):
        loss = tnn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())
    return step


def timed_alternately(runs: dict, repeats: int) -> dict:
    """{name: best seconds} over ``repeats`` rounds; each round times every run once, in turn."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_lenet(repeats: int, epochs: int):
    d = load_digits()
    tr, _, _ = split_indices(d.y, 0.15, 0.15, 0)
    mean, std = channel_stats(d.x[tr])
    x = ((d.x[tr] - mean[0]) / std[0]).astype(np.float32)
    y = d.y[tr].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(tr))
    batches = [(np.ascontiguousarray(x[order[i:i + 64]]), y[order[i:i + 64]]) for i in range(0, len(order), 64)]
    images = sum(len(b[1]) for b in batches) * epochs

    torch.manual_seed(0)
    tm = torch_lenet5()
    cm = lenet5(activation="relu", pool="max")
    copy_weights(tm, cm)
    t_step = torch_step(tm, torch.optim.Adam(tm.parameters(), lr=2e-3))
    c_step = cnnfast_step(cm, cnnfast.optim.Adam(cm.parameters(), lr=2e-3))
    # The first epoch doubles as the warm-up and the agreement check.
    t_losses = [t_step(xb, yb) for xb, yb in batches]
    c_losses = [c_step(xb, yb) for xb, yb in batches]
    diff = float(np.max(np.abs(np.array(t_losses) - np.array(c_losses))))

    def epochs_of(step):
        def run():
            for _ in range(epochs):
                for xb, yb in batches:
                    step(xb, yb)
        return run

    best = timed_alternately({"torch": epochs_of(t_step), "cnnfast": epochs_of(c_step)}, repeats)
    return images / best["cnnfast"], images / best["torch"], diff, len(batches)


def bench_resnet(steps: int, repeats: int):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((32, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 32))
               for _ in range(min(steps, 8))]
    batches = [batches[i % len(batches)] for i in range(steps)]
    torch.manual_seed(0)
    tm = TorchResNet18(10)
    cm = resnet18(num_classes=10)
    copy_weights(tm, cm)
    t_step = torch_step(tm, torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9))
    c_step = cnnfast_step(cm, cnnfast.optim.SGD(cm.parameters(), lr=0.01, momentum=0.9))
    for xb, yb in batches[:3]:
        t_step(xb, yb)
        c_step(xb, yb)

    def steps_of(step):
        def run():
            for xb, yb in batches:
                step(xb, yb)
        return run

    best = timed_alternately({"torch": steps_of(t_step), "cnnfast": steps_of(c_step)}, repeats)
    return steps * 32 / best["cnnfast"], steps * 32 / best["torch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and ResNet steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resnet-steps", type=int, default=None, help="ResNet-18 steps per repeat (default 200, quick 20)")
    p.add_argument("--lenet-epochs", type=int, default=None, help="LeNet epochs per timed repeat (default 5, quick 2)")
    p.add_argument("--skip-resnet", action="store_true")
    a = p.parse_args(argv)
    cnnfast.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    repeats = 3 if a.quick else 5
    epochs = a.lenet_epochs or (2 if a.quick else 5)
    print(f"training throughput, float32, {a.threads} threads, simd {cnnfast.simd_level()}, torch {torch.__version__}; "
          f"best of {repeats} alternating repeats")
    c, t, diff, nb = bench_lenet(repeats, epochs)
    print(f"LeNet-5, digits, {epochs} epochs of {nb} batches of 64, Adam: cnnfast {c:9,.0f} img/s   "
          f"torch {t:9,.0f} img/s   "
          f"ratio {c / t:5.2f}x   (max loss difference over the first epoch {diff:.2e})")
    if not a.skip_resnet:
        steps = a.resnet_steps or (20 if a.quick else 200)
        c, t = bench_resnet(steps, 1 if a.quick else 3)
        print(f"ResNet-18, 3x32x32, batch 32, {steps} steps, SGD:  cnnfast {c:9,.0f} img/s   torch {t:9,.0f} img/s   "
              f"ratio {c / t:5.2f}x")


if __name__ == "__main__":
    main()
