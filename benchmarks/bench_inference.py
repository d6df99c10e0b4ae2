"""Inference latency side by side (issue 16): cnnfast's frozen graph against onnxruntime and
PyTorch eager, on torchvision architectures (random weights, eval mode) exported by
torch.onnx.export and loaded with cnnfast.onnx.load.

The references are torchvision's own model code (tests/tv_reference.py reads it from the
wheel without importing torchvision). The three engines run interleaved, one call each in
turn, every round, so a burst of load from other processes hits all alike; the table shows
medians and the ratio onnxruntime time / cnnfast time (1.0 = parity, above 1 = cnnfast faster).

    python benchmarks/bench_inference.py [--models resnet50,mobilenet_v2] [--batches 1,8]
                                         [--repeats 10] [--threads 2]
    python benchmarks/bench_inference.py --layers --models efficientnet_b0 --batches 8
        # per-step profile of the frozen graph: median ms of each step over the repeats,
        # grouped by kind (op, kernel, stride, groups), biggest first
    python benchmarks/bench_inference.py --ort-layers --models mobilenet_v2 --batches 1
        # the same table from onnxruntime's own profiler (SessionOptions.enable_profiling),
        # to put next to --layers: its fused nodes keep the Conv's shapes
    python benchmarks/bench_inference.py --cpu ...
        # one thread each, timed by the calling thread's CPU time (time.thread_time): on a
        # machine loaded by other processes this measures the work, not the waiting
    python benchmarks/bench_inference.py --back-to-back ...
        # each engine alone in a loop of calls (60 at batch 1, 12 above), no idle wait in
        # between: its threads stay hot, as under a steady stream of requests

Before each timed wall-clock call the bench waits until every other thread of the process is
idle (``settle``), not a fixed pause: onnxruntime's intra-op workers keep spinning after a
Run returns (about 50-80 ms of CPU time, 200 ms of wall clock on a loaded 2-core machine;
``session.intra_op.allow_spinning``), and the 50 ms pause used before let that spinner take
one of the two cores from whichever engine ran next (measured on mobilenet_v2 batch 1: 17 ms
of the spinner's CPU time inside one 7 ms cnnfast call, wall clock 1.7x). PyTorch's OpenMP
workers spin too, for less than 50 ms. Every engine keeps its own defaults, spinning inside
its call included; each starts its call with the process's other threads asleep, as a
service handling one request at a time would.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import cnnfast  # noqa: E402
import cnnfast.onnx  # noqa: E402
from cnnfast.inference import freeze  # noqa: E402

from _common import header, interleaved, median  # noqa: E402

DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0")


def export(name, batch):
    import torch
    import tv_reference

    if tv_reference.load() is None:
        raise SystemExit("no torchvision wheel found (see tests/tv_reference.py)")
    torch.manual_seed(0)
    net = tv_reference.build(name).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, x, f, dynamo=False, opset_version=17)
    return net, x, f.getvalue()


def engines(name, batch, threads):
    import onnxruntime as ort
    import torch

    net, x, data = export(name, batch)
    xn = x.numpy()
    frozen = freeze(cnnfast.onnx.load(data), xn)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    want = sess.run(None, {iname: xn})[0]
    got = frozen(xn).numpy()
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))

    def run_torch():
        with torch.inference_mode():
            net(x)

    fns = {"cnnfast": lambda: frozen(xn), "onnxruntime": lambda: sess.run(None, {iname: xn}), "torch": run_torch}
    return fns, frozen, xn, err


def bench(args):
    clock = "thread CPU time" if args.cpu else "wall clock"
    if args.back_to_back:
        how = "each engine alone in a loop of calls (60 at batch 1, 12 above), median"
    else:
        settled = "" if args.cpu else ", each call after the other threads went idle"
        how = f"median of {args.repeats} interleaved rounds{settled}"
    print(header(args.threads, f"{how}, ms, {clock}"))
    print("| model | batch | cnnfast ms | onnxruntime ms | torch ms | ort/cnnfast | torch/cnnfast | max rel. diff |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for name in args.models:
        for batch in args.batches:
            fns, _, _, err = engines(name, batch, args.threads)
            if args.cpu:
                t = _interleaved_cpu(fns, args.repeats)
            elif args.back_to_back:
                t = _back_to_back(fns, max(args.repeats, 60 if batch == 1 else 12))
            else:
                t = interleaved(fns, args.repeats, warmup=2, pause=settle)
            m = {k: median(v) * 1e3 for k, v in t.items()}
            r = m["onnxruntime"] / m["cnnfast"]
            ratios.append(r)
            print(f"| {name} | {batch} | {m['cnnfast']:.1f} | {m['onnxruntime']:.1f} | {m['torch']:.1f} | "
                  f"{r:.2f} | {m['torch'] / m['cnnfast']:.2f} | {err:.1e} |", flush=True)
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    waits = f"; settle waits median {median(_SETTLE_WAITS) * 1e3:.0f} ms, max {max(_SETTLE_WAITS) * 1e3:.0f} ms" \
        if _SETTLE_WAITS else ""
    print(f"# geo-mean ort/cnnfast {geo:.2f}; load average now {os.getloadavg()[0]:.1f}{waits}")


_SETTLE_WAITS = []


def _other_threads_cpu_ns(me):
    """CPU nanoseconds used so far by the process's threads other than ``me`` (Linux), or None."""
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            if not os.path.exists(f"/proc/self/task/{tid}"):
                continue  # the thread ended
            return None
    return total


