"""One converter per ONNX op type: ONNX semantics (opsets 13-20) on cnnfast's functional API.

A converter is registered with ``@op("OpType")`` and is called once per node at load
time with a ``NodeSpec`` (attributes, constant inputs known at load, opset). It checks
what can be checked without data (unsupported attribute values fail here, at load,
naming the node) and returns ``run(ins, module) -> list of outputs``.

Runtime values are either ``cnnfast.Tensor`` (activations and parameters: every float
path goes through Tensor/functional ops, so autograd works and an imported model can
be fine-tuned) or NumPy arrays (shape arithmetic: Shape, Gather on shapes, Concat of
ints...). ``ins[i]`` is None for an absent optional input.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..autograd import Function
from ..functional.pooling import _MaxUnpool
from ..tensor import Tensor, cat

CONVERTERS: dict = {}


class UnsupportedOnnxError(NotImplementedError):
    """An ONNX op, attribute value or input form that cnnfast does not implement."""


def op(*names):
    def deco(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def supported_ops() -> list:
    return sorted(CONVERTERS)


# ---- value helpers --------------------------------------------------------------------------

def is_tensor(v) -> bool:
    return isinstance(v, Tensor)


def arr(v) -> np.ndarray:
    """The NumPy value of a runtime value (no copy)."""
    return v._array if isinstance(v, Tensor) else np.asarray(v)


def ten(v, like=None) -> Tensor:
    """A Tensor for a runtime value; constants become Tensors that do not require grad."""
    if isinstance(v, Tensor):
        return v
    a = np.asarray(v)
    if like is not None and a.dtype != like.dtype and a.dtype.kind in "fiub" and like.dtype.kind == "f":
        a = a.astype(like.dtype)
    return Tensor._wrap(a)


def ints(v) -> list:
    return [int(i) for i in arr(v).reshape(-1)]


# ---- differentiable helpers ONNX needs beyond cnnfast.functional -----------------------------

def _gather_np(x: np.ndarray, plan, fill) -> np.ndarray:
    y = x
    for axis, idx in plan:
        missing = idx < 0
        y = np.take(y, np.where(missing, 0, idx), axis=axis)
        if missing.any():
            sel = [slice(None)] * y.ndim
            sel[axis] = missing
            y[tuple(sel)] = fill
    return np.ascontiguousarray(y)


class _AxisGather(Function):
    """y = x gathered along several axes by index vectors; -1 in an index vector writes
    ``fill``. Pad (all modes, negative pads crop) and nearest Resize are this gather;
    the backward scatters (adds) the gradient back, so repeated sources sum."""
    onnx_op = "axis_gather"

    @staticmethod
    def forward(ctx, x, plan, fill):
        ctx.shape, ctx.plan = x.shape, plan
        return _gather_np(x, plan, fill)

    @staticmethod
    def backward(ctx, g):
        shapes = [ctx.shape]
        for axis, idx in ctx.plan[:-1]:
            s = list(shapes[-1])
            s[axis] = len(idx)
            shapes.append(tuple(s))
        for (axis, idx), shape in zip(reversed(ctx.plan), reversed(shapes)):
            out = np.zeros(shape, g.dtype)
            keep = idx >= 0
            g_kept = np.compress(keep, g, axis=axis)
            np.add.at(np.moveaxis(out, axis, 0), idx[keep], np.moveaxis(g_kept, axis, 0))
            g = out
        return g, None, None


def gather_axes(x, plan, fill=0.0):
    """plan: [(axis, int64 index vector)] with -1 = fill. Differentiable for Tensors."""
    plan = [(a, np.asarray(i, np.int64)) for a, i in plan]
    if not plan:
        return x
    if is_tensor(x):
        return _AxisGather.apply(x, plan, fill)
    return _gather_np(arr(x), plan, fill)


def pad_index(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every output position of a padded axis (-1: the constant)."""
    j = np.arange(-before, length + after)
    if mode == "constant":
        return np.where((j >= 0) & (j < length), j, -1)
    if mode == "edge":
        return np.clip(j, 0, length - 1)
    if mode == "wrap":
        return np.mod(j, length)
    if mode == "reflect":
        if length == 1:
            return np.zeros_like(j)
        period = 2 * (length - 1)
        m = np.mod(j, period)
        return np.where(m < length, m, period - m)
    raise ValueError(mode)


# ---- node specification (what a converter sees at load time) ------------------------------

class NodeSpec:
    def __init__(self, node, attrs, opset, consts, used, compile_graph=None):
        self.node = node
        self.op_type = node.op_type
        self.name = node.name or f"{node.op_type}_{'_'.join(node.output)}"
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = attrs
        self.opset = opset
        self._consts = consts
        self._used = used
        self.compile_graph = compile_graph

    def attr(self, name, default=None):
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def const(self, i):
        """Input i's value when it is known at load time (initializer or Constant), else None."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        return self._consts.get(self.inputs[i])

    def has_input(self, i) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    types: dict = {}

    def input_dtype(self, i):
        """Input i's element dtype when the graph declares it or shape inference finds it, else None."""
        if not self.has_input(i):
            return None
        return self.types.get(self.inputs[i])

    def require_float_input(self, i, what="input"):
        dt = self.input_dtype(i)
        if dt is not None and dt.kind != "f":
            self.fail(f"{what} {i} ('{self.inputs[i]}') has dtype {dt}; only float32 and float64 are supported")

    def output_used(self, i) -> bool:
        return i < len(self.outputs) and bool(self.outputs[i]) and self.outputs[i] in self._used

    def fail(self, msg):
        raise UnsupportedOnnxError(f"ONNX op '{self.op_type}' at node '{self.name}': {msg}")

    def only_first_output(self):
        for i in range(1, len(self.outputs)):
            if self.output_used(i):
                self.fail(f"output {i} ('{self.outputs[i]}') is used, but only the first output is supported")


