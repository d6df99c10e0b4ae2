"""``Tensor``: a NumPy array plus what autograd needs (``requires_grad``, ``grad``,
``grad_fn``), with PyTorch's names for arithmetic, reductions and shape ops.

Elementwise arithmetic and shape ops run on NumPy (they are memory-bound and NumPy
is already vectorised); the convolution, pooling, normalisation, activation and
loss kernels run in ``cnnfast._C`` through ``cnnfast.functional``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .autograd import Function, backward as _backward, enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from . import random as _random

_DEFAULT_FLOAT = np.float32
float32 = np.float32
float64 = np.float64
int64 = np.int64


class _ValuesIndices(NamedTuple):
    """What ``max(dim)``/``min(dim)`` return, as torch's ``return_types``."""

    values: "Tensor"
    indices: "Tensor"


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back down to an operand's shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    ``data`` is the underlying C-contiguous-or-not NumPy array, shared (not copied)
    with ``numpy()``. Floating tensors may ``requires_grad``; gradients accumulate
    into ``.grad`` on ``backward()`` as in PyTorch.
    """

    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected ops
    # A class-level empty default: only the few tensors that register one pay for a list.
    _post_accumulate_grad_hooks: tuple = ()

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        arr = data.data if isinstance(data, Tensor) else data
        if not isinstance(arr, np.ndarray) or dtype is not None:
            arr = _as_array(arr, dtype)
        self.data: np.ndarray = arr
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._output_index = 0
        self._retains_grad = False
        self._hooks: list = []
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        t = cls.__new__(cls)
        t.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        t.grad = None
        t.grad_fn = None
        t._output_index = 0
        t._retains_grad = False
        t._hooks = []
        t.requires_grad = requires_grad
        return t

    # ---- properties --------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", precision=4, threshold=50)
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn=<{self.grad_fn.name()}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---- autograd ------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind != "f":
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("you can only change requires_grad flags of leaf variables")
        self.requires_grad = requires_grad
        return self

    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        _backward(self, gradient, retain_graph)

    def retain_grad(self) -> None:
        self._retains_grad = True

    def register_hook(self, hook) -> None:
        """hook(grad: np.ndarray) -> replacement or None, called when this tensor's gradient is computed."""
        self._hooks.append(hook)

    def register_post_accumulate_grad_hook(self, hook) -> None:
        """hook(tensor) called after backward has accumulated this leaf's gradient into
        ``.grad`` (as torch). The engine accumulates a leaf with such a hook as soon as
        every node that uses it has run, not at the end of the pass, so the hook can act
        on a finished gradient while the rest of the backward pass runs."""
        if not self.is_leaf:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self._post_accumulate_grad_hooks:
            self._post_accumulate_grad_hooks = []
        self._post_accumulate_grad_hooks.append(hook)

    def _accumulate(self, g: np.ndarray, exclusive: bool = False) -> None:
        """``.grad += g``. ``exclusive``: the caller guarantees no one else references g,
        so a first gradient of the right dtype and layout is kept without a copy."""
        if self.grad is None:
            if exclusive and g.dtype == self.dtype and g.flags.c_contiguous and g.flags.writeable:
                self.grad = Tensor._wrap(g)
            else:
                self.grad = Tensor._wrap(np.array(g, dtype=self.dtype, copy=True))
        else:
            self.grad.data = self.grad.data + g

    def detach(self) -> "Tensor":
        return Tensor._wrap(self.data)

    def detach_(self) -> "Tensor":
        self.grad_fn = None
        self.requires_grad = False
        return self

    # ---- conversion --------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.data.tolist()

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def long(self) -> "Tensor":
        return Tensor._wrap(self.data.astype(np.int64))

    def to(self, dtype_or_device=None, dtype=None) -> "Tensor":
        target = dtype if dtype is not None else dtype_or_device
        if target is None or isinstance(target, str) and target == "cpu":
            return self
        if isinstance(target, str) and target.startswith("cuda"):
            raise RuntimeError("this build keeps tensors on the CPU; the CUDA tensor path is not available yet")
        return _Cast.apply(self, np.dtype(target))

    def cpu(self) -> "Tensor":
        return self

    def clone(self) -> "Tensor":
        return _Clone.apply(self)

    def contiguous(self) -> "Tensor":
        return self if self.data.flags.c_contiguous else _Clone.apply(self)

    # ---- arithmetic ------------------------------------------------------------------
    def __add__(self, o):
        return _Add.apply(self, _lift(o, self))

    def __radd__(self, o):
        return _Add.apply(_lift(o, self), self)

    def __sub__(self, o):
        return _Sub.apply(self, _lift(o, self))

    def __rsub__(self, o):
        return _Sub.apply(_lift(o, self), self)

    def __mul__(self, o):
        return _Mul.apply(self, _lift(o, self))

    def __rmul__(self, o):
        return _Mul.apply(_lift(o, self), self)

    def __truediv__(self, o):
        return _Div.apply(self, _lift(o, self))

    def __rtruediv__(self, o):
        return _Div.apply(_lift(o, self), self)

    def __neg__(self):
        return _Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return exp(log(self) * exponent)
        return _PowScalar.apply(self, float(exponent))

    def __matmul__(self, o):
        return _MatMul.apply(self, _lift(o, self))

    def __rmatmul__(self, o):
        return _MatMul.apply(_lift(o, self), self)

    def __iadd__(self, o):
        return self._inplace(np.add, o)

    def __isub__(self, o):
        return self._inplace(np.subtract, o)

    def __imul__(self, o):
        return self._inplace(np.multiply, o)

    def __itruediv__(self, o):
        return self._inplace(np.divide, o)

    def _inplace(self, ufunc, o):
        if is_grad_enabled() and (self.requires_grad or getattr(o, "requires_grad", False)):
            raise RuntimeError("in-place arithmetic on a tensor that requires grad is not supported; "
                               "use out-of-place ops or wrap the update in cnnfast.no_grad()")
        ufunc(self.data, o.data if isinstance(o, Tensor) else o, out=self.data, casting="same_kind")
        return self

    # comparisons give boolean tensors without gradients
    def __eq__(self, o):
        return Tensor._wrap(self.data == _raw(o))

    def __ne__(self, o):
        return Tensor._wrap(self.data != _raw(o))

    def __lt__(self, o):
        return Tensor._wrap(self.data < _raw(o))

    def __le__(self, o):
        return Tensor._wrap(self.data <= _raw(o))

    def __gt__(self, o):
        return Tensor._wrap(self.data > _raw(o))

    def __ge__(self, o):
        return Tensor._wrap(self.data >= _raw(o))

    __hash__ = object.__hash__

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __getitem__(self, index):
        return _GetItem.apply(self, _raw_index(index))

    def __setitem__(self, index, value):
        if is_grad_enabled() and self.requires_grad:
            raise RuntimeError("in-place assignment into a tensor that requires grad is not supported")
        self.data[_raw_index(index)] = _raw(value)

    # ---- reductions ---------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False):
        return _Sum.apply(self, _axes(dim), keepdim)

    def mean(self, dim=None, keepdim: bool = False):
        return _Mean.apply(self, _axes(dim), keepdim)

    def max(self, dim=None, keepdim: bool = False):
        """The maximum; with ``dim``, a ``(values, indices)`` named tuple as torch."""
        if dim is None:
            return _Max.apply(self, None, False)
        values = _Max.apply(self, dim, keepdim)
        idx = np.argmax(self.data, axis=dim)
        if keepdim:
            idx = np.expand_dims(idx, dim)
        return _ValuesIndices(values, Tensor._wrap(np.asarray(idx)))

    def min(self, dim=None, keepdim: bool = False):
        if dim is None:
            return -((-self).max())
        values, idx = (-self).max(dim, keepdim)
        return _ValuesIndices(-values, idx)

    def argmax(self, dim=None, keepdim=False):
        idx = np.argmax(self.data, axis=dim)
        if keepdim and dim is not None:
            idx = np.expand_dims(idx, dim)
        return Tensor._wrap(np.asarray(idx))

    def var(self, dim=None, unbiased: bool = True, keepdim: bool = False):
        axes = _axes(dim)
        n = self.data.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) / (n - 1 if unbiased else n)

    def std(self, dim=None, unbiased: bool = True, keepdim: bool = False):
        return self.var(dim, unbiased, keepdim) ** 0.5

    # ---- shape ops ---------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _Reshape.apply(self, tuple(shape))

    def view(self, *shape):
        if not self.data.flags.c_contiguous:
            raise RuntimeError("view size is not compatible with input tensor's size and stride; use reshape()")
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        nd = self.ndim
        if nd == 0:
            return self.reshape(1)
        s, e = start_dim % nd, end_dim % nd
        new = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(new)

    def transpose(self, dim0: int, dim1: int):
        perm = list(range(self.ndim))
        perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
        return _Permute.apply(self, tuple(perm))

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return _Permute.apply(self, tuple(d % self.ndim for d in dims))

    def unsqueeze(self, dim: int):
        dim = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim %= self.ndim
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def expand(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(s if n == -1 else n for s, n in zip((1,) * (len(shape) - self.ndim) + self.shape, shape))
        return _Expand.apply(self, shape)

    # ---- elementwise math -------------------------------------------------------------
    def exp(self):
        return exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return self ** 0.5

    def abs(self):
        return _Abs.apply(self)

    def clamp(self, min=None, max=None):
        return _Clamp.apply(self, min, max)

    def relu(self):
        from .functional import relu

        return relu(self)

    def sigmoid(self):
        from .functional import sigmoid

        return sigmoid(self)

    def tanh(self):
        from .functional import tanh

        return tanh(self)

    def softmax(self, dim):
        from .functional import softmax

        return softmax(self, dim)

    def log_softmax(self, dim):
        from .functional import log_softmax

        return log_softmax(self, dim)

    def add_(self, other, alpha=1) -> "Tensor":
        return self._inplace(np.add, _raw(other) * alpha if alpha != 1 else other)

    def sub_(self, other, alpha=1) -> "Tensor":
        return self._inplace(np.subtract, _raw(other) * alpha if alpha != 1 else other)

    def mul_(self, other) -> "Tensor":
        return self._inplace(np.multiply, other)

    def div_(self, other) -> "Tensor":
        return self._inplace(np.divide, other)

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        self.data[...] = _random.generator().uniform(a, b, self.shape)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        self.data[...] = _random.generator().normal(mean, std, self.shape)
        return self

    def zero_(self) -> "Tensor":
        self.data[...] = 0
        return self

    def fill_(self, value) -> "Tensor":
        self.data[...] = value
        return self

    def copy_(self, src) -> "Tensor":
        src = _raw(src)
        if np.shape(src) != self.shape and np.broadcast_shapes(np.shape(src), self.shape) != self.shape:
            raise ValueError(f"copy_: source shape {np.shape(src)} does not broadcast to {self.shape}")
        self.data[...] = src
        return self


# ---- construction --------------------------------------------------------------------

def _as_array(data, dtype=None) -> np.ndarray:
    if dtype is not None:
        return np.asarray(data, dtype=np.dtype(dtype))
    arr = np.asarray(data)
    if arr.dtype == np.float64 and not isinstance(data, np.ndarray):
        arr = arr.astype(_DEFAULT_FLOAT)  # Python floats become float32, as torch's default dtype
    elif arr.dtype.kind in "iu" and not isinstance(data, np.ndarray):
        arr = arr.astype(np.int64)
    return arr


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """A new Tensor from data. A NumPy array of the requested dtype is shared, not copied
    (this differs from torch.tensor, which always copies; use ``.clone()`` for a copy)."""
    return Tensor(_as_array(data.data if isinstance(data, Tensor) else data, dtype), requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A Tensor sharing memory with ``array`` (no copy), as ``torch.from_numpy``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array)


def zeros(*shape, dtype=_DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.zeros(shape, dtype), requires_grad=requires_grad)


def ones(*shape, dtype=_DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor(np.ones(shape, dtype), requires_grad=requires_grad)


def zeros_like(t, dtype=None) -> Tensor:
    return Tensor(np.zeros_like(_raw(t), dtype=dtype))


def ones_like(t, dtype=None) -> Tensor:
    return Tensor(np.ones_like(_raw(t), dtype=dtype))


def arange(*args, dtype=None) -> Tensor:
    return Tensor(np.arange(*args, dtype=dtype) if dtype else _as_array(np.arange(*args).tolist()))


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


def _lift(o, like: Tensor) -> Tensor:
    if isinstance(o, Tensor):
        return o
    return Tensor._wrap(np.asarray(o, dtype=like.dtype if np.isscalar(o) or like.dtype.kind == "f" else None))


def _axes(dim):
    if dim is None:
        return None
    return tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)


# ---- the basic differentiable ops -----------------------------------------------------

class _Add(Function):
    onnx_op = "add"

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.asarray(a + b)

    @staticmethod
    def backward(ctx, g):
        return _unbroadcast(g, ctx.shapes[0]), _unbroadcast(g, ctx.shapes[1])


class _Sub(Function):
    onnx_op = "sub"

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.asarray(a - b)

    @staticmethod
    def backward(ctx, g):
        return _unbroadcast(g, ctx.shapes[0]), _unbroadcast(-g, ctx.shapes[1])


class _Mul(Function):
    onnx_op = "mul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.asarray(a * b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = _unbroadcast(g * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(g * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Div(Function):
    onnx_op = "div"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.asarray(a / b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = _unbroadcast(g / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(-g * a / (b * b), np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Neg(Function):
    onnx_op = "neg"

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class _PowScalar(Function):
    onnx_op = "pow_scalar"

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return np.asarray(a ** p)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * ctx.p * a ** (ctx.p - 1), None


class _Exp(Function):
    onnx_op = "exp"

    @staticmethod
    def forward(ctx, a):
        y = np.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


class _Log(Function):
    onnx_op = "log"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved_tensors[0]


class _Abs(Function):
    onnx_op = "abs"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.saved_tensors[0])


class _Clamp(Function):
    onnx_op = "clamp"

    @staticmethod
    def forward(ctx, a, lo, hi):
        ctx.mask = np.ones(a.shape, bool)
        if lo is not None:
            ctx.mask &= a >= lo
        if hi is not None:
            ctx.mask &= a <= hi
        return np.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask, None, None


class _MatMul(Function):
    onnx_op = "matmul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        if a.ndim == 1 and b.ndim == 1:
            return g * b, g * a
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = _unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Sum(Function):
    onnx_op = "sum"

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return np.asarray(np.sum(a, axis=axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        if ctx.axes is not None and not ctx.keepdim:
            g = np.expand_dims(g, tuple(a % len(ctx.shape) for a in ctx.axes))
        return np.broadcast_to(g, ctx.shape).copy(), None, None


class _Mean(Function):
    onnx_op = "mean"

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        ctx.count = a.size if axes is None else int(np.prod([a.shape[i] for i in axes]))
        return np.asarray(np.mean(a, axis=axes, keepdims=keepdim), dtype=a.dtype)

    @staticmethod
    def backward(ctx, g):
        if ctx.axes is not None and not ctx.keepdim:
            g = np.expand_dims(g, tuple(a % len(ctx.shape) for a in ctx.axes))
        return (np.broadcast_to(g, ctx.shape) / ctx.count).astype(g.dtype), None, None


class _Max(Function):
    onnx_op = "max"

    @staticmethod
    def forward(ctx, a, dim, keepdim):
        y = np.max(a, axis=dim, keepdims=True)
        # The gradient goes to one maximal element (the first), as torch's max(dim).
        flat_idx = np.argmax(a if dim is not None else a.reshape(-1), axis=dim if dim is not None else 0)
        ctx.shape, ctx.dim, ctx.keepdim, ctx.idx = a.shape, dim, keepdim, flat_idx
        return y if keepdim else np.asarray(np.squeeze(y, axis=dim) if dim is not None else y.reshape(()))

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, g.dtype)
        if ctx.dim is None:
            out.reshape(-1)[ctx.idx] = g.reshape(())
        else:
            gi = g if ctx.keepdim else np.expand_dims(g, ctx.dim)
            np.put_along_axis(out, np.expand_dims(ctx.idx, ctx.dim), gi, axis=ctx.dim)
        return out, None, None


class _Reshape(Function):
    onnx_op = "reshape"

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class _Permute(Function):
    onnx_op = "permute"

    @staticmethod
    def forward(ctx, a, perm):
        ctx.perm = perm
        return np.transpose(a, perm)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, np.argsort(ctx.perm)), None


class _Expand(Function):
    onnx_op = "expand"

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return _unbroadcast(g, ctx.shape), None


class _GetItem(Function):
    onnx_op = "getitem"

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return np.asarray(a[index])

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, ctx.dtype)
        np.add.at(out, ctx.index, g)
        return out, None


class _Cast(Function):
    onnx_op = "cast"

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class _Clone(Function):
    onnx_op = "clone"

    @staticmethod
    def forward(ctx, a):
        return np.ascontiguousarray(a).copy()

    @staticmethod
    def backward(ctx, g):
        return g


class _Cat(Function):
    onnx_op = "cat"

    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        splits = np.cumsum(ctx.sizes)[:-1]
        return (None, *np.split(g, splits, axis=ctx.dim))


class _Stack(Function):
    onnx_op = "stack"

    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        return np.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return (None, *[np.take(g, i, axis=ctx.dim) for i in range(g.shape[ctx.dim])])


def exp(t: Tensor) -> Tensor:
    return _Exp.apply(t)


def log(t: Tensor) -> Tensor:
    return _Log.apply(t)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension (torch.cat)."""
    if len(tensors) == 0:
        raise ValueError("tensors: expected a non-empty sequence")
    ts = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return _Cat.apply(dim % ts[0].ndim, *ts)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Stack along a new dimension (torch.stack)."""
    if len(tensors) == 0:
        raise ValueError("tensors: expected a non-empty sequence")
    ts = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return _Stack.apply(dim % (ts[0].ndim + 1), *ts)


concat = cat


def flatten(t: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return t.flatten(start_dim, end_dim)


def _shape_arg(shape) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def empty(*shape, dtype=_DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    return Tensor(np.empty(_shape_arg(shape), dtype), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False) -> Tensor:
    if dtype is None:
        dtype = _DEFAULT_FLOAT if isinstance(fill_value, float) else np.int64 if isinstance(fill_value, int) else None
    return Tensor(np.full(tuple(size), fill_value, dtype), requires_grad=requires_grad)


def linspace(start, end, steps: int, dtype=_DEFAULT_FLOAT) -> Tensor:
    return Tensor(np.linspace(start, end, steps, dtype=dtype))


def eye(n: int, m: int | None = None, dtype=_DEFAULT_FLOAT) -> Tensor:
    return Tensor(np.eye(n, m, dtype=dtype))


def rand(*shape, dtype=_DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    """U[0, 1) from the global generator (cnnfast.manual_seed)."""
    return Tensor(_random.generator().random(_shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def randn(*shape, dtype=_DEFAULT_FLOAT, requires_grad=False) -> Tensor:
    """N(0, 1) from the global generator (cnnfast.manual_seed)."""
    return Tensor(_random.generator().standard_normal(_shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=np.int64) -> Tensor:
    if high is None:
        low, high = 0, low
    return Tensor(_random.generator().integers(low, high, size=tuple(size)).astype(dtype))


def rand_like(t: Tensor, dtype=None) -> Tensor:
    return rand(*t.shape, dtype=dtype or t.dtype)


def randn_like(t: Tensor, dtype=None) -> Tensor:
    return randn(*t.shape, dtype=dtype or t.dtype)


class _Where(Function):
    onnx_op = "where"

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = np.asarray(cond, bool)
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.asarray(np.where(ctx.cond, a, b))

    @staticmethod
    def backward(ctx, g):
        zero = np.zeros((), g.dtype)
        return (None, _unbroadcast(np.where(ctx.cond, g, zero), ctx.shapes[0]),
                _unbroadcast(np.where(ctx.cond, zero, g), ctx.shapes[1]))


def where(condition, input, other) -> Tensor:
    """Elementwise condition ? input : other, differentiable in input and other."""
    ref = input if isinstance(input, Tensor) else other if isinstance(other, Tensor) else Tensor(np.asarray(input))
    return _Where.apply(_raw(condition), _lift(input, ref), _lift(other, ref))


def maximum(a: Tensor, b) -> Tensor:
    return where(_raw(a) >= _raw(b), a, b)


def minimum(a: Tensor, b) -> Tensor:
    return where(_raw(a) <= _raw(b), a, b)
