"""Model summary: per-layer output shape, parameters, multiply-adds, receptive field and
activation memory, plus a training-memory estimate; and the ``cnnfast summary`` command.

How it works: forward hooks on every leaf module record what one dummy forward pass
(batch 1, eval mode, no grad) produces. Tensors made outside modules (``cat`` in
Inception/DenseNet, the residual ``+``) are seen when a module consumes them. With
``run=False`` the convolution, pooling and linear layers are not computed: each returns
zeros of the shape the CS-230 formulas (``cnnfast.utils.shapes``) give, so a 224x224
VGG-16 is summarised in milliseconds; everything else runs as usual on those zeros.

Conventions
- One multiply-add (MAC) = one multiplication plus one addition (FLOPs ~ 2 x MACs).
  Conv: Ho*Wo*K*(C/g)*kh*kw; transposed conv: Hi*Wi*C*(K/g)*kh*kw; Linear: N_in*N_out
  (times any extra leading dims). Biases, normalisation, pooling, activations count 0.
  MACs are per input sample.
- Receptive field per layer as (R, jump, start) (CS-230 / Dumoulin & Visin): R input
  pixels seen by one output, jump = input pixels between adjacent outputs, start = input
  coordinate of the centre of the first output's field (pixel centres at 0.5, 1.5, ...).
  Where branches merge (``cat``, ``+``) the widest field of the same spatial size is
  taken. Layers without a spatial output (Flatten, Linear) show "-". A transposed conv
  divides the jump by its stride (an approximation).
- Memory in bytes for ``batch_size`` samples at the parameters' dtype.

Training memory estimate: the peak of one training step, with the accounting of
``cnnfast.memory.profile_step``. Parameters, buffers and optimizer state (SGD 0, SGD with
momentum / RMSprop / Adagrad 1x, Adam/AdamW 2x the trainable parameters; present during
backward, as in every step after the first) + the largest, over the backward pass walked
from the last layer to the first, of: the arrays saved for backward that are still needed
+ the parameter gradients made so far + that layer's incoming and outgoing gradients,
+ the kernels' workspaces. What a layer saves follows cnnfast.functional: convolution,
linear and normalisation layers their input, ReLU / leaky ReLU / sigmoid / tanh /
softmax their output, max-pooling an int64 argmax per output, LRN its input, output and
denominator, pooling by averaging and dropout nothing; an array saved by several layers
(a ReLU output that the next convolution also keeps) or shown through a view (flatten)
counts once, and the arrays a checkpointed region (DenseNet's ``memory_efficient``)
would have saved are replaced by the region's inputs. ``measure_training_memory``
measures the same quantity; on ResNet-18 (32x32), ResNet-50, VGG-16 and DenseNet-121
(also memory-efficient) at 224x224 the estimate is within 0.96-1.06x of it (2 threads;
``benchmarks/RESULTS.md``, issue 22). On narrowed models of a few MiB the kernels'
workspaces weigh as much as the activations and the estimate is looser (a few MiB).
The process's resident memory adds the interpreter and libraries (~40 MiB) and what the
C allocator keeps of freed arrays.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .shapes import conv_output_size, conv_transpose_output_size, resolve_padding

__all__ = ["LayerInfo", "ModelSummary", "summary", "estimate_training_memory",
           "measure_training_memory", "summary_main", "OPTIMIZER_STATE_FACTOR"]

# Optimizer state kept per parameter element, in multiples of the parameter memory.
OPTIMIZER_STATE_FACTOR = {"none": 0, "sgd": 0, "sgd_momentum": 1, "momentum": 1, "rmsprop": 1,
                          "adagrad": 1, "adam": 2, "adamw": 2}


@dataclass
class LayerInfo:
    """One row of the summary (one call of a leaf module)."""
    name: str
    type: str
    input_shape: tuple
    output_shape: tuple
    params: int
    trainable: int
    macs: int
    rf: int | None
    jump: float | None
    start: float | None
    activation_bytes: int
    saved_bytes: int = 0
    kernel: tuple | None = None
    stride: tuple | None = None
    padding: tuple | None = None


@dataclass
class ModelSummary:
    """Result of ``summary``: ``layers`` rows and totals; ``str()`` is the table."""
    model_name: str
    input_shapes: list
    batch_size: int
    dtype: str
    optimizer: str
    layers: list = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    param_bytes: int = 0
    buffer_bytes: int = 0
    total_macs: int = 0
    input_bytes: int = 0
    activation_bytes: int = 0
    saved_activation_bytes: int = 0
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0
    workspace_bytes: int = 0
    training_memory_bytes: int = 0

    # ---- output formats --------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shapes"] = [list(s) for s in self.input_shapes]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        buf = io.StringIO()
        cols = ["name", "type", "input_shape", "output_shape", "params", "trainable", "macs",
                "rf", "jump", "start", "activation_bytes"]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for row in self.layers:
            d = asdict(row)
            w.writerow([_shape_str(d[c]) if c.endswith("shape") else ("" if d[c] is None else d[c])
                        for c in cols])
        return buf.getvalue()

    def table(self) -> str:
        head = ["Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump", "Start",
                "Act. memory"]
        rows = [[r.name, r.type, _shape_str((self.batch_size,) + tuple(r.output_shape[1:])),
                 f"{r.params:,}", f"{r.macs:,}",
                 "-" if r.rf is None else str(r.rf), "-" if r.jump is None else _num(r.jump),
                 "-" if r.start is None else _num(r.start), _bytes(r.activation_bytes)]
                for r in self.layers]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(head)]
        right = {3, 4, 5, 6, 7, 8}

        def fmt(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        lines = [f"{self.model_name}: input {', '.join(_shape_str(s) for s in self.input_shapes)}"
                 f", batch {self.batch_size}, {self.dtype}", rule, fmt(head), rule]
        lines += [fmt(r) for r in rows]
        lines += [rule,
                  f"Total params:          {self.total_params:,}",
                  f"Trainable params:      {self.trainable_params:,}",
                  f"Non-trainable params:  {self.total_params - self.trainable_params:,}",
                  f"Multiply-adds / sample: {self.total_macs:,} ({self.total_macs / 1e9:.3f} G)",
                  f"Input:                 {_bytes(self.input_bytes)}",
                  f"Forward activations:   {_bytes(self.activation_bytes)}",
                  f"Parameters:            {_bytes(self.param_bytes)}",
                  rule,
                  f"Training memory estimate (batch {self.batch_size}, {self.optimizer}):",
                  f"  parameters           {_bytes(self.param_bytes)}",
                  f"  gradients            {_bytes(self.gradient_bytes)}",
                  f"  optimizer state      {_bytes(self.optimizer_state_bytes)}",
                  f"  saved activations    {_bytes(self.saved_activation_bytes)}",
                  f"  kernel workspaces    {_bytes(self.workspace_bytes)}",
                  f"  peak (total)         {_bytes(self.training_memory_bytes)}",
                  rule]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__


def _shape_str(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ")" if s is not None else ""


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _pair2(v, n=2) -> tuple:
    if isinstance(v, (tuple, list)):
        return tuple(v)
    return (v,) * n


def _nbytes(t) -> int:
    d = getattr(t, "_array", t)
    if isinstance(d, np.ndarray):
        return d.nbytes
    return int(t.numel()) * int(t.element_size())


def _shape_of(t):
    return tuple(t.shape) if hasattr(t, "shape") else None


def _first_tensor(out):
    if isinstance(out, (tuple, list)):
        for o in out:
            if hasattr(o, "shape"):
                return o
        return None
    return out if hasattr(out, "shape") else None


def _geometry(m, in_shape):
    """(kernel, stride, [(P_start, P_end)], dilation, transposed) of a spatial layer, or None."""
    cls = type(m).__name__
    sp = in_shape[2:] if in_shape is not None and len(in_shape) >= 3 else ()
    n = len(sp)
    if n == 0:
        return None
    if cls.startswith("Conv") or cls.startswith("MaxPool") or cls.startswith("AvgPool") \
            or cls.startswith("LPPool"):
        k = _pair2(m.kernel_size, n)
        s = getattr(m, "stride", None)
        s = k if s is None or s == () else _pair2(s, n)
        d = _pair2(getattr(m, "dilation", 1), n)
        p = getattr(m, "padding", 0)
        if isinstance(p, str):
            pads = [resolve_padding(p, sp[i], k[i], s[i], d[i]) for i in range(n)]
        else:
            p = _pair2(p, n)
            pads = [tuple(q) if isinstance(q, (tuple, list)) else (q, q) for q in p]
        return k, s, pads, d, cls.startswith("ConvTranspose")
    if cls.startswith("AdaptiveAvgPool") or cls.startswith("AdaptiveMaxPool"):
        o = _pair2(m.output_size, n)
        o = tuple(sp[i] if o[i] is None else o[i] for i in range(n))
        # Adaptive windows: stride floor(I/O), window ceil(I/O) (exact when O divides I).
        k = tuple(-(-sp[i] // o[i]) for i in range(n))
        s = tuple(max(sp[i] // o[i], 1) for i in range(n))
        return k, s, [(0, 0)] * n, (1,) * n, False
    return None


def _macs(m, in_shape, out_shape) -> int:
    cls = type(m).__name__
    if out_shape is None:
        return 0
    if cls.startswith("ConvTranspose"):
        k = int(np.prod(m.kernel_size))
        return int(np.prod(in_shape[2:])) * m.in_channels * (m.out_channels // m.groups) * k
    if cls.startswith("Conv"):
        k = int(np.prod(m.kernel_size))
        return int(np.prod(out_shape[2:])) * m.out_channels * (m.in_channels // m.groups) * k
    if cls in ("Linear", "Bilinear", "LazyLinear"):
        lead = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        return lead * m.in_features * m.out_features
    return 0


def _saves(m) -> str:
    """What a layer's Function keeps for backward (cnnfast.functional): "in" its input,
    "out" its output, "idx" int64 argmax per output element (max-pooling), "lrn" input,
    output and denominator, "" nothing. Types not listed keep their input (the cautious
    choice: convolutions, linear and normalisation layers do)."""
    cls = type(m).__name__
    if cls in ("ReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax"):
        return "out"
    if cls == "LeakyReLU":
        return "out" if m.negative_slope >= 0 else "in"
    if cls.startswith(("MaxPool", "AdaptiveMaxPool")):
        return "idx"
    if cls == "LocalResponseNorm":
        return "lrn"
    if cls.startswith(("AvgPool", "AdaptiveAvgPool", "Dropout", "AlphaDropout")) or \
            cls in ("Flatten", "Unflatten", "Identity"):
        return ""  # dropout regenerates its mask from a seed
    return "in"


def _storage(t):
    """The array that owns t's memory (a flatten or a slice shares it), and its bytes."""
    a = getattr(t, "_array", None)
    if not isinstance(a, np.ndarray):
        return None, 0
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a, int(a.nbytes)


