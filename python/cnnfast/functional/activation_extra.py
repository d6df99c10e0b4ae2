"""Activations of the efficient and modern CNNs, on the ``cnnfast._C`` kernels of
csrc/cpu/activation_extra.*: gelu (exact or ``approximate="tanh"``), hardswish,
hardsigmoid, relu6, mish, softplus. Any shape; the output has the input's shape."""
from __future__ import annotations

from .. import _C
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["gelu", "hardswish", "hardsigmoid", "relu6", "mish", "softplus", "erf"]


def _op(name: str):
    fwd, bwd = getattr(_C, f"{name}_forward"), getattr(_C, f"{name}_backward")

    class Op(Function):
        @staticmethod
        def forward(ctx, x, *params):
            x = contiguous(x)
            ctx.save_for_backward(x)
            ctx.params = params
            return fwd(x, *params)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return (bwd(contiguous(g), x, *ctx.params),) + (None,) * len(ctx.params)

    Op.__name__ = "".join(p.capitalize() for p in name.split("_"))
    return Op


_Gelu, _GeluTanh = _op("gelu"), _op("gelu_tanh")
_Hardswish, _Hardsigmoid, _Relu6 = _op("hardswish"), _op("hardsigmoid"), _op("relu6")
_Mish, _Softplus, _Erf = _op("mish"), _op("softplus"), _op("erf")


def gelu(input, approximate: str = "none"):
    """x * Phi(x) (``approximate="none"``) or its tanh approximation (``"tanh"``)."""
    check_tensor(input, "input")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    return (_GeluTanh if approximate == "tanh" else _Gelu).apply(input)


def _simple(name: str, op, doc: str):
    def fn(input, inplace: bool = False):
        check_tensor(input, "input")
        return op.apply(input)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc + " ``inplace`` is accepted for torch compatibility; a new tensor is returned."
    return fn


hardswish = _simple("hardswish", _Hardswish, "x * relu6(x + 3) / 6 (MobileNetV3).")
hardsigmoid = _simple("hardsigmoid", _Hardsigmoid, "relu6(x + 3) / 6.")
relu6 = _simple("relu6", _Relu6, "min(max(x, 0), 6) (MobileNetV2).")
mish = _simple("mish", _Mish, "x * tanh(softplus(x)).")


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta * x > threshold."""
    check_tensor(input, "input")
    return _Softplus.apply(input, float(beta), float(threshold))


def erf(input):
    """The error function, elementwise (torch.erf; ONNX Erf)."""
    check_tensor(input, "input")
    return _Erf.apply(input)
