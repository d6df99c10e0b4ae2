"""``cnnfast.device``: where a tensor lives, with torch's spelling (``device("cpu")``,
``device("cuda:0")``, ``device("cuda", 0)``), and the device layer under Tensor.

A CPU tensor's ``_array`` is a NumPy array. A tensor on another device holds a
``DeviceArray``: a small NumPy-like wrapper (shape, dtype, reshape, + - * /, sum,
fill, astype) over a backend's native array, which refuses to turn into a NumPy
array (``.cpu()`` copies, as torch). A backend (``Backend``) supplies the few
primitives the wrapper needs and a kernel namespace with the CPU kernels' names
(``cnnfast._C.cuda`` for CUDA); ``kernels(*arrays)`` picks the namespace for the
device of a kernel's inputs and refuses mixed devices, so the functional layer
runs wherever its inputs live. The backends are registered by type ("cuda"); the
tests register a stand-in that keeps its data in host memory but behaves as a
device, so that all of this is checked on machines with no GPU.
"""
from __future__ import annotations

import numpy as np

_KNOWN = ("cpu", "cuda", "mps", "xpu", "meta")


class device:
    """A device name: ``type`` ("cpu", "cuda", ...) and optional ``index``."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002 - torch's argument name
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        if isinstance(type, int) and not isinstance(type, bool):
            type, index = "cuda", type
        if not isinstance(type, str):
            raise TypeError(f"device: expected a string, an int or a device, got {builtin_type(type).__name__}")
        name = type
        if ":" in name:
            name, _, idx = name.partition(":")
            if index is not None or not idx.isdigit():
                raise RuntimeError(f"device: invalid device string {type!r}")
            index = int(idx)
        if name not in _KNOWN:
            raise RuntimeError(f"device: expected one of {', '.join(_KNOWN)} device type at start of device "
                               f"string, got {type!r}")
        if index is not None and (int(index) < 0):
            raise RuntimeError(f"device: index must be non-negative, got {index}")
        self.type = name
        self.index = None if index is None else int(index)

    def __repr__(self):
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except (RuntimeError, TypeError):
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


builtin_type = type
CPU = device("cpu")


def as_device(d) -> device:
    return d if isinstance(d, device) else device(d)


def require_cpu(d) -> None:
    """Accept the CPU; refuse any other device with the reason (for code that has no
    device path, such as the factories' NumPy-built results before they are moved)."""
    d = as_device(d)
    if d.type == "cpu":
        return
    backend_for(d)  # raises with the reason when the device cannot be used
    raise RuntimeError(f"cannot create this on {d} directly; create it on the CPU and move it with .to({str(d)!r})")


def _is_dtype(x) -> bool:
    if isinstance(x, (str, device)):
        return False
    try:
        np.dtype(x)
    except TypeError:
        return False
    return x is not None


def parse_to(args: tuple, kwargs: dict):
    """(device or None, dtype or None, copy) from ``Tensor.to``/``Module.to`` arguments."""
    dev = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)  # CPU copies are synchronous; accepted for torch's scripts
    copy = bool(kwargs.pop("copy", False))
    kwargs.pop("memory_format", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    args = list(args)
    if args and hasattr(args[0], "_array") and hasattr(args[0], "grad_fn"):  # to(other_tensor)
        other = args.pop(0)
        dev, dtype = other.device, other.dtype
    for a in args:
        if isinstance(a, bool):  # the positional non_blocking / copy flags
            continue
        if _is_dtype(a):
            dtype = a
        elif isinstance(a, (str, device, int)):
            dev = a
        else:
            raise TypeError(f"to(): expected a device, a dtype or a tensor, got {type(a).__name__}")
    return (None if dev is None else as_device(dev)), dtype, copy


# ---- backends -------------------------------------------------------------------------

class Backend:
    """What a device type provides. ``kernels``: a module with the CPU kernels' names
    and argument order, taking and returning native arrays. The primitives below work
    on native arrays (``native``: their type) and are all the DeviceArray wrapper needs."""

    type = "?"
    native = ()  # the class (or tuple of classes) of its native arrays
    kernels = None

    def device_count(self) -> int:
        raise NotImplementedError

    def unavailable_reason(self) -> str:
        """Why this backend cannot be used ("" when it can)."""
        raise NotImplementedError

    def index_of(self, h) -> int:
        return 0

    def from_numpy(self, a: np.ndarray, index: int):
        raise NotImplementedError

    def to_numpy(self, h) -> np.ndarray:
        raise NotImplementedError

    def empty(self, shape: tuple, dtype: np.dtype, index: int):
        raise NotImplementedError

    def reshape(self, h, shape: tuple):
        """A view of h with another shape (same elements, no copy)."""
        raise NotImplementedError

    def copy(self, h, out=None):
        raise NotImplementedError

    def fill(self, h, value: float) -> None:
        raise NotImplementedError

    def binary(self, op: str, a, b, out=None):
        """op in add, sub, mul, div, rsub, rdiv; b a native array of a's shape and dtype, or
        a Python float. Returns a new native array unless ``out`` is given."""
        raise NotImplementedError

    def sum(self, h):
        """The sum of all elements, as a 0-d native array of h's dtype."""
        raise NotImplementedError

    def count_nonfinite(self, h) -> int:
        raise NotImplementedError

    def cast(self, h, dtype: np.dtype):
        raise NotImplementedError


_BACKENDS: dict = {}


def register_backend(type_name: str, backend: Backend | None):
    """Installs (or, with None, removes) the backend of a device type; returns the previous one."""
    prev = _BACKENDS.get(type_name)
    if backend is None:
        _BACKENDS.pop(type_name, None)
    else:
        _BACKENDS[type_name] = backend
    return prev


def _default_backend(type_name: str):
    if type_name == "cuda" and "cuda" not in _BACKENDS:
        from . import cuda  # registers the CUDA backend when this build has one

        cuda._register()
    return _BACKENDS.get(type_name)


def backend_for(d) -> Backend:
    """The backend of a non-CPU device, or a RuntimeError saying why it cannot be used."""
    d = as_device(d)
    b = _default_backend(d.type)
    if b is None:
        raise RuntimeError(f"cannot use {d}: cnnfast has no {d.type} backend")
    why = b.unavailable_reason()
    if why:
        raise RuntimeError(f"cannot use {d}: {d.type.upper() if d.type == 'cuda' else d.type} is not available: "
                           f"{why}. Use device('cpu'), or cnnfast.accelerator.is_available() to choose")
    if (d.index or 0) >= b.device_count():
        raise RuntimeError(f"cannot use {d}: there are {b.device_count()} {d.type} device(s)")
    return b


def is_available(type_name: str) -> bool:
    b = _default_backend(type_name)
    return b is not None and not b.unavailable_reason()


# ---- the device array ------------------------------------------------------------------

class _Flags:
    __slots__ = ("c_contiguous", "f_contiguous", "aligned", "writeable", "owndata")

    def __init__(self, ndim: int, owndata: bool):
        self.c_contiguous = self.aligned = self.writeable = True
        self.f_contiguous = ndim <= 1
        self.owndata = owndata


# [True] once any DeviceArray has been made in this process: before that, dispatch sends
# every kernel call to the CPU without looking at its arguments.
_device_arrays_made = [False]


class DeviceArray:
    """An array in a device's memory with the part of ndarray's interface that autograd and
    the layers use on every device: metadata, reshape views, same-shape or scalar arithmetic,
    whole-array sums, fill, copy and casts. Anything else (broadcasting, fancy indexing,
    NumPy functions) raises instead of silently copying to the host."""

    __array_priority__ = 2000  # ndarray (op) DeviceArray defers to our reflected ops, which refuse
    __slots__ = ("handle", "backend", "shape", "dtype", "base", "__weakref__")

    def __init__(self, handle, backend: Backend, shape=None, dtype=None, base=None):
        _device_arrays_made[0] = True
        self.handle = handle
        self.backend = backend
        self.shape = tuple(int(s) for s in (handle.shape if shape is None else shape))
        self.dtype = np.dtype(handle.dtype if dtype is None else dtype)
        self.base = base

    # metadata
    @property
    def device(self) -> device:
        return device(self.backend.type, self.backend.index_of(self.handle))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def flags(self) -> _Flags:
        return _Flags(self.ndim, self.base is None)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # host interop: refused implicitly, explicit copies only
    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the "
                        "tensor to host memory first.")

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", "")
        if name in ("zeros_like", "ones_like", "empty_like", "full_like") and args and args[0] is self:
            dt = kwargs.get("dtype") or self.dtype
            out = empty(self.shape, dt, self.device)
            if name != "empty_like":
                out.fill({"zeros_like": 0.0, "ones_like": 1.0}.get(name, kwargs.get("fill_value",
                                                                                  args[1] if len(args) > 1 else 0)))
            return out
        if name == "copyto":  # load_state_dict's in-place copy, either way between host and device
            dst, src = args[0], args[1] if len(args) > 1 else kwargs["src"]
            casting = kwargs.get("casting", "same_kind")
            if not isinstance(dst, DeviceArray):
                return np.copyto(dst, src.get() if isinstance(src, DeviceArray) else src, casting=casting)
            if not isinstance(src, DeviceArray):
                src = np.asarray(src)
                if src.shape != dst.shape:
                    raise ValueError(f"copyto: shapes {src.shape} and {dst.shape} differ (no broadcasting on devices)")
                src = to_device(src.astype(dst.dtype, casting=casting), dst.device)
            dst[...] = src
            return None
        if name in ("sum", "mean") and args and args[0] is self:
            return getattr(self, name)(axis=kwargs.get("axis"), keepdims=kwargs.get("keepdims", False))
        if name == "broadcast_to" and args and args[0] is self:
            return self._broadcast(tuple(args[1] if len(args) > 1 else kwargs["shape"]))
        if name == "expand_dims" and args and args[0] is self:
            axes = args[1] if len(args) > 1 else kwargs["axis"]
            shape = list(self.shape)
            for ax in sorted(a % (self.ndim + len(np.atleast_1d(axes))) for a in np.atleast_1d(axes)):
                shape.insert(ax, 1)
            return self.reshape(shape)
        if name == "shape":
            return self.shape
        if name == "ndim":
            return self.ndim
        if name == "size" and len(args) == 1:
            return self.size
        raise TypeError(f"numpy.{name} does not run on {self.device} arrays; move the tensor to the CPU with "
                        ".cpu() first, or use a cnnfast operation")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise TypeError(f"numpy.{ufunc.__name__} does not run on {self.device} arrays; move the tensor to the CPU "
                        "with .cpu() first")

    def get(self) -> np.ndarray:
        """A host copy (CuPy's name)."""
        return self.backend.to_numpy(self.handle)

    def item(self):
        if self.size != 1:
            raise ValueError(f"can only convert an array of size 1 to a Python scalar, got shape {self.shape}")
        return self.get().reshape(()).item()

    def tolist(self):
        return self.get().tolist()

    def __float__(self):
        return float(self.item())

    def __bool__(self):
        return bool(self.item())

    # views and copies
    def reshape(self, *shape, order="C"):
        if order != "C":
            raise ValueError("device arrays are C-contiguous: only order='C' reshapes")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) == 1:
            known = 1
            for s in shape:
                known *= s if s != -1 else 1
            shape = tuple(self.size // known if s == -1 and known else s for s in shape)
        n = 1
        for s in shape:
            n *= s
        if n != self.size or any(s < 0 for s in shape):
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        if shape == self.shape:
            return self
        return DeviceArray(self.backend.reshape(self.handle, shape), self.backend, shape, self.dtype,
                           self.base if self.base is not None else self)

    def ravel(self):
        return self.reshape(-1)

    def copy(self, order="C"):
        return DeviceArray(self.backend.copy(self.handle), self.backend, self.shape, self.dtype)

    def astype(self, dtype, copy=True, casting=None):
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self.copy() if copy else self
        return DeviceArray(self.backend.cast(self.handle, dtype), self.backend, self.shape, dtype)

    def fill(self, value) -> None:
        self.backend.fill(self.handle, float(value))

    def __setitem__(self, index, value):
        if not (index is Ellipsis or (isinstance(index, slice) and index == slice(None))):
            raise TypeError(f"device arrays take whole-array assignment only (a[...] = v), got index {index!r}")
        if isinstance(value, DeviceArray):
            _check_pair(self, value, "assignment")
            if value.dtype != self.dtype:
                value = value.astype(self.dtype)
            self.backend.copy(value.handle, out=self.handle)
        elif isinstance(value, (int, float, bool, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0):
            self.fill(float(value))
        elif isinstance(value, np.ndarray) and value.shape == self.shape:
            # host values written into device memory (nn.init's normal_/uniform_ draw on the host)
            self.backend.copy(to_device(value.astype(self.dtype, copy=False), self.device).handle, out=self.handle)
        else:
            raise TypeError(f"cannot assign a {type(value).__name__} of shape {np.shape(value)} to a {self.device} "
                            f"array of shape {self.shape}; move it there first")

    def __getitem__(self, index):
        if index is Ellipsis or index == ():
            return self
        raise TypeError(f"indexing {self.device} arrays is not supported yet (index {index!r}); use .cpu() first")

    # arithmetic: same shape and device, or a Python/NumPy scalar
    def _binary(self, op: str, other, out=None):
        if isinstance(other, DeviceArray):
            _check_pair(self, other, op)
            if other.shape != self.shape:
                if other.size == 1 and other.ndim <= self.ndim:
                    other = float(other.item())
                elif self.size == 1 and self.ndim <= other.ndim and op in ("add", "mul"):
                    return other._binary(op, float(self.item()))
                else:
                    raise ValueError(f"{op} of {self.device} arrays needs equal shapes or a scalar (no "
                                     f"broadcasting on devices yet), got {self.shape} and {other.shape}")
            else:
                if other.dtype != self.dtype:
                    raise TypeError(f"{op} of {self.device} arrays needs equal dtypes, got {self.dtype} and "
                                    f"{other.dtype}")
                other = other.handle
        elif isinstance(other, (int, float, np.number)) and not isinstance(other, bool):
            other = float(other)
        elif isinstance(other, np.ndarray) and other.ndim == 0:
            other = float(other)
        else:
            raise TypeError(f"{op} of a {self.device} array and a {type(other).__name__} "
                            f"{'on the CPU' if isinstance(other, np.ndarray) else ''}: move both to one device")
        if self.dtype.kind not in "fiu" or (self.dtype.kind != "f" and op in ("div", "rdiv")):
            raise TypeError(f"{op} on {self.device} is not supported for {self.dtype} arrays")
        h = self.backend.binary(op, self.handle, other, out=None if out is None else out.handle)
        return out if out is not None else DeviceArray(h, self.backend, self.shape, self.dtype)

    def __neg__(self):
        return self._binary("mul", -1.0)

    def sum(self, axis=None, dtype=None, keepdims=False):
        if axis is not None and tuple(np.atleast_1d(axis)) != tuple(range(self.ndim)) or dtype is not None:
            raise TypeError(f"sum over some axes is not supported on {self.device} arrays yet; use .cpu() first")
        s = DeviceArray(self.backend.sum(self.handle), self.backend, (), self.dtype)
        return s.reshape((1,) * self.ndim) if keepdims else s

    def _broadcast(self, shape):
        """This array repeated to ``shape``: only from one element on devices (a scalar's gradient)."""
        if tuple(shape) == self.shape:
            return self
        if self.size != 1:
            raise ValueError(f"broadcasting on {self.device} is only from a single element, got {self.shape} to "
                             f"{tuple(shape)}")
        out = empty(shape, self.dtype, self.device)
        out.fill(0.0)
        return out._binary("add", self, out=out)

    def mean(self, axis=None, keepdims=False):
        return self.sum(axis, keepdims=keepdims) * (1.0 / max(self.size, 1))

    def all_finite(self) -> bool:
        return self.dtype.kind != "f" or self.backend.count_nonfinite(self.handle) == 0

    # torch and CuPy interop, through the native array
    @property
    def __cuda_array_interface__(self):
        return self.handle.__cuda_array_interface__

    def __dlpack__(self, stream=None, **kwargs):
        return self.handle.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.handle.__dlpack_device__()


def _operator(op: str, inplace: bool):
    def method(self, other):
        return self._binary(op, other, out=self if inplace else None)

    return method


# a + b, b + a, a += b, ... : same shape and device, or a scalar (see _binary)
for _name, _op in (("add", "add"), ("radd", "add"), ("sub", "sub"), ("rsub", "rsub"), ("mul", "mul"),
                   ("rmul", "mul"), ("truediv", "div"), ("rtruediv", "rdiv")):
    setattr(DeviceArray, f"__{_name}__", _operator(_op, False))
    if not _name.startswith("r"):
        setattr(DeviceArray, f"__i{_name}__", _operator(_op, True))


def _check_pair(a: DeviceArray, b: DeviceArray, what: str) -> None:
    if a.backend is not b.backend or a.device != b.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{a.device} and {b.device}! ({what})")


def device_of(a) -> device:
    """The device of an array (NumPy arrays and anything else that is not a DeviceArray: the CPU)."""
    return a.device if isinstance(a, DeviceArray) else CPU


def empty(shape, dtype, d) -> DeviceArray:
    d = as_device(d)
    b = backend_for(d)
    shape = tuple(int(s) for s in shape)
    return DeviceArray(b.empty(shape, np.dtype(dtype), d.index or 0), b, shape, dtype)


def is_on(a, d) -> bool:
    """Whether array ``a`` already lives on device ``d`` ("cuda" without an index: any CUDA device)."""
    here = device_of(a)
    d = as_device(d)
    return here.type == d.type and (d.index is None or here.index in (None, d.index) or d.type == "cpu")


def to_device(a, d):
    """``a`` (a NumPy or device array) on device ``d``: the same object when it is already
    there, else a copy."""
    d = as_device(d)
    if is_on(a, d):
        return a
    if d.type == "cpu":
        return a.get()
    if isinstance(a, DeviceArray):
        a = a.get()
    b = backend_for(d)
    # C order (ascontiguousarray would make a 0-d array 1-d) and native byte order
    a = np.require(a, dtype=None if a.dtype.isnative else a.dtype.newbyteorder("="), requirements="C")
    return DeviceArray(b.from_numpy(a, d.index or 0), b, a.shape, a.dtype)


def host(a):
    """A NumPy view or copy of any array (for code that must read values on the host)."""
    return a.get() if isinstance(a, DeviceArray) else np.asarray(a)


def as_array(a):
    """``np.asarray`` that leaves device arrays where they are."""
    return a if isinstance(a, DeviceArray) else np.asarray(a)


def zeros(shape, dtype, like=None):
    """Zeros on the device of ``like`` (the CPU when it is None or a NumPy array)."""
    if isinstance(like, DeviceArray):
        out = empty(shape, dtype, like.device)
        out.fill(0.0)
        return out
    return np.zeros(shape, dtype)


def is_float_array(a) -> bool:
    return isinstance(a, (np.ndarray, DeviceArray)) and a.dtype.kind == "f"


class _Namespace:
    """Functions made on first use by ``_make(name)`` and kept."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        fn = self.__dict__.get(name)  # (only reached on a miss; kept as an instance attribute)
        if fn is None:
            fn = self._make(name)
            setattr(self, name, fn)
        return fn


class _KernelNamespace(_Namespace):
    """A backend's kernels under the CPU names: DeviceArray arguments go in as native
    arrays, native results come back as DeviceArrays. A name the backend lacks raises
    NotImplementedError naming the op and the way out (.cpu())."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def _make(self, name):
        b = self._backend
        raw = getattr(b.kernels, name, None)
        if raw is None:
            def missing(*args, **kwargs):
                raise NotImplementedError(f"{name}: this operation has no {b.type} kernel yet; move its inputs to "
                                          "the CPU with .cpu()")
            return missing

        first = []  # the device of the call's first device array

        def unwrap(v):
            if isinstance(v, DeviceArray):
                if not first:
                    first.append(v)
                elif v.backend is not first[0].backend or v.device != first[0].device:
                    _check_pair(first[0], v, name)
                return v.handle
            if isinstance(v, np.ndarray) and v.ndim > 0:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{first[0].device if first else b.type} and cpu! ({name})")
            if isinstance(v, (tuple, list)):
                return type(v)(unwrap(x) for x in v)
            return v

        def wrap(r):
            if isinstance(r, b.native):
                return DeviceArray(r, b)
            if isinstance(r, tuple):
                return tuple(wrap(x) for x in r)
            if isinstance(r, list):
                return [wrap(x) for x in r]
            return r

        def call(*args, **kwargs):
            first.clear()
            return wrap(raw(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}))

        call.__name__ = name
        return call


def kernels(*arrays):
    """The kernel namespace for the device of ``arrays`` (None entries and scalars ignored):
    ``cnnfast._C`` on the CPU, the backend's kernels on a device. Mixed devices raise
    torch's RuntimeError."""
    found = None
    for a in arrays:
        if isinstance(a, DeviceArray):
            d = a.device
        elif isinstance(a, np.ndarray):
            d = CPU
        else:
            continue
        if found is None:
            found = d
        elif d != found:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{found} and {d}!")
    if found is None or found.type == "cpu":
        from . import _C

        return _C
    return _namespace(backend_for(found))


def _namespace(b: Backend) -> "_KernelNamespace":
    ns = getattr(b, "_namespace", None)
    if ns is None:
        ns = b._namespace = _KernelNamespace(b)
    return ns


class _Dispatch(_Namespace):
    """``dispatch.<kernel>(*args)``: the kernel of that name on the device of its array
    arguments (``cnnfast._C``'s on the CPU). The functional layer calls kernels through it,
    so every op runs where its inputs live and mixed devices raise."""

    def _make(self, name):
        from . import _C

        cpu_fn = getattr(_C, name)
        made = _device_arrays_made

        def fn(*args, **kwargs):
            # Until a device array exists every argument is a host one: no scan at all.
            if not made[0]:
                return cpu_fn(*args, **kwargs)
            # The common case (host arrays) costs one scan of the arguments, no allocation.
            for a in args:
                if a.__class__ is DeviceArray:
                    break
            else:
                for a in kwargs.values():
                    if a.__class__ is DeviceArray:
                        break
                else:
                    return cpu_fn(*args, **kwargs)
            # the device kernel's wrapper refuses host arrays and arrays of other devices
            return getattr(_namespace(a.backend), name)(*args, **kwargs)

        fn.__name__ = name
        return fn


dispatch = _Dispatch()


def asarray(a, dtype=None):
    """``np.asarray(a, dtype)`` that leaves a device array on its device (cast there)."""
    if isinstance(a, DeviceArray):
        return a if dtype is None else a.astype(dtype, copy=False)
    return np.asarray(a, dtype=dtype)


def resolve(name: str) -> device:
    """``--device``'s value as a device: "auto" is the GPU when one can be used, else the CPU;
    "cuda" (or "cuda:N") without a usable GPU raises a ValueError that says why."""
    if name == "auto":
        return device("cuda") if is_available("cuda") else CPU
    try:
        d = as_device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or auto, got {name!r}") from exc
    if d.type == "cpu":
        return d
    try:
        backend_for(d)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: {exc}") from None
    return d


def all_finite(a) -> bool:
    """Whether every element of a float array is finite, counted where the array lives."""
    if isinstance(a, DeviceArray):
        return a.all_finite()
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())