# Kernel workspaces at the peak (core/workspace.h, and the GEMM's packing buffers): the
# convolutions' column matrices and per-thread partial weight gradients, in use and idle
# in the pool. Measured with cnnfast.memory.profile_step: 1.7 MiB (LeNet-5, batch 32) to
# 16-18 MiB (ResNet-18/50, DenseNet-121 at 2 threads); up to 8 MiB per thread, less for
# models whose layers are smaller than that.
_WORKSPACE_PER_THREAD = 8 << 20


_SCRATCH_PER_THREAD = 5 << 18   # the GEMM's packing buffers, 1.25 MiB per thread


def _borrows_workspace(m, in_shape, geo, itemsize: int) -> bool:
    """Whether a layer's kernels borrow column matrices, Winograd transforms or packed weights:
    convolutions on im2col + GEMM, Winograd, the channel-vector tiles or the small-map passes
    (bordered copies) do; those Auto sends to
    the direct or depthwise kernels
    (C++ decides, _C._conv_auto_plan says), and every other layer type, borrow next to none."""
    cls = type(m).__name__
    if not cls.startswith("Conv") or geo is None:
        return False
    k, stride, pads, dil, transposed = geo
    if transposed or itemsize != 4:
        return True
    from .. import _C
    plan = _C._conv_auto_plan([1] + list(in_shape[1:]), list(m.weight.shape), list(stride),
                              [list(p) for p in pads], list(dil), int(m.groups))
    return any(v in ("gemm", "winograd", "kvec", "smallmap", "rows") for v in plan.values())


