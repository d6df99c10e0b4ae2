"""Where one training step's time goes: cnnfast vs PyTorch, side by side.

The model and step are bench_train.py's (ResNet-18 on 3x32x32, batch 32, SGD momentum 0.9,
or LeNet-5 on 1x32x32, batch 64, Adam), 2 threads, float32.

1. Step breakdown by category. cnnfast: every autograd Function's forward and backward is
   wrapped with a timer, and the optimizer step and zero_grad are timed; what is left of the
   step (Python modules, autograd bookkeeping, loss.item) is "other". PyTorch: the same step
   under torch.profiler, self CPU time grouped into the same categories (profiling adds a
   few microseconds per op, so torch's figures are a little pessimistic).
2. Every distinct convolution of the model timed alone: forward, input gradient and weight
   gradient, cnnfast kernels (cnnfast._C) against torch (aten), interleaved, min of repeats.

    python benchmarks/profile_train_step.py                 # ResNet-18
    python benchmarks/profile_train_step.py --model lenet   # LeNet-5
    python benchmarks/profile_train_step.py --threads 1 --clock cpu   # CPU time, on a busy machine
    python benchmarks/profile_train_step.py --skip-step     # only the convolution table
    python benchmarks/profile_train_step.py --threads 1 --batch 16   # one rank of a 2-process run
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

import cnnfast
from cnnfast import _C
from cnnfast import functional as F
from cnnfast.autograd import Function

import bench_train as bt

_clock = time.perf_counter  # --clock cpu: time.process_time (steadier on a shared machine)

CATEGORIES = ("conv", "batchnorm", "relu", "add", "pool", "linear", "loss", "view", "optimizer", "zero_grad",
              "other")


def _category_cnnfast(name: str) -> str:
    n = name.lower()
    for key, cat in (("conv", "conv"), ("batchnorm", "batchnorm"), ("norm", "batchnorm"), ("relu", "relu"),
                     ("pool", "pool"), ("linear", "linear"), ("entropy", "loss"), ("loss", "loss"),
                     ("softmax", "loss"), ("add", "add"), ("reshape", "view"), ("flatten", "view"),
                     ("view", "view")):
        if key in n:
            return cat
    return "other"


def _category_torch(name: str) -> str:
    n = name.lower()
    if "optimizer" in n or "sgd" in n or "adam" in n or "_foreach" in n:
        return "optimizer"
    if "zero_grad" in n:
        return "zero_grad"
    for key, cat in (("conv", "conv"), ("batch_norm", "batchnorm"), ("batchnorm", "batchnorm"),
                     ("relu", "relu"), ("threshold", "relu"), ("pool", "pool"), ("addmm", "linear"),
                     ("mm", "linear"), ("linear", "linear"), ("nll", "loss"), ("softmax", "loss"),
                     ("cross_entropy", "loss"), ("add", "add"), ("view", "view"), ("reshape", "view"),
                     ("flatten", "view")):
        if key in n:
            return cat
    return "other"


def _all_functions():
    seen, stack = set(), list(Function.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
    return seen


class CnnfastTimer:
    """Wraps every Function's forward/backward (and the optimizer) with perf_counter timers."""

    def __init__(self):
        self.totals = collections.defaultdict(float)
        self.counts = collections.defaultdict(int)
        self.enabled = False
        self._undo = []
        for cls in _all_functions():
            for kind in ("forward", "backward"):
                if kind not in cls.__dict__:
                    continue
                orig = cls.__dict__[kind]
                fn = orig.__func__ if isinstance(orig, staticmethod) else orig
                self._undo.append((cls, kind, orig))
                setattr(cls, kind, staticmethod(self._wrap(fn, cls.__name__, kind)))

    def _wrap(self, fn, name, kind):
        key = (_category_cnnfast(name), kind)

        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            t0 = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[key] += _clock() - t0
                self.counts[key] += 1
        return timed

    def timed(self, key, fn):
        t0 = _clock()
        out = fn()
        self.totals[(key, "")] += _clock() - t0
        self.counts[(key, "")] += 1
        return out

    def restore(self):
        for cls, kind, orig in self._undo:
            setattr(cls, kind, orig)


