"""Pooling with ``torch.nn.functional``'s names and arguments: max, average,
adaptive average/max pooling and max-unpooling in 1-D, 2-D and 3-D.

Shapes: input ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` with
``len(spatial)`` = 1, 2 or 3; the output keeps the leading axes. Indices (from
``return_indices=True``, consumed by ``max_unpool*``) are int64 flat offsets into
each ``(n, c)`` plane of the input, exactly PyTorch's. Ties in a max window go
to the first maximum in scan order, so gradients land where PyTorch puts them.
"""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor
from ._util import check_tensor, contiguous

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d",
]


def _ntuple(value, n: int, name: str) -> tuple:
    """An int, or a sequence of 1 or n ints (torch broadcasts a single value)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name}: expected an int or a sequence of {n} ints, got {type(value).__name__}") from None
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"{name}: expected an int or {n} values, got {value}")
    return value


def _stride(stride, kernel: tuple, n: int) -> tuple:
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel
    return _ntuple(stride, n, "stride")


def _batched(x: np.ndarray, D: int, op: str) -> tuple[np.ndarray, bool]:
    """(batched contiguous array, whether a batch axis was added)."""
    if x.ndim not in (D + 1, D + 2):
        raise ValueError(f"input: {op} expects a {D + 1}-D (unbatched) or {D + 2}-D (batched) array, "
                         f"got shape {x.shape}")
    x = contiguous(x)
    return (x[None], True) if x.ndim == D + 1 else (x, False)


def _unbatch(a: np.ndarray, added: bool) -> np.ndarray:
    return a[0] if added else a


class _MaxPool(Function):
    onnx_op = "max_pool"

    @staticmethod
    def forward(ctx, x, D, k, s, p, d, ceil_mode):
        xb, added = _batched(x, D, f"max_pool{D}d")
        y, idx = getattr(_D, f"max_pool{D}d_forward")(xb, list(k), list(s), list(p), list(d), bool(ceil_mode))
        ctx.save_for_backward(idx)
        ctx.D, ctx.in_shape, ctx.added = D, xb.shape, added
        # Only a dilated window can miss the input (its index then lies past the plane, as torch's).
        ctx.dilated = any(v > 1 for v in d)
        return _unbatch(y, added), _unbatch(idx, added)

    @staticmethod
    def backward(ctx, gy, _gidx):
        (idx,) = ctx.saved_tensors
        gy = contiguous(gy[None] if ctx.added else gy)
        gx = getattr(_D, f"max_pool{ctx.D}d_backward")(gy, idx, list(ctx.in_shape), skip_out_of_range=ctx.dilated)
        return (_unbatch(gx, ctx.added),) + (None,) * 6


def _max_pool(D, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    check_tensor(input, "input")
    k = _ntuple(kernel_size, D, "kernel_size")
    args = (D, k, _stride(stride, k, D), _ntuple(padding, D, "padding"), _ntuple(dilation, D, "dilation"), ceil_mode)
    if not return_indices and not (input.requires_grad and is_grad_enabled()):
        # Inference: no indices are written, a third of the output traffic.
        xb, added = _batched(input._array, D, f"max_pool{D}d")
        y, _ = getattr(_D, f"max_pool{D}d_forward")(xb, *(list(a) for a in args[1:5]), bool(ceil_mode), False)
        return Tensor(_unbatch(y, added))
    y, idx = _MaxPool.apply(input, *args)
    return (y, idx) if return_indices else y


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling over L of input (N, C, L) or (C, L) -> (N, C, L_out); with
    ``return_indices`` also the int64 argmax offsets of the same shape."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling of input (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out), where
    H_out = floor_or_ceil((H + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1.
    ``padding`` must be at most half of ``kernel_size`` (ValueError otherwise)."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling of input (N, C, D, H, W) or (C, D, H, W) -> (N, C, D_out, H_out, W_out)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


class _AvgPool(Function):
    onnx_op = "avg_pool"

    @staticmethod
    def forward(ctx, x, D, k, s, p, ceil_mode, count_include_pad, divisor_override):
        xb, added = _batched(x, D, f"avg_pool{D}d")
        args = (list(k), list(s), list(p), bool(ceil_mode), bool(count_include_pad), divisor_override)
        y = getattr(_D, f"avg_pool{D}d_forward")(xb, *args)
        ctx.D, ctx.in_shape, ctx.added, ctx.args = D, xb.shape, added, args
        return _unbatch(y, added)

    @staticmethod
    def backward(ctx, gy):
        gy = contiguous(gy[None] if ctx.added else gy)
        gx = getattr(_D, f"avg_pool{ctx.D}d_backward")(gy, list(ctx.in_shape), *ctx.args)
        return (_unbatch(gx, ctx.added),) + (None,) * 7


def _avg_pool(D, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    check_tensor(input, "input")
    k = _ntuple(kernel_size, D, "kernel_size")
    if divisor_override is not None:
        divisor_override = int(divisor_override)
        if divisor_override <= 0:
            raise ValueError(f"divisor_override: expected a positive integer or None, got {divisor_override}")
    return _AvgPool.apply(input, D, k, _stride(stride, k, D), _ntuple(padding, D, "padding"), ceil_mode,
                          count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling over L of input (N, C, L) or (C, L) -> (N, C, L_out)."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling of input (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).
    The divisor is ``divisor_override`` if given, else the window size counting
    padding (``count_include_pad``) or only the input elements it covers."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling of input (N, C, D, H, W) or (C, D, H, W) -> (N, C, D_out, H_out, W_out)."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _adaptive_size(output_size, spatial: tuple, D: int) -> list:
    """output_size as D ints; None entries keep the input's extent, as torch."""
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size,) * D
    output_size = tuple(output_size)
    if len(output_size) == 1:
        output_size = output_size * D
    if len(output_size) != D:
        raise ValueError(f"output_size: expected an int or {D} values, got {output_size}")
    return [int(spatial[i]) if o is None else int(o) for i, o in enumerate(output_size)]