def _workspace_estimate(recs, batch_size: int, threads: int) -> int:
    recs = [r for r in recs if r.get("workspace")]
    largest_act = max([r["in_bytes"] + r["out_bytes"] for r in recs] + [0]) * batch_size
    largest_weight = max([r["grad_bytes"] for r in recs] + [0])
    return (min(_WORKSPACE_PER_THREAD * threads, 2 * largest_act + threads * largest_weight)
            + _SCRATCH_PER_THREAD * threads)


def _training_peak(recs, saved_extra, batch_size: int, input_bytes: int, input_keys) -> tuple:
    """(saved activation bytes, peak activation + parameter-gradient bytes) of one training
    step, by walking the layers' backward in reverse order: when layer i's backward runs,
    every array saved by a layer at or before i is still alive, the parameter gradients of
    the layers from i on exist (they are accumulated at the end of the pass), and i's
    incoming and outgoing gradients are in flight."""
    first = {}      # storage id -> [per-sample bytes, index of the first layer that saves it]
    for i, r in enumerate(recs):
        for key, nbytes in r["saves"]:
            e = first.setdefault(key, [nbytes, i])
            e[1] = min(e[1], i)
    for key, nbytes, i in saved_extra:
        e = first.setdefault(key, [nbytes, i])
        e[1] = min(e[1], i)
    n = len(recs)
    by_first = [0] * (n + 1)
    for nbytes, i in first.values():
        by_first[min(i, n)] += nbytes
    saved_total = sum(by_first) * batch_size
    grads_from = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        grads_from[i] = grads_from[i + 1] + recs[i]["grad_bytes"]
    peak, alive = 0, 0
    prefix = []
    for i in range(n):
        alive += by_first[i]
        prefix.append(alive)
    for i in range(n):
        inflight = (recs[i]["in_bytes"] + recs[i]["out_bytes"]) * batch_size
        peak = max(peak, prefix[i] * batch_size + grads_from[i] + inflight)
    if not any(k in first for k in input_keys):   # alive anyway: the caller holds the batch
        saved_total += input_bytes
        peak += input_bytes
    return saved_total, peak


