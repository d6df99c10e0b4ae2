"""Convolution and fully connected layers with ``torch.nn.functional``'s names.

``conv1d/conv2d/conv3d`` take ``input`` (N, C, *in) (or unbatched (C, *in)) and
``weight`` (K, C/groups, *k); ``conv_transpose1d/2d/3d`` take ``weight``
(C_in, C_out/groups, *k) as PyTorch does; ``linear`` takes ``input`` (*, in) and
``weight`` (out, in). All are differentiable and run on the kernels of
``cnnfast._C`` (``conv_forward``/``conv_backward``, ``conv_transpose_forward``/
``conv_transpose_backward``, ``linear_forward``/``linear_backward``).

Padding for convolutions accepts an int, one int per spatial dim, explicit
``((start, end), ...)`` pairs, or the strings

* ``"valid"``: no padding;
* ``"same"``: the CS-230 asymmetric rule for any stride: per dim
  ``total = max((ceil(I/S) - 1)*S + D*(F - 1) + 1 - I, 0)``, ``start = total // 2``,
  the extra one at the end, so the output size is ``ceil(I / S)``;
* ``"full"``: ``D*(F - 1)`` on each side.

The arithmetic (padding pairs, output sizes) lives in ``cnnfast.utils.shapes``;
``resolve_padding``, ``conv_output_size`` and ``conv_transpose_output_size`` are
re-exported here (``resolve_padding`` is ``shapes.resolve_padding_nd``).

The extra keyword ``algo`` ("auto", "gemm", "winograd") forces the algorithm;
"winograd" raises ValueError unless the layer is 2-D 3x3, stride 1, dilation 1.
``cnnfast.set_conv_algorithm("gemm")`` makes "gemm" the default for every layer
called with ``algo="auto"`` (the accurate path: Winograd F(4x4, 3x3) is faster on
3x3 layers but its float32 error against float64 is ~20x that of GEMM, about
6e-6 relative against 3e-7 on ResNet layers; on AVX-512, "auto" also runs dense
stride-1/2 layers on channel-vector tiles that sum each output over all C*kh*kw
terms in one float32 accumulator, about 2.5e-6 relative on AlexNet's 5x5 C96->256
against the GEMM's 3.9e-7).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._device import dispatch as _D
from ..amp import is_autocast_enabled
from ..autograd import Function
from ..utils.shapes import conv_output_size, conv_transpose_output_size
from ..utils.shapes import resolve_padding_nd as resolve_padding
from ._util import as_tuple, check_tensor, contiguous

__all__ = [
    "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "linear", "conv_output_size", "conv_transpose_output_size", "resolve_padding",
]

_ALGOS = ("auto", "gemm", "winograd")


_CONV_ALGORITHMS = ("auto", "gemm")
_conv_algorithm = "auto"


def set_conv_algorithm(name: str) -> None:
    """The algorithm convolutions called with ``algo="auto"`` (the default) use.

    * ``"auto"`` (default): per shape, Winograd F(4x4, 3x3) for 3x3 stride-1 layers
      with enough channels, im2col + GEMM elsewhere, a direct kernel for depthwise.
    * ``"gemm"``: never Winograd, so float32 results carry only GEMM rounding (as
      PyTorch's do); depthwise layers keep their direct kernel, which multiplies the
      same products exactly once too.

    An explicit ``algo=`` on a call still wins. Like ``torch.backends`` flags, this
    is process-wide, not per thread.
    """
    global _conv_algorithm
    if name not in _CONV_ALGORITHMS:
        raise ValueError(f"name: expected one of {_CONV_ALGORITHMS}, got {name!r}")
    _conv_algorithm = name


def get_conv_algorithm() -> str:
    """What :func:`set_conv_algorithm` last set ("auto" by default)."""
    return _conv_algorithm


def _resolve_algo(algo: str, channels: int, groups: int) -> str:
    if algo != "auto" or _conv_algorithm == "auto":
        return algo
    # Depthwise (one input channel per group): "auto" takes the direct kernel, never Winograd.
    return "auto" if groups > 1 and channels == groups else "gemm"


def _check_algo(algo):
    if algo not in _ALGOS:
        raise ValueError(f"algo: expected one of {_ALGOS}, got {algo!r}")


def _batched(input, nd: int, name: str):
    """(input array, whether it was unbatched); ValueError for a wrong rank."""
    if input.ndim == nd + 2:
        return False
    if input.ndim == nd + 1:
        return True
    raise ValueError(f"{name}: expected input of {nd + 1} (unbatched) or {nd + 2} (batched) dimensions, "
                     f"got shape {tuple(input.shape)}")


def _use_bf16(x, algo) -> bool:
    """Under cnnfast.autocast, float32 conv/linear take the bfloat16 kernels (see cnnfast.amp)."""
    return is_autocast_enabled() and isinstance(x, np.ndarray) and x.dtype == np.float32 and algo in ("auto", "gemm")


class _Conv(Function):
    onnx_op = "conv"

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, dilation, groups, algo, unbatched):
        x = contiguous(x[None] if unbatched else x)
        weight = contiguous(weight)
        bias = None if bias is None else contiguous(bias)
        ctx.bf16 = _use_bf16(x, algo)
        ctx.params = (stride, pads, dilation, groups)
        ctx.window = None
        if algo != "winograd" and type(weight) is np.ndarray and type(x) is np.ndarray and (
                win := _C._conv_live_window(x.shape, weight.shape, stride, pads, dilation, groups)) is not None:
            # Dead taps (a 3x3 kernel on a 1x1 map): the kernels would copy the live taps out of
            # the weight for the forward and again for grad_x, each copy reading every cache
            # line of it (9.4 MB for a 512x512 layer); cut once here, reused by backward.
            lo, hi, wpads = win
            cut = (_C._conv_weight_window(weight, lo, hi) if weight.dtype == np.float32 else
                   np.ascontiguousarray(weight[(slice(None), slice(None)) + tuple(map(slice, lo, hi))]))
            ctx.window = (cut, (stride, wpads, dilation, groups))
            y = (_C.conv_forward_bf16(x, cut, bias, stride, wpads, dilation, groups) if ctx.bf16
                 else _C.conv_forward(x, cut, bias, stride, wpads, dilation, groups, algo))
        elif ctx.bf16:
            y = _C.conv_forward_bf16(x, weight, bias, stride, pads, dilation, groups)
        else:
            y = _D.conv_forward(x, weight, bias, stride, pads, dilation, groups, algo)
        ctx.save_for_backward(x, weight)
        ctx.algo, ctx.unbatched, ctx.has_bias = algo, unbatched, bias is not None
        return y[0] if unbatched else y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = contiguous(g[None] if ctx.unbatched else g)
        need = ctx.needs_input_grad
        # Where the weight's gradient may go (a data-parallel rank's shared slot or bucket
        # slice): float32/64 kernels write it there instead of into a new array to be copied.
        dest = None if ctx.grad_into is None or ctx.bf16 else ctx.grad_into.get(1)
        into = {} if dest is None else {"grad_weight_out": dest}
        if ctx.window is not None and need[0]:
            cut, params = ctx.window
            if ctx.bf16:
                gx, _, gb = _C.conv_backward_bf16(g, x, cut, *params, need_input=True, need_weight=False,
                                                  need_bias=ctx.has_bias and need[2])
                gw = (_C.conv_backward_bf16(g, x, weight, *ctx.params, need_input=False, need_weight=True,
                                            need_bias=False)[1] if need[1] else None)
            else:
                gx, _, gb = _C.conv_backward(g, x, cut, *params, need_input=True, need_weight=False,
                                             need_bias=ctx.has_bias and need[2], algo=ctx.algo)
                gw = (_C.conv_backward(g, x, weight, *ctx.params, need_input=False, need_weight=True,
                                       need_bias=False, algo=ctx.algo, **into)[1] if need[1] else None)
        elif ctx.bf16:
            gx, gw, gb = _C.conv_backward_bf16(g, x, weight, *ctx.params, need_input=need[0], need_weight=need[1],
                                               need_bias=ctx.has_bias and need[2])
        else:
            gx, gw, gb = _D.conv_backward(g, x, weight, *ctx.params, need_input=need[0], need_weight=need[1],
                                          need_bias=ctx.has_bias and need[2], algo=ctx.algo, **into)
        if gx is not None and ctx.unbatched:
            gx = gx[0]
        return gx, gw, gb, None, None, None, None, None, None


class _ConvTranspose(Function):
    onnx_op = "conv_transpose"

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, output_padding, dilation, groups, algo, unbatched):
        x = contiguous(x[None] if unbatched else x)
        weight = contiguous(weight)
        bias = None if bias is None else contiguous(bias)
        y = _D.conv_transpose_forward(x, weight, bias, stride, pads, output_padding, dilation, groups, algo)
        ctx.save_for_backward(x, weight)
        ctx.params = (stride, pads, output_padding, dilation, groups)
        ctx.algo, ctx.unbatched, ctx.has_bias = algo, unbatched, bias is not None
        return y[0] if unbatched else y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = contiguous(g[None] if ctx.unbatched else g)
        need = ctx.needs_input_grad
        gx, gw, gb = _D.conv_transpose_backward(g, x, weight, *ctx.params, need_input=need[0],
                                                need_weight=need[1], need_bias=ctx.has_bias and need[2],
                                                algo=ctx.algo)
        if gx is not None and ctx.unbatched:
            gx = gx[0]
        return gx, gw, gb, None, None, None, None, None, None, None


def _check_args(input, weight, bias):
    check_tensor(input, "input")
    check_tensor(weight, "weight")
    if bias is not None:
        check_tensor(bias, "bias")


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, algo):
    _check_args(input, weight, bias)
    _check_algo(algo)
    name = f"conv{nd}d"
    unbatched = _batched(input, nd, name)
    if weight.ndim != nd + 2:
        raise ValueError(f"weight: expected {nd + 2} dimensions (out, in/groups, *kernel), got shape "
                         f"{tuple(weight.shape)}")
    stride = as_tuple(stride, nd, "stride")
    dilation = as_tuple(dilation, nd, "dilation")
    in_size = tuple(input.shape[-nd:])
    pads = resolve_padding(padding, in_size, tuple(weight.shape[2:]), stride, dilation)
    algo = _resolve_algo(algo, int(input.shape[-nd - 1]), int(groups))
    return _Conv.apply(input, weight, bias, list(stride), [list(p) for p in pads], list(dilation), int(groups),
                       algo, unbatched)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, algo):
    _check_args(input, weight, bias)
    _check_algo(algo)
    unbatched = _batched(input, nd, f"conv_transpose{nd}d")
    if weight.ndim != nd + 2:
        raise ValueError(f"weight: expected {nd + 2} dimensions (in, out/groups, *kernel), got shape "
                         f"{tuple(weight.shape)}")
    if isinstance(padding, str):
        raise ValueError(f"padding: transposed convolutions take ints or (start, end) pairs, got {padding!r}")
    stride = as_tuple(stride, nd, "stride")
    dilation = as_tuple(dilation, nd, "dilation")
    output_padding = as_tuple(output_padding, nd, "output_padding")
    pads = resolve_padding(padding, tuple(input.shape[-nd:]), tuple(weight.shape[2:]), stride, dilation)
    # The adjoint's "input channels" are the forward's outputs: weight (C_in, C_out/groups, ...).
    algo = _resolve_algo(algo, int(weight.shape[1]) * int(groups), int(groups))
    return _ConvTranspose.apply(input, weight, bias, list(stride), [list(p) for p in pads], list(output_padding),
                                list(dilation), int(groups), algo, unbatched)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    """1-D convolution. input (N, C, L) or (C, L); weight (K, C/groups, kL); bias (K,). -> (N, K, L_out)."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, algo)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    """2-D convolution. input (N, C, H, W) or (C, H, W); weight (K, C/groups, kH, kW); bias (K,).
    -> (N, K, H_out, W_out), H_out = floor((H + pad_top + pad_bottom - dilation*(kH-1) - 1)/stride) + 1."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, algo)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    """3-D convolution. input (N, C, D, H, W) or (C, D, H, W); weight (K, C/groups, kD, kH, kW). -> (N, K, Do, Ho, Wo)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, algo)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algo="auto"):
    """1-D transposed convolution. input (N, C_in, L); weight (C_in, C_out/groups, kL); bias (C_out,).
    -> (N, C_out, (L-1)*stride - 2*padding + dilation*(kL-1) + output_padding + 1)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation, algo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algo="auto"):
    """2-D transposed convolution. input (N, C_in, H, W); weight (C_in, C_out/groups, kH, kW); bias (C_out,).
    -> (N, C_out, H_out, W_out), H_out = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation, algo)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algo="auto"):
    """3-D transposed convolution. input (N, C_in, D, H, W); weight (C_in, C_out/groups, kD, kH, kW)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation, algo)


class _Linear(Function):
    onnx_op = "linear"

    @staticmethod
    def forward(ctx, x, weight, bias):
        lead = x.shape[:-1]
        x2 = contiguous(x.reshape(-1, x.shape[-1]))
        weight = contiguous(weight)
        bias = None if bias is None else contiguous(bias)
        ctx.bf16 = _use_bf16(x2, "auto")
        y = (_C.linear_forward_bf16 if ctx.bf16 else _D.linear_forward)(x2, weight, bias)
        ctx.save_for_backward(x2, weight)
        ctx.lead, ctx.has_bias = lead, bias is not None
        return y.reshape(lead + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        g2 = contiguous(g.reshape(-1, weight.shape[0]))
        gx, gw, gb = (_C.linear_backward_bf16 if ctx.bf16 else _D.linear_backward)(
            g2, x2, weight, need_input=need[0], need_weight=need[1], need_bias=ctx.has_bias and need[2])
        if gx is not None:
            gx = gx.reshape(ctx.lead + (x2.shape[1],))
        return gx, gw, gb


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias. input (*, in_features); weight (out_features, in_features);
    bias (out_features,). -> (*, out_features)."""
    _check_args(input, weight, bias)
    if input.ndim < 1:
        raise ValueError("input: expected at least 1 dimension (*, in_features), got a scalar")
    if weight.ndim != 2:
        raise ValueError(f"weight: expected 2 dimensions (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input: expected last dimension {weight.shape[1]} (weight's in_features), got shape "
                         f"{tuple(input.shape)}")
    return _Linear.apply(input, weight, bias)
