"""How well each convolution pass splits over 2 threads, measured so that the other
processes on a shared machine do not decide the answer.

For every pass (forward, grad_x, grad_w) of bench_conv's layers (--extra adds batch-1
and odd-batch shapes), prints
  our1   cnnfast's median thread CPU time at 1 thread (time.thread_time), ms
  our2m  the modelled 2-thread time: the caller's CPU time outside the pool's jobs plus,
         per job, the slowest thread's CPU time (cnnfast._C._set_parallel_stats; dynamic
         task lists are timed task by task and dealt in order to the first free thread)
  sp     our1 / our2m, the speedup a quiet machine would show (2.0 = perfect)
  work2  all threads' CPU time together at 2 threads (above our1: work the split adds)
  tor1   PyTorch's thread CPU time at 1 thread, and r1 = tor1 / our1.

    cd benchmarks && PYTHONPATH=../python python conv_threads.py [--extra] [--quick] [name ...]
"""
import sys, time, numpy as np, torch
import cnnfast
from cnnfast import _C
from bench_conv import LAYERS
EXTRA = [
    ("b1 resnet 3x3 c64", 1, 64, 56, 64, 3, 1, 1, 1, False, 1),
    ("b1 resnet 3x3 c256", 1, 256, 14, 256, 3, 1, 1, 1, False, 1),
    ("b1 c512 7x7", 1, 512, 7, 512, 3, 1, 1, 1, False, 1),
    ("b3 alexnet 5x5", 3, 96, 27, 256, 5, 1, 2, 1, False, 1),
    ("b1 dilated", 1, 64, 56, 64, 3, 1, 2, 1, False, 2),
    ("b1 alexnet 11x11", 1, 3, 227, 96, 11, 4, 0, 1, False, 1),
    ("b3 3x3 s3 c32->48 prime", 3, 32, 61, 48, 3, 3, 1, 1, False, 1),
]
args = [a for a in sys.argv[1:] if not a.startswith("--")]
quick = "--quick" in sys.argv
layers = LAYERS + EXTRA if "--extra" in sys.argv else LAYERS
R = 5
def t1cpu(fn):
    cnnfast.set_num_threads(1); torch.set_num_threads(1)
    fn()
    ts = []
    for _ in range(R):
        t0 = time.thread_time(); fn(); ts.append(time.thread_time() - t0)
    return np.median(ts) * 1e3
def t2model(fn):
    cnnfast.set_num_threads(2)
    fn()
    ms, sums, jobs = [], [], []
    for _ in range(R):
        _C._set_parallel_stats(True)
        t0 = time.thread_time(); fn(); c = time.thread_time() - t0
        st = _C._parallel_stats()
        _C._set_parallel_stats(False)
        ms.append(c - st["caller_job_s"] + st["max_chunk_s"])
        sums.append(c - st["caller_job_s"] + st["sum_chunk_s"]); jobs.append(st["jobs"])
    i = int(np.argsort(ms)[len(ms)//2])
    return ms[i] * 1e3, sums[i] * 1e3, jobs[i]
print(f"{'layer':<24}{'N':>3} {'pass':<4} {'our1':>7} {'our2m':>7} {'sp':>5} {'work2':>7} {'jobs':>4} | {'tor1':>7} r1")
tot = {}
for name, N, C, H, K, k, s, p, g, tr, d in layers:
    if args and not any(o in name for o in args): continue
    if tr: continue
    if quick: N = max(1, N // 4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, C // g, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    pads = [[p, p], [p, p]]
    y = _C.conv_forward(x, w, b, [s, s], pads, [d, d], g, "auto")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    tx, tw, tb, tgy = map(torch.tensor, (x, w, b, gy))
    passes = {
      "fwd": (lambda: _C.conv_forward(x, w, b, [s, s], pads, [d, d], g, "auto"),
              lambda: torch.ops.aten.convolution(tx, tw, tb, [s, s], [p, p], [d, d], False, [0, 0], g)),
      "gx": (lambda: _C.conv_backward(gy, x, w, [s, s], pads, [d, d], g, True, False, False),
             lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, [K], [s, s], [p, p], [d, d], False, [0, 0], g, [True, False, False])),
      "gw": (lambda: _C.conv_backward(gy, x, w, [s, s], pads, [d, d], g, False, True, False),
             lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, [K], [s, s], [p, p], [d, d], False, [0, 0], g, [False, True, False])),
    }
    for pn, (o, t) in passes.items():
        o1 = t1cpu(o); tt = t1cpu(t); o2, w2, j = t2model(o)
        print(f"{name:<24}{N:>3} {pn:<4} {o1:7.2f} {o2:7.2f} {o1/o2:5.2f} {w2:7.2f} {j:>4} | {tt:7.2f} {tt/o1:4.2f}", flush=True)
