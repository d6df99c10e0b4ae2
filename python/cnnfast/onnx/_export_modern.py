"""ONNX emitters for the issue-20 ops, registered into the exporter's table on import:
the activation_extra family (as opset-17 ONNX ops or their compositions: Gelu and Mish
are newer than opset 17), and separable resampling as, per axis, a weighted sum of
Gather nodes, one per tap: exact for any table (nearest, linear, cubic, any coordinate
convention) without depending on how a runtime reads Resize's attributes."""
from __future__ import annotations

import numpy as np

from ..functional import activation_extra as _ax
from ..functional.resample import _Resample


def _unary(op_type):
    def emit(b, c, v):
        return [b.one(op_type, [v(c.args[0])], c.scope)]
    return emit


def _gelu(b, c, v):
    x = c.args[0]
    xs = v(x)
    half = b.const(np.array(0.5, x.dtype), "half")
    one = b.const(np.array(1.0, x.dtype), "one")
    erf = b.one("Erf", [b.one("Mul", [xs, b.const(np.array(0.7071067811865476, x.dtype), "rsqrt2")], c.scope)],
                c.scope)
    return [b.one("Mul", [b.one("Mul", [xs, half], c.scope), b.one("Add", [erf, one], c.scope)], c.scope)]


def _gelu_tanh(b, c, v):
    x = c.args[0]
    xs = v(x)
    k = lambda val, hint: b.const(np.array(val, x.dtype), hint)  # noqa: E731
    x3 = b.one("Mul", [b.one("Mul", [xs, xs], c.scope), xs], c.scope)
    u = b.one("Mul", [b.one("Add", [xs, b.one("Mul", [x3, k(0.044715, "cubic")], c.scope)], c.scope),
                      k(0.7978845608028654, "sqrt_2_over_pi")], c.scope)
    t = b.one("Add", [b.one("Tanh", [u], c.scope), k(1.0, "one")], c.scope)
    return [b.one("Mul", [b.one("Mul", [xs, k(0.5, "half")], c.scope), t], c.scope)]


def _hardsigmoid(b, c, v):
    return [b.one("HardSigmoid", [v(c.args[0])], c.scope, alpha=1.0 / 6.0, beta=0.5)]


def _relu6(b, c, v):
    x = c.args[0]
    return [b.one("Clip", [v(x), b.const(np.array(0, x.dtype), "min"), b.const(np.array(6, x.dtype), "max")],
                  c.scope)]


def _mish(b, c, v):
    xs = v(c.args[0])
    return [b.one("Mul", [xs, b.one("Tanh", [b.one("Softplus", [xs], c.scope)], c.scope)], c.scope)]


def _softplus(b, c, v):
    x, beta, threshold = c.args
    xs = v(x)
    bx = b.one("Mul", [xs, b.const(np.array(beta, x.dtype), "beta")], c.scope)
    sp = b.one("Div", [b.one("Softplus", [bx], c.scope), b.const(np.array(beta, x.dtype), "beta")], c.scope)
    linear = b.one("Greater", [bx, b.const(np.array(threshold, x.dtype), "threshold")], c.scope)
    return [b.one("Where", [linear, xs, sp], c.scope)]


def _resample(b, c, v):
    x, tables = c.args
    y = v(x)
    nsp = x.ndim - 2
    for k, name in enumerate("dhw"[3 - nsp:]):
        idx, w = tables[f"index_{name}"], tables[f"weight_{name}"]
        axis = 2 + k
        shape = [1] * x.ndim
        shape[axis] = idx.shape[0]
        acc = None
        for t in range(idx.shape[1]):
            g = b.one("Gather", [y, b.i64(idx[:, t], "indices")], c.scope, axis=axis)
            term = b.one("Mul", [g, b.const(w[:, t].reshape(shape).astype(x.dtype), "weights")], c.scope)
            acc = term if acc is None else b.one("Add", [acc, term], c.scope)
        y = acc
    return [y]


def register(emitters: dict) -> None:
    """Adds the emitters under the ``onnx_op`` name of each Function class (set here for
    the classes of the newer ops, which are declared without one)."""
    for cls, emit in {
        _ax._Gelu: _gelu, _ax._GeluTanh: _gelu_tanh, _ax._Hardswish: _unary("HardSwish"),
        _ax._Hardsigmoid: _hardsigmoid, _ax._Relu6: _relu6, _ax._Mish: _mish, _ax._Softplus: _softplus,
        _ax._Erf: _unary("Erf"), _Resample: _resample,
    }.items():
        if getattr(cls, "onnx_op", None) in (None, ""):
            cls.onnx_op = cls.__name__.lstrip("_").lower()
        emitters[cls.onnx_op] = emit
