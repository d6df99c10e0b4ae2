"""Normalisation layers: batch_norm, instance_norm, group_norm, layer_norm,
local_response_norm, with torch.nn.functional's names, arguments and shapes.

Every function takes ``input`` of shape (N, C, *) (layer_norm: (*, *normalized_shape))
and returns a tensor of the same shape. Statistics and gradients are computed by
``cnnfast._C`` kernels; the forward saves mean and 1/sqrt(var + eps) for the backward.
Running statistics (cnnfast Tensors) are updated in place, without gradient.
"""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm"]


def _check_opt(t, name):
    if t is not None:
        check_tensor(t, name)


def _c(a):
    return None if a is None else contiguous(a)


def _state(t, name):
    """A running-statistics Tensor: updated in place, so it must be contiguous and writable."""
    if t is None:
        return None
    check_tensor(t, name)
    if not t._array.flags.c_contiguous:
        t._array = np.ascontiguousarray(t._array)
    return t._array


# ---- batch_norm -----------------------------------------------------------------------

class _BatchNorm(Function):
    onnx_op = "batch_norm"

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        x, weight, bias = contiguous(x), _c(weight), _c(bias)
        y, mean, rstd = _D.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.training, ctx.has_bias = training, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _D.batch_norm_backward(contiguous(g), x, weight, mean, rstd, ctx.training)
        return gx, (gw if weight is not None else None), (gb if ctx.has_bias else None), None, None, None, None, None


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalisation over (N, *spatial) per channel.

    input: (N, C) or (N, C, L) or (N, C, H, W) or (N, C, D, H, W). running_mean,
    running_var, weight, bias: (C,) Tensors or None. In training the batch statistics
    are used and the running statistics (if given) are updated in place:
    r = (1 - momentum) * r + momentum * batch_stat, with the unbiased batch variance.
    ``momentum=None`` (cumulative average) is the module's business: pass the
    factor 1/num_batches_tracked. In evaluation the running statistics are used.
    A training batch with one value per channel raises ValueError, as torch.
    """
    check_tensor(input, "input")
    if momentum is None:
        raise ValueError("momentum: the functional form needs a number; for a cumulative average pass "
                         "1/num_batches_tracked (as torch's BatchNorm module does)")
    rm = _state(running_mean, "running_mean")
    rv = _state(running_var, "running_var")
    _check_opt(weight, "weight")
    _check_opt(bias, "bias")
    return _BatchNorm.apply(input, weight, bias, rm, rv, bool(training), float(momentum), float(eps))


# ---- instance_norm --------------------------------------------------------------------

class _GroupNorm(Function):
    onnx_op = "group_norm"

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, running_mean, running_var, momentum, instance):
        x, weight, bias = contiguous(x), _c(weight), _c(bias)
        if instance:
            y, mean, rstd = _D.instance_norm_forward(x, weight, bias, running_mean, running_var, momentum, eps)
        else:
            y, mean, rstd = _D.group_norm_forward(x, num_groups, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups, ctx.has_bias = (x.shape[1] if instance else num_groups), bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _D.group_norm_backward(contiguous(g), x, ctx.num_groups, weight, mean, rstd)
        return (gx, gw if weight is not None else None, gb if ctx.has_bias else None) + (None,) * 6


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5):
    """Instance normalisation: statistics per (n, c) over the spatial dims.

    input: (N, C, *spatial) with more than one spatial element when use_input_stats.
    weight, bias, running_mean, running_var: (C,) or None. With use_input_stats the
    running statistics, if given, are updated in place with the batch average of the
    per-instance mean and unbiased variance; without it they normalise the input.
    """
    check_tensor(input, "input")
    rm = _state(running_mean, "running_mean")
    rv = _state(running_var, "running_var")
    _check_opt(weight, "weight")
    _check_opt(bias, "bias")
    if not use_input_stats:
        return _BatchNorm.apply(input, weight, bias, rm, rv, False, float(momentum), float(eps))
    return _GroupNorm.apply(input, weight, bias, 0, float(eps), rm, rv, float(momentum), True)


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Group normalisation: statistics per (n, group) over C/num_groups channels and the spatial dims.

    input: (N, C, *); num_groups must divide C (ValueError otherwise). weight, bias: (C,) or None.
    """
    check_tensor(input, "input")
    num_groups = int(num_groups)
    if input.ndim < 2:
        raise ValueError(f"input: expected at least 2 dimensions (N, C, *), got shape {input.shape}")
    if num_groups <= 0 or input.shape[1] % num_groups:
        raise ValueError(f"num_groups: expected number of channels in input to be divisible by num_groups, "
                         f"but got input of shape {input.shape} and num_groups={num_groups}")
    _check_opt(weight, "weight")
    _check_opt(bias, "bias")
    return _GroupNorm.apply(input, weight, bias, num_groups, float(eps), None, None, 0.0, False)


