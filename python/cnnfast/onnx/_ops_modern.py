"""ONNX converters for the ops of today's CNNs (issue 20): Erf, Gelu, Mish, Softplus,
HardSwish on the activation_extra kernels; DepthToSpace / SpaceToDepth as permutations;
and the interpolation tables of Resize's linear and cubic modes in every coordinate
transformation mode ONNX defines except tf_crop_and_resize, applied by the separable
resample kernel. Registered into ``_ops.CONVERTERS`` on import."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Function
from ..tensor import _unbroadcast
from ._ops import arr, op, ten

# ---- activations -------------------------------------------------------------------------


def _unary(fn):
    def build(spec):
        spec.require_float_input(0)
        return lambda ins, m: [fn(ten(ins[0]))]
    return build


op("Erf")(_unary(F.erf))
op("Mish")(_unary(F.mish))
op("HardSwish")(_unary(F.hardswish))
op("Softplus")(_unary(F.softplus))


@op("Gelu")
def _gelu(spec):
    approx = spec.attr("approximate", "none")
    if approx not in ("none", "tanh"):
        spec.fail(f"approximate '{approx}' is not one of none, tanh")
    spec.require_float_input(0)
    return lambda ins, m: [F.gelu(ten(ins[0]), approximate=approx)]


# ---- DepthToSpace / SpaceToDepth --------------------------------------------------------------

@op("DepthToSpace")
def _depth_to_space(spec):
    b = int(spec.attr("blocksize", 0))
    mode = spec.attr("mode", "DCR")
    if b < 1:
        spec.fail(f"blocksize must be a positive int, got {b}")
    if mode not in ("DCR", "CRD"):
        spec.fail(f"mode '{mode}' is not one of DCR, CRD")

    def run(ins, m):
        x = ten(ins[0])
        n, c, h, w = x.shape
        if c % (b * b):
            raise ValueError(f"DepthToSpace node '{spec.name}': {c} channels are not divisible by blocksize^2")
        if mode == "CRD":  # channel-major: the same layout as pixel_shuffle
            return [F.pixel_shuffle(x, b)]
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return [y.reshape(n, c // (b * b), h * b, w * b)]
    return run


@op("SpaceToDepth")
def _space_to_depth(spec):
    b = int(spec.attr("blocksize", 0))
    if b < 1:
        spec.fail(f"blocksize must be a positive int, got {b}")

    def run(ins, m):
        x = ten(ins[0])
        n, c, h, w = x.shape
        if h % b or w % b:
            raise ValueError(f"SpaceToDepth node '{spec.name}': {h}x{w} is not divisible by blocksize {b}")
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return [y.reshape(n, c * b * b, h // b, w // b)]
    return run


# ---- Resize: linear and cubic tables -----------------------------------------------------------

def source_coords(out_len, in_len, scale, coord, roi=(0.0, 1.0)):
    """Source coordinate of each output position along one axis, in ONNX's conventions
    (scale = output / input, as given or as implied by sizes; roi = (start, end) as fractions
    of the axis, tf_crop_and_resize only)."""
    y = np.arange(out_len, dtype=np.float64)
    out_w = scale * in_len
    if coord == "tf_crop_and_resize":
        r0, r1 = roi
        span = (r1 - r0) * (in_len - 1)
        return r0 * (in_len - 1) + (np.full(out_len, span / 2) if out_w == 1 else y * span / (out_w - 1))
    # As ONNX's reference: the resized length is scale * in_len, which need not be an integer
    # when scales are given (onnxruntime uses the floored output length there instead).
    if coord == "align_corners":
        return np.zeros(out_len) if out_w == 1 else y * (in_len - 1) / (out_w - 1)
    if coord == "asymmetric":
        return y / scale
    if coord == "pytorch_half_pixel":
        return np.full(out_len, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    if coord == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_w)
        return offset + (y + 0.5) / scale - 0.5
    return (y + 0.5) / scale - 0.5  # half_pixel


def _antialias_weights(x, scale, mode, cubic_a):
    """(first tap, weights) of ONNX's antialiased linear/cubic Resize: when downsampling
    (scale < 1) the filter is stretched by 1/scale, so 2 * ceil-ish(1/scale) (linear) or
    twice that (cubic) taps, weights normalised to sum 1. The taps are the ones nearest x,
    a tie going to the lower index; an integer x counts as the right end of the cell
    below it (fraction 1), as in ONNX's reference."""
    s = min(scale, 1.0)
    cell = np.ceil(x) - 1  # floor(x), except an integer x belongs to the cell below
    frac = (x - cell)[:, None]
    reach = 1 if mode == "linear" else 2
    start = int(np.floor(-reach / s)) + 1
    d = np.abs((np.arange(start, 2 - start) - frac) * s)
    if mode == "linear":
        w = np.clip(1 - d, 0, 1)
    else:
        a = cubic_a
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        w = np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return cell + start, w / w.sum(1, keepdims=True)


