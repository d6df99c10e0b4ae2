"""cnnfast model -> ONNX file, by tracing one forward pass.

Every differentiable cnnfast op is a ``cnnfast.autograd.Function``; while ``export``
runs the model once on the example input, an observer on ``Function.apply`` sees each call, which
is recorded with its arguments (the hyper-parameters are plain positional arguments:
stride, pads, eps, ...) and its outputs. The recorded calls that the outputs depend on
become ONNX nodes, one emitter per op, found by the ``onnx_op`` name its Function class declares (``_EMITTERS``); parameters and
buffers become initializers under their state-dict names, other arrays constants.

Tracing sees only what goes through Functions: an input-dependent value computed in
plain NumPy inside ``forward`` would be frozen into a constant. ``export`` therefore
checks the written file by default (``verify=True``): it loads it back with
``cnnfast.onnx.load`` and compares with the model on the example input and on a second,
independent random input (one sample more with a dynamic batch); a mismatch raises
instead of leaving a silently wrong file.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np

from ..autograd import Function, enable_grad
from ..tensor import Tensor

DEFAULT_OPSET = 17
_LOCK = threading.Lock()
_INT64_MIN = -(2 ** 63)


class _Call:
    __slots__ = ("cls", "args", "outs", "scope")

    def __init__(self, cls, args, outs, scope):
        self.cls, self.args, self.outs, self.scope = cls, args, outs, scope


@contextmanager
def _recording(calls: list, scope: list):
    """Record every Function application while the block runs, through autograd's observer list."""
    def observe(cls, args, outs):
        calls.append(_Call(cls, args, outs, scope[-1] if scope else ""))

    Function._observers.append(observe)
    try:
        yield
    finally:
        Function._observers.remove(observe)