def _shape_only_forward(m):
    """A stand-in forward returning zeros of the layer's output shape, or None when the
    layer type has no shape rule here (it then runs for real)."""
    import cnnfast

    cls = type(m).__name__
    geo_types = ("Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")
    if cls == "Linear":
        def fwd(x, *a, **k):
            return cnnfast.tensor(np.zeros(tuple(x.shape[:-1]) + (m.out_features,), x.dtype))
        return fwd
    if not cls.startswith(geo_types) or cls.endswith(("1d", "3d")):
        return None

    def fwd(x, *a, **k):
        shape = tuple(x.shape)
        sp = shape[2:]
        n = len(sp)
        if cls.startswith(("AdaptiveAvgPool", "AdaptiveMaxPool")):
            o = _pair2(m.output_size, n)
            out_sp = tuple(sp[i] if o[i] is None else o[i] for i in range(n))
            c = shape[1]
        else:
            k_, s_, pads, d_, transposed = _geometry(m, shape)
            if transposed:
                op = _pair2(m.output_padding, n)
                out_sp = tuple(conv_transpose_output_size(sp[i], k_[i], s_[i], pads[i], op[i],
                                                          d_[i]) for i in range(n))
            else:
                ceil = bool(getattr(m, "ceil_mode", False))
                out_sp = tuple(conv_output_size(sp[i], k_[i], s_[i], pads[i], d_[i], ceil)
                               for i in range(n))
            c = m.out_channels if cls.startswith("Conv") else shape[1]
        return cnnfast.tensor(np.zeros((shape[0], c) + out_sp, x.dtype))
    return fwd


