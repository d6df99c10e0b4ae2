"""Helpers shared by the functional modules."""
import numpy as np

from ..tensor import Tensor


def contiguous(a: np.ndarray) -> np.ndarray:
    """Kernels take C-contiguous, aligned, native-byte-order arrays; the functional layer
    makes them so (a transposed or sliced view, a misaligned np.frombuffer view or a
    big-endian array is copied here, never silently inside a kernel)."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned and a.dtype.isnative:
        return a
    return np.require(a, dtype=a.dtype.newbyteorder("="), requirements="CA")


def as_dtype(a, dtype):
    """``np.asarray(a, dtype)`` that keeps a device array on its device."""
    if hasattr(a, "backend"):
        return a if dtype is None else a.astype(dtype, copy=False)
    return np.asarray(a, dtype=dtype)


def check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a cnnfast.Tensor, got {type(x).__name__}")


def as_tuple(value, n: int, name: str) -> tuple:
    """An int or a length-n sequence as an n-tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name}: expected an int or {n} values, got {value}")
    return value