class _Builder:
    def __init__(self, opset: int, dynamic_batch: bool, batch: int):
        import onnx
        self.onnx = onnx
        self.opset, self.dynamic, self.batch = opset, dynamic_batch, batch
        self.nodes, self.inits = [], []
        self.names = {}        # id(Tensor or ndarray) -> ONNX value name
        self.state = {}        # id(Tensor or ndarray) -> state-dict name (parameters, buffers)
        self.keep = []         # objects whose ids are in names (kept alive so ids stay unique)
        self.used = set()
        self.flat_indices = {}  # id(per-plane max-pool indices) -> (ONNX flat indices, pool input name, attrs)
        self.names_needed = set()  # ids of the values the outputs depend on

    # ---- naming --------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name

    def const(self, array, hint: str = "const") -> str:
        a = np.ascontiguousarray(np.asarray(array))
        name = self.unique(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def i64(self, values, hint="shape") -> str:
        return self.const(np.asarray(values, np.int64), hint)

    def value(self, obj) -> str:
        """The ONNX name of a Function argument (a Tensor or an array), creating an initializer
        for parameters, buffers and constants the first time one is seen."""
        if obj is None:
            return ""
        key = id(obj)
        if key in self.names:
            return self.names[key]
        data = obj._array if isinstance(obj, Tensor) else np.asarray(obj)
        if isinstance(obj, Tensor) and id(obj._array) in self.names:
            return self.names[id(obj._array)]
        hint = self.state.get(key) or self.state.get(id(data)) or "const"
        name = self.const(data, hint)
        self.names[key] = self.names[id(data)] = name  # a parameter passed as array or Tensor: one initializer
        self.keep += [obj, data]
        return name

    def node(self, op_type, inputs, scope, n_out=1, **attrs) -> list:
        base = f"{scope}/{op_type}" if scope else op_type
        name = self.unique(base)
        outs = [name] if n_out == 1 else [self.unique(f"{name}:{i}") for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs

    def one(self, op_type, inputs, scope, **attrs) -> str:
        return self.node(op_type, inputs, scope, 1, **attrs)[0]

    def batch_dim(self, out_shape, in_shape) -> list:
        """A target shape for Reshape/Expand whose first entry follows the input's batch size."""
        shape = [int(v) for v in out_shape]
        if self.dynamic and shape and in_shape and shape[0] == in_shape[0] == self.batch:
            shape[0] = 0
        return shape

    def reduce(self, op_type, x, axes, keepdims, scope) -> str:
        axes_as_input = op_type == "ReduceSum" or self.opset >= 18
        if axes is None:
            return self.one(op_type, [x], scope, keepdims=int(keepdims))
        if axes_as_input:
            return self.one(op_type, [x, self.i64(list(axes), "axes")], scope, keepdims=int(keepdims))
        return self.one(op_type, [x], scope, axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x, axes, scope) -> str:
        return self.one("Unsqueeze", [x, self.i64(axes, "axes")], scope)

    def squeeze(self, x, axes, scope) -> str:
        return self.one("Squeeze", [x, self.i64(axes, "axes")], scope)


class ExportError(NotImplementedError):
    """A model that cannot be written as ONNX exactly (an op or a setting ONNX cannot express)."""


# ---- emitters: one per Function class; each returns one ONNX name per output (None: not emitted) --

def _unbatched_wrap(b, x, unbatched, scope):
    return b.unsqueeze(x, [0], scope) if unbatched else x


def _unbatched_unwrap(b, y, unbatched, scope):
    return b.squeeze(y, [0], scope) if unbatched else y


def _emit_conv(b, c, v):
    x, w, bias, stride, pads, dil, groups, _algo, unbatched = c.args
    xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
    y = b.one("Conv", [xi, v(w)] + ([v(bias)] if bias is not None else []), c.scope,
              kernel_shape=list(w.shape[2:]), strides=list(stride), dilations=list(dil), group=int(groups),
              pads=[p[0] for p in pads] + [p[1] for p in pads])
    return [_unbatched_unwrap(b, y, unbatched, c.scope)]


def _emit_conv_transpose(b, c, v):
    x, w, bias, stride, pads, out_pad, dil, groups, _algo, unbatched = c.args
    xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
    y = b.one("ConvTranspose", [xi, v(w)] + ([v(bias)] if bias is not None else []), c.scope,
              kernel_shape=list(w.shape[2:]), strides=list(stride), dilations=list(dil), group=int(groups),
              pads=[p[0] for p in pads] + [p[1] for p in pads], output_padding=list(out_pad))
    return [_unbatched_unwrap(b, y, unbatched, c.scope)]


def _emit_linear(b, c, v):
    x, w, bias = c.args
    if x.ndim == 2:
        return [b.one("Gemm", [v(x), v(w)] + ([v(bias)] if bias is not None else []), c.scope, transB=1)]
    wt = b.one("Transpose", [v(w)], c.scope, perm=[1, 0])
    y = b.one("MatMul", [v(x), wt], c.scope)
    return [b.one("Add", [y, v(bias)], c.scope) if bias is not None else y]


def _emit_max_pool(b, c, v):
    x, D, k, s, p, d, ceil = c.args
    unbatched = x.ndim == D + 1
    xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p) * 2, dilations=list(d), ceil_mode=int(ceil))
    y, flat = b.node("MaxPool", [xi], c.scope, 2, **attrs)
    plane = int(np.prod(x.shape[-D:]))
    # torch's indices are offsets inside each (n, c) plane, ONNX's over the whole tensor.
    local = b.one("Mod", [flat, b.i64(plane, "plane")], c.scope)
    idx_out = c.outs[1]
    b.flat_indices[id(idx_out)] = b.flat_indices[id(idx_out._array)] = (flat, xi, attrs, tuple(x.shape[-D:]))
    return [_unbatched_unwrap(b, y, unbatched, c.scope), _unbatched_unwrap(b, local, unbatched, c.scope)]


def _emit_avg_pool(b, c, v):
    x, D, k, s, p, ceil, include, divisor = c.args
    if divisor is not None:
        raise ExportError("avg_pool with divisor_override has no ONNX equivalent")
    unbatched = x.ndim == D + 1
    xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
    y = b.one("AveragePool", [xi], c.scope, kernel_shape=list(k), strides=list(s), pads=list(p) * 2,
              ceil_mode=int(ceil), count_include_pad=int(include))
    return [_unbatched_unwrap(b, y, unbatched, c.scope)]