class _AdaptiveAvg(Function):
    onnx_op = "adaptive_avg_pool"

    @staticmethod
    def forward(ctx, x, D, output_size):
        xb, added = _batched(x, D, f"adaptive_avg_pool{D}d")
        y = getattr(_D, f"adaptive_avg_pool{D}d_forward")(xb, _adaptive_size(output_size, xb.shape[2:], D))
        ctx.D, ctx.in_shape, ctx.added = D, xb.shape, added
        return _unbatch(y, added)

    @staticmethod
    def backward(ctx, gy):
        gy = contiguous(gy[None] if ctx.added else gy)
        gx = getattr(_D, f"adaptive_avg_pool{ctx.D}d_backward")(gy, list(ctx.in_shape))
        return _unbatch(gx, ctx.added), None, None


class _AdaptiveMax(Function):
    onnx_op = "adaptive_max_pool"

    @staticmethod
    def forward(ctx, x, D, output_size):
        xb, added = _batched(x, D, f"adaptive_max_pool{D}d")
        y, idx = getattr(_D, f"adaptive_max_pool{D}d_forward")(xb, _adaptive_size(output_size, xb.shape[2:], D))
        ctx.save_for_backward(idx)
        ctx.D, ctx.in_shape, ctx.added = D, xb.shape, added
        return _unbatch(y, added), _unbatch(idx, added)

    @staticmethod
    def backward(ctx, gy, _gidx):
        (idx,) = ctx.saved_tensors
        gy = contiguous(gy[None] if ctx.added else gy)
        gx = getattr(_D, f"adaptive_max_pool{ctx.D}d_backward")(gy, idx, list(ctx.in_shape))
        return _unbatch(gx, ctx.added), None, None