def profile_cnnfast(model, opt, batches):
    timer = CnnfastTimer()

    def step(x, y):
        loss = F.cross_entropy(model(cnnfast.tensor(x)), cnnfast.tensor(y))
        timer.timed("zero_grad", opt.zero_grad)
        loss.backward()
        timer.timed("optimizer", opt.step)
        return float(loss.item())

    for x, y in batches[:2]:
        step(x, y)
    timer.totals.clear()
    timer.counts.clear()
    timer.enabled = True
    t0 = _clock()
    for x, y in batches:
        step(x, y)
    total = (_clock() - t0) / len(batches)
    timer.restore()
    per = {k: v / len(batches) for k, v in timer.totals.items()}
    ops = sum(timer.counts[k] for k in timer.counts if k[1]) / len(batches)
    return total, per, ops


def profile_torch(model, opt, batches):
    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    for x, y in batches[:2]:
        step(x, y)
    t0 = _clock()
    for x, y in batches:
        step(x, y)
    total = (_clock() - t0) / len(batches)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            step(x, y)
    per = collections.defaultdict(float)
    for e in prof.key_averages():
        per[_category_torch(e.key)] += e.self_cpu_time_total * 1e-6 / len(batches)
    return total, per


def conv_layers(model):
    """Counter of (x shape, weight shape, stride, padding) over every convolution call, in call order."""
    found = collections.Counter()

    def hook(mod, inputs, output):
        found[(tuple(inputs[0].shape), tuple(mod.weight.shape), mod.stride, mod.padding)] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, cnnfast.nn.Conv2d)]
    return found, handles


