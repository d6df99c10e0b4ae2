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
from . import _device
from ._device import device, parse_to as _parse_to

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

    ``_array`` is the underlying NumPy array, shared (not copied) with ``numpy()``;
    ``data`` is, as in torch, a detached Tensor over the same storage. Floating tensors
    may ``requires_grad``; gradients accumulate into ``.grad`` on ``backward()`` as in PyTorch.
    """

    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected ops
    # A class-level empty default: only the few tensors that register one pay for a list.
    _post_accumulate_grad_hooks: tuple = ()
    # A leaf's gradient destination (set by DistributedDataParallel across ranks): a
    # callable (tensor) -> array or None that the backward pass may ask for where the leaf's
    # gradient is to be written, and the array it last handed out (autograd._grad_destinations).
    _grad_sink = None
    _grad_delivered = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        arr = data._array if isinstance(data, Tensor) else data
        if isinstance(arr, _device.DeviceArray):
            arr = arr if dtype is None else arr.astype(dtype, copy=False)
        elif not isinstance(arr, np.ndarray) or dtype is not None:
            arr = _as_array(arr, dtype)
        self._array: np.ndarray = arr
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._output_index = 0
        self._retains_grad = False
        self._hooks: list = []
        self._vc = [0]
        self._base = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        t = cls.__new__(cls)
        t._array = array if isinstance(array, (np.ndarray, _device.DeviceArray)) else np.asarray(array)
        t.grad = None
        t.grad_fn = None
        t._output_index = 0
        t._retains_grad = False
        t._hooks = []
        t._vc = [0]  # version counter: bumped by every in-place change; shared by views and detach()
        t._base = None  # for a view: the tensor whose storage it shows
        t.requires_grad = requires_grad
        return t

    # ---- properties --------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._array.shape

    @property
    def dtype(self):
        return self._array.dtype

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def device(self) -> "device":
        return _device.device_of(self._array)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def data(self) -> "Tensor":
        """The values as a new Tensor over the same storage, detached from the graph, with
        its own version counter: in-place changes made through it are invisible to autograd
        (torch's ``.data``). Assigning ``t.data = other`` swaps in other's storage."""
        return Tensor._wrap(self._array)

    @data.setter
    def data(self, value) -> None:
        self._array = value._array if isinstance(value, Tensor) else np.asarray(value)

    @property
    def _version(self) -> int:
        """How many in-place changes this storage has seen (torch's ``_version``)."""
        return self._vc[0]

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self._array.size)

    def __len__(self):
        return len(self._array)

    def __repr__(self):
        body = np.array2string(_device.host(self._array), separator=", ", precision=4, threshold=50)
        extra = "" if self.device.type == "cpu" else f", device='{self.device}'"
        if self.grad_fn is not None:
            extra = f", grad_fn=<{self.grad_fn.name()}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---- autograd ------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self._array.dtype.kind != "f":
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("you can only change requires_grad flags of leaf variables")
        self.requires_grad = requires_grad
        return self

    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        _backward(self, gradient, retain_graph)

    def retain_grad(self) -> None:
        self._retains_grad = True
        if self.grad_fn is not None:
            self.grad_fn._watch(self)

    def register_hook(self, hook) -> None:
        """hook(grad: np.ndarray) -> replacement or None, called when this tensor's gradient is computed."""
        self._hooks.append(hook)
        if self.grad_fn is not None:  # the graph keeps edges, not tensors: the node calls back
            self.grad_fn._watch(self)

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
            elif isinstance(g, _device.DeviceArray):
                self.grad = Tensor._wrap(g.astype(self.dtype))  # (astype copies)
            else:
                self.grad = Tensor._wrap(np.array(g, dtype=self.dtype, copy=True))
        else:
            self.grad._array = self.grad._array + g

    def detach(self) -> "Tensor":
        """Same storage, out of the graph; shares the version counter (as torch's detach)."""
        t = Tensor._wrap(self._array)
        t._vc, t._base = self._vc, self._base
        return t

    def detach_(self) -> "Tensor":
        self.grad_fn = None
        self.requires_grad = False
        return self

    # ---- conversion --------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if isinstance(self._array, _device.DeviceArray):
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first.")
        return self._array

    def item(self):
        if self._array.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars, got shape {self.shape}")
        return self._array.reshape(()).item()

    def tolist(self):
        return self._array.tolist()

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def half(self) -> "Tensor":
        return self.to(np.float16)

    def long(self) -> "Tensor":
        return self.to(np.int64)

    def int(self) -> "Tensor":
        return self.to(np.int32)

    def bool(self) -> "Tensor":
        return self.to(np.bool_)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.to(other.dtype)

    def to(self, *args, **kwargs) -> "Tensor":
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``, with keywords
        ``device``, ``dtype``, ``non_blocking`` (accepted: CPU copies are synchronous) and
        ``copy``. Returns ``self`` when nothing changes, as torch."""
        dev, dtype, copy = _parse_to(args, kwargs)
        out = self
        if dev is not None and not _device.is_on(self._array, dev):
            out = _ToDevice.apply(self, dev)
            copy = False
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _Cast.apply(out, np.dtype(dtype))
        elif copy:
            out = out.clone()
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, device=None, non_blocking: bool = False) -> "Tensor":
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    # DLPack and the CUDA array interface (torch, CuPy, JAX), without copies
    def __dlpack__(self, stream=None, **kwargs):
        return self.detach()._array.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    @property
    def __cuda_array_interface__(self):
        if not isinstance(self._array, _device.DeviceArray):
            raise AttributeError(f"__cuda_array_interface__: the tensor is on {self.device}, not a CUDA device")
        if self.requires_grad:
            raise RuntimeError("Can't export a tensor that requires grad; use tensor.detach()")
        return self._array.__cuda_array_interface__

    def clone(self) -> "Tensor":
        return _Clone.apply(self)

    def contiguous(self) -> "Tensor":
        return self if self._array.flags.c_contiguous else _Clone.apply(self)

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
        return self.add_(o)

    def __isub__(self, o):
        return self.sub_(o)

    def __imul__(self, o):
        return self.mul_(o)

    def __itruediv__(self, o):
        return self.div_(o)

    # comparisons give boolean tensors without gradients
    def __eq__(self, o):
        return Tensor._wrap(self._array == _raw(o))

    def __ne__(self, o):
        return Tensor._wrap(self._array != _raw(o))

    def __lt__(self, o):
        return Tensor._wrap(self._array < _raw(o))

    def __le__(self, o):
        return Tensor._wrap(self._array <= _raw(o))

    def __gt__(self, o):
        return Tensor._wrap(self._array > _raw(o))

    def __ge__(self, o):
        return Tensor._wrap(self._array >= _raw(o))

    __hash__ = object.__hash__

    def __bool__(self):
        return bool(self._array)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __getitem__(self, index):
        return _view_of(_GetItem.apply(self, _raw_index(index)), self)

    def __setitem__(self, index, value):
        self._overwrite("index assignment")
        self._array[_raw_index(index)] = _raw(value)

    # ---- reductions ---------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False):
        return _Sum.apply(self, _axes(dim), keepdim)

    def mean(self, dim=None, keepdim: bool = False):
        return _Mean.apply(self, _axes(dim), keepdim)

    def max(self, dim=None, keepdim: bool = False):
        """The maximum; with ``dim``, a ``(values, indices)`` named tuple as torch; with a
        tensor, the elementwise maximum."""
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        if dim is None:
            return _Max.apply(self, None, False)
        values = _Max.apply(self, dim, keepdim)
        idx = np.argmax(self._array, axis=dim)
        if keepdim:
            idx = np.expand_dims(idx, dim)
        return _ValuesIndices(values, Tensor._wrap(np.asarray(idx)))

    def min(self, dim=None, keepdim: bool = False):
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        if dim is None:
            return -((-self).max())
        values, idx = (-self).max(dim, keepdim)
        return _ValuesIndices(-values, idx)

    def argmax(self, dim=None, keepdim=False):
        idx = np.argmax(self._array, axis=dim)
        if keepdim and dim is not None:
            idx = np.expand_dims(idx, dim)
        return Tensor._wrap(np.asarray(idx))

    def var(self, dim=None, unbiased: bool = True, keepdim: bool = False):
        axes = _axes(dim)
        n = self._array.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) / (n - 1 if unbiased else n)

    def std(self, dim=None, unbiased: bool = True, keepdim: bool = False):
        return self.var(dim, unbiased, keepdim) ** 0.5

    # ---- shape ops ---------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _view_of(_Reshape.apply(self, tuple(shape)), self)

    def view(self, *shape):
        if not self._array.flags.c_contiguous:
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
        return _view_of(_Permute.apply(self, tuple(perm)), self)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return _view_of(_Permute.apply(self, tuple(d % self.ndim for d in dims)), self)

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
        return _view_of(_Expand.apply(self, shape), self)

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

    # ---- in-place ops, with torch's autograd rules -----------------------------------------
    # An in-place op writes into this tensor's storage and bumps its version counter, so a
    # graph that saved the old values refuses to backward (autograd.Function.apply records
    # the versions of what it saves). Under recording it becomes a node of the graph like
    # the out-of-place op: the op runs on a copy of the old values, the result is written
    # back, and this tensor takes the new grad_fn.

    def _check_inplace(self, what: str) -> None:
        if not is_grad_enabled():
            return
        if self.requires_grad and self.grad_fn is None:
            raise RuntimeError(f"{what}: a leaf Variable that requires grad is being used in an in-place operation.")
        base = self._base
        if base is not None and base.requires_grad:
            if base.grad_fn is None:
                raise RuntimeError(f"{what}: a view of a leaf Variable that requires grad is being used in an "
                                   "in-place operation.")
            raise RuntimeError(f"{what}: in-place change of a view of a tensor that requires grad is not supported "
                               "by cnnfast (torch rewrites the base's graph); use the out-of-place op")

    def _overwrite(self, what: str) -> None:
        """Checks before a non-differentiable write (fill_, normal_, index assignment...)."""
        self._check_inplace(what)
        if is_grad_enabled() and self.requires_grad:
            raise RuntimeError(f"{what}: overwriting a tensor that is part of a graph is not supported by cnnfast; "
                               "use torch.where/cat out of place, or do it under no_grad()")
        self._vc[0] += 1

    def _inplace(self, what: str, compute, others=(), fast=None) -> "Tensor":
        """Replace this tensor's values by ``compute(t)`` (an out-of-place Tensor op on t,
        which holds the old values). ``fast()``, when given, does the same write directly
        into the storage and is used when nothing is recorded."""
        self._check_inplace(what)
        recording = is_grad_enabled() and (self.requires_grad or any(getattr(o, "requires_grad", False) for o in others))
        if not recording:
            if fast is not None:
                fast()
            else:
                with no_grad():
                    self._write(compute(self)._array, what)
        else:
            old = Tensor._wrap(self._array.copy(), self.requires_grad)
            old.grad_fn, old._output_index = self.grad_fn, self._output_index
            out = compute(old)
            self._write(out._array, what)
            self.grad_fn, self._output_index, self.requires_grad = out.grad_fn, out._output_index, out.requires_grad
        self._vc[0] += 1
        return self

    def _write(self, values: np.ndarray, what: str) -> None:
        if values.shape != self.shape:
            raise RuntimeError(f"{what}: output with shape {list(self.shape)} doesn't match the broadcast shape "
                               f"{list(values.shape)}")
        np.copyto(self._array, values, casting="same_kind")

    def _inplace_ufunc(self, what: str, ufunc, other, compute):
        o = _raw(other)
        return self._inplace(what, compute, (other,),
                             lambda: ufunc(self._array, o, out=self._array, casting="same_kind"))

    def add_(self, other, alpha=1) -> "Tensor":
        other = other if alpha == 1 else other * alpha
        return self._inplace_ufunc("add_", np.add, other, lambda t: t + other)

    def sub_(self, other, alpha=1) -> "Tensor":
        other = other if alpha == 1 else other * alpha
        return self._inplace_ufunc("sub_", np.subtract, other, lambda t: t - other)

    def mul_(self, other) -> "Tensor":
        return self._inplace_ufunc("mul_", np.multiply, other, lambda t: t * other)

    def div_(self, other) -> "Tensor":
        return self._inplace_ufunc("div_", np.divide, other, lambda t: t / other)

    def clamp_(self, min=None, max=None) -> "Tensor":
        return self._inplace("clamp_", lambda t: t.clamp(min, max))

    def relu_(self) -> "Tensor":
        from .functional import relu

        return relu(self, inplace=True)

    def sigmoid_(self) -> "Tensor":
        return self._inplace("sigmoid_", lambda t: t.sigmoid())

    def tanh_(self) -> "Tensor":
        return self._inplace("tanh_", lambda t: t.tanh())

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        self._overwrite("uniform_")
        self._array[...] = _random.generator().uniform(a, b, self.shape)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        self._overwrite("normal_")
        self._array[...] = _random.generator().normal(mean, std, self.shape)
        return self

    def zero_(self) -> "Tensor":
        self._overwrite("zero_")
        self._array[...] = 0
        return self

    def fill_(self, value) -> "Tensor":
        self._overwrite("fill_")
        self._array[...] = _raw(value)
        return self

    def copy_(self, src, non_blocking: bool = False) -> "Tensor":
        src = _raw(src)
        if np.shape(src) != self.shape and np.broadcast_shapes(np.shape(src), self.shape) != self.shape:
            raise ValueError(f"copy_: source shape {np.shape(src)} does not broadcast to {self.shape}")
        self._overwrite("copy_")
        self._array[...] = src
        return self

    # ---- torch names that training scripts use ------------------------------------------
    def __array__(self, dtype=None, copy=None):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if isinstance(self._array, _device.DeviceArray):
            return self.numpy()  # raises, naming .cpu()
        a = self._array if dtype is None else self._array.astype(dtype, copy=False)
        return a.copy() if copy else a

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __index__(self) -> int:
        if self._array.size != 1 or self.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._array.reshape(()).item())

    def __format__(self, spec: str) -> str:
        if self.ndim == 0:
            return format(self._array.item(), spec)
        return format(str(self), spec)

    def element_size(self) -> int:
        return int(self._array.itemsize)

    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def equal(self, other) -> bool:
        return self.shape == np.shape(_raw(other)) and bool(np.array_equal(self._array, _raw(other)))

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
        return bool(np.allclose(self._array, _raw(other), rtol, atol, equal_nan))

    def isnan(self):
        return Tensor._wrap(np.isnan(self._array))

    def isfinite(self):
        return Tensor._wrap(np.isfinite(self._array))

    def all(self, dim=None, keepdim: bool = False):
        return Tensor._wrap(np.asarray(np.all(self._array, axis=_axes(dim), keepdims=keepdim)))

    def any(self, dim=None, keepdim: bool = False):
        return Tensor._wrap(np.asarray(np.any(self._array, axis=_axes(dim), keepdims=keepdim)))

    def add(self, other, alpha=1):
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1):
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def pow(self, exponent):
        return self ** exponent

    def neg(self):
        return -self

    def matmul(self, other):
        return self @ other

    mm = matmul

    def square(self):
        return self * self

    def prod(self, dim=None, keepdim: bool = False):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("prod: the gradient of prod is not implemented in cnnfast; use exp(log(x).sum())")
        return Tensor._wrap(np.asarray(np.prod(self._array, axis=_axes(dim), keepdims=keepdim)))

    def argmin(self, dim=None, keepdim=False):
        idx = np.argmin(self._array, axis=dim)
        if keepdim and dim is not None:
            idx = np.expand_dims(idx, dim)
        return Tensor._wrap(np.asarray(idx))

    def t(self):
        """Transpose of a tensor with at most 2 dimensions (torch.t)."""
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self if self.ndim < 2 else self.transpose(0, 1)

    def view_as(self, other):
        return self.view(*other.shape)

    def reshape_as(self, other):
        return self.reshape(*other.shape)

    def expand_as(self, other):
        return self.expand(*other.shape)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
        """The k largest (or smallest) entries along ``dim`` and their indices, as torch.topk.
        Ties keep the lower index first."""
        dim = dim % max(self.ndim, 1)
        if not 0 <= int(k) <= (self.shape[dim] if self.ndim else 1):
            raise RuntimeError(f"topk: k ({k}) is out of range for dimension {dim} of size {self.shape[dim]}")
        key = -self._array if largest and self.dtype.kind != "b" else self._array
        order = np.argsort(key, axis=dim, kind="stable")
        idx = np.take(order, np.arange(int(k)), axis=dim)
        return _ValuesIndices(_TakeAlong.apply(self, idx, dim), Tensor._wrap(idx))

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False):
        dim = dim % max(self.ndim, 1)
        return self.topk(self.shape[dim], dim, largest=descending)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False):
        return self.sort(dim, descending).indices

    def gather(self, dim: int, index):
        return _TakeAlong.apply(self, np.asarray(_raw(index)), dim % self.ndim)

    def chunk(self, chunks: int, dim: int = 0):
        n = self.shape[dim]
        step = -(-n // int(chunks))
        return tuple(self[(slice(None),) * (dim % self.ndim) + (slice(i, i + step),)] for i in range(0, n, step))

    def split(self, split_size, dim: int = 0):
        n = self.shape[dim]
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, int) else list(split_size)
        out, start = [], 0
        for size in sizes:
            out.append(self[(slice(None),) * (dim % self.ndim) + (slice(start, start + size),)])
            start += size
        return tuple(out)


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


def _made(array: np.ndarray, device, requires_grad: bool) -> Tensor:
    """The end of every factory: move to the device (a leaf there, as torch), then wrap."""
    if device is not None:
        array = _device.to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)


def tensor(data, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False) -> Tensor:
    """A new Tensor holding a copy of ``data`` (as ``torch.tensor``: later changes to the
    source do not show, and changes to the tensor do not reach the source). Use
    ``from_numpy``/``as_tensor`` to share memory with a NumPy array."""
    src = data._array if isinstance(data, Tensor) else data
    arr = _as_array(src, dtype)
    if isinstance(src, np.ndarray) and np.may_share_memory(arr, src):
        arr = arr.copy()
    return _made(arr, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """``data`` as a Tensor, sharing memory when it is already a NumPy array or Tensor of
    the requested dtype (as ``torch.as_tensor``)."""
    if isinstance(data, Tensor):
        out = data if dtype is None or np.dtype(dtype) == data.dtype else data.to(dtype)
        return out if device is None else out.to(device)
    if isinstance(data, _device.DeviceArray):
        out = Tensor._wrap(data if dtype is None else data.astype(dtype, copy=False))
    else:
        out = Tensor._wrap(_as_array(data, dtype))
    return out if device is None else out.to(device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A Tensor sharing memory with ``array`` (no copy), as ``torch.from_numpy``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array)


def from_dlpack(obj) -> Tensor:
    """A Tensor over ``obj``'s memory without a copy (``torch.from_dlpack``): a CUDA array
    (torch, CuPy, JAX: DLPack or ``__cuda_array_interface__``) gives a CUDA tensor, a host
    one a CPU tensor."""
    dev = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else None
    if dev == 2 or (dev is None and hasattr(obj, "__cuda_array_interface__")):  # kDLCUDA
        from . import cuda

        b = _device.backend_for("cuda")
        return Tensor._wrap(_device.DeviceArray(cuda.as_device_array(obj), b))
    return Tensor._wrap(np.from_dlpack(obj))


def _dtype_or_default(dtype):
    return _DEFAULT_FLOAT if dtype is None else dtype


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.zeros(_shape_arg(shape), _dtype_or_default(dtype)), device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.ones(_shape_arg(shape), _dtype_or_default(dtype)), device, requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.zeros_like(_raw(t), dtype=dtype), device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.ones_like(_raw(t), dtype=dtype), device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.full_like(_raw(t), fill_value, dtype=dtype), device, requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.empty_like(_raw(t), dtype=dtype), device, requires_grad)


def arange(*args, dtype=None, device=None, requires_grad=False) -> Tensor:
    """As torch.arange: int64 when every bound is an integer, else float32."""
    args = [_raw(a) for a in args]
    arr = np.arange(*args, dtype=dtype) if dtype else _as_array(np.arange(*args).tolist())
    return _made(arr, device, requires_grad)


def _raw(x):
    return x._array if isinstance(x, Tensor) else x


def _owner(a: np.ndarray):
    return a if a.base is None else a.base


def _view_of(out: Tensor, src: Tensor) -> Tensor:
    """Mark ``out`` as a view of ``src`` when it shows src's storage: it then shares src's
    version counter, so an in-place change through either is seen by graphs that saved
    the other (torch's view semantics)."""
    if _owner(out._array) is _owner(src._array):
        out._vc = src._vc
        out._base = src._base if src._base is not None else src
    return out


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
        return _device.asarray(a + b)

    @staticmethod
    def backward(ctx, g):
        return _unbroadcast(g, ctx.shapes[0]), _unbroadcast(g, ctx.shapes[1])


class _Sub(Function):
    onnx_op = "sub"

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return _device.asarray(a - b)

    @staticmethod
    def backward(ctx, g):
        return _unbroadcast(g, ctx.shapes[0]), _unbroadcast(-g, ctx.shapes[1])


class _Mul(Function):
    onnx_op = "mul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _device.asarray(a * b)

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
        return _device.asarray(a / b)

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
        return _device.asarray(np.sum(a, axis=axes, keepdims=keepdim))

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
        return _device.asarray(np.mean(a, axis=axes, keepdims=keepdim), dtype=a.dtype)

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


class _TakeAlong(Function):
    """Values at ``index`` along ``dim`` (np.take_along_axis); the gradient is scattered back."""

    @staticmethod
    def forward(ctx, a, index, dim):
        ctx.shape, ctx.index, ctx.dim = a.shape, index, dim
        return np.take_along_axis(a, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, g.dtype)
        idx = [np.arange(n).reshape([-1 if i == d else 1 for i in range(g.ndim)]) for d, n in enumerate(g.shape)]
        idx[ctx.dim] = ctx.index
        np.add.at(out, tuple(idx), g)
        return out, None, None


class _Cast(Function):
    onnx_op = "cast"

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class _ToDevice(Function):
    onnx_op = "identity"

    @staticmethod
    def forward(ctx, a, dev):
        ctx.source = _device.device_of(a)
        return _device.to_device(a, dev)

    @staticmethod
    def backward(ctx, g):
        return _device.to_device(g, ctx.source), None


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


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.empty(_shape_arg(shape), _dtype_or_default(dtype)), device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    fill_value = _raw(fill_value)
    if dtype is None:
        dtype = (np.bool_ if isinstance(fill_value, (bool, np.bool_)) else np.int64 if isinstance(fill_value, int)
                 else _DEFAULT_FLOAT if isinstance(fill_value, float) else None)
    return _made(np.full(_shape_arg((size,)), fill_value, dtype), device, requires_grad)


def linspace(start, end, steps: int, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.linspace(start, end, steps, dtype=_dtype_or_default(dtype)), device, requires_grad)


def eye(n: int, m: int | None = None, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _made(np.eye(n, m, dtype=_dtype_or_default(dtype)), device, requires_grad)


def _rng(generator):
    return _random.generator() if generator is None else generator._rng


def rand(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """U[0, 1) from the global generator (cnnfast.manual_seed) or ``generator``."""
    arr = _rng(generator).random(_shape_arg(shape)).astype(_dtype_or_default(dtype))
    return _made(arr, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """N(0, 1) from the global generator (cnnfast.manual_seed) or ``generator``."""
    arr = _rng(generator).standard_normal(_shape_arg(shape)).astype(_dtype_or_default(dtype))
    return _made(arr, device, requires_grad)


def randint(low, high=None, size=(), dtype=np.int64, device=None, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low
    return _made(_rng(generator).integers(low, high, size=tuple(size)).astype(dtype), device, False)


def randperm(n: int, dtype=np.int64, device=None, generator=None) -> Tensor:
    return _made(_rng(generator).permutation(int(n)).astype(dtype), device, False)


def rand_like(t: Tensor, dtype=None, device=None) -> Tensor:
    return rand(*t.shape, dtype=dtype or t.dtype, device=device)


def randn_like(t: Tensor, dtype=None, device=None) -> Tensor:
    return randn(*t.shape, dtype=dtype or t.dtype, device=device)


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