def adaptive_avg_pool1d(input, output_size):
    """Adaptive average pooling of (N, C, L) or (C, L) to L_out = output_size; cell o
    averages [floor(o*L/L_out), ceil((o+1)*L/L_out))."""
    check_tensor(input, "input")
    return _AdaptiveAvg.apply(input, 1, output_size)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling of (N, C, H, W) or (C, H, W) to (H_out, W_out); output_size 1
    is global average pooling."""
    check_tensor(input, "input")
    return _AdaptiveAvg.apply(input, 2, output_size)


def adaptive_avg_pool3d(input, output_size):
    """Adaptive average pooling of (N, C, D, H, W) or (C, D, H, W) to (D_out, H_out, W_out)."""
    check_tensor(input, "input")
    return _AdaptiveAvg.apply(input, 3, output_size)


def _adaptive_max(D, input, output_size, return_indices):
    check_tensor(input, "input")
    y, idx = _AdaptiveMax.apply(input, D, output_size)
    return (y, idx) if return_indices else y


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Adaptive max pooling of (N, C, L) or (C, L) to L_out; optionally with int64 indices."""
    return _adaptive_max(1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Adaptive max pooling of (N, C, H, W) or (C, H, W) to (H_out, W_out); optionally with indices."""
    return _adaptive_max(2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """Adaptive max pooling of (N, C, D, H, W) or (C, D, H, W); optionally with indices."""
    return _adaptive_max(3, input, output_size, return_indices)


class _MaxUnpool(Function):
    onnx_op = "max_unpool"

    @staticmethod
    def forward(ctx, x, indices, D, output_size):
        xb, added = _batched(x, D, f"max_unpool{D}d")
        idx = contiguous(np.asarray(indices))
        if idx.shape != x.shape:
            raise ValueError(f"indices: expected the shape of input {x.shape}, got {idx.shape}")
        idx = idx[None] if added else idx
        y = getattr(_D, f"max_unpool{D}d_forward")(xb, idx, list(output_size))
        ctx.save_for_backward(idx)
        ctx.D, ctx.added = D, added
        return _unbatch(y, added)

    @staticmethod
    def backward(ctx, gy):
        (idx,) = ctx.saved_tensors
        gy = contiguous(gy[None] if ctx.added else gy)
        gx = getattr(_D, f"max_unpool{ctx.D}d_backward")(gy, idx)
        return _unbatch(gx, ctx.added), None, None, None


def _unpool_output_size(spatial, k, s, p, output_size, D):
    default = [(spatial[i] - 1) * s[i] + k[i] - 2 * p[i] for i in range(D)]
    if output_size is None:
        return default
    output_size = [int(v) for v in output_size]
    if len(output_size) == D + 2:
        output_size = output_size[2:]
    if len(output_size) != D:
        raise ValueError(f"output_size: expected {D} or {D + 2} values, got {len(output_size)}")
    for i in range(D):
        lo, hi = default[i] - s[i], default[i] + s[i]
        if not lo < output_size[i] < hi:
            raise ValueError(f"output_size: invalid {output_size} (dim {i} must be between {lo} and {hi})")
    return output_size


def _max_unpool(D, input, indices, kernel_size, stride, padding, output_size):
    check_tensor(input, "input")
    k = _ntuple(kernel_size, D, "kernel_size")
    s = _stride(stride, k, D)
    p = _ntuple(padding, D, "padding")
    idx = indices._array if isinstance(indices, Tensor) else np.asarray(indices)
    if input.ndim not in (D + 1, D + 2):
        raise ValueError(f"input: max_unpool{D}d expects a {D + 1}-D or {D + 2}-D array, got shape {input.shape}")
    size = _unpool_output_size(input.shape[-D:], k, s, p, output_size, D)
    if min(size) < 1:
        raise ValueError(f"output_size: expected positive sizes, got {size}")
    return _MaxUnpool.apply(input, idx, D, size)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Inverse of max_pool1d: (N, C, L) or (C, L) values placed at their indices in zeros of
    length L_out = (L-1)*stride - 2*padding + kernel_size (or output_size)."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Inverse of max_pool2d: (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out), zeros except at
    the indices. An index outside the output plane raises ValueError."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Inverse of max_pool3d: (N, C, D, H, W) or (C, D, H, W) -> (N, C, D_out, H_out, W_out)."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)