def summary(model, input_shape, batch_size: int = 1, optimizer: str = "sgd_momentum",
            dtype=None, model_name: str | None = None, run: bool = True) -> ModelSummary:
    """Summarise ``model`` for inputs of ``input_shape`` = (C, H, W) (no batch dimension),
    or a list of such shapes for a model with several inputs.

    Runs one dummy forward pass of batch 1 in eval mode without recording a graph (the
    model's mode is restored); modules that eval mode skips (GoogLeNet's auxiliary
    heads) count in the totals but get no row. ``batch_size`` scales the memory figures; ``optimizer``
    ("sgd", "sgd_momentum", "adam", "adamw", "rmsprop", "adagrad") sets the optimizer
    state in the training-memory estimate. ``run=False`` replaces conv, pooling and
    linear layers by their shape formulas (no arithmetic; same table). Returns a
    ``ModelSummary``: ``str()`` is a table, ``to_json()`` / ``to_csv()`` / ``to_dict()``
    the same data.
    """
    import cnnfast

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    opt = optimizer.lower()
    if opt not in OPTIMIZER_STATE_FACTOR:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZER_STATE_FACTOR)}, "
                         f"got {optimizer!r}")
    shapes = _normalize_shapes(input_shape)
    if dtype is None:   # the parameters' dtype, so the dummy input matches the model
        first = next(iter(model.parameters()), None)
        dtype = first._array.dtype if first is not None else np.float32
    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize

    names = {}
    leaves = []
    for name, m in model.named_modules():
        names[id(m)] = name or type(m).__name__
        if next(iter(m.children()), None) is None and m is not model:
            leaves.append(m)
    if not leaves:
        leaves = [model]

    inputs = [cnnfast.tensor(np.zeros((1,) + s, dtype)) for s in shapes]
    rf_of = {}        # id(tensor) -> (R, jump, start) per spatial dim
    keep = []         # tensors kept alive so their ids stay unique during the pass
    for t, s in zip(inputs, shapes):
        rf_of[id(t)] = tuple((1, 1.0, 0.5) for _ in s[1:])
        keep.append(t)
    seen_free = set()
    rows = []
    recs = []          # per row: what its backward keeps and needs (see _training_peak)
    region_saves = []  # (storage id, bytes, row index) kept by checkpointed regions
    recomputed = set()  # ids of modules run under checkpointing in training

    def lookup(t):
        if t is None:
            return None
        info = rf_of.get(id(t))
        if info is not None:
            return info
        # Made outside a module (cat, +): take the widest field among recorded tensors
        # of the same spatial size; count its memory once.
        if id(t) not in seen_free:
            seen_free.add(id(t))
            keep.append(t)
        sp = tuple(t.shape[2:])
        best = None
        for other, inf in zip(keep, (rf_of.get(id(k)) for k in keep)):
            if inf is None or tuple(other.shape[2:]) != sp or len(inf) != len(sp):
                continue
            if best is None or inf[0][0] > best[0][0]:
                best = inf
        return best

    def hook(m, args, out):
        x = _first_tensor(args)
        y = _first_tensor(out)
        in_shape = _shape_of(x)
        out_shape = _shape_of(y)
        info_in = lookup(x)
        geo = _geometry(m, in_shape)
        info_out = None
        if out_shape is not None and len(out_shape) >= 3 and info_in is not None \
                and len(info_in) == len(out_shape) - 2:
            if geo is None:
                info_out = info_in
            else:
                k, s, pads, d, transposed = geo
                info_out = []
                for i, (r, j, st) in enumerate(info_in):
                    f = d[i] * (k[i] - 1) + 1
                    if transposed:
                        jo = j / s[i]
                        info_out.append((r + (math.ceil(f / s[i]) - 1) * j, jo, st))
                    else:
                        info_out.append((r + (f - 1) * j, j * s[i],
                                         st + ((f - 1) / 2 - pads[i][0]) * j))
                info_out = tuple(info_out)
        if y is not None:
            keep.append(y)
            if info_out is not None:
                rf_of[id(y)] = info_out
        own = list(m.parameters())
        n_params = sum(int(p.numel()) for p in own)
        n_train = sum(int(p.numel()) for p in own if p.requires_grad)
        out_numel = int(np.prod(out_shape[1:])) if out_shape else 0
        act = out_numel * itemsize * batch_size
        xs, x_bytes = _storage(x)
        ys, y_bytes = _storage(y)
        keep.extend(a for a in (xs, ys) if a is not None)   # ids stay unique during the pass
        kind = "" if id(m) in recomputed else _saves(m)
        saves = []
        if kind in ("in", "lrn") and xs is not None:
            saves.append((id(xs), x_bytes))
        if kind in ("out", "lrn") and ys is not None:
            saves.append((id(ys), y_bytes))
        if kind == "idx":
            saves.append((("idx", len(recs)), out_numel * 8))
        if kind == "lrn":
            saves.append((("den", len(recs)), y_bytes))
        recs.append({"saves": saves, "in_bytes": x_bytes, "out_bytes": y_bytes,
                     "grad_bytes": sum(_nbytes(p) for p in own if p.requires_grad),
                     "workspace": _borrows_workspace(m, in_shape, geo, itemsize)})
        first = info_out[0] if info_out else None
        rows.append(LayerInfo(
            name=names.get(id(m), type(m).__name__), type=type(m).__name__,
            input_shape=in_shape, output_shape=out_shape, params=n_params, trainable=n_train,
            macs=_macs(m, in_shape, out_shape),
            rf=None if first is None else int(first[0]),
            jump=None if first is None else first[1],
            start=None if first is None else first[2],
            activation_bytes=act,
            saved_bytes=sum(b for _, b in saves) * batch_size,
            kernel=None if geo is None else tuple(geo[0]),
            stride=None if geo is None else tuple(geo[1]),
            padding=None if geo is None else tuple(p[0] for p in geo[2])))

    def region_hook(m, args):
        # A layer that checkpoints part of itself in training (DenseNet's memory_efficient)
        # keeps the region's Tensor arguments instead of what the region's layers save.
        recomputed.update(id(r) for r in m._recomputed_modules())
        flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
        for a in flat:
            st, nbytes = _storage(a)
            if st is not None:
                keep.append(st)
                region_saves.append((id(st), nbytes, len(recs)))

    was_training = model.training
    handles = [m.register_forward_hook(hook) for m in leaves]
    handles += [m.register_forward_pre_hook(region_hook) for m in model.modules()
                if callable(getattr(m, "_recomputed_modules", None)) and m._recomputed_modules()]
    patched = []
    if not run:
        for m in leaves:
            fwd = _shape_only_forward(m)
            if fwd is not None:
                m.__dict__["forward"] = fwd     # instance attribute shadows the class method
                patched.append(m)
    try:
        model.eval()
        with cnnfast.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m in patched:
            m.__dict__.pop("forward", None)
        model.train(was_training)

    params = list(model.parameters())
    s = ModelSummary(model_name=model_name or type(model).__name__, input_shapes=shapes,
                     batch_size=batch_size, dtype=str(dtype), optimizer=opt, layers=rows)
    s.total_params = sum(int(p.numel()) for p in params)
    s.trainable_params = sum(int(p.numel()) for p in params if p.requires_grad)
    s.param_bytes = sum(_nbytes(p) for p in params)
    s.buffer_bytes = sum(_nbytes(b) for b in model.buffers())
    s.total_macs = sum(r.macs for r in rows)
    s.input_bytes = sum(int(np.prod(sh)) for sh in shapes) * itemsize * batch_size
    s.activation_bytes = sum(r.activation_bytes for r in rows)
    input_keys = {id(_storage(t)[0]) for t in inputs}
    s.saved_activation_bytes, peak = _training_peak(recs, region_saves, batch_size, s.input_bytes, input_keys)
    trainable_bytes = sum(_nbytes(p) for p in params if p.requires_grad)
    s.gradient_bytes = trainable_bytes
    s.optimizer_state_bytes = OPTIMIZER_STATE_FACTOR[opt] * trainable_bytes
    s.workspace_bytes = _workspace_estimate(recs, batch_size, cnnfast.get_num_threads())
    # The peak: parameters, buffers and optimizer state throughout, plus the largest sum
    # of saved activations, parameter gradients and gradients in flight during backward.
    s.training_memory_bytes = (s.param_bytes + s.buffer_bytes + s.optimizer_state_bytes + peak
                               + s.workspace_bytes)
    return s