# ---- layer_norm -----------------------------------------------------------------------

class _LayerNorm(Function):
    onnx_op = "layer_norm"

    @staticmethod
    def forward(ctx, x, weight, bias, nd, eps):
        x = contiguous(x)
        wf = None if weight is None else weight.reshape(-1)
        bf = None if bias is None else bias.reshape(-1)
        y, mean, rstd = _D.layer_norm_forward(x, nd, wf, bf, eps)
        ctx.save_for_backward(x, wf, mean, rstd)
        ctx.nd = nd
        ctx.wshape = None if weight is None else weight.shape
        ctx.bshape = None if bias is None else bias.shape
        return y

    @staticmethod
    def backward(ctx, g):
        x, wf, mean, rstd = ctx.saved_tensors
        need = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        gx, gw, gb = _D.layer_norm_backward(contiguous(g), x, ctx.nd, wf, mean, rstd, need)
        gw = None if ctx.wshape is None else gw.reshape(ctx.wshape)
        gb = None if ctx.bshape is None else gb.reshape(ctx.bshape)
        return gx, gw, gb, None, None


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dims.

    input: (*, *normalized_shape); weight, bias: normalized_shape or None (elementwise affine).
    """
    check_tensor(input, "input")
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    nd = len(normalized_shape)
    if nd == 0 or nd > input.ndim or tuple(input.shape[input.ndim - nd:]) != normalized_shape:
        raise ValueError(f"normalized_shape: expected the trailing dims of input {input.shape}, "
                         f"got {normalized_shape}")
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is not None:
            check_tensor(t, name)
            if tuple(t.shape) != normalized_shape:
                raise ValueError(f"{name}: expected shape {normalized_shape}, got {tuple(t.shape)}")
    _check_opt(weight, "weight")
    _check_opt(bias, "bias")
    return _LayerNorm.apply(input, weight, bias, nd, float(eps))


# ---- local_response_norm ----------------------------------------------------------------

class _LRN(Function):
    onnx_op = "local_response_norm"

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        x = contiguous(x)
        y, den = _D.local_response_norm_forward(x, size, alpha, beta, k)
        ctx.save_for_backward(x, y, den)
        ctx.args = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, den = ctx.saved_tensors
        return _D.local_response_norm_backward(contiguous(g), x, y, den, *ctx.args), None, None, None, None


def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """Local response normalisation across channels (AlexNet: size 5, alpha 1e-4, beta 0.75, k 2).

    b_c = a_c / (k + alpha/size * sum_{c' in window(c)} a_{c'}^2)^beta, the window of
    ``size`` channels centred on c (c - size//2 .. c + (size-1)//2), zero padded.
    input: (N, C, *) with at least 3 dimensions, as torch.
    """
    check_tensor(input, "input")
    if input.ndim < 3:
        raise ValueError(f"input: expected 3D or higher dimensionality input, got shape {input.shape}")
    return _LRN.apply(input, int(size), float(alpha), float(beta), float(k))