def interp_table(out_len, in_len, scale, coord, mode, cubic_a=-0.75, exclude_outside=False, antialias=False,
                 roi=(0.0, 1.0)):
    """(index, weight) of ONNX Resize along one axis: 2 taps (linear) or 4 (cubic) around
    floor(x) (more with antialias, see _antialias_weights); taps beyond the edge read the
    edge value, or with exclude_outside get weight 0 and the rest are renormalised."""
    x = source_coords(out_len, in_len, scale, coord, roi)
    if antialias:
        first, w = _antialias_weights(x, scale, mode, cubic_a)
        return _edges(first.astype(np.int64)[:, None] + np.arange(w.shape[1]), w, in_len, exclude_outside)
    i0 = np.floor(x)
    t = (x - i0)[:, None]
    if mode == "linear":
        offs = np.arange(0, 2)
        w = np.concatenate([1 - t, t], 1)
    else:
        a = cubic_a
        d = np.abs(t - np.arange(-1, 3))  # distances to the 4 taps at i0-1 .. i0+2
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        w = np.where(d <= 1, near, np.where(d < 2, far, 0.0))
        offs = np.arange(-1, 3)
    return _edges(i0.astype(np.int64)[:, None] + offs, w, in_len, exclude_outside)


def _edges(idx, w, in_len, exclude_outside):
    """Taps beyond the edge read the edge value, or (exclude_outside) drop out with the
    remaining weights renormalised."""
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        s = w.sum(1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, in_len - 1), w


def resize_interp(x, spec, axes_sizes_scales, coord, mode, cubic_a, exclude_outside, antialias=False, rois=None,
                  extrapolation_value=0.0):
    """Resize Tensor x (N, C, *spatial) along its spatial axes; axes_sizes_scales:
    [(axis, out_len, scale)] covering every spatial axis; rois: {axis: (start, end)} for
    tf_crop_and_resize, whose outputs with a source coordinate outside the input on any axis
    take extrapolation_value instead."""
    rois = rois or {}
    tables, outside = [], []
    for axis, out_len, scale in axes_sizes_scales:
        roi = rois.get(axis, (0.0, 1.0))
        in_len = arr(x).shape[axis]
        tables.append(interp_table(out_len, in_len, scale, coord, mode, cubic_a, exclude_outside, antialias, roi))
        if coord == "tf_crop_and_resize":
            c = source_coords(out_len, in_len, scale, coord, roi)
            outside.append((c < 0) | (c > in_len - 1))
    y = F.resample(ten(x), tables)
    if not any(o.any() for o in outside):
        return y
    grids = np.meshgrid(*outside, indexing="ij")
    mask = np.logical_or.reduce(grids).astype(arr(y).dtype)[None, None]
    return y * ten(1 - mask, y) + ten(mask * extrapolation_value, y)


# ---- AveragePool with dilations, LayerNormalization's statistics outputs -----------------------

def dilated_avg_pool(x, k, s, d, pads, out, include_pad):
    """ONNX AveragePool with dilations, as a sum of prod(k) strided gathers of the zero-padded
    input divided by the count of the elements that count (the input, plus the declared pads
    with count_include_pad; never the extra tail a ceil_mode window reaches)."""
    import itertools

    from ._ops import gather_axes, pad_index
    x = ten(x)
    in_sp = list(x.shape[2:])
    n = len(k)
    lengths = [max(i + p0 + p1, (o - 1) * st + (kk - 1) * dd + 1)
               for i, (p0, p1), o, st, kk, dd in zip(in_sp, pads, out, s, k, d)]
    plan = [(2 + a, pad_index(in_sp[a], pads[a][0], lengths[a] - in_sp[a] - pads[a][0], "constant"))
            for a in range(n)]
    xp = gather_axes(x, plan, 0.0)
    mask = np.zeros([1, 1] + lengths, x.dtype)
    region = tuple(slice(None if include_pad else p0, (p0 + i + p1) if include_pad else p0 + i)
                   for i, (p0, p1) in zip(in_sp, pads))
    mask[(0, 0) + region] = 1
    total, count = None, 0.0
    for offs in itertools.product(*[range(kk) for kk in k]):
        sel = [(2 + a, np.arange(out[a]) * s[a] + offs[a] * d[a]) for a in range(n)]
        part = gather_axes(xp, sel)
        total = part if total is None else total + part
        count = count + gather_axes(mask, sel)
    return total / ten(count, x)


def layer_norm_stats(x, axis, eps):
    """Mean and 1/sqrt(var + eps) over axes axis.. of x, kept as size-1 dims (ONNX's outputs 1, 2)."""
    a = arr(x).astype(np.float64)
    axes = tuple(range(axis, a.ndim))
    mean = a.mean(axes, keepdims=True)
    inv = 1.0 / np.sqrt(a.var(axes, keepdims=True) + eps)
    return mean.astype(arr(x).dtype), inv.astype(arr(x).dtype)


class _PowTensor(Function):
    """x ** e with an elementwise (broadcast) constant or data exponent; d/dx = e x^(e-1)."""

    @staticmethod
    def forward(ctx, x, e):
        ctx.save_for_backward(x)
        ctx.e = e
        return np.power(x, e.astype(x.dtype)).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        e = ctx.e.astype(x.dtype)
        d = g * e * np.power(x, e - 1)
        return _unbroadcast(d, x.shape), None


def pow_tensor_exponent(x, e):
    return _PowTensor.apply(ten(x), np.asarray(e))
