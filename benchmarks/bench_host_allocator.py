"""What cnnfast.tune_host_allocator() buys: the same workloads in two fresh processes, one
with glibc's default malloc policy (what importing cnnfast leaves) and one tuned
(CNNFAST_HOST_ALLOCATOR=tuned), alternated round by round; also each process's peak
resident memory.

Workloads: an autograd ReLU forward+backward on a 25 MB tensor (every call allocates fresh
activation-sized arrays), and ResNet-18 training steps on 3x32x32, batch 32.

    PYTHONPATH=python python benchmarks/bench_host_allocator.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
import cnnfast
import cnnfast.functional as F
cnnfast.set_num_threads(2)
x = cnnfast.tensor(np.random.default_rng(0).standard_normal((32, 64, 56, 56)).astype(np.float32), requires_grad=True)
def relu():
    x.grad = None
    F.relu(x).sum().backward()
m = cnnfast.models.resnet18(num_classes=10)
opt = cnnfast.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
xb = cnnfast.tensor(np.random.default_rng(1).standard_normal((32, 3, 32, 32)).astype(np.float32))
yb = cnnfast.tensor(np.random.default_rng(2).integers(0, 10, 32))
def step():
    loss = F.cross_entropy(m(xb), yb)
    opt.zero_grad(); loss.backward(); opt.step()
def med(fn, n):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
out = {"tuned": cnnfast._C.host_allocator_tuned(), "relu_ms": med(relu, 15) * 1e3, "resnet_step_ms": med(step, 5) * 1e3,
       "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import header

    base = {k: v for k, v in os.environ.items() if k != "CNNFAST_HOST_ALLOCATOR"}
    results = {"system": [], "tuned": []}
    for _ in range(a.rounds):
        for label in results:
            env = dict(base, CNNFAST_HOST_ALLOCATOR="tuned") if label == "tuned" else base
            r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            results[label].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(header(2, f"median over {a.rounds} alternating fresh processes of each process's median"))
    print(f"{'malloc policy':14s} {'ReLU fwd+bwd 25 MB ms':>22s} {'ResNet-18 step ms':>18s} {'peak RSS MiB':>13s}")
    for label, rs in results.items():
        assert all(r["tuned"] == (label == "tuned") for r in rs)
        med = {k: statistics.median(r[k] for r in rs) for k in ("relu_ms", "resnet_step_ms", "peak_rss_mib")}
        print(f"{label:14s} {med['relu_ms']:22.2f} {med['resnet_step_ms']:18.1f} {med['peak_rss_mib']:13.0f}")


if __name__ == "__main__":
    main()
