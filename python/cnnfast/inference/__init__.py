"""Frozen inference graphs: BatchNorm folded, epilogues fused, no autograd.

``freeze(model, example_input)`` turns a model in eval mode into a callable that runs
the same computation as fast as the kernels allow:

- the model is traced once into a graph (an ``OnnxModule`` from ``cnnfast.onnx.load``
  already is one; any other ``nn.Module`` is traced by the ONNX exporter's recorder);
- BatchNormalization after a convolution or linear layer is folded into its weights;
- the bias, a following residual add and activation (ReLU, ReLU6/Clip, LeakyReLU,
  HardSigmoid, HardSwish, Sigmoid, SiLU) run in the convolution's output pass
  (``_C.conv_forward(..., residual=, activation=)``) instead of as separate ops;
- float32 convolution weights are packed for the GEMM once, at freeze time
  (``_C.ConvPacked``, passed as ``packed=``), not on every call;
- squeeze-and-excitation blocks (global pool, two 1x1 convolutions, the scale) run as
  one call (``_C.squeeze_excite_forward``);
- nothing is recorded for backward, and each intermediate value is dropped as soon as
  its last reader has run;
- every other op runs unfused through the ONNX converters, so a model whose patterns do
  not fuse still runs.

At freeze time the frozen graph is checked against the model on the example input
(``check=True``); a mismatch raises instead of returning a silently different model.
Inputs are checked like an imported model's: dtype, rank and fixed sizes, with the batch
free. ``FrozenModule.fusions`` says what was fused.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import no_grad
from ..tensor import Tensor
from ._plan import Plan, ShapeRecord
from ._fuse import FuseStats, Node, fuse, fuse_squeeze_excite

__all__ = ["freeze", "FrozenModule"]


def _contiguous(a):
    """The kernels take C-contiguous arrays; a Split/Slice (ShuffleNet's channel split) gives views."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _with_lean(lean):
    """A converter's ``run`` for the general executor, made from its lean form (arrays in,
    arrays out), which a Plan (_plan.py) calls directly: one body for both."""
    from ..onnx._ops import arr

    def run(ins, ctx):
        return [Tensor._wrap(v) if isinstance(v, np.ndarray) else v
                for v in lean([None if v is None else arr(v) for v in ins], None)]

    run.lean = lean
    return run


def _fused_conv(spec):
    from ..onnx._ops import _auto_pads, _check_auto_pad, _spatial_attr, arr

    _check_auto_pad(spec)
    group = int(spec.attr("group", 1))
    act, alpha, beta = spec.attr("activation"), float(spec.attr("act_alpha")), float(spec.attr("act_beta"))
    weight = spec.const(1)
    bias = spec.const(2)
    n = weight.ndim - 2
    kernel = weight.shape[2:]
    strides = tuple(_spatial_attr(spec, "strides", n, 1))
    dil = tuple(_spatial_attr(spec, "dilations", n, 1))
    pads_cache = {}
    # The GEMM's packed weights, made once here instead of on every call; a float64 graph packs per call.
    packed = _C.ConvPacked(weight, group) if weight.dtype == np.float32 and weight.shape[1] > 1 else None

    out_sizes = {}

    def geometry(x):
        return geometry_of(x.shape[2:])

    def geometry_of(sizes):
        pads = pads_cache.get(sizes)
        if pads is None:
            pads = pads_cache[sizes] = tuple(_auto_pads(spec, sizes, kernel, strides, dil))
            out_sizes[sizes] = tuple((sizes[i] + pads[i][0] + pads[i][1] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1
                                     for i in range(n))
        return sizes, pads

    def conv(x, residual, pads, out):
        # Positional arguments: pybind11 matched the keywords at ~1.5 us a call, 0.08 ms of a
        # MobileNet-V2 batch-1 inference (52 convolutions).
        return _C.conv_forward(x, weight, bias, strides, pads, dil, group, "auto", residual, act, alpha, beta,
                               packed if x.dtype == np.float32 else None, out)

    def run(ins, ctx):
        x = _contiguous(arr(ins[0]))
        residual = _contiguous(arr(ins[3])) if len(ins) > 3 and ins[3] is not None else None
        sizes, pads = geometry(x)
        pool = ctx.pool
        out = None
        if pool is not None:
            key = ((x.shape[0], weight.shape[0]) + out_sizes[sizes], x.dtype.char)
            free = pool.take(key)
            out = free if free is not None else np.empty(key[0], x.dtype)
            pool.own(out)
        return [Tensor._wrap(conv(x, residual, pads, out))]

    def lean(xs, out):
        # A Plan's call (inference/_plan.py): arrays in (a general step's may be views), out
        # planned or None.
        x = _contiguous(xs[0])
        residual = _contiguous(xs[3]) if len(xs) > 3 and xs[3] is not None else None
        return [conv(x, residual, geometry(x)[1], out)]

    def native(x_shape):
        # FrozenConvChain.add's layer arguments for a float32 input of this shape (a Plan
        # runs consecutive convolutions in one call, inference/_plan.py).
        pads = geometry_of(tuple(x_shape[2:]))[1]
        return weight, bias, strides, pads, dil, group, act, alpha, beta, packed

    run.lean = lean
    run.native = native if packed is not None or (weight.dtype == np.float32 and weight.shape[1] == 1) else None
    return run


def _fused_gemm(spec):
    act, alpha, beta = spec.attr("activation"), float(spec.attr("act_alpha")), float(spec.attr("act_beta"))
    weight, bias = spec.const(1), spec.const(2)

    def lean(xs, out):
        residual = _contiguous(xs[3]) if len(xs) > 3 and xs[3] is not None else None
        # Positional, as conv_forward's call in _fused_conv.
        return [_C.linear_forward(_contiguous(xs[0]), weight, bias, residual, act, alpha, beta)]

    return _with_lean(lean)


def _fused_conv_bf16(spec):
    """FusedConv with bfloat16 products and float32 accumulation (freeze(precision="bf16"))."""
    from ..onnx._ops import _auto_pads, _check_auto_pad, _spatial_attr, arr

    _check_auto_pad(spec)
    group = int(spec.attr("group", 1))
    kw = dict(activation=spec.attr("activation"), alpha=float(spec.attr("act_alpha")),
              beta=float(spec.attr("act_beta")))
    weight, bias = spec.const(1), spec.const(2)
    n = weight.ndim - 2
    strides, dil = _spatial_attr(spec, "strides", n, 1), _spatial_attr(spec, "dilations", n, 1)
    pads_cache = {}

    def run(ins, ctx):
        x = _contiguous(arr(ins[0]))
        if x.dtype != np.float32:  # float64 graphs keep full precision
            return _fused_conv(spec)(ins, ctx)
        residual = _contiguous(arr(ins[3])) if len(ins) > 3 and ins[3] is not None else None
        sizes = x.shape[2:]
        pads = pads_cache.get(sizes)
        if pads is None:
            pads = pads_cache[sizes] = _auto_pads(spec, sizes, weight.shape[2:], strides, dil)
        return [Tensor._wrap(_C.conv_forward_bf16(x, weight, bias, strides, pads, dil, group, residual=residual, **kw))]
    return run


def _fused_gemm_bf16(spec):
    """FusedGemm with bfloat16 products and float32 accumulation (freeze(precision="bf16"))."""
    from ..onnx._ops import arr

    kw = dict(activation=spec.attr("activation"), alpha=float(spec.attr("act_alpha")),
              beta=float(spec.attr("act_beta")))
    weight, bias = spec.const(1), spec.const(2)

    def run(ins, ctx):
        x = _contiguous(arr(ins[0]))
        if x.dtype != np.float32:
            return _fused_gemm(spec)(ins, ctx)
        residual = _contiguous(arr(ins[3])) if len(ins) > 3 and ins[3] is not None else None
        return [Tensor._wrap(_C.linear_forward_bf16(x, weight, bias, residual=residual, **kw))]
    return run


_PRECISIONS = {"fp32": (_fused_conv, _fused_gemm, 1e-4), "bf16": (_fused_conv_bf16, _fused_gemm_bf16, 3e-2)}


def _precision_converters(precision: str):
    """(FusedConv converter, FusedGemm converter, default check rtol) for freeze's ``precision``."""
    if precision not in _PRECISIONS:
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and _C.bf16_path() == "fallback":
        import warnings

        warnings.warn("freeze(precision='bf16'): this CPU has no bfloat16 instructions (or they are off); the "
                      "converting fallback is correct but slower than float32", RuntimeWarning, stacklevel=3)
    return _PRECISIONS[precision]


def _squeeze_excite(spec):
    w1, w2 = spec.const(1), spec.const(3)
    w1, w2 = w1.reshape(w1.shape[0], w1.shape[1]), w2.reshape(w2.shape[0], w2.shape[1])
    b1, b2 = spec.const(2), spec.const(4)
    kw = {k: spec.attr(k) for k in ("act1", "act2")}
    kw.update({k: float(spec.attr(k)) for k in ("alpha1", "beta1", "alpha2", "beta2")})

    run = _with_lean(lambda xs, out: [_C.squeeze_excite_forward(_contiguous(xs[0]), w1, b1, w2, b2, **kw)])
    if w1.dtype == np.float32:
        # FrozenConvChain.add_squeeze_excite's arguments (inference/_plan.py).
        run.native_se = (w1, b1, w2, b2, kw["act1"], kw["alpha1"], kw["beta1"], kw["act2"], kw["alpha2"],
                         kw["beta2"])
    return run


def _lean_global_avg_pool(spec):
    # Straight to the kernel for NCHW inputs, without the autograd Function of the ONNX
    # converter: after a layer that streamed its weights through the caches every Python
    # object touched is a miss, and the converter's path cost ~80 us per call inside
    # ResNet-50 (8 us alone); other ranks take the converter.
    from ..onnx._ops import CONVERTERS, arr

    general = CONVERTERS["GlobalAveragePool"](spec)

    def lean(xs, out):
        a = xs[0]
        if a.ndim != 4 or a.dtype.char not in "fd":
            return [arr(v) for v in general([Tensor._wrap(a)], None)]
        return [_C.adaptive_avg_pool2d_forward(_contiguous(a), (1, 1))]

    return _with_lean(lean)


def _lean_max_pool(spec):
    # 2-D max pooling straight to the kernel, its geometry worked out once per input shape
    # (see _lean_global_avg_pool): ResNet-50's stem pool took ~0.2 ms in the graph through
    # the converter, 0.11-0.14 ms of it the kernel. Indices wanted, integer inputs, other
    # ranks and windows cnnfast's padding rule cannot express take the converter.
    from ..onnx._ops import CONVERTERS, _native_pool_ok, _pool_geometry, arr

    general = CONVERTERS["MaxPool"](spec)
    native = (len(spec.attr("kernel_shape") or ()) == 2 and not spec.output_used(1)
              and int(spec.attr("storage_order", 0)) == 0)
    ceil = bool(int(spec.attr("ceil_mode", 0)))
    plans = {}

    def plan(shape):
        got = plans.get(shape)
        if got is None:
            k, s, d, pads, out = _pool_geometry(spec, shape)
            ok = _native_pool_ok(k, s, d, pads, out, list(shape[2:]), ceil)
            got = plans[shape] = (list(k), list(s), [p[0] for p in pads], list(d)) if ok else None
        return got

    def lean(xs, out):
        a = xs[0]
        geometry = plan(a.shape) if native and a.ndim == 4 and a.dtype.char in "fd" else None
        if geometry is None:
            return [arr(v) for v in general([Tensor._wrap(a)], None)]
        return [_C.max_pool2d_forward(_contiguous(a), *geometry, ceil, False)[0]]

    return _with_lean(lean)


def _lean_flatten(spec):
    # A view of the array, without the Tensor.reshape Function (see _lean_global_avg_pool).
    from ..onnx._ops import CONVERTERS, arr

    general = CONVERTERS["Flatten"](spec)
    axis = int(spec.attr("axis", 1))

    def flat(a):
        lead = 1
        for d in a.shape[:axis]:
            lead *= d
        return a.reshape(lead, -1) if a.size else a.reshape(lead, int(np.prod(a.shape[axis:])))

    def lean(xs, out):
        a = xs[0]
        if not 0 <= axis <= a.ndim:  # negative or out-of-range axis: the converter's checks and message
            return [arr(v) for v in general([Tensor._wrap(a)], None)]
        return [flat(a)]

    return _with_lean(lean)


class _BufferPool:
    """Output buffers of the fused convolutions, handed back when the graph drops them and
    written again by a later convolution of the same shape (this call's or the next one's).

    With a fresh NumPy array for every intermediate, one MobileNet-V2 inference at batch 1
    touched ~35 MB of new memory (page faults on every large one); reusing buffers keeps
    the working set near the largest set of values alive at once. (Its layers still ran
    slower inside the graph than alone, 220 against 110 us for the last 1x1 layer: that is
    the weights coming back from memory, which the pool does not change; benchmarks/
    RESULTS.md.) A dropped value is taken only when nothing else refers to it (the graph's
    environment held the last reference), it is one of these very buffers, and it is still
    C-contiguous and writable; the graph's outputs leave the pool with the caller.
    """

    def __init__(self):
        import weakref

        self._free = {}  # (shape, dtype char) -> [arrays]
        # The buffers this pool gave out and may take back, by id; weak, so a buffer that
        # never comes back (a view outlived it, the caller kept it) leaves no entry behind,
        # and an id Python reuses for another array does not match (`is`, not `in`).
        self._owned = weakref.WeakValueDictionary()

    def take(self, key):
        lst = self._free.get(key)
        try:
            return lst.pop() if lst else None
        except IndexError:  # another thread emptied it first
            return None

    def own(self, a):
        self._owned[id(a)] = a

    def disown(self, values):
        for v in values:
            a = v._array if isinstance(v, Tensor) else v
            if self._owned.get(id(a)) is a:
                del self._owned[id(a)]

    def release(self, v):
        import sys

        # References to v: the caller's local, this argument, getrefcount's own; to its
        # array: the Tensor's attribute, the local `a`, getrefcount's. Any more (a view, an
        # alias under another name, the caller's own handle) and the buffer stays theirs.
        if not isinstance(v, Tensor) or sys.getrefcount(v) > 3:
            return
        a = v._array
        if self._owned.get(id(a)) is not a or sys.getrefcount(a) > 3 or a.base is not None:
            return
        if not (a.flags.c_contiguous and a.flags.writeable and a.flags.aligned):
            return
        lst = self._free.setdefault((a.shape, a.dtype.char), [])
        if len(lst) < 8:  # a chain of same-shaped layers frees one or two at a time
            lst.append(a)

    def clear(self):
        self._free.clear()
        self._owned.clear()


class FrozenModule:
    """A frozen inference graph: call it like the model (``frozen(x)``), get Tensors back.

    Attributes: ``fusions`` (counts of folded BatchNorms and fused convolutions, residuals,
    activations), ``op_counts()`` (ops that run), ``input_names``.
    """

    def __init__(self, graph_module, fusions: dict, program, consts: dict):
        self._graph = graph_module
        self.fusions = fusions
        self._program = program
        self._consts = consts
        self.input_names = list(graph_module.input_names)
        self._pool = _BufferPool()
        self._plans = {}  # input signature -> Plan (_plan.py), made by the first call with it

    def op_counts(self) -> dict:
        counts = {}
        for st in self._program.steps:
            counts[st.op_type] = counts.get(st.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def __call__(self, *args, **kwargs):
        from ..onnx._importer import _Ctx

        inputs = {}
        for name, value in self._graph._bind_inputs(args, kwargs).items():
            if isinstance(value, Tensor):
                data = value._array
                if not (data.flags.c_contiguous and data.flags.aligned and data.dtype.isnative):
                    value = Tensor._wrap(np.require(data, dtype=data.dtype.newbyteorder("="), requirements="CA"))
            inputs[name] = value
        arrays = [v._array if isinstance(v, Tensor) else v for v in inputs.values()]
        signature = tuple((a.shape, a.dtype.str) if isinstance(a, np.ndarray) else None for a in arrays)
        plan = self._plans.get(signature)
        if plan is not None and plan.lock.acquire(blocking=False):
            # Second and later calls with these shapes: the straight-line replay (_plan.py).
            try:
                with no_grad():
                    outs = plan.run(arrays)
            finally:
                plan.lock.release()
        else:
            env = dict(self._consts)
            env.update(inputs)
            ctx = _Ctx(False, env, ShapeRecord() if plan is None and None not in signature else None)
            ctx.pool, ctx.release = self._pool, self._pool.release
            with no_grad():
                outs = self._program.execute(ctx)
            self._pool.disown(outs)
            if ctx.record is not None and len(self._plans) < 4:
                self._plans[signature] = Plan(self._program, self._consts, inputs, ctx.record,
                                              lambda: _Ctx(False, dict(self._consts)))
                self._pool.clear()  # the plan has buffers of its own for these shapes
        outs = [o if isinstance(o, Tensor) else Tensor(np.asarray(o)) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in self.op_counts().items())
        return f"FrozenModule({ops})"


def _graph_of(model, example_input):
    from ..onnx._exporter import build_model
    from ..onnx._importer import OnnxModule

    if isinstance(model, OnnxModule):
        return model
    if example_input is None:
        raise ValueError("example_input: needed to trace a model that is not an imported ONNX graph")
    proto, _ = build_model(model, example_input, 17, None, None, True)
    return OnnxModule(proto, f"<frozen {type(model).__name__}>")


def _as_arrays(example_input):
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    return [x._array if isinstance(x, Tensor) else np.asarray(x) for x in items]


def freeze(model, example_input=None, *, check: bool = True, rtol: float | None = None,
           precision: str = "fp32") -> FrozenModule:
    """Compile ``model`` (eval mode) into a :class:`FrozenModule` for inference.

    model: an ``nn.Module`` (traced once on ``example_input``; its mode is restored) or an
    ``OnnxModule`` from ``cnnfast.onnx.load`` (``example_input`` optional).
    example_input: an array/Tensor (N, C, H, W) or a tuple of them; used for tracing, for
    the shapes that decide residual fusion, and for the check.
    check: compare the frozen graph's outputs with the model's on ``example_input`` and
    raise ``RuntimeError`` when they differ by more than ``rtol`` (relative to the largest
    output magnitude; default 1e-4, or 3e-2 for bf16).
    precision: ``"fp32"``, or ``"bf16"``: the fused convolutions and linear layers multiply
    in bfloat16 with float32 accumulation (``_C.conv_forward_bf16``; AMX / AVX512-BF16, a
    slower converting fallback elsewhere, with a warning); everything else stays float32.

    Calls: the first call with a given input shape runs the general executor and plans
    the next ones (``inference/_plan.py``: the same kernels in a straight line, outputs of
    hidden convolutions written into buffers kept per shape, for up to 4 input shapes);
    later calls with that shape replay the plan, ~0.5 ms less Python on MobileNet-V2 at
    batch 1. Outputs are always new arrays.

    Memory: each dense convolution keeps a copy of its weights and two packed layouts
    (about three times their size), and a 3x3 layer that runs on Winograd (at least 512 output positions
    over the batch) also keeps its transformed weights, 8x its size, from its first call
    on: ResNet-50 at batch 8 holds ~120 MB more than at batch 1, and saves ~1.7 ms per
    256-channel layer and call on one thread.
    """
    conv_conv, gemm_conv, default_rtol = _precision_converters(precision)
    rtol = default_rtol if rtol is None else rtol
    from ..onnx._importer import _Ctx, _Program, _names_used
    from ..onnx._ops import CONVERTERS, arr

    graph = _graph_of(model, example_input)
    proto = graph._proto
    consts = dict(graph._consts)
    for onnx_name, key in graph._state_names.items():
        consts[onnx_name] = np.ascontiguousarray(getattr(graph, key)._array)
    # Constant nodes were evaluated at load time; their values join the constants.
    nodes = [Node(n.op_type, n.name, n.input, n.output, _attr_values(n)) for n in proto.graph.node
             if n.op_type != "Constant"]
    nodes = _fold_constant_identities(nodes, consts, {o.name for o in proto.graph.output})
    shapes = {}
    if example_input is not None:
        for name, x in zip(graph.input_names, _as_arrays(example_input)):
            shapes[name] = tuple(x.shape)
        record = []
        with no_grad():
            graph._run(tuple(_as_arrays(example_input)), {}, record)
        for st, vals in record:
            for name, v in zip([o for o in st.outputs if o], vals):
                if v is not None:
                    shapes[name] = tuple(arr(v).shape)
    stats = FuseStats()
    fused = fuse(nodes, consts, [o.name for o in proto.graph.output], shapes, stats)
    fused = fuse_squeeze_excite(fused, consts, [o.name for o in proto.graph.output], stats)

    import onnx

    if any(isinstance(v, onnx.GraphProto) for n in fused for v in n.attrs.values()):
        raise NotImplementedError("freeze: graphs with control flow (If/Loop) are not supported; run the model "
                                  "unfrozen")
    new_nodes = [onnx.helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **n.attrs) for n in fused]
    new_graph = onnx.helper.make_graph(new_nodes, "frozen", list(proto.graph.input), list(proto.graph.output))
    converters = dict(CONVERTERS)
    converters["FusedConv"] = conv_conv
    converters["FusedGemm"] = gemm_conv
    converters["SqueezeExcite"] = _squeeze_excite
    converters["GlobalAveragePool"] = _lean_global_avg_pool
    converters["Flatten"] = _lean_flatten
    converters["MaxPool"] = _lean_max_pool
    used = _names_used(new_graph, set())
    program = _Program(new_graph, graph.opset, consts, used, "frozen", top=True, converters=converters)
    program.plan_frees(set(graph.output_names))
    runtime_consts = {k: v for k, v in consts.items() if k in used}
    runtime_consts.update(program.consts.maps[0])
    frozen = FrozenModule(graph, stats.as_dict(), program, runtime_consts)
    if check and example_input is not None:
        _check(frozen, model, graph, example_input, rtol)
    return frozen


def _fold_constant_identities(nodes, consts, outputs):
    """Identity nodes of constants become constants themselves.

    torch.onnx.export shares equal initializers between layers (the zero biases of a
    MobileNet, equal BN-folded shifts) by routing them through Identity nodes; a
    convolution whose weight or bias is such an output would otherwise not count as
    having constant weights and would stay unfused."""
    kept = []
    for n in nodes:
        if n.op_type == "Identity" and len(n.inputs) == 1 and n.inputs[0] in consts and n.outputs[0] not in outputs:
            consts[n.outputs[0]] = consts[n.inputs[0]]
        else:
            kept.append(n)
    return kept


def _attr_values(node) -> dict:
    import onnx

    return {a.name: (a.g if a.type == onnx.AttributeProto.GRAPH else onnx.helper.get_attribute_value(a))
            for a in node.attribute}


def _check(frozen, model, graph, example_input, rtol):
    inputs = _as_arrays(example_input)
    with no_grad():
        if graph is model:
            want = graph(*inputs)
        else:
            was_training = model.training
            model.eval()
            try:
                want = model(*[Tensor(x) for x in inputs])
            finally:
                model.train(was_training)
        got = frozen(*inputs)
    # A segmentation model returns {"out": ..., "aux": ...}; its graph has one output per value, in order.
    want = tuple(want.values()) if isinstance(want, dict) else want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for i, (w, g) in enumerate(zip(want, got)):
        w, g = np.asarray(w._array, np.float64), np.asarray(g._array, np.float64)
        scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-30)
        err = float(np.abs(w - g).max()) / scale if w.size else 0.0
        if w.shape != g.shape or not err <= rtol:
            raise RuntimeError(f"freeze: output {i} of the frozen graph differs from the model's "
                               f"(max error {err:.2e} relative to the largest output, allowed {rtol:.0e})")