def _emit_adaptive(kind):
    def emit(b, c, v):
        x, D, _output_size = c.args
        unbatched = x.ndim == D + 1
        spatial = tuple(x.shape[-D:])
        out = tuple(c.outs[0].shape[-D:])  # the traced call already resolved None entries
        if kind == "max" and c.outs[1] is not None and id(c.outs[1]) in b.names_needed:
            raise ExportError("adaptive_max_pool with return_indices has no ONNX equivalent")
        xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
        if all(o == 1 for o in out):
            y = b.one("GlobalMaxPool" if kind == "max" else "GlobalAveragePool", [xi], c.scope)
        elif tuple(out) == spatial:
            y = b.one("Identity", [xi], c.scope)
        elif all(i % o == 0 for i, o in zip(spatial, out)):
            k = [i // o for i, o in zip(spatial, out)]
            y = b.one("MaxPool" if kind == "max" else "AveragePool", [xi], c.scope, kernel_shape=k, strides=k)
        elif kind == "avg":
            y = _adaptive_avg_matmul(b, xi, spatial, out, c.scope, x.dtype)
        else:
            raise ExportError(f"adaptive_max_pool from {spatial} to {tuple(out)}: ONNX has no adaptive pooling "
                              "and the sizes do not divide evenly")
        y = _unbatched_unwrap(b, y, unbatched, c.scope)
        return [y, None] if kind == "max" else [y]
    return emit


def _adaptive_avg_matmul(b, x, spatial, out, scope, dtype):
    """Adaptive average pooling as one averaging matrix per spatial axis (window
    [floor(o*L/O), ceil((o+1)*L/O)), as torch): exact for any sizes, ONNX has no such op."""
    rank = 2 + len(spatial)
    y = x
    for i, (L, O) in enumerate(zip(spatial, out)):
        if L == O:
            continue
        m = np.zeros((L, O), dtype)
        for o in range(O):
            lo, hi = (o * L) // O, -(-((o + 1) * L) // O)
            m[lo:hi, o] = 1.0 / (hi - lo)
        axis = 2 + i
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        if axis != rank - 1:
            y = b.one("Transpose", [y], scope, perm=perm)
        y = b.one("MatMul", [y, b.const(m, "adaptive_avg")], scope)
        if axis != rank - 1:
            y = b.one("Transpose", [y], scope, perm=perm)
    return y


def _emit_max_unpool(b, c, v):
    x, idx, D, size = c.args
    src = b.flat_indices.get(id(idx))
    if src is None or tuple(size) != src[3]:
        raise ExportError("max_unpool can be exported only with the indices of a max_pool of the same input size")
    flat, pool_in, attrs, _ = src
    unbatched = x.ndim == D + 1
    xi = _unbatched_wrap(b, v(x), unbatched, c.scope)
    shape = b.one("Shape", [pool_in], c.scope)
    y = b.one("MaxUnpool", [xi, flat, shape], c.scope, kernel_shape=attrs["kernel_shape"],
              strides=attrs["strides"], pads=attrs["pads"])
    return [_unbatched_unwrap(b, y, unbatched, c.scope)]


def _ones(b, n, dtype, hint):
    return b.const(np.ones(n, dtype), hint)


def _zeros(b, n, dtype, hint):
    return b.const(np.zeros(n, dtype), hint)


def _emit_batch_norm(b, c, v):
    x, w, bias, rm, rv, training, _momentum, eps = c.args
    if training or rm is None or rv is None:
        raise ExportError("batch_norm with batch statistics (training mode or no running statistics) cannot be "
                          "exported; call model.eval() and keep track_running_stats=True")
    C = x.shape[1]
    scale = v(w) if w is not None else _ones(b, C, x.dtype, "bn_scale")
    shift = v(bias) if bias is not None else _zeros(b, C, x.dtype, "bn_bias")
    return [b.one("BatchNormalization", [v(x), scale, shift, v(rm), v(rv)], c.scope, epsilon=float(eps))]


def _emit_group_norm(b, c, v):
    x, w, bias, groups, eps, _rm, _rv, _mom, instance = c.args
    C = x.shape[1]
    if instance:
        scale = v(w) if w is not None else _ones(b, C, x.dtype, "in_scale")
        shift = v(bias) if bias is not None else _zeros(b, C, x.dtype, "in_bias")
        return [b.one("InstanceNormalization", [v(x), scale, shift], c.scope, epsilon=float(eps))]
    # Instance-normalise (N, groups, C/groups * spatial), reshape back, then the per-channel affine:
    # exact at every opset (GroupNormalization-18 scales per group, not per channel).
    grouped = b.one("Reshape", [v(x), b.i64(b.batch_dim([x.shape[0], groups, -1], x.shape))], c.scope)
    normed = b.one("InstanceNormalization", [grouped, _ones(b, groups, x.dtype, "gn_one"),
                                             _zeros(b, groups, x.dtype, "gn_zero")], c.scope, epsilon=float(eps))
    y = b.one("Reshape", [normed, b.one("Shape", [v(x)], c.scope)], c.scope)
    bshape = b.i64([C] + [1] * (x.ndim - 2))
    if w is not None:
        y = b.one("Mul", [y, b.one("Reshape", [v(w), bshape], c.scope)], c.scope)
    if bias is not None:
        y = b.one("Add", [y, b.one("Reshape", [v(bias), bshape], c.scope)], c.scope)
    return [y]


def _emit_layer_norm(b, c, v):
    x, w, bias, nd, eps = c.args
    shape = x.shape[x.ndim - nd:]
    if b.opset >= 17:
        scale = v(w) if w is not None else _ones(b, shape, x.dtype, "ln_scale")
        ins = [v(x), scale] + ([v(bias)] if bias is not None else [])
        return [b.one("LayerNormalization", ins, c.scope, axis=-nd, epsilon=float(eps))]
    axes = list(range(x.ndim - nd, x.ndim))
    mean = b.reduce("ReduceMean", v(x), axes, True, c.scope)
    d = b.one("Sub", [v(x), mean], c.scope)
    var = b.reduce("ReduceMean", b.one("Mul", [d, d], c.scope), axes, True, c.scope)
    std = b.one("Sqrt", [b.one("Add", [var, b.const(np.array(eps, x.dtype), "eps")], c.scope)], c.scope)
    y = b.one("Div", [d, std], c.scope)
    if w is not None:
        y = b.one("Mul", [y, v(w)], c.scope)
    if bias is not None:
        y = b.one("Add", [y, v(bias)], c.scope)
    return [y]


def _emit_lrn(b, c, v):
    x, size, alpha, beta, k = c.args
    attrs = dict(size=int(size), alpha=float(alpha), beta=float(beta), bias=float(k))
    if size % 2:
        return [b.one("LRN", [v(x)], c.scope, **attrs)]
    # ONNX's even window sits one channel later than torch's and onnxruntime runs odd sizes only:
    # average the squares over torch's window (c - size/2 .. c + size/2 - 1) with a 3-D pool.
    r = x.ndim
    sq = b.unsqueeze(b.one("Mul", [v(x), v(x)], c.scope), [1], c.scope)
    begin = [0, 0, size // 2] + [0] * (r - 2)
    end = [0, 0, (size - 1) // 2] + [0] * (r - 2)
    sq = b.one("Pad", [sq, b.i64(begin + end, "pads")], c.scope)
    avg = b.squeeze(b.one("AveragePool", [sq], c.scope, kernel_shape=[size] + [1] * (r - 2)), [1], c.scope)
    den = b.one("Add", [b.one("Mul", [avg, b.const(np.array(alpha, x.dtype), "alpha")], c.scope),
                        b.const(np.array(k, x.dtype), "k")], c.scope)
    den = b.one("Pow", [den, b.const(np.array(beta, x.dtype), "beta")], c.scope)
    return [b.one("Div", [v(x), den], c.scope)]


def _emit_simple(op_type, **fixed):
    def emit(b, c, v):
        return [b.one(op_type, [v(c.args[0])], c.scope, **fixed)]
    return emit


def _emit_alpha(op_type):
    def emit(b, c, v):
        return [b.one(op_type, [v(c.args[0])], c.scope, alpha=float(c.args[1]))]
    return emit


def _emit_silu(b, c, v):
    x = v(c.args[0])
    return [b.one("Mul", [x, b.one("Sigmoid", [x], c.scope)], c.scope)]


def _emit_softmax(b, c, v):
    x, dim, log = c.args
    return [b.one("LogSoftmax" if log else "Softmax", [v(x)], c.scope, axis=int(dim))]


def _emit_dropout(b, c, v):
    raise ExportError("dropout is active (the model is in training mode); export runs the model in eval mode, "
                      "so a dropout call with training=True in forward cannot be exported")


def _emit_binary(op_type):
    def emit(b, c, v):
        return [b.one(op_type, [v(c.args[0]), v(c.args[1])], c.scope)]
    return emit


def _emit_pow(b, c, v):
    x, p = c.args
    if p == 0.5:
        return [b.one("Sqrt", [v(x)], c.scope)]
    return [b.one("Pow", [v(x), b.const(np.array(p, x.dtype), "exponent")], c.scope)]


def _emit_clamp(b, c, v):
    x, lo, hi = c.args
    ins = [v(x), b.const(np.array(lo, x.dtype), "min") if lo is not None else "",
           b.const(np.array(hi, x.dtype), "max") if hi is not None else ""]
    while ins[-1] == "":
        ins.pop()
    return [b.one("Clip", ins, c.scope)]


def _emit_reduce(op_type):
    def emit(b, c, v):
        x, axes, keep = c.args
        axes = None if axes is None else [a % x.ndim for a in axes]
        return [b.reduce(op_type, v(x), axes, keep, c.scope)]
    return emit


def _emit_max(b, c, v):
    x, dim, keep = c.args
    return [b.reduce("ReduceMax", v(x), None if dim is None else [dim % x.ndim], keep, c.scope)]


def _emit_reshape(b, c, v):
    x = c.args[0]
    target = b.batch_dim(c.outs[0].shape, x.shape)
    if target[:1] == [0] and len(target) == 2:
        target = [0, -1]
    return [b.one("Reshape", [v(x), b.i64(target)], c.scope)]


def _emit_permute(b, c, v):
    return [b.one("Transpose", [v(c.args[0])], c.scope, perm=[int(p) for p in c.args[1]])]


def _emit_expand(b, c, v):
    x, shape = c.args
    target = [int(s) for s in shape]
    src = (1,) * (len(target) - x.ndim) + tuple(x.shape)
    if b.dynamic and target and target[0] == src[0] == b.batch:
        target[0] = 1  # Expand broadcasts: 1 keeps the input's (batch) size
    return [b.one("Expand", [v(x), b.i64(target)], c.scope)]


def _emit_getitem(b, c, v):
    x, index = c.args
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        at = index.index(Ellipsis)
        fill = x.ndim - (len(index) - 1)
        index = index[:at] + (slice(None),) * fill + index[at + 1:]
    arrays = [i for i, ix in enumerate(index) if isinstance(ix, (np.ndarray, list))]
    if any(ix is None for ix in index) or len(index) > x.ndim:
        raise ExportError(f"indexing with {index!r} (new axes) is not supported by the exporter")
    y = v(x)
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for axis, ix in enumerate(index):
        dim = x.shape[axis]
        if isinstance(ix, slice):
            if ix == slice(None):
                continue
            st, en, sp = ix.indices(dim)
            if sp < 0 and en < 0:
                en = _INT64_MIN
            starts.append(st), ends.append(en), axes.append(axis), steps.append(sp)
        elif isinstance(ix, (int, np.integer)):
            i = int(ix) % dim
            starts.append(i), ends.append(i + 1), axes.append(axis), steps.append(1)
            squeeze.append(axis)
        elif axis in arrays:
            continue
        else:
            raise ExportError(f"indexing with {type(ix).__name__} is not supported by the exporter")
    if len(arrays) > 1:
        raise ExportError("indexing with more than one index array is not supported by the exporter")
    if axes:
        y = b.one("Slice", [y, b.i64(starts), b.i64(ends), b.i64(axes), b.i64(steps)], c.scope)
    if arrays:
        a = arrays[0]
        idx = np.asarray(index[a])
        if idx.dtype == bool:
            raise ExportError("boolean-mask indexing is not supported by the exporter")
        y = b.one("Gather", [y, b.i64(idx, "indices")], c.scope, axis=a)
        squeeze = [s if s < a else s + idx.ndim - 1 for s in squeeze]
    if squeeze:
        y = b.squeeze(y, squeeze, c.scope)
    return [y]


def _emit_cast(b, c, v):
    x, dtype = c.args
    to = b.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return [b.one("Cast", [v(x)], c.scope, to=int(to))]


def _emit_cat(b, c, v):
    dim, *arrays = c.args
    return [b.one("Concat", [v(a) for a in arrays], c.scope, axis=int(dim))]


def _emit_stack(b, c, v):
    dim, *arrays = c.args
    parts = [b.unsqueeze(v(a), [int(dim)], c.scope) for a in arrays]
    return [b.one("Concat", parts, c.scope, axis=int(dim))]


def _emit_where(b, c, v):
    cond, x, y = c.args
    return [b.one("Where", [b.const(np.asarray(cond, bool), "condition"), v(x), v(y)], c.scope)]


def _emit_axis_gather(b, c, v):
    x, plan, fill = c.args
    y = v(x)
    shape = list(x.shape)
    for axis, idx in plan:
        y = b.one("Gather", [y, b.i64(np.where(idx < 0, 0, idx), "indices")], c.scope, axis=int(axis))
        shape[axis] = len(idx)
        if (idx < 0).any():
            mshape = [1] * len(shape)
            mshape[axis] = len(idx)
            mask = b.const((idx < 0).reshape(mshape), "pad_mask")
            y = b.one("Where", [mask, b.const(np.array(fill, x.dtype), "fill"), y], c.scope)
    return [y]


# Emitters by the ``onnx_op`` name each Function class declares beside its forward/backward.
from ._export_modern import register as _register_modern  # noqa: E402

_EMITTERS = {
    "conv": _emit_conv, "conv_transpose": _emit_conv_transpose, "linear": _emit_linear,
    "max_pool": _emit_max_pool, "avg_pool": _emit_avg_pool,
    "adaptive_avg_pool": _emit_adaptive("avg"), "adaptive_max_pool": _emit_adaptive("max"),
    "max_unpool": _emit_max_unpool,
    "batch_norm": _emit_batch_norm, "group_norm": _emit_group_norm, "layer_norm": _emit_layer_norm,
    "local_response_norm": _emit_lrn,
    "relu": _emit_simple("Relu"), "leaky_relu": _emit_alpha("LeakyRelu"), "elu": _emit_alpha("Elu"),
    "sigmoid": _emit_simple("Sigmoid"), "tanh": _emit_simple("Tanh"), "silu": _emit_silu,
    "softmax": _emit_softmax, "dropout": _emit_dropout,
    "add": _emit_binary("Add"), "sub": _emit_binary("Sub"), "mul": _emit_binary("Mul"),
    "div": _emit_binary("Div"), "matmul": _emit_binary("MatMul"),
    "neg": _emit_simple("Neg"), "exp": _emit_simple("Exp"), "log": _emit_simple("Log"),
    "abs": _emit_simple("Abs"), "clone": _emit_simple("Identity"), "pow_scalar": _emit_pow,
    "clamp": _emit_clamp, "sum": _emit_reduce("ReduceSum"), "mean": _emit_reduce("ReduceMean"),
    "max": _emit_max, "reshape": _emit_reshape, "permute": _emit_permute, "expand": _emit_expand,
    "getitem": _emit_getitem, "cast": _emit_cast, "cat": _emit_cat, "stack": _emit_stack,
    "where": _emit_where, "axis_gather": _emit_axis_gather,
}
_register_modern(_EMITTERS)


# ---- the export ------------------------------------------------------------------------------

def _as_inputs(example_input) -> list:
    items = list(example_input) if isinstance(example_input, (tuple, list)) else [example_input]
    out = []
    for i, x in enumerate(items):
        a = x._array if isinstance(x, Tensor) else np.asarray(x)
        if a.dtype.kind != "f":
            raise TypeError(f"example_input[{i}]: expected a float array or Tensor, got dtype {a.dtype}")
        out.append(Tensor(np.array(a, copy=True), requires_grad=True))
    return out


def _flatten_outputs(out) -> list:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        flat = []
        for o in out:
            flat.extend(_flatten_outputs(o))
        return flat
    if isinstance(out, dict):
        return _flatten_outputs(list(out.values()))
    raise ExportError(f"the model returned {type(out).__name__}; export needs Tensors (or tuples of them)")


def _trace(model, inputs):
    calls, scope = [], []
    handles = []

    def enter(name):
        def hook(module, args):
            scope.append(name)
        return hook

    def leave(module, args, out):
        scope.pop()

    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(enter(name)))
        handles.append(mod.register_forward_hook(leave))
    try:
        with _LOCK, enable_grad(), _recording(calls, scope):
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls, _flatten_outputs(out)


def build_model(model, example_input, opset: int = DEFAULT_OPSET, input_names=None, output_names=None,
                dynamic_batch: bool = True):
    """(ONNX ModelProto of ``model`` traced on ``example_input``, the model's outputs as arrays);
    see ``export`` for the arguments."""
    import onnx

    if not 13 <= int(opset) <= 20:
        raise ValueError(f"opset: expected 13 to 20, got {opset}")
    opset = int(opset)
    inputs = _as_inputs(example_input)
    was_training = model.training
    model.eval()
    try:
        calls, outputs = _trace(model, inputs)
    finally:
        model.train(was_training)
    input_names = list(input_names) if input_names else (["input"] if len(inputs) == 1 else
                                                          [f"input{i}" for i in range(len(inputs))])
    output_names = list(output_names) if output_names else (["output"] if len(outputs) == 1 else
                                                             [f"output{i}" for i in range(len(outputs))])
    if len(input_names) != len(inputs):
        raise ValueError(f"input_names: expected {len(inputs)} names, got {len(input_names)}")
    if len(output_names) != len(outputs):
        raise ValueError(f"output_names: expected {len(outputs)} names (the model returns {len(outputs)}), "
                         f"got {len(output_names)}")
    batch = inputs[0].shape[0] if inputs[0].ndim else 1
    b = _Builder(opset, dynamic_batch, batch)
    for name, t in model.named_parameters():
        b.state[id(t)] = b.state[id(t._array)] = name
    for name, t in model.named_buffers():
        b.state[id(t)] = b.state[id(t._array)] = name
    for name, t in zip(input_names, inputs):
        b.names[id(t)] = b.names[id(t._array)] = name
        b.used.add(name)
    b.used.update(output_names)

    # Which calls the outputs depend on (walk back from the outputs through argument ids).
    producer = {}
    for i, c in enumerate(calls):
        for o in c.outs:
            if isinstance(o, Tensor):
                producer[id(o)] = producer[id(o._array)] = i
    needed, stack = set(), [producer[id(o)] for o in outputs if id(o) in producer]
    needed_values = {id(o) for o in outputs}
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        for a in calls[i].args:
            for obj in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(obj, (Tensor, np.ndarray)):
                    key = id(obj)
                    needed_values.add(key)
                    if isinstance(obj, Tensor):
                        needed_values.add(id(obj._array))
                    j = producer.get(key, producer.get(id(obj._array)) if isinstance(obj, Tensor) else None)
                    if j is not None:
                        stack.append(j)
    b.names_needed = needed_values

    for i, c in enumerate(calls):
        if i not in needed:
            continue
        emitter = _EMITTERS.get(c.cls.onnx_op)
        if emitter is None:
            raise ExportError(f"cannot export the op {c.cls.__name__} (called in '{c.scope or 'forward'}'); "
                              f"exportable ops: {', '.join(sorted(_EMITTERS))}")
        names = emitter(b, c, b.value)
        for o, n in zip(c.outs, names):
            if n is not None and isinstance(o, Tensor):
                b.names[id(o)] = b.names[id(o._array)] = n
                b.keep.append(o)

    # Outputs get their requested names through Identity nodes (one value may be two outputs).
    graph_outputs = []
    for name, o in zip(output_names, outputs):
        src = b.value(o)
        b.nodes.append(onnx.helper.make_node("Identity", [src], [name], name=b.unique(f"{name}/Identity")))
        dims = list(o.shape)
        if dynamic_batch and dims and dims[0] == batch:
            dims[0] = "N"
        graph_outputs.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(o.dtype), dims))
    graph_inputs = []
    for name, t in zip(input_names, inputs):
        dims = list(t.shape)
        if dynamic_batch and dims:
            dims[0] = "N"
        graph_inputs.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(t.dtype), dims))
    graph = onnx.helper.make_graph(b.nodes, type(model).__name__, graph_inputs, graph_outputs, b.inits)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="cnnfast", producer_version=_version())
    proto.ir_version = 8 if opset <= 18 else 9  # what onnxruntime 1.16+ reads for these opsets
    onnx.checker.check_model(proto)
    return proto, [o._array.copy() for o in outputs]