# ---- convolution --------------------------------------------------------------------------

def _auto_pads(spec, in_sizes, kernel, strides, dilations):
    """Explicit (start, end) pairs from auto_pad / pads, as ONNX defines them for Conv and pools."""
    n = len(in_sizes)
    mode = spec.attr("auto_pad", "NOTSET")
    if mode == "NOTSET":
        pads = spec.attr("pads") or [0] * (2 * n)
        return [(int(pads[i]), int(pads[i + n])) for i in range(n)]
    if mode == "VALID":
        return [(0, 0)] * n
    pairs = []
    for i, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-i // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - i, 0)
        small, big = total // 2, total - total // 2
        pairs.append((small, big) if mode == "SAME_UPPER" else (big, small))
    return pairs


def _check_auto_pad(spec):
    mode = spec.attr("auto_pad", "NOTSET")
    if mode not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        spec.fail(f"auto_pad '{mode}' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")


def _spatial_attr(spec, name, n, default):
    v = spec.attr(name)
    return [int(a) for a in v] if v else [default] * n


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _kernel_rank(spec):
    w = spec.const(1)
    ks = spec.attr("kernel_shape")
    n = len(ks) if ks else (w.ndim - 2 if w is not None else None)
    if n is not None and n not in (1, 2, 3):
        spec.fail(f"{n}-D kernels are not supported (1-D, 2-D and 3-D are)")


@op("Conv")
def _conv(spec):
    _check_auto_pad(spec)
    _kernel_rank(spec)
    group = int(spec.attr("group", 1))

    def run(ins, m):
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        n = arr(w).ndim - 2
        k = arr(w).shape[2:]
        strides = _spatial_attr(spec, "strides", n, 1)
        dil = _spatial_attr(spec, "dilations", n, 1)
        pads = _auto_pads(spec, arr(x).shape[2:], k, strides, dil)
        return [_CONV[n](ten(x), ten(w), None if b is None else ten(b), strides, pads, dil, group)]
    return run


@op("ConvTranspose")
def _conv_transpose(spec):
    _check_auto_pad(spec)
    _kernel_rank(spec)
    group = int(spec.attr("group", 1))
    mode = spec.attr("auto_pad", "NOTSET")

    def run(ins, m):
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        n = arr(w).ndim - 2
        k = arr(w).shape[2:]
        in_sizes = arr(x).shape[2:]
        strides = _spatial_attr(spec, "strides", n, 1)
        dil = _spatial_attr(spec, "dilations", n, 1)
        out_pad = _spatial_attr(spec, "output_padding", n, 0)
        out_shape = spec.attr("output_shape")
        if out_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
            target = [int(v) for v in out_shape][-n:] if out_shape else [i * s for i, s in zip(in_sizes, strides)]
            pads, out_pad = [], list(out_pad)
            for i in range(n):
                total = strides[i] * (in_sizes[i] - 1) + out_pad[i] + (k[i] - 1) * dil[i] + 1 - target[i]
                if total < 0 and out_shape:  # a larger output than the kernel reaches: extra rows get the bias
                    out_pad[i] -= total
                total = max(total, 0)  # SAME without output_shape: never pads below the natural size
                small, big = total // 2, total - total // 2
                pads.append((small, big) if mode == "SAME_UPPER" else (big, small))
        elif mode == "VALID":
            pads = [(0, 0)] * n
        else:
            pads = _auto_pads(spec, in_sizes, k, strides, dil)
        return [_CONVT[n](ten(x), ten(w), None if b is None else ten(b), strides, pads, out_pad, group, dil)]
    return run


# ---- fully connected ---------------------------------------------------------------------

@op("Gemm")
def _gemm(spec):
    alpha, beta = float(spec.attr("alpha", 1.0)), float(spec.attr("beta", 1.0))
    ta, tb = int(spec.attr("transA", 0)), int(spec.attr("transB", 0))

    def run(ins, m):
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if not is_tensor(a) and not is_tensor(b) and not is_tensor(c):
            A = arr(a).T if ta else arr(a)
            B = arr(b).T if tb else arr(b)
            y = alpha * (A @ B)
            return [(y + beta * arr(c) if c is not None else y).astype(A.dtype)]
        a, b = ten(a), ten(b, a if is_tensor(a) else None)
        if ta:
            a = a.T
        w = b if tb else b.T  # linear takes (out, in)
        fused_bias = c is not None and beta == 1.0 and arr(c).ndim == 1 and arr(c).shape[0] == arr(w).shape[0]
        y = F.linear(a, w, ten(c, a) if fused_bias else None)
        if alpha != 1.0:
            y = y * alpha
        if c is not None and not fused_bias:
            y = y + (ten(c, a) * beta if beta != 1.0 else ten(c, a))
        return [y]
    return run


@op("MatMul")
def _matmul(spec):
    def run(ins, m):
        a, b = ins
        if not is_tensor(a) and not is_tensor(b):
            return [np.matmul(arr(a), arr(b))]
        a, b = ten(a, b if is_tensor(b) else None), ten(b, a if is_tensor(a) else None)
        if b.ndim == 2 and a.ndim >= 2:
            return [F.linear(a, b.T)]  # the C++ GEMM instead of NumPy's matmul
        return [a @ b]
    return run


# ---- normalisation -----------------------------------------------------------------------

