"""Training memory: peak resident set size (RSS) of a training step, cnnfast vs PyTorch,
each library in a fresh process of its own (issue 22).

A row builds the model (torchvision layout and names; PyTorch's from torchvision's own
model code, read from its wheel by tests/tv_reference.py), runs one warm-up step and
--steps more steps of SGD with momentum 0.9 on random images (cross entropy, 1000
classes, float32, 2 threads), and reports the process's peak RSS (getrusage
ru_maxrss: everything the process ever held at once, library and interpreter
included) and the median step time. The per-image slope is the difference of peak RSS
between two batch sizes of ResNet-50 divided by the difference of batch sizes: what
each extra image costs, without the fixed part.

    python benchmarks/bench_memory.py                 # the issue's rows (about 25 minutes on 2 cores)
    python benchmarks/bench_memory.py --quick         # small images and batches (about 2 minutes)
    python benchmarks/bench_memory.py --only resnet18 # rows whose name contains a word
    python benchmarks/bench_memory.py --json out.json

The cnnfast child also prints cnnfast.memory's peak of the step (what autograd and the
kernels held) next to the RSS, so a gap between the two shows up as allocator overhead.
RSS does not depend on the load of the machine; step times do (record `uptime`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (label, model, batch, image size, memory_efficient)
ROWS = [
    ("resnet50 b8", "resnet50", 8, 224, False),
    ("resnet50 b32", "resnet50", 32, 224, False),
    ("densenet121 b16", "densenet121", 16, 224, False),
    ("densenet121 memory_efficient b16", "densenet121", 16, 224, True),
    ("vgg16 b8", "vgg16", 8, 224, False),
    ("resnet18 32x32 b64", "resnet18", 64, 32, False),
]
QUICK_ROWS = [
    ("resnet50 64x64 b4", "resnet50", 4, 64, False),
    ("resnet50 64x64 b16", "resnet50", 16, 64, False),
    ("densenet121 64x64 b8", "densenet121", 8, 64, False),
    ("densenet121 memory_efficient 64x64 b8", "densenet121", 8, 64, True),
    ("resnet18 32x32 b64", "resnet18", 64, 32, False),
]
SLOPE_PAIRS = {False: ("resnet50 b8", "resnet50 b32"), True: ("resnet50 64x64 b4", "resnet50 64x64 b16")}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _torch_model(name, memory_efficient):
    import importlib

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import tv_reference

    if tv_reference.load() is None:
        raise SystemExit("no torchvision wheel found for the PyTorch reference models (see tests/tv_reference.py)")
    mod = importlib.import_module("torchvision.models." + ("resnet" if name.startswith("resnet") else
                                                           "densenet" if name.startswith("densenet") else "vgg"))
    kw = {"memory_efficient": True} if memory_efficient else {}
    return getattr(mod, name)(**kw)


def _child(lib, name, batch, size, memory_efficient, steps, threads):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    times, cpu = [], []
    extra = {}
    if lib == "torch":
        import torch

        torch.set_num_threads(threads)
        model = _torch_model(name, memory_efficient)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        before = _peak_rss_mib()
        for i in range(steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    else:
        import cnnfast
        from cnnfast import models

        cnnfast.set_num_threads(threads)
        kw = {"memory_efficient": True} if memory_efficient else {}
        model = getattr(models, name)(**kw)
        opt = cnnfast.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xt, yt = cnnfast.tensor(x), cnnfast.tensor(y)
        before = _peak_rss_mib()

        def step():
            opt.zero_grad(set_to_none=True)
            cnnfast.functional.cross_entropy(model(xt), yt).backward()
            opt.step()

        for i in range(steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        extra["peak_rss_mib"] = _peak_rss_mib()  # before profile_step, which restarts the peak
        try:
            from cnnfast import memory
        except ImportError:  # a build before issue 22
            memory = None
        if memory is not None:
            extra["tracked_peak_mib"] = memory.profile_step(step, model, opt).peak_bytes / 2**20
    peak = extra.pop("peak_rss_mib", None) or _peak_rss_mib()
    times.sort()
    cpu.sort()
    # CPU seconds of all threads: less sensitive than wall time to other jobs on the machine
    # (a spinning thread pool counts, though).
    return dict(lib=lib, peak_rss_mib=peak, rss_before_train_mib=before, step_s=times[len(times) // 2],
                step_s_all=times, step_cpu_s=cpu[len(cpu) // 2], **extra)


def _run_child(lib, row, steps, threads):
    label, name, batch, size, me = row
    cmd = [sys.executable, os.path.abspath(__file__), "--child", lib, name, str(batch), str(size), str(int(me)),
           "--steps", str(steps), "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{lib} {label} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=5, default=None, metavar=("LIB", "MODEL", "BATCH", "SIZE", "MEMEFF"))
    a = ap.parse_args(argv)
    if a.child:
        lib, name, batch, size, me = a.child
        print(json.dumps(_child(lib, name, int(batch), int(size), bool(int(me)), a.steps, a.threads)))
        return 0
    rows = QUICK_ROWS if a.quick else ROWS
    if a.only:
        rows = [r for r in rows if a.only in r[0]]
    print(f"load average: {os.getloadavg()}, threads {a.threads}, steps {a.steps} after one warm-up")
    print("| model | cnnfast peak RSS (MiB) | torch peak RSS (MiB) | ratio | cnnfast step (s) | torch step (s) |")
    print("|---|---|---|---|---|---|")
    results = {}
    for row in rows:
        ours = _run_child("cnnfast", row, a.steps, a.threads)   # one process at a time: RSS of one
        theirs = _run_child("torch", row, a.steps, a.threads)
        results[row[0]] = {"cnnfast": ours, "torch": theirs}
        print(f"| {row[0]} | {ours['peak_rss_mib']:,.0f} | {theirs['peak_rss_mib']:,.0f} | "
              f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f} | {ours['step_s']:.2f} | "
              f"{theirs['step_s']:.2f} |", flush=True)
    lo, hi = SLOPE_PAIRS[a.quick]
    if lo in results and hi in results:
        db = next(r[2] for r in rows if r[0] == hi) - next(r[2] for r in rows if r[0] == lo)
        for lib in ("cnnfast", "torch"):
            s = (results[hi][lib]["peak_rss_mib"] - results[lo][lib]["peak_rss_mib"]) / db
            results.setdefault("slope_mib_per_image", {})[lib] = s
        sl = results["slope_mib_per_image"]
        print(f"per-image slope ({lo} -> {hi}): cnnfast {sl['cnnfast']:.1f} MiB/image, "
              f"torch {sl['torch']:.1f} MiB/image")
    print(f"load average after: {os.getloadavg()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
