"""``cnnfast.device``: where a tensor lives, with torch's spelling (``device("cpu")``,
``device("cuda:0")``, ``device("cuda", 0)``).

Tensors live on the CPU in this build. A CUDA device may be named (scripts build
``device("cuda" if available else "cpu")`` up front), but moving a tensor or module
to it raises a ``RuntimeError`` that says why, instead of silently staying on the CPU.
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
    """Accept the CPU; refuse any other device with the reason."""
    d = as_device(d)
    if d.type == "cpu":
        return
    if d.type == "cuda":
        from . import cuda

        if not cuda.is_available():
            why = "this build has no CUDA backend" if not cuda.is_compiled() else "no CUDA device or driver was found"
            raise RuntimeError(f"cannot move to {d}: CUDA is not available ({why}); use device('cpu') or "
                               "cnnfast.accelerator.is_available() to choose")
        raise RuntimeError(f"cannot move to {d}: cnnfast tensors live on the CPU in this version (CUDA tensors "
                           "are not implemented yet; the CUDA kernels are reachable through cnnfast.cuda)")
    raise RuntimeError(f"cannot move to {d}: cnnfast has no {d.type} backend")


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