@op("BatchNormalization")
def _batch_norm(spec):
    training_mode = bool(int(spec.attr("training_mode", 0)))
    if not training_mode:
        spec.only_first_output()
    eps = float(spec.attr("epsilon", 1e-5))
    onnx_momentum = float(spec.attr("momentum", 0.9))
    momentum = 1.0 - onnx_momentum  # ONNX weighs the running value, torch the batch

    def run(ins, m):
        x, scale, bias, mean, var = ins[:5]
        x = ten(x)
        if not training_mode:
            return [F.batch_norm(x, ten(mean, x), ten(var, x), ten(scale, x), ten(bias, x),
                                 training=m.training, momentum=momentum, eps=eps)]
        # training_mode=1: normalise with the batch statistics; the updated running statistics
        # are outputs (ONNX blends in the biased batch variance, where torch's running_var
        # takes the unbiased one), the inputs stay untouched.
        y = F.batch_norm(x, None, None, ten(scale, x), ten(bias, x), training=True, eps=eps)
        xa = arr(x).astype(np.float64)
        axes = (0,) + tuple(range(2, xa.ndim))
        dt = arr(x).dtype
        new_mean = np.asarray(arr(mean), np.float64) * onnx_momentum + xa.mean(axes) * (1 - onnx_momentum)
        new_var = np.asarray(arr(var), np.float64) * onnx_momentum + xa.var(axes) * (1 - onnx_momentum)
        return [y, new_mean.astype(dt), new_var.astype(dt)][:max(1, len(spec.outputs))]
    return run


@op("InstanceNormalization")
def _instance_norm(spec):
    eps = float(spec.attr("epsilon", 1e-5))

    def run(ins, m):
        x, scale, bias = ins
        x = ten(x)
        return [F.instance_norm(x, weight=ten(scale, x), bias=ten(bias, x), eps=eps)]
    return run


@op("GroupNormalization")
def _group_norm(spec):
    eps = float(spec.attr("epsilon", 1e-5))
    groups = spec.attr("num_groups")
    if groups is None:
        spec.fail("the num_groups attribute is required")
    groups = int(groups)
    if int(spec.attr("stash_type", 1)) != 1:
        spec.fail("stash_type other than 1 (float32 statistics) is not supported")

    def run(ins, m):
        x, scale, bias = ins
        x = ten(x)
        c = x.shape[1]
        scale, bias = ten(scale, x), ten(bias, x)
        if c % groups:
            raise ValueError(f"num_groups {groups} does not divide the {c} channels")
        if scale.shape == (groups,) and groups != c:
            # Opset 18-20: one scale and bias per group; spread them over the group's channels.
            per = c // groups
            scale = scale.reshape(groups, 1).expand(groups, per).reshape(c)
            bias = bias.reshape(groups, 1).expand(groups, per).reshape(c)
        return [F.group_norm(x, groups, scale, bias, eps)]
    return run


@op("LayerNormalization")
def _layer_norm(spec):
    axis = int(spec.attr("axis", -1))
    eps = float(spec.attr("epsilon", 1e-5))
    stats = spec.output_used(1) or spec.output_used(2)

    def run(ins, m):
        y = run_y(ins, m)
        if not stats:
            return y
        return y + list(layer_norm_stats(ins[0], axis % arr(ins[0]).ndim, eps))

    def run_y(ins, m):
        x = ten(ins[0])
        scale = ins[1]
        bias = ins[2] if len(ins) > 2 else None
        ax = axis % x.ndim
        shape = tuple(x.shape[ax:])
        scale = ten(scale, x)
        bias = None if bias is None else ten(bias, x)
        if scale.shape == shape and (bias is None or bias.shape == shape):
            return [F.layer_norm(x, shape, scale, bias, eps)]
        y = F.layer_norm(x, shape, None, None, eps) * scale
        return [y if bias is None else y + bias]
    return run


@op("LRN")
def _lrn(spec):
    size = spec.attr("size")
    if size is None:
        spec.fail("the size attribute is required")
    size = int(size)
    alpha, beta, bias = float(spec.attr("alpha", 1e-4)), float(spec.attr("beta", 0.75)), float(spec.attr("bias", 1.0))

    def run(ins, m):
        x = ten(ins[0])
        if size % 2:
            return [F.local_response_norm(x, size, alpha, beta, bias)]
        # ONNX centres an even window one channel later than torch's (c-size/2+1 .. c+size/2):
        # normalising the channel-reversed input and reversing back gives exactly that window.
        flip = (slice(None), slice(None, None, -1))
        return [F.local_response_norm(x[flip], size, alpha, beta, bias)[flip]]
    return run


# ---- pooling -----------------------------------------------------------------------------