def _normalize_shapes(input_shape) -> list:
    if isinstance(input_shape, (tuple, list)) and input_shape and \
            all(isinstance(v, (int, np.integer)) for v in input_shape):
        shapes = [tuple(int(v) for v in input_shape)]
    elif isinstance(input_shape, (tuple, list)) and input_shape and \
            all(isinstance(v, (tuple, list)) for v in input_shape):
        shapes = [tuple(int(x) for x in v) for v in input_shape]
    else:
        raise ValueError(f"input_shape: expected (C, H, W) or a list of such shapes, "
                         f"got {input_shape!r}")
    for sh in shapes:
        if not sh or any(v < 1 for v in sh):
            raise ValueError(f"input_shape: expected positive sizes without the batch "
                             f"dimension, got {sh}")
    return shapes


def estimate_training_memory(model, input_shape, batch_size: int = 1,
                             optimizer: str = "sgd_momentum", dtype=np.float32) -> int:
    """Bytes of one training step: parameters + gradients + optimizer state + activations
    kept for backward (see the module docstring)."""
    return summary(model, input_shape, batch_size, optimizer, dtype).training_memory_bytes


def _make_optimizer(params, optimizer: str, lr: float):
    """A cnnfast.optim optimizer when that package provides it; otherwise a NumPy one with
    the same state (momentum buffer; Adam's two moments)."""
    opt = optimizer.lower()
    try:
        from .. import optim
        table = {"sgd": lambda: optim.SGD(params, lr=lr),
                 "sgd_momentum": lambda: optim.SGD(params, lr=lr, momentum=0.9),
                 "momentum": lambda: optim.SGD(params, lr=lr, momentum=0.9),
                 "adam": lambda: optim.Adam(params, lr=lr),
                 "adamw": lambda: optim.AdamW(params, lr=lr),
                 "rmsprop": lambda: optim.RMSprop(params, lr=lr),
                 "adagrad": lambda: optim.Adagrad(params, lr=lr)}
        return table[opt]()
    except (ImportError, AttributeError):
        return _NumpyOptimizer(params, opt, lr)


