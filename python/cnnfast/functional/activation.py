"""Activation functions: relu, leaky_relu, elu, sigmoid, tanh, silu (Swish),
softmax, log_softmax. Shapes: any; the output has the input's shape."""
from __future__ import annotations

import warnings

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


_Relu = _elementwise("relu", False)
_LeakyRelu = _elementwise("leaky_relu", False)
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


def relu(input, inplace: bool = False):
    """max(0, x); ``inplace=True`` writes the result into ``input`` and returns it."""
    return _maybe_inplace(input, inplace, "relu_", _Relu)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    return _maybe_inplace(input, inplace, "leaky_relu_", _LeakyRelu, float(negative_slope))


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
