"""``cnnfast import MODEL.onnx [--summary] [--check INPUT_SHAPE] [--bench INPUT_SHAPE]``: load an
ONNX model with cnnfast, describe it, check it against onnxruntime on a random input, and time
its frozen inference graph against onnxruntime."""
from __future__ import annotations

import argparse
import sys

import numpy as np

EPILOG = """\
examples:
  cnnfast import resnet18.onnx --summary                 # inputs, outputs, parameters, ops, per-node shapes
  cnnfast import resnet18.onnx --check 1,3,224,224       # run a random input; compare with onnxruntime
  cnnfast import siamese.onnx --check "2,1,64,64;2,1,64,64"   # one shape per input, ';'-separated
  cnnfast import resnet50.onnx --bench 1,3,224,224       # frozen cnnfast vs onnxruntime latency

exit status: 0 loaded (and matched), 1 outputs differ from onnxruntime, 2 bad file or arguments
"""


def _parse_shapes(text: str, flag: str = "--check") -> list:
    shapes = []
    for part in text.split(";"):
        dims = part.split(",")
        try:
            shape = tuple(int(d) for d in dims)
        except ValueError:
            raise ValueError(f"{flag}: expected comma-separated integers like 1,3,224,224, got {part!r}") from None
        if not shape or min(shape) < 1:
            raise ValueError(f"{flag}: expected positive sizes like 1,3,224,224, got {part!r}")
        shapes.append(shape)
    return shapes


def _declared_shapes(model) -> list | None:
    shapes = []
    for name in model.input_names:
        dims, _ = model.input_info[name]
        if not dims:
            return None
        shapes.append(tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cnnfast import", description=__doc__.split("\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .onnx file (opsets 13 to 20)")
    parser.add_argument("--summary", action="store_true",
                        help="print inputs, outputs, parameters, op counts and each node's output shape")
    parser.add_argument("--check", metavar="INPUT_SHAPE",
                        help="run a random input of this shape (e.g. 1,3,224,224) and compare with onnxruntime")
    parser.add_argument("--bench", metavar="INPUT_SHAPE",
                        help="time the frozen inference graph (cnnfast.inference.freeze) on a random input of "
                             "this shape, side by side with onnxruntime when it is installed")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of --bench (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="threads for --bench (both libraries)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance of --check, relative to max |output|")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random --check input")
    try:
        a = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)

    from . import UnsupportedOnnxError, load

    try:
        shapes = _parse_shapes(a.check) if a.check else None
        bench_shapes = _parse_shapes(a.bench, "--bench") if a.bench else None
        if a.repeats < 1:
            raise ValueError(f"--repeats: expected a positive count, got {a.repeats}")
        model = load(a.model)
    except (FileNotFoundError, ValueError, UnsupportedOnnxError) as exc:
        print(f"cnnfast import: error: {exc}", file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{a.model}: opset {model.opset}, {sum(model.op_counts().values())} nodes, "
          f"{n_params:,} parameters, inputs {', '.join(model.input_names)}")
    if shapes is not None and len(shapes) != len(model.input_names):
        print(f"cnnfast import: error: --check: the model has {len(model.input_names)} input(s) "
              f"({', '.join(model.input_names)}), got {len(shapes)} shape(s)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(a.seed)
    inputs = None
    if shapes is not None:
        inputs = [rng.standard_normal(s).astype(model.input_info[n][1] or np.float32)
                  for s, n in zip(shapes, model.input_names)]
    if a.summary:
        example = inputs
        if example is None:
            declared = _declared_shapes(model)
            if declared is not None:
                example = [np.zeros(s, model.input_info[n][1] or np.float32)
                           for s, n in zip(declared, model.input_names)]
        try:
            print(model.summary(*(example or [])))
        except (ValueError, TypeError) as exc:
            print(f"cnnfast import: error: {exc}", file=sys.stderr)
            return 2
    if bench_shapes is not None:
        status = _bench(a, model, bench_shapes, rng)
        if status or inputs is None:
            return status
    if inputs is None:
        return 0
    from ..autograd import no_grad
    try:
        with no_grad():
            out = model(*inputs)
    except (ValueError, TypeError) as exc:
        print(f"cnnfast import: error: {exc}", file=sys.stderr)
        return 2
    outs = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
    for name, o in zip(model.output_names, outs):
        print(f"  {name}: shape {o.shape}, mean {float(o.mean()):.6g}, std {float(o.std()):.6g}")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: ran cnnfast only (pip install onnxruntime to compare)")
        return 0
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    ref = sess.run(None, dict(zip(model.input_names, inputs)))
    worst = 0.0
    for r, o in zip(ref, outs):
        scale = max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(r - o).max()) / scale if r.size else 0.0)
    ok = worst <= a.rtol
    print(f"onnxruntime: max |difference| / max |output| = {worst:.3g} -> {'match' if ok else 'MISMATCH'} "
          f"(tolerance {a.rtol:g})")
    return 0 if ok else 1


def _median_ms(fn, repeats):
    import time

    fn()  # warm-up: first-touch allocations, thread pool start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * min(times), 1e3 * max(times)


def _bench(a, model, shapes, rng) -> int:
    from .. import get_num_threads, set_num_threads
    from ..inference import freeze

    if len(shapes) != len(model.input_names):
        print(f"cnnfast import: error: --bench: the model has {len(model.input_names)} input(s), got "
              f"{len(shapes)} shape(s)", file=sys.stderr)
        return 2
    threads = a.threads or get_num_threads()
    set_num_threads(threads)
    inputs = [rng.standard_normal(s).astype(model.input_info[n][1] or np.float32)
              for s, n in zip(shapes, model.input_names)]
    try:
        frozen = freeze(model, tuple(inputs) if len(inputs) > 1 else inputs[0])
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        print(f"cnnfast import: error: --bench: {exc}", file=sys.stderr)
        return 2
    fused = ", ".join(f"{k} {v}" for k, v in frozen.fusions.items() if v)
    print(f"frozen graph: {fused or 'nothing fused'}; {threads} thread(s), median of {a.repeats}")
    ours = _median_ms(lambda: frozen(*inputs), a.repeats)
    print(f"  cnnfast      {ours[0]:9.2f} ms  (min {ours[1]:.2f}, max {ours[2]:.2f})")
    try:
        import onnxruntime as ort
    except ImportError:
        print("  onnxruntime is not installed (pip install onnxruntime to compare)")
        return 0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    feed = dict(zip(model.input_names, inputs))
    theirs = _median_ms(lambda: sess.run(None, feed), a.repeats)
    print(f"  onnxruntime  {theirs[0]:9.2f} ms  (min {theirs[1]:.2f}, max {theirs[2]:.2f})")
    print(f"  cnnfast is {theirs[0] / ours[0]:.2f}x onnxruntime's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
