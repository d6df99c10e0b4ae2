"""torch's top-level names for tensor functions (``cnnfast.max(x, 1)``, ``cnnfast.eq(a, b)``,
``cnnfast.softmax(x, dim=1)``...) and dtype aliases (``cnnfast.long``, ``cnnfast.float``...).

Each function is the Tensor method of the same name applied to its first argument, so
``cnnfast.topk(x, 3, dim=1)`` and ``x.topk(3, dim=1)`` are one implementation.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor, as_tensor, maximum, minimum

float32 = float = np.dtype(np.float32)  # noqa: A001 - torch's names
float64 = double = np.dtype(np.float64)
float16 = half = np.dtype(np.float16)
int64 = long = np.dtype(np.int64)
int32 = int = np.dtype(np.int32)  # noqa: A001
int16 = short = np.dtype(np.int16)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
bool = np.dtype(np.bool_)  # noqa: A001

_METHODS = ("sum", "mean", "std", "var", "prod", "argmax", "argmin", "all", "any", "eq", "ne", "lt", "le", "gt", "ge",
            "equal", "allclose", "isnan", "isfinite", "topk", "sort", "argsort", "gather", "abs", "sqrt", "square",
            "clamp", "neg", "matmul", "mm", "t", "squeeze", "unsqueeze", "reshape", "transpose", "permute", "chunk",
            "split", "add", "sub", "mul", "div", "pow", "sigmoid", "tanh", "relu", "numel")


def _delegate(name: str):
    def fn(input, *args, **kwargs):
        return getattr(input if isinstance(input, Tensor) else as_tensor(input), name)(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``input.{name}(...)`` as a function (torch.{name})."
    return fn


for _name in _METHODS:
    globals()[_name] = _delegate(_name)

clip = globals()["clamp"]
multiply, subtract, divide = globals()["mul"], globals()["sub"], globals()["div"]


def max(input, dim=None, keepdim: bool = False):  # noqa: A001
    """torch.max: the maximum, ``(values, indices)`` along ``dim``, or the elementwise
    maximum of two tensors."""
    return input.max(dim, keepdim) if dim is not None else input.max()


def min(input, dim=None, keepdim: bool = False):  # noqa: A001
    return input.min(dim, keepdim) if dim is not None else input.min()


def softmax(input, dim=None, dtype=None):
    from .functional import softmax as f

    return f(input if dtype is None else input.to(dtype), dim)


def log_softmax(input, dim=None, dtype=None):
    from .functional import log_softmax as f

    return f(input if dtype is None else input.to(dtype), dim)


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def is_floating_point(t) -> bool:
    return t.dtype.kind == "f"


__all__ = [*_METHODS, "max", "min", "maximum", "minimum", "softmax", "log_softmax", "clip", "multiply", "subtract",
           "divide", "is_tensor", "is_floating_point", "float32", "float", "float64", "double", "float16", "half",
           "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool"]


def inference_mode(mode: bool = True):
    """torch's faster no_grad; here ``no_grad()`` itself (a context manager and a decorator).
    ``inference_mode(False)`` is ``enable_grad()``."""
    from .autograd import enable_grad, no_grad

    return no_grad() if mode else enable_grad()


def get_default_dtype():
    """float32: what Python floats become (cnnfast's default is fixed)."""
    return float32


def set_default_dtype(d) -> None:
    """Only float32 is accepted: the default is fixed (float64 tensors are made explicitly)."""
    if np.dtype(d) != float32:
        raise NotImplementedError(f"set_default_dtype({d}): cnnfast's default dtype is fixed at float32; pass "
                                  "dtype= to factories or call .double() instead")


__all__ += ["inference_mode", "get_default_dtype", "set_default_dtype"]