def settle(window=0.01, busy=0.05, quiet_windows=2, cap=2.0):
    """Sleeps until the process's other threads have used less than ``busy`` of a core over
    ``quiet_windows`` consecutive windows of ``window`` seconds (at most ``cap`` seconds):
    the engine that ran last has stopped spin-waiting. Without /proc, a fixed 0.3 s."""
    import threading

    me = threading.get_native_id()
    t0 = time.perf_counter()
    prev = _other_threads_cpu_ns(me)
    if prev is None:
        time.sleep(0.3)
        return
    quiet = 0
    while quiet < quiet_windows and time.perf_counter() - t0 < cap:
        time.sleep(window)
        cur = _other_threads_cpu_ns(me)
        quiet = quiet + 1 if cur is not None and cur - prev < busy * window * 1e9 else 0
        prev = cur if cur is not None else prev
    _SETTLE_WAITS.append(time.perf_counter() - t0)


def _back_to_back(fns, calls):
    times = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        times[name] = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _interleaved_cpu(fns, repeats):
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.thread_time()
            fn()
            times[name].append(time.thread_time() - t0)
    return times


def _describe(st, ins, outs, consts):
    """A kind key for a step: op, and for convolutions kernel, depthwise, stride, channels and map size."""
    from cnnfast.onnx._ops import arr

    def shape(v):
        return tuple(arr(v).shape) if v is not None and not isinstance(v, (list, tuple)) else ()

    xs, ys = shape(ins[0] if ins else None), shape(outs[0] if outs else None)
    if st.op_type == "FusedConv" and len(xs) == 4 and len(ys) == 4:
        w = consts[st.inputs[1]]
        dw = " dw" if w.shape[1] == 1 and w.shape[0] == xs[1] and xs[1] > 1 else ""
        stride = max(1, round(xs[2] / ys[2]))
        return f"conv{w.shape[2]}x{w.shape[3]}{dw} s{stride} {xs[1]}->{ys[1]} @{xs[2]}"
    return f"{st.op_type} {xs[1:]}"


