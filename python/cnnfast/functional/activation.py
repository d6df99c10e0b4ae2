"""Activation functions: relu, leaky_relu, elu, sigmoid, tanh, silu (Swish),
softmax, log_softmax. Shapes: any; the output has the input's shape."""
from __future__ import annotations

from .. import _C
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "swish", "softmax", "log_softmax"]


def _elementwise(name: str, saves_output: bool, param_name: str | None = None):
    fwd = getattr(_C, f"{name}_forward")
    bwd = getattr(_C, f"{name}_backward")

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


def relu(input, inplace: bool = False):
    """max(0, x). ``inplace`` is accepted for torch compatibility; a new tensor is returned."""
    check_tensor(input, "input")
    return _Relu.apply(input)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    check_tensor(input, "input")
    return _LeakyRelu.apply(input, float(negative_slope))


def elu(input, alpha: float = 1.0, inplace: bool = False):
    check_tensor(input, "input")
    return _Elu.apply(input, float(alpha))


def sigmoid(input):
    check_tensor(input, "input")
    return _Sigmoid.apply(input)


def tanh(input):
    check_tensor(input, "input")
    return _Tanh.apply(input)


def silu(input, inplace: bool = False):
    """x * sigmoid(x), also called Swish."""
    check_tensor(input, "input")
    return _Silu.apply(input)


swish = silu


class _Softmax(Function):
    onnx_op = "softmax"

    @staticmethod
    def forward(ctx, x, dim, log):
        y = (_C.log_softmax_forward if log else _C.softmax_forward)(contiguous(x), dim)
        ctx.save_for_backward(y)
        ctx.dim, ctx.log = dim, log
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        bwd = _C.log_softmax_backward if ctx.log else _C.softmax_backward
        return bwd(contiguous(g), y, ctx.dim), None, None


def softmax(input, dim: int | None = None):
    """exp(x) / sum(exp(x)) along ``dim`` (required, as in torch's non-deprecated form)."""
    check_tensor(input, "input")
    if dim is None:
        raise ValueError("dim: softmax needs the dimension to normalise over")
    return _Softmax.apply(input, int(dim), False)


def log_softmax(input, dim: int | None = None):
    """x - logsumexp(x) along ``dim``, computed stably."""
    check_tensor(input, "input")
    if dim is None:
        raise ValueError("dim: log_softmax needs the dimension to normalise over")
    return _Softmax.apply(input, int(dim), True)