def _version() -> str:
    from .. import __version__
    return __version__


def _verify(proto, model, inputs, expected, dynamic_batch, rtol):
    from ._importer import OnnxModule
    from ..autograd import no_grad

    loaded = OnnxModule(proto, "<exported>")

    def compare(got, want, what):
        got = got if isinstance(got, (tuple, list)) else (got,)
        for i, (g, w) in enumerate(zip(got, want)):
            g = g._array if isinstance(g, Tensor) else np.asarray(g)
            scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-6)
            if g.shape != w.shape or not np.allclose(g, w, rtol=0, atol=rtol * scale):
                raise ExportError(f"export check failed: the ONNX graph's output {i} differs from the model's on "
                                  f"{what} (shape {g.shape} vs {w.shape}); the model computes something outside "
                                  f"cnnfast's differentiable ops{'; try dynamic_batch=False' if dynamic_batch else ''}")

    with no_grad():
        compare(loaded(*[t._array for t in inputs]), expected, "the example input")
        # A second, independent input (one more sample with a dynamic batch) catches values that
        # forward computed from the input outside cnnfast's ops, which the trace froze as constants.
        rng = np.random.default_rng(0)
        other = []
        for t in inputs:
            shape = list(t.shape)
            if dynamic_batch and shape:
                shape[0] += 1
            mean, std = float(t._array.mean()), float(t._array.std()) or 1.0
            other.append((rng.standard_normal(shape) * std + mean).astype(t.dtype))
        was = model.training
        model.eval()
        what = "a second random input" + (f" (batch {shape[0]})" if dynamic_batch else "")
        try:
            want = [o._array for o in _flatten_outputs(model(*[Tensor(a) for a in other]))]
            got = loaded(*other)
        except (ValueError, TypeError, RuntimeError) as exc:
            hint = "; the first dimension is not a batch: pass dynamic_batch=False" if dynamic_batch else ""
            raise ExportError(f"export check failed on {what}: {exc}{hint}") from exc
        finally:
            model.train(was)
        compare(got, want, what)