def layers(args):
    print(header(args.threads, f"median of {args.repeats} runs per step, ms"))
    for name in args.models:
        for batch in args.batches:
            _, frozen, xn, _ = engines(name, batch, args.threads)
            prog = frozen._program
            times, kinds = {}, {}
            clock = time.thread_time if args.cpu else time.perf_counter
            def timer(fn, i, st):
                def timed(ins, arg):
                    t0 = clock()
                    out = fn(ins, arg)
                    times.setdefault(i, []).append(clock() - t0)
                    if i not in kinds:
                        kinds[i] = _describe(st, ins, out, frozen._consts)
                    return out
                return timed

            for i, st in enumerate(prog.steps):
                lean = getattr(st.run, "lean", None)
                st.run = timer(st.run, i, st)
                if lean is not None:
                    # The replayed plan (inference/_plan.py) enters steps through `lean`.
                    st.run.lean = timer(lean, i, st)
            frozen._plans.clear()
            for _ in range(2):
                frozen(xn)
            times.clear()
            total = []
            for _ in range(args.repeats):
                t0 = clock()
                frozen(xn)
                total.append(clock() - t0)
            per_step = {i: median(v) * 1e3 for i, v in times.items()}
            groups = {}
            for i, ms in per_step.items():
                g = groups.setdefault(kinds[i], [0, 0.0])
                g[0] += 1
                g[1] += ms
            whole = median(total) * 1e3
            print(f"\n## {name} batch {batch}: {whole:.1f} ms total, steps sum {sum(per_step.values()):.1f} ms, "
                  f"{len(prog.steps)} steps")
            print("| kind (op kernel stride in->out @map) | count | ms | % |")
            print("|---|---|---|---|")
            for kind, (count, ms) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:args.top]:
                print(f"| {kind} | {count} | {ms:.2f} | {100 * ms / whole:.1f} |")
    print(f"# load average now {os.getloadavg()[0]:.1f}")


def _ort_kind(a):
    """A kind key for an onnxruntime profile event, in _describe's format."""
    ins = [list(d.values())[0] for d in a.get("input_type_shape", [])]
    outs = [list(d.values())[0] for d in a.get("output_type_shape", [])]
    xs, ws, ys = (ins[0] if ins else []), (ins[1] if len(ins) > 1 else []), (outs[0] if outs else [])
    op = a.get("op_name", "?")
    if "Conv" in op and len(ws) == 4 and len(xs) == 4 and len(ys) == 4:
        dw = " dw" if ws[1] == 1 and ws[0] > 1 else ""
        stride = max(1, round(xs[2] / ys[2]))
        return f"{op} {ws[2]}x{ws[3]}{dw} s{stride} {xs[1]}->{ys[1]} @{xs[2]}"
    return f"{op} {tuple(xs[1:])}"


def ort_layers(args):
    import json
    import tempfile

    import onnxruntime as ort

    print(header(args.threads, f"onnxruntime's profiler, median of {args.repeats} runs per node, ms"))
    for name in args.models:
        for batch in args.batches:
            _, x, data = export(name, batch)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "bench_inference_ort")
            sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x.numpy()}
            for _ in range(args.repeats + 2):
                sess.run(None, feed)
            path = sess.end_profiling()
            with open(path) as f:
                events = json.load(f)
            os.remove(path)
            per, kinds = {}, {}
            for ev in events:
                if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                    per.setdefault(ev["name"], []).append(ev["dur"] / 1e3)
                    kinds[ev["name"]] = _ort_kind(ev["args"])
            groups = {}
            for node, v in per.items():
                g = groups.setdefault(kinds[node], [0, 0.0])
                g[0] += 1
                g[1] += median(v[2:] or v)
            whole = sum(ms for _, ms in groups.values())
            print(f"\n## {name} batch {batch}: nodes sum {whole:.1f} ms, {len(per)} nodes")
            print("| kind (op kernel stride in->out @map) | count | ms | % |")
            print("|---|---|---|---|")
            for kind, (count, ms) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:args.top]:
                print(f"| {kind} | {count} | {ms:.2f} | {100 * ms / whole:.1f} |")
    print(f"# load average now {os.getloadavg()[0]:.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpu", action="store_true", help="1 thread, timed by thread CPU time")
    p.add_argument("--back-to-back", action="store_true",
                   help="each engine alone in a loop of calls, no idle wait in between")
    p.add_argument("--layers", action="store_true", help="per-step profile of cnnfast's frozen graph")
    p.add_argument("--ort-layers", action="store_true", help="per-node profile of onnxruntime on the same model")
    p.add_argument("--top", type=int, default=25, help="rows of the --layers / --ort-layers table")
    args = p.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    if args.cpu:
        args.threads = 1
    cnnfast.set_num_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    (ort_layers if args.ort_layers else layers if args.layers else bench)(args)


if __name__ == "__main__":
    main()