def bench_convs(layers, repeats):
    rng = np.random.default_rng(0)
    rows = []
    for xs, ws, stride, padding in layers:
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal(ws) * 0.05).astype(np.float32)
        pads = [[p, p] for p in padding]
        y = _C.conv_forward(x, w, None, list(stride), pads, [1, 1], 1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        cases = {
            "fwd": (lambda: _C.conv_forward(x, w, None, list(stride), pads, [1, 1], 1),
                    lambda: torch.nn.functional.conv2d(tx, tw, None, stride, padding)),
            "grad_x": (lambda: _C.conv_backward(gy, x, w, list(stride), pads, [1, 1], 1, need_input=True,
                                                need_weight=False, need_bias=False),
                       lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, None, stride, padding, [1, 1],
                                                                   False, [0, 0], 1, [True, False, False])),
            "grad_w": (lambda: _C.conv_backward(gy, x, w, list(stride), pads, [1, 1], 1, need_input=False,
                                                need_weight=True, need_bias=False),
                       lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, None, stride, padding, [1, 1],
                                                                   False, [0, 0], 1, [False, True, False])),
        }
        row = {}
        for name, (c, t) in cases.items():
            c(), t()
            best_c = best_t = float("inf")
            for _ in range(repeats):
                t0 = _clock()
                c()
                best_c = min(best_c, _clock() - t0)
                t0 = _clock()
                t()
                best_t = min(best_t, _clock() - t0)
            row[name] = (best_c, best_t)
        rows.append(((xs, ws, stride), row))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("resnet18", "lenet"), default="resnet18")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=10, help="repeats per convolution timing (min is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: process CPU time (steadier when other jobs share the machine; with 1 thread "
                        "it is the work done; torch's profiler table stays wall time)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: bench_train's, 32 for ResNet-18 and 64 for LeNet-5); "
                        "half of it is what each of 2 data-parallel ranks runs")
    p.add_argument("--skip-convs", action="store_true")
    p.add_argument("--skip-step", action="store_true", help="only the convolution table")
    a = p.parse_args(argv)
    global _clock
    _clock = time.process_time if a.clock == "cpu" else time.perf_counter
    cnnfast.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    if a.model == "resnet18":
        batch, shape = 32, (3, 32, 32)
        tm, cm = bt.TorchResNet18(10), bt.resnet18(num_classes=10)
        bt.copy_weights(tm, cm)
        topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        copt = cnnfast.optim.SGD(cm.parameters(), lr=0.01, momentum=0.9)
    else:
        batch, shape = 64, (1, 32, 32)
        tm, cm = bt.torch_lenet5(), bt.lenet5(activation="relu", pool="max")
        bt.copy_weights(tm, cm)
        topt = torch.optim.Adam(tm.parameters(), lr=2e-3)
        copt = cnnfast.optim.Adam(cm.parameters(), lr=2e-3)
    batch = a.batch or batch
    batches = [(rng.standard_normal((batch,) + shape).astype(np.float32), rng.integers(0, 10, batch))
               for _ in range(a.steps)]

    layers, handles = conv_layers(cm)
    if a.skip_step:
        with cnnfast.no_grad():
            cm(cnnfast.tensor(batches[0][0]))
        layers = collections.Counter({k: v * (a.steps + 2) for k, v in layers.items()})
        return print_convs(layers, a)
    c_total, c_per, ops = profile_cnnfast(cm, copt, batches)
    for h in handles:
        h.remove()
    t_total, t_per = profile_torch(tm, topt, batches)

    print(f"{a.model}, batch {batch}, {a.threads} threads: one training step, ms "
          f"(cnnfast {ops:.0f} autograd ops per step)")
    print(f"  {'category':<12}{'cnnfast fwd':>12}{'cnnfast bwd':>12}{'cnnfast':>10}{'torch':>10}")
    c_cat = collections.defaultdict(float)
    for (cat, kind), v in c_per.items():
        c_cat[cat] += v
    c_cat["other"] += c_total - sum(c_per.values())
    t_per = dict(t_per)
    t_per["other"] = t_per.get("other", 0.0) + max(0.0, t_total - sum(t_per.values()))
    for cat in CATEGORIES:
        f, b = c_per.get((cat, "forward"), 0.0), c_per.get((cat, "backward"), 0.0)
        print(f"  {cat:<12}{f * 1e3:12.2f}{b * 1e3:12.2f}{c_cat.get(cat, 0.0) * 1e3:10.2f}"
              f"{t_per.get(cat, 0.0) * 1e3:10.2f}")
    print(f"  {'step':<12}{'':>12}{'':>12}{c_total * 1e3:10.2f}{t_total * 1e3:10.2f}   "
          f"ratio torch/cnnfast {t_total / c_total:.2f}x")

    if not a.skip_convs:
        print_convs(layers, a)


def print_convs(layers, a):
    print("\nconvolutions alone, ms (min of repeats, interleaved): cnnfast / torch")
    print(f"  {'x':<18}{'weight':<18}{'s':>2}{'calls':>6}{'fwd':>16}{'grad_x':>16}{'grad_w':>16}")
    sums = collections.defaultdict(float)
    calls_per_step = {k: v / (a.steps + 2) for k, v in layers.items()}
    for (xs, ws, stride), row in bench_convs(list(layers), a.repeats):
        n = calls_per_step[next(k for k in layers if k[:3] == (xs, ws, stride))]
        cells = "".join(f"{row[k][0] * 1e3:8.2f}/{row[k][1] * 1e3:<7.2f}" for k in ("fwd", "grad_x", "grad_w"))
        print(f"  {str(xs):<18}{str(ws):<18}{stride[0]:>2}{n:6.0f} {cells}")
        for k in row:
            sums[k, 0] += n * row[k][0]
            sums[k, 1] += n * row[k][1]
    cells = "".join(f"{sums[k, 0] * 1e3:8.2f}/{sums[k, 1] * 1e3:<7.2f}" for k in ("fwd", "grad_x", "grad_w"))
    print(f"  {'per step (x calls)':<44} {cells}")


if __name__ == "__main__":
    main()