def _pool_geometry(spec, x_shape):
    k = [int(v) for v in spec.attr("kernel_shape")]
    n = len(k)
    s = _spatial_attr(spec, "strides", n, 1)
    d = _spatial_attr(spec, "dilations", n, 1)
    in_sp = list(x_shape[2:])
    pads = _auto_pads(spec, in_sp, k, s, d)
    ceil = int(spec.attr("ceil_mode", 0))
    out = []
    for i in range(n):
        dk = (k[i] - 1) * d[i] + 1
        if spec.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_sp[i] // s[i])
        else:  # explicit pads, or VALID (zero pads; with ceil_mode a last partial window, as onnxruntime)
            span = in_sp[i] + pads[i][0] + pads[i][1] - dk
            o = (-(-span // s[i]) if ceil else span // s[i]) + 1
            # As torch and onnxruntime: the last window must start inside the input or the front pad.
            if ceil and (o - 1) * s[i] >= in_sp[i] + pads[i][0]:
                o -= 1
        out.append(o)
    return k, s, d, pads, out


def _native_pool_ok(k, s, d, pads, out, in_sp, ceil):
    """Whether cnnfast's torch-style pooling (symmetric padding <= k/2) gives exactly ONNX's windows."""
    for i in range(len(k)):
        p0, p1 = pads[i]
        if p0 != p1 or 2 * p0 > k[i]:
            return False
        dk = (k[i] - 1) * d[i] + 1
        span = in_sp[i] + 2 * p0 - dk
        o = (-(-span // s[i]) if ceil else span // s[i]) + 1
        if ceil and (o - 1) * s[i] >= in_sp[i] + p0:
            o -= 1
        if o != out[i]:
            return False
    return True


def _pool_pad_plan(k, s, d, pads, out, in_sp):
    """Pads (start, end), end possibly negative (a crop), so that unpadded floor-mode pooling of
    the padded input gives exactly ONNX's out windows."""
    plan = []
    for i in range(len(k)):
        dk = (k[i] - 1) * d[i] + 1
        end = (out[i] - 1) * s[i] + dk - in_sp[i] - pads[i][0]
        plan.append((pads[i][0], end))
    return plan


def _pad_spatial(x, plan, fill):
    return gather_axes(x, [(2 + i, pad_index(arr(x).shape[2 + i], b, e, "constant"))
                           for i, (b, e) in enumerate(plan) if b or e], fill)


_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool")
def _max_pool(spec):
    _check_auto_pad(spec)
    if not spec.attr("kernel_shape"):
        spec.fail("the kernel_shape attribute is required")
    if len(spec.attr("kernel_shape")) not in (1, 2, 3):
        spec.fail("only 1-D, 2-D and 3-D pooling is supported")
    # 8-bit integers are exact in float32: they are pooled there and cast back.
    small_int = spec.input_dtype(0) in (np.dtype(np.uint8), np.dtype(np.int8))
    if not small_int:
        spec.require_float_input(0)
    want_idx = spec.output_used(1)
    # storage_order=1: indices of the column-major (Fortran-order) layout of each plane, the
    # first spatial axis varying fastest.
    col_major = int(spec.attr("storage_order", 0))
    if col_major not in (0, 1):
        spec.fail(f"storage_order must be 0 or 1, got {col_major}")
    ceil = int(spec.attr("ceil_mode", 0))

    def run(ins, m):
        int_dtype = np.asarray(arr(ins[0])).dtype if small_int else None
        x = ten(np.asarray(arr(ins[0]), np.float32)) if small_int else ten(ins[0])
        in_sp = list(x.shape[2:])
        k, s, d, pads, out = _pool_geometry(spec, x.shape)
        n = len(k)
        if _native_pool_ok(k, s, d, pads, out, in_sp, ceil):
            r = _MAXPOOL[n](x, k, s, [p[0] for p in pads], d, bool(ceil), return_indices=want_idx)
            padded, plan = in_sp, None
        else:
            plan = _pool_pad_plan(k, s, d, pads, out, in_sp)
            fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
            xp = _pad_spatial(x, plan, fill)
            padded = list(xp.shape[2:])
            r = _MAXPOOL[n](xp, k, s, 0, d, False, return_indices=want_idx)
        if small_int:
            r = (arr(r[0]).astype(int_dtype), r[1]) if want_idx else arr(r).astype(int_dtype)
        if not want_idx:
            return [r]
        y, idx = r
        idx = arr(idx)
        if plan is not None or col_major:  # indices into the padded plane -> the input's plane
            coords = np.unravel_index(idx, padded)
            if plan is not None:
                coords = [c - b for c, (b, _) in zip(coords, plan)]
            idx = np.ravel_multi_index(coords, in_sp, mode="clip", order="F" if col_major else "C")
        # ONNX indices are flat over the whole (N, C, *spatial) tensor, torch's per plane.
        nc = x.shape[0] * x.shape[1]
        base = (np.arange(nc, dtype=np.int64) * int(np.prod(in_sp))).reshape(x.shape[:2] + (1,) * n)
        return [y, (idx + base).astype(np.int64)]
    return run


@op("AveragePool")
def _avg_pool(spec):
    _check_auto_pad(spec)
    if not spec.attr("kernel_shape"):
        spec.fail("the kernel_shape attribute is required")
    if len(spec.attr("kernel_shape")) not in (1, 2, 3):
        spec.fail("only 1-D, 2-D and 3-D pooling is supported")
    ceil = int(spec.attr("ceil_mode", 0))
    include = int(spec.attr("count_include_pad", 0))

    def run(ins, m):
        x = ten(ins[0])
        in_sp = list(x.shape[2:])
        k, s, d, pads, out = _pool_geometry(spec, x.shape)
        n = len(k)
        if any(v != 1 for v in d):
            return [dilated_avg_pool(x, k, s, d, pads, out, include)]
        if _native_pool_ok(k, s, d, pads, out, in_sp, ceil):
            return [_AVGPOOL[n](x, k, s, [p[0] for p in pads], bool(ceil), bool(include))]
        # Explicit padding: sum-pool the zero-padded input and divide by the pooled count of
        # the elements that count (the input, plus the declared pads with count_include_pad).
        plan = _pool_pad_plan(k, s, d, pads, out, in_sp)
        xp = _pad_spatial(x, plan, 0.0)
        mask = np.ones([1, 1] + in_sp, x.dtype)
        if include:
            mask = np.ones([1, 1] + [i + p0 + p1 for i, (p0, p1) in zip(in_sp, pads)], x.dtype)
            mplan = [(0, e - p1) for (b, e), (p0, p1) in zip(plan, pads)]
        else:
            mplan = plan
        mp = arr(_pad_spatial(mask, mplan, 0.0))
        den = arr(_AVGPOOL[n](Tensor(mp), k, s, 0, False, True))
        return [_AVGPOOL[n](xp, k, s, 0, False, True) / den]
    return run


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(spec):
    is_max = spec.op_type == "GlobalMaxPool"

    def run(ins, m):
        x = ten(ins[0])
        n = x.ndim - 2
        if n in (1, 2, 3):
            fn = getattr(F, f"adaptive_{'max' if is_max else 'avg'}_pool{n}d")
            return [fn(x, 1)]
        axes = tuple(range(2, x.ndim))
        if is_max:
            spec.fail("GlobalMaxPool over more than 3 spatial dims is not supported")
        return [x.mean(axes, keepdim=True)]
    return run


@op("MaxUnpool")
def _max_unpool(spec):
    k = [int(v) for v in spec.attr("kernel_shape") or []]
    if not k:
        spec.fail("the kernel_shape attribute is required")
    n = len(k)
    if n not in (1, 2, 3):
        spec.fail("only 1-D, 2-D and 3-D unpooling is supported")
    s = _spatial_attr(spec, "strides", n, 1)
    pads = spec.attr("pads") or [0] * (2 * n)

    def run(ins, m):
        x, idx = ten(ins[0]), arr(ins[1]).astype(np.int64)
        shape = ins[2] if len(ins) > 2 else None
        if shape is not None:
            out_sp = ints(shape)[2:]
        else:
            out_sp = [(x.shape[2 + i] - 1) * s[i] + k[i] - int(pads[i]) - int(pads[i + n]) for i in range(n)]
        plane = int(np.prod(out_sp))
        nc = x.shape[0] * x.shape[1]
        base = (np.arange(nc, dtype=np.int64) * plane).reshape(x.shape[:2] + (1,) * n)
        local = idx - base  # ONNX's flat indices -> torch's per-plane offsets
        if local.size and (local.min() < 0 or local.max() >= plane):
            raise ValueError(f"indices: values must address the output of shape {list(x.shape[:2]) + out_sp}")
        return [_MaxUnpool.apply(x, np.ascontiguousarray(local), n, out_sp)]
    return run


# ---- activations -------------------------------------------------------------------------

@op("Relu")
def _relu(spec):
    return lambda ins, m: [F.relu(ten(ins[0]))]


@op("LeakyRelu")
def _leaky_relu(spec):
    a = float(spec.attr("alpha", 0.01))
    return lambda ins, m: [F.leaky_relu(ten(ins[0]), a)]


@op("Elu")
def _elu(spec):
    a = float(spec.attr("alpha", 1.0))
    return lambda ins, m: [F.elu(ten(ins[0]), a)]


@op("Sigmoid")
def _sigmoid(spec):
    return lambda ins, m: [F.sigmoid(ten(ins[0]))]


@op("Tanh")
def _tanh(spec):
    return lambda ins, m: [F.tanh(ten(ins[0]))]


@op("PRelu")
def _prelu(spec):
    def run(ins, m):
        x = ten(ins[0])
        slope = ten(ins[1], x)
        if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
            # torch stores one slope per channel as (C,); ONNX broadcasts it from the right.
            slope = slope.reshape((slope.shape[0],) + (1,) * (x.ndim - 2))
        pos = F.relu(x)
        return [pos + slope * (x - pos)]
    return run


@op("HardSigmoid", "HardSwish")
def _hard_sigmoid(spec):
    swish = spec.op_type == "HardSwish"
    alpha = 1.0 / 6.0 if swish else float(spec.attr("alpha", 0.2))
    beta = 0.5 if swish else float(spec.attr("beta", 0.5))

    def run(ins, m):
        x = ten(ins[0])
        h = (x * alpha + beta).clamp(0.0, 1.0)
        return [x * h if swish else h]
    return run


@op("Softmax", "LogSoftmax")
def _softmax(spec):
    axis = int(spec.attr("axis", -1))
    fn = F.log_softmax if spec.op_type == "LogSoftmax" else F.softmax

    def run(ins, m):
        x = ten(ins[0])
        return [fn(x, axis % x.ndim)]
    return run


@op("Dropout")
def _dropout(spec):
    want_mask = spec.output_used(1)

    def run(ins, m):
        x = ins[0]
        # training_mode (opset 12+) decides when given; otherwise the module's train()/eval().
        training = bool(arr(ins[2]).reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else m.training
        ratio = float(arr(ins[1]).reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None else 0.5
        if not training or ratio == 0.0:
            return [x, np.ones(arr(x).shape, bool)] if want_mask else [x]
        x = ten(x)
        if not want_mask:
            return [F.dropout(x, ratio, training=True)]
        # The kept-and-scaled pattern as its own tensor, so the mask can be read off it.
        keep = F.dropout(Tensor._wrap(np.ones(x.shape, x.dtype)), ratio, training=True)
        return [x * keep, keep._array != 0]
    return run


@op("Identity")
def _identity(spec):
    return lambda ins, m: [ins[0]]


# ---- elementwise arithmetic ----------------------------------------------------------------

def _binary(fn_tensor, fn_np):
    def build(spec):
        def run(ins, m):
            a, b = ins
            if not is_tensor(a) and not is_tensor(b):
                return [np.asarray(fn_np(arr(a), arr(b)))]
            a2 = ten(a, b if is_tensor(b) else None)
            b2 = ten(b, a2)
            return [fn_tensor(a2, b2)]
        return run
    return build


def _int_div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        q = np.abs(a) // np.abs(b)  # ONNX integer division truncates toward zero
        return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return a / b


op("Add")(_binary(lambda a, b: a + b, np.add))
op("Sub")(_binary(lambda a, b: a - b, np.subtract))
op("Mul")(_binary(lambda a, b: a * b, np.multiply))
op("Div")(_binary(lambda a, b: a / b, _int_div))


@op("Pow")
def _pow(spec):
    def run(ins, m):
        a, b = ins
        if is_tensor(b) and b.requires_grad:
            spec.fail("a trainable exponent is not supported (only constant exponents)")
        if not is_tensor(a):
            return [np.power(arr(a), arr(b)).astype(arr(a).dtype)]
        e = arr(b)
        if e.size != 1:  # elementwise exponents (broadcast); the gradient flows to the base
            return [pow_tensor_exponent(a, e)]
        return [a ** float(e.reshape(()))]
    return run


def _unary(name, tensor_fn, np_fn):
    def build(spec):
        def run(ins, m):
            x = ins[0]
            return [tensor_fn(x) if is_tensor(x) else np.asarray(np_fn(arr(x)))]
        return run
    op(name)(build)


_unary("Sqrt", lambda t: t ** 0.5, np.sqrt)
_unary("Neg", lambda t: -t, np.negative)
_unary("Exp", lambda t: t.exp(), np.exp)
_unary("Log", lambda t: t.log(), np.log)
_unary("Abs", lambda t: t.abs(), np.abs)
_unary("Reciprocal", lambda t: 1.0 / t, np.reciprocal)


@op("Clip")
def _clip(spec):
    def run(ins, m):
        x = ins[0]
        lo = None if len(ins) < 2 or ins[1] is None else arr(ins[1]).item()
        hi = None if len(ins) < 3 or ins[2] is None else arr(ins[2]).item()
        if is_tensor(x):
            return [x.clamp(lo, hi)]
        return [np.clip(arr(x), lo, hi)]
    return run


@op("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
def _compare(spec):
    fn = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
          "GreaterOrEqual": np.greater_equal}[spec.op_type]
    return lambda ins, m: [np.asarray(fn(arr(ins[0]), arr(ins[1])))]


@op("Not")
def _not(spec):
    return lambda ins, m: [np.logical_not(arr(ins[0]))]


@op("Where")
def _where(spec):
    def run(ins, m):
        c, a, b = ins
        if is_tensor(c) and c.requires_grad:
            spec.fail("the condition must not require grad")
        if not is_tensor(a) and not is_tensor(b):
            return [np.where(arr(c), arr(a), arr(b))]
        from ..tensor import where
        a2 = ten(a, b if is_tensor(b) else None)
        return [where(arr(c).astype(bool), a2, ten(b, a2))]
    return run


@op("Mod")
def _mod(spec):
    fmod = int(spec.attr("fmod", 0))

    def run(ins, m):
        if is_tensor(ins[0]) and ins[0].requires_grad:
            spec.fail("Mod of a Tensor that requires grad is not supported")
        a, b = arr(ins[0]), arr(ins[1])
        return [np.fmod(a, b) if fmod else np.mod(a, b)]
    return run


# ---- reductions --------------------------------------------------------------------------

@op("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(spec):
    keep = bool(int(spec.attr("keepdims", 1)))
    noop = int(spec.attr("noop_with_empty_axes", 0))
    axes_in_input = spec.op_type == "ReduceSum" or spec.opset >= 18

    def run(ins, m):
        x = ins[0]
        if axes_in_input:
            axes = ints(ins[1]) if len(ins) > 1 and ins[1] is not None else []
        else:
            axes = [int(a) for a in spec.attr("axes") or []]
        nd = arr(x).ndim
        if not axes:
            if noop:
                return [x]
            axes = list(range(nd))
        axes = tuple(sorted(a % nd for a in axes))
        if not is_tensor(x) or (spec.op_type == "ReduceMax" and arr(x).size == 0):
            fn = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}[spec.op_type]
            if spec.op_type == "ReduceMax" and arr(x).size == 0:  # ONNX: the identity, the lowest value
                lowest = -np.inf if arr(x).dtype.kind == "f" else (False if arr(x).dtype == bool
                                                                   else np.iinfo(arr(x).dtype).min)
                return [np.max(arr(x), axis=axes, keepdims=keep, initial=lowest).astype(arr(x).dtype)]
            return [np.asarray(fn(arr(x), axis=axes, keepdims=keep)).astype(arr(x).dtype)]
        if spec.op_type == "ReduceMean":
            return [x.mean(axes, keepdim=keep)]
        if spec.op_type == "ReduceSum":
            return [x.sum(axes, keepdim=keep)]
        y = x
        for a in reversed(axes):
            y = y.max(a, keepdim=True).values
        if not keep:
            y = y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))
        return [y]
    return run


# ---- shape and data movement ---------------------------------------------------------------

def _reshape(x, shape):
    return x.reshape(tuple(shape)) if is_tensor(x) else arr(x).reshape(tuple(shape))


@op("Reshape")
def _reshape_op(spec):
    allowzero = int(spec.attr("allowzero", 0))

    def run(ins, m):
        x = ins[0]
        shape = ints(ins[1])
        if not allowzero:
            shape = [arr(x).shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return [_reshape(x, shape)]
    return run


@op("Flatten")
def _flatten(spec):
    axis = int(spec.attr("axis", 1))

    def run(ins, m):
        x = ins[0]
        shape = arr(x).shape
        a = axis + len(shape) if axis < 0 else axis
        if not 0 <= a <= len(shape):
            raise ValueError(f"Flatten node '{spec.name}': axis {axis} is out of range for rank {len(shape)}")
        return [_reshape(x, (int(np.prod(shape[:a])), int(np.prod(shape[a:]))))]
    return run


@op("Transpose")
def _transpose(spec):
    perm = spec.attr("perm")

    def run(ins, m):
        x = ins[0]
        p = [int(v) for v in perm] if perm else list(reversed(range(arr(x).ndim)))
        return [x.permute(*p) if is_tensor(x) else np.transpose(arr(x), p)]
    return run


@op("Concat")
def _concat(spec):
    axis = int(spec.attr("axis"))

    def run(ins, m):
        vals = [v for v in ins if v is not None]
        if not any(is_tensor(v) for v in vals):
            return [np.concatenate([arr(v) for v in vals], axis=axis)]
        like = next(v for v in vals if is_tensor(v))
        vals = [ten(v, like) for v in vals if arr(v).size or arr(v).ndim == like.ndim]
        return [cat(vals, axis % like.ndim)]
    return run


@op("Unsqueeze")
def _unsqueeze(spec):
    def run(ins, m):
        x = ins[0]
        axes = ints(ins[1])
        shape = list(arr(x).shape)
        nd = len(shape) + len(axes)
        for a in sorted(a % nd for a in axes):
            shape.insert(a, 1)
        return [_reshape(x, shape)]
    return run


@op("Squeeze")
def _squeeze(spec):
    def run(ins, m):
        x = ins[0]
        shape = list(arr(x).shape)
        if len(ins) > 1 and ins[1] is not None:
            axes = {a % len(shape) for a in ints(ins[1])}
        else:
            axes = {i for i, n in enumerate(shape) if n == 1}
        for a in axes:
            if shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {shape[a]}")
        return [_reshape(x, [n for i, n in enumerate(shape) if i not in axes])]
    return run


@op("Shape")
def _shape(spec):
    start, end = spec.attr("start", 0), spec.attr("end")

    def run(ins, m):
        s = np.array(arr(ins[0]).shape, np.int64)
        return [s[start:end] if end is not None else s[start:]]
    return run


@op("Size")
def _size(spec):
    return lambda ins, m: [np.array(arr(ins[0]).size, np.int64)]


@op("Gather")
def _gather(spec):
    axis = int(spec.attr("axis", 0))

    def run(ins, m):
        x, idx = ins[0], arr(ins[1]).astype(np.int64)
        a = axis % arr(x).ndim
        if not is_tensor(x):
            return [np.take(arr(x), idx, axis=a)]
        return [x[(slice(None),) * a + (idx,)]]
    return run


@op("Slice")
def _slice(spec):
    def run(ins, m):
        x = ins[0]
        starts, ends = ints(ins[1]), ints(ins[2])
        nd = arr(x).ndim
        axes = ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        index = [slice(None)] * nd
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            if sp == 0:
                raise ValueError("Slice steps must not be 0")
            dim = arr(x).shape[ax % nd]
            # ONNX clamps to the axis; Python slices clamp the same way except for a negative
            # step with an end below -dim, which must mean "through index 0".
            en = None if (sp < 0 and en < -dim) else en
            index[ax % nd] = slice(st, en, sp)
        index = tuple(index)
        return [x[index] if is_tensor(x) else arr(x)[index]]
    return run


@op("Expand")
def _expand(spec):
    def run(ins, m):
        x, shape = ins[0], ints(ins[1])
        target = np.broadcast_shapes(arr(x).shape, tuple(shape))
        return [x.expand(*target) if is_tensor(x) else np.broadcast_to(arr(x), target).copy()]
    return run


@op("Cast")
def _cast(spec):
    import onnx.helper
    to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(spec.attr("to"))))
    if "float8" in to.name:
        # NumPy's ml_dtypes conversion neither saturates nor maps NaN/inf as ONNX's saturate rules say.
        spec.fail(f"casting to {to.name} is not supported")

    def run(ins, m):
        x = ins[0]
        if is_tensor(x) and to.kind == "f":
            return [x if x.dtype == to else x.to(to)]
        return [arr(x).astype(to)]
    return run


@op("ConstantOfShape")
def _constant_of_shape(spec):
    import onnx.numpy_helper
    v = spec.attrs.get("value")
    fill = onnx.numpy_helper.to_array(v).reshape(-1) if v is not None else np.zeros(1, np.float32)

    def run(ins, m):
        return [np.full(tuple(ints(ins[0])), fill[0], fill.dtype)]
    return run


@op("Range")
def _range(spec):
    def run(ins, m):
        s, e, d = (arr(v).reshape(()) for v in ins)
        return [np.arange(s, e, d, dtype=s.dtype)]
    return run


@op("Pad")
def _pad(spec):
    mode = spec.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        spec.fail(f"mode '{mode}' is not one of constant, reflect, edge, wrap")
    if mode == "wrap" and spec.opset < 19:
        spec.fail("mode 'wrap' needs opset 19")

    def run(ins, m):
        x = ins[0]
        pads = ints(ins[1])
        value = arr(ins[2]).item() if len(ins) > 2 and ins[2] is not None and arr(ins[2]).size else 0.0
        nd = arr(x).ndim
        axes = ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(nd))
        n = len(axes)
        if len(pads) != 2 * n:
            raise ValueError(f"pads: expected {2 * n} values, got {len(pads)}")
        plan = []
        for i, a in enumerate(axes):
            a %= nd
            b, e = pads[i], pads[i + n]
            if b or e:
                length = arr(x).shape[a]
                if mode == "reflect" and (b >= length or e >= length) and length > 1:
                    raise ValueError(f"reflect padding of {max(b, e)} needs an axis longer than {length}")
                plan.append((a, pad_index(length, b, e, mode)))
        return [gather_axes(x, plan, value)]
    return run


_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _nearest_index(out_len, in_len, scale, coord, nearest):
    """Source index of each output position. Computed in float32, as onnxruntime does, so that
    positions landing exactly on a rounding boundary round the same way."""
    f = np.float32
    x = np.arange(out_len, dtype=f)
    scale, half = f(scale), f(0.5)
    if coord == "half_pixel":
        src = (x + half) / scale - half
    elif coord == "half_pixel_symmetric":
        adj = f(out_len) / (scale * f(in_len))
        src = f(in_len) / f(2) * (f(1) - adj) + (x + half) / scale - half
    elif coord == "pytorch_half_pixel":
        src = (x + half) / scale - half if out_len > 1 else np.zeros_like(x)
    elif coord == "align_corners":
        src = x * f(in_len - 1) / f(out_len - 1) if out_len > 1 else np.zeros_like(x)
    else:  # asymmetric
        src = x / scale
    if nearest == "floor":
        i = np.floor(src)
    elif nearest == "ceil":
        i = np.ceil(src)
    elif nearest == "round_prefer_floor":
        i = np.where(src - np.floor(src) == half, np.floor(src), np.round(src))
    else:
        i = np.where(src - np.floor(src) == half, np.ceil(src), np.round(src))
    return np.clip(i, 0, in_len - 1).astype(np.int64)


@op("Resize")
def _resize(spec):
    mode = spec.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        spec.fail(f"mode '{mode}' is not one of nearest, linear, cubic")
    coord = spec.attr("coordinate_transformation_mode", "half_pixel")
    crop = coord == "tf_crop_and_resize"
    if crop and mode == "nearest":
        spec.fail("coordinate_transformation_mode 'tf_crop_and_resize' is supported in the linear and cubic "
                  "modes only, not nearest")
    if crop and (len(spec.inputs) < 2 or not spec.inputs[1]):
        spec.fail("coordinate_transformation_mode 'tf_crop_and_resize' needs the roi input (input 1)")
    if coord not in _COORD_MODES and not crop:
        spec.fail(f"coordinate_transformation_mode '{coord}' is not supported (supported: {', '.join(_COORD_MODES)})")
    nearest = spec.attr("nearest_mode", "round_prefer_floor")
    if nearest not in _NEAREST_MODES:
        spec.fail(f"nearest_mode '{nearest}' is not supported")
    antialias = bool(int(spec.attr("antialias", 0)))
    if antialias and mode == "nearest":
        spec.fail("antialias=1 applies to the linear and cubic modes only, not nearest")
    policy = spec.attr("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        spec.fail(f"keep_aspect_ratio_policy '{policy}' is not one of stretch, not_larger, not_smaller")
    axes_attr = spec.attr("axes")
    cubic_a = float(spec.attr("cubic_coeff_a", -0.75))
    exclude_outside = bool(int(spec.attr("exclude_outside", 0)))
    extrapolation_value = float(spec.attr("extrapolation_value", 0.0))

    def run(ins, m):
        x = ins[0]
        shape = arr(x).shape
        nd = len(shape)
        axes = [a % nd for a in axes_attr] if axes_attr else list(range(nd))
        rois = {}
        if crop:
            roi = None if len(ins) < 2 or ins[1] is None else arr(ins[1]).reshape(-1).astype(np.float64)
            if roi is None or roi.size != 2 * len(axes):
                raise ValueError(f"Resize '{spec.name}': tf_crop_and_resize needs a roi of 2 x {len(axes)} values")
            rois = {a: (float(roi[i]), float(roi[len(axes) + i])) for i, a in enumerate(axes)}
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
        scales = None if scales is None or arr(scales).size == 0 else [float(v) for v in arr(scales).reshape(-1)]
        sizes = None if sizes is None or arr(sizes).size == 0 else ints(sizes)
        if (scales is None) == (sizes is None):
            raise ValueError("exactly one of scales and sizes must be given")
        if sizes is not None and policy != "stretch":
            # One scale for every axis: the largest that fits (not_larger) or covers (not_smaller).
            ratios = [sizes[i] / shape[a] for i, a in enumerate(axes)]
            r = min(ratios) if policy == "not_larger" else max(ratios)
            sizes = [int(math.floor(r * shape[a] + 0.5)) for a in axes]
            scales, sizes = [r] * len(axes), sizes
        plan = []
        for i, a in enumerate(axes):
            if sizes is not None:
                out = sizes[i]
                sc = scales[i] if scales is not None else np.float32(out) / np.float32(shape[a])
            else:
                sc = scales[i]
                out = int(math.floor(shape[a] * sc))
            if out == shape[a] and sc == 1.0 and rois.get(a, (0.0, 1.0)) == (0.0, 1.0):
                continue
            plan.append((a, out, sc))
        if mode == "nearest":
            return [gather_axes(x, [(a, _nearest_index(o, shape[a], sc, coord, nearest)) for a, o, sc in plan])]
        if not plan:
            return [x]
        if any(a < 2 for a, _, _ in plan) or nd not in (3, 4, 5):
            raise UnsupportedOnnxError(f"ONNX op 'Resize' at node '{spec.name}': {mode} mode resizes only the "
                                       f"spatial axes of a 3-D to 5-D input")
        full = {a: (a, o, sc) for a, o, sc in plan}
        steps = [full.get(a, (a, shape[a], 1.0)) for a in range(2, nd)]
        return [resize_interp(x, spec, steps, coord, mode, cubic_a, exclude_outside, antialias, rois,
                              extrapolation_value)]
    return run


@op("Constant")
def _constant(spec):  # pragma: no cover - the importer folds Constant nodes at load time
    raise AssertionError("Constant nodes are evaluated by the importer")


@op("If")
def _if(spec):
    then_prog = spec.compile_graph(spec.attrs["then_branch"])
    else_prog = spec.compile_graph(spec.attrs["else_branch"])

    def run(ins, m):
        cond = arr(ins[0])
        if cond.size != 1:
            raise ValueError(f"If: the condition must hold one value, got shape {cond.shape}")
        prog = then_prog if bool(cond.reshape(())) else else_prog
        return prog.run_subgraph(m)
    return run


@op("Split")
def _split(spec):
    axis = int(spec.attr("axis", 0))
    n_out = len(spec.outputs)
    num_outputs = spec.attr("num_outputs")

    def run(ins, m):
        x = ins[0]
        dim = arr(x).shape[axis % arr(x).ndim]
        if len(ins) > 1 and ins[1] is not None:
            sizes = ints(ins[1])
        elif num_outputs is not None:  # opset 18: ceil-sized chunks, the last one smaller
            chunk = -(-dim // int(num_outputs))
            sizes = [min(chunk, dim - i * chunk) for i in range(int(num_outputs))]
        else:
            if dim % n_out:
                raise ValueError(f"cannot split an axis of {dim} into {n_out} equal parts")
            sizes = [dim // n_out] * n_out
        if sum(sizes) != dim or len(sizes) != n_out:
            raise ValueError(f"split sizes {sizes} do not cover the axis of {dim} in {n_out} outputs")
        outs, start = [], 0
        a = axis % arr(x).ndim
        for s in sizes:
            index = (slice(None),) * a + (slice(start, start + s),)
            outs.append(x[index] if is_tensor(x) else arr(x)[index])
            start += s
        return outs
    return run


from ._ops_modern import dilated_avg_pool, layer_norm_stats, pow_tensor_exponent, resize_interp  # noqa: E402  (registers the issue-20 converters)
