"""Activation functions: relu, leaky_relu, elu, sigmoid, tanh, silu (Swish),
softmax, log_softmax. Shapes: any; the output has the input's shape."""
from __future__ import annotations

import warnings

import numpy as np

from .. import _C
from .._device import dispatch as _D
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "swish", "softmax", "log_softmax"]


def _elementwise(name: str, saves_output: bool, param_name: str | None = None):
    fwd = getattr(_D, f"{name}_forward")
    bwd = getattr(_D, f"{name}_backward")

    class Op(Function):
        onnx_op = name

        @staticmethod
        def forward(ctx, x, *param):
            y = fwd(contiguous(x), *param)
            ctx.save_for_backward(y if saves_output else x)
            ctx.param = param
            return y

        @staticmethod
        def backward(ctx, g):
            (saved,) = ctx.saved_tensors
            return (bwd(contiguous(g), contiguous(saved), *ctx.param),) + (None,) * len(ctx.param)

    Op.__name__ = "".join(p.capitalize() for p in name.split("_"))
    return Op


# ReLU and leaky ReLU (slope >= 0) save their output: y > 0 exactly where x > 0, so the
# backward mask is the same, and the array before them (a batch-norm output, typically)
# is freed as soon as the next op has read it instead of living until backward.
_Relu = _elementwise("relu", True)
_LeakyRelu = _elementwise("leaky_relu", True)
_LeakyReluNegative = _elementwise("leaky_relu", False)  # a negative slope maps x < 0 above 0
_Elu = _elementwise("elu", False)
_Sigmoid = _elementwise("sigmoid", True)
_Tanh = _elementwise("tanh", True)
_Silu = _elementwise("silu", False)


def _maybe_inplace(input, inplace: bool, name: str, op, *param):
    """``op.apply(input, *param)``, or with ``inplace`` the same written into ``input``
    (torch's rules: refused on a leaf that requires grad, recorded otherwise)."""
    check_tensor(input, "input")
    if inplace:
        return input._inplace(name, lambda t: op.apply(t, *param))
    return op.apply(input, *param)


class _RectifyInplace(Function):
    """ReLU / leaky ReLU (slope >= 0) written into the input's own storage. The backward
    needs only the output, which is that storage: no copy of the old values is kept, and
    the version counter makes any later in-place change of it an error at backward."""

    onnx_op = "leaky_relu"

    @staticmethod
    def forward(ctx, x, slope):
        if slope == 0.0:
            np.maximum(x, 0, out=x)  # NaN stays NaN, as the out-of-place kernel
        else:
            np.multiply(x, x.dtype.type(slope), out=x, where=x < 0)
        ctx.save_for_backward(x)
        ctx.slope = slope
        return x

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.slope == 0.0:
            return _C.relu_backward(contiguous(g), contiguous(y)), None
        return _C.leaky_relu_backward(contiguous(g), contiguous(y), ctx.slope), None


def _rectify(input, inplace: bool, name: str, slope: float):
    check_tensor(input, "input")
    if slope < 0.0:
        return _maybe_inplace(input, inplace, name, _LeakyReluNegative, slope)
    op, param = (_Relu, ()) if slope == 0.0 and name == "relu_" else (_LeakyRelu, (slope,))
    if not inplace or Function._observers or input.dtype.kind != "f" or not isinstance(input._array, np.ndarray):
        # ONNX export traces by tensor identity and expects a fresh output per op; device
        # arrays go through the device kernels.
        return _maybe_inplace(input, inplace, name, op, *param)
    input._check_inplace(name)
    input._vc[0] += 1  # before apply, so the version the node records is the written one
    out = _RectifyInplace.apply(input, slope)
    if out.grad_fn is not None:  # recorded: the input now stands for the op's output
        input.grad_fn, input._output_index, input.requires_grad = out.grad_fn, 0, True
    return input


def relu(input, inplace: bool = False):
    """max(0, x); ``inplace=True`` writes the result into ``input`` and returns it."""
    return _rectify(input, inplace, "relu_", 0.0)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    return _rectify(input, inplace, "leaky_relu_", float(negative_slope))


def elu(input, alpha: float = 1.0, inplace: bool = False):
    return _maybe_inplace(input, inplace, "elu_", _Elu, float(alpha))


def sigmoid(input):
    check_tensor(input, "input")
    return _Sigmoid.apply(input)


def tanh(input):
    check_tensor(input, "input")
    return _Tanh.apply(input)


def silu(input, inplace: bool = False):
    """x * sigmoid(x), also called Swish."""
    return _maybe_inplace(input, inplace, "silu_", _Silu)


swish = silu


class _Softmax(Function):
    onnx_op = "softmax"

    @staticmethod
    def forward(ctx, x, dim, log):
        y = (_D.log_softmax_forward if log else _D.softmax_forward)(contiguous(x), dim)
        ctx.save_for_backward(y)
        ctx.dim, ctx.log = dim, log
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        bwd = _D.log_softmax_backward if ctx.log else _D.softmax_backward
        return bwd(contiguous(g), y, ctx.dim), None, None


def implicit_dim(name: str, ndim: int) -> int:
    """torch's legacy choice when no ``dim`` is given (0 for 0-, 1- and 3-d input, else 1),
    with torch's deprecation warning."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                  "as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim`` (without ``dim``: torch's implicit choice and warning)."""
    check_tensor(input, "input")
    if dim is None:
        dim = implicit_dim("softmax", input.ndim)
    return _Softmax.apply(input if dtype is None else input.to(dtype), int(dim), False)


def log_softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None):
    """x - logsumexp(x) along ``dim``, computed stably (without ``dim``: as softmax)."""
    check_tensor(input, "input")
    if dim is None:
        dim = implicit_dim("log_softmax", input.ndim)
    return _Softmax.apply(input if dtype is None else input.to(dtype), int(dim), True)