def export(model, example_input, path, *, opset: int = DEFAULT_OPSET, input_names=None, output_names=None,
           dynamic_batch: bool = True, verify: bool = True, rtol: float = 1e-4):
    """Write ``model`` as an ONNX file that onnxruntime runs with the same outputs.

    model: a cnnfast ``nn.Module`` (run once in eval mode on the example; its mode is restored).
    example_input: an array/Tensor (N, C, H, W), or a tuple of them for several inputs.
    path: the file to write (str or PathLike); opset: 13..20 (17 by default).
    dynamic_batch: declare the first input dimension as "N" (reshapes follow the batch size).
    verify: load the written graph back with ``cnnfast.onnx.load`` and compare outputs on the
    example and on a second random input (one sample more with a dynamic batch); ExportError
    on a mismatch, and no file is written.
    Returns the ``onnx.ModelProto`` written. Raises ExportError (a NotImplementedError) naming
    any op that ONNX cannot express.
    """
    import onnx

    proto, expected = build_model(model, example_input, opset, input_names, output_names, dynamic_batch)
    if verify:
        _verify(proto, model, _as_inputs(example_input), expected, dynamic_batch, rtol)
    path = os.fspath(path)
    tmp = path + ".tmp"
    onnx.save(proto, tmp)
    os.replace(tmp, path)
    return proto