class _NumpyOptimizer:
    """Stand-in with the standard state sizes, used while cnnfast.optim is absent."""

    def __init__(self, params, opt, lr):
        self.params = list(params)
        self.opt = opt
        self.lr = lr
        self.state = {}
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.t += 1
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad._array
            st = self.state.setdefault(id(p), [])
            if self.opt in ("sgd_momentum", "momentum", "rmsprop", "adagrad"):
                if not st:
                    st.append(np.zeros_like(p._array))
                st[0] *= 0.9
                st[0] += g
                p._array -= self.lr * st[0]
            elif self.opt in ("adam", "adamw"):
                if not st:
                    st += [np.zeros_like(p._array), np.zeros_like(p._array)]
                st[0] *= 0.9
                st[0] += 0.1 * g
                st[1] *= 0.999
                st[1] += 0.001 * g * g
                p._array -= self.lr * st[0] / (np.sqrt(st[1]) + 1e-8)
            else:
                p._array -= self.lr * g


def _default_loss(out, batch_size):
    """Cross entropy against targets 0, 1, 2, ... for (N, classes); mean square otherwise."""
    import cnnfast
    out = out[0] if isinstance(out, (tuple, list)) else out
    if out.ndim == 2:
        onehot = np.zeros(out.shape, out.dtype)
        onehot[np.arange(out.shape[0]), np.arange(out.shape[0]) % out.shape[1]] = 1
        return -(out.log_softmax(1) * cnnfast.tensor(onehot)).sum() / out.shape[0]
    return (out * out).mean()


def measure_training_memory(model, input_shape, batch_size: int = 1,
                            optimizer: str = "sgd_momentum", dtype=np.float32, loss_fn=None,
                            lr: float = 1e-3, seed: int = 0, warmup: bool = True) -> dict:
    """Measure the peak memory of one training step (forward + backward + optimizer step)
    with ``cnnfast.memory.profile_step`` (the same accounting as the estimate: NumPy
    buffers through tracemalloc, plus the kernels' workspaces). Returns {"peak_bytes",
    "param_bytes", "step_peak_bytes", "report"} (report: the MemoryReport as a dict).

    With ``warmup`` (the default) a first step runs before the measured one, so the
    optimizer state already exists, as in every step of a real run but the first;
    each step starts with ``zero_grad(set_to_none=True)``. ``loss_fn(output, batch_size)``
    defaults to cross entropy for (N, classes) outputs and the mean square otherwise.
    The model is left in training mode.
    """
    import cnnfast
    from ..memory import profile_step

    shapes = _normalize_shapes(input_shape)
    rng = np.random.default_rng(seed)
    loss_fn = loss_fn or _default_loss
    model.train()
    params = list(model.parameters())
    opt = _make_optimizer(params, optimizer, lr)

    def step():
        opt.zero_grad()
        for p in params:
            p.grad = None
        xs = [cnnfast.tensor(rng.standard_normal((batch_size,) + s).astype(dtype))
              for s in shapes]
        loss = loss_fn(model(*xs), batch_size)
        loss.backward()
        opt.step()

    if warmup:
        step()
    report = profile_step(step, model, opt)
    return {"peak_bytes": report.peak_bytes, "param_bytes": report.param_bytes + report.buffer_bytes,
            "step_peak_bytes": report.step_peak_bytes, "report": report.to_dict()}


def summary_main(argv=None) -> int:
    """``cnnfast summary MODEL [options]``: print the summary of a registered model.

    Options: --input C,H,W (default: the model's canonical input); --batch-size N;
    --optimizer NAME; --num-classes K; --format table|json|csv; --shapes-only (shape
    formulas instead of computing conv/pool/linear layers); --measure (also run one
    training step and report its peak, cnnfast.memory's accounting, beside the estimate).
    Returns the exit code.
    """
    from ..models import default_input_shape, get_model, list_models

    p = argparse.ArgumentParser(prog="cnnfast summary",
                                description="Per-layer shapes, parameters, multiply-adds, "
                                            "receptive field and memory of a model.")
    p.add_argument("model", help="one of: " + ", ".join(list_models()))
    p.add_argument("--input", default=None, help="input shape C,H,W without batch")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--optimizer", default="sgd_momentum", choices=sorted(OPTIMIZER_STATE_FACTOR))
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--format", default="table", choices=["table", "json", "csv"])
    p.add_argument("--shapes-only", action="store_true",
                   help="do not compute conv/pool/linear layers, use the shape formulas")
    p.add_argument("--measure", action="store_true",
                   help="also measure one training step's peak memory (cnnfast.memory.profile_step)")
    a = p.parse_args(argv)
    if a.model.lower() not in list_models():
        p.error(f"model: expected one of {', '.join(list_models())}, got {a.model!r}")
    shape = default_input_shape(a.model)
    if a.input:
        try:
            shape = tuple(int(v) for v in a.input.replace("x", ",").split(","))
        except ValueError:
            p.error(f"--input: expected C,H,W integers, got {a.input!r}")
    kw = {}
    if a.num_classes is not None:
        kw["num_classes"] = a.num_classes
    model = get_model(a.model, **kw)
    in_shapes = [shape, shape] if a.model.lower() == "siamese" else shape
    s = summary(model, in_shapes, batch_size=a.batch_size, optimizer=a.optimizer,
                model_name=a.model, run=not a.shapes_only)
    if a.format == "json":
        d = s.to_dict()
        if a.measure:
            d["measured"] = measure_training_memory(model, in_shapes, a.batch_size, a.optimizer)
        print(json.dumps(d, indent=2))
    elif a.format == "csv":
        sys.stdout.write(s.to_csv())
    else:
        print(s.table())
        if a.measure:
            m = measure_training_memory(model, in_shapes, a.batch_size, a.optimizer)
            print(f"Measured training-step peak: {_bytes(m['peak_bytes'])} "
                  f"(estimate {_bytes(s.training_memory_bytes)})")
    return 0
