"""CUDA: device queries, device arrays and the caching allocator's counters.

A CUDA-built cnnfast imports and runs on the CPU where there is no GPU or driver;
``is_available()`` then answers False. The GPU kernels live in ``cnnfast._C.cuda``
under the same names and argument order as the CPU kernels in ``cnnfast._C``, and
take any CUDA array: a ``DeviceArray``, or an object with ``__cuda_array_interface__``
or ``__dlpack__`` (PyTorch CUDA tensors, CuPy arrays), without copying.

Families on the GPU: activations and softmax; convolution (1-3 D, strides, (start, end)
padding, dilation, groups, depthwise, transposed), linear and gemm, with an opt-in TF32
tensor-core path (``allow_tf32=`` per call or ``set_allow_tf32``); pooling and unpooling;
dropout (the CPU's mask, bit for bit, for the same seed and offset); BatchNorm,
Instance/Group/LayerNorm, LRN; the losses; the fused optimizer steps. Losses return
device arrays ('mean'/'sum' as 0-d) and take device grad_output.

Tensors reach these kernels through ``Tensor.to("cuda")`` / ``Module.cuda()``: the
backend registered here (``_CudaBackend``) gives the device layer (cnnfast._device)
its primitives (copies, reshape views, elementwise arithmetic, sums) from
``cnnfast._C.cuda``, and ``cnnfast.functional`` calls the kernels of its inputs' device.
"""
from __future__ import annotations

import numpy as np

from . import _C, _device

_cu = _C.cuda


def is_compiled() -> bool:
    """Whether this build contains the CUDA backend."""
    return bool(_C.built_with_cuda)


def device_count() -> int:
    """Usable CUDA devices (0 without a GPU, a driver, or a CUDA build)."""
    return int(_cu.device_count())


def is_available() -> bool:
    """True when the CUDA backend is compiled in and at least one device answers."""
    return is_compiled() and device_count() > 0


def get_device_name(index: int = 0) -> str:
    return _cu.device_name(index)


def _require():
    if not is_available():
        reason = "this build has no CUDA backend" if not is_compiled() else "no CUDA device or driver was found"
        raise RuntimeError(f"CUDA is not available: {reason}")


def to_device(array: np.ndarray):
    """Copy a NumPy array to the GPU; returns a ``DeviceArray``."""
    _require()
    return _cu.from_numpy(np.ascontiguousarray(array))


def as_device_array(obj):
    """View a CUDA array (DeviceArray, ``__cuda_array_interface__`` or DLPack) without copying."""
    _require()
    return _cu.as_device_array(obj)


def memory_allocated() -> int:
    """Bytes held by live cnnfast device arrays (the caching allocator's count)."""
    return int(_cu.memory_allocated()) if is_available() else 0


def memory_reserved() -> int:
    """Bytes obtained from the driver: live arrays plus cached free blocks."""
    return int(_cu.memory_reserved()) if is_available() else 0


def empty_cache() -> None:
    if is_available():
        _cu.empty_cache()


def synchronize() -> None:
    if is_available():
        _cu.synchronize()


def set_allow_tf32(allow: bool) -> None:
    """Let float32 convolutions, linear layers and GEMMs on the GPU use TF32 tensor cores
    (10-bit mantissa products, FP32 sums) when a kernel is called with ``allow_tf32=None``.
    Off by default: results are exact FP32 unless asked otherwise (as PyTorch's
    ``torch.backends.cudnn.allow_tf32 = False``)."""
    _require()
    _cu.set_allow_tf32(bool(allow))


def get_allow_tf32() -> bool:
    """The default set by ``set_allow_tf32`` (False unless changed)."""
    return bool(_cu.get_allow_tf32()) if is_available() else False


def manual_seed(seed: int) -> None:
    """Accepted for torch's scripts (``torch.cuda.manual_seed``): random values (initial
    weights, dropout keys) are drawn on the host and moved, so the CPU state that
    ``cnnfast.manual_seed`` seeds is the only one; a run on the GPU draws what the same
    run on the CPU draws."""
    int(seed)


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


class _CudaBackend(_device.Backend):
    """The device layer's CUDA primitives, all from cnnfast._C.cuda (see bind_cuda.cpp)."""

    type = "cuda"

    def __init__(self):
        self.native = _cu.DeviceArray
        self.kernels = _cu

    def device_count(self) -> int:
        return device_count()

    def unavailable_reason(self) -> str:
        if not is_compiled():
            return "this build has no CUDA backend (rebuild with -DCNNFAST_CUDA=ON)"
        if device_count() == 0:
            return "no CUDA device is present (no GPU, or no driver)"
        return ""

    def index_of(self, h) -> int:
        return int(h.device)

    def from_numpy(self, a, index):
        return _cu.from_numpy(a)

    def to_numpy(self, h):
        return h.numpy()

    def empty(self, shape, dtype, index):
        return _cu.empty(list(shape), dtype)

    def reshape(self, h, shape):
        return _cu.reshape_view(h, list(shape))

    def copy(self, h, out=None):
        return _cu.copy(h, out=out)

    def fill(self, h, value):
        _cu.fill(h, value)

    def binary(self, op, a, b, out=None):
        return _cu.binary(op, a, b, out=out)

    def sum(self, h):
        return _cu.sum_all(h)

    def count_nonfinite(self, h):
        return int(_cu.count_nonfinite(h))

    def cast(self, h, dtype):
        return _cu.cast(h, np.dtype(dtype))


def _register() -> None:
    """Installs the CUDA backend (the device layer calls this when "cuda" is first named).
    A build without CUDA installs it too, so that naming the device says why it cannot be used."""
    if "cuda" not in _device._BACKENDS:
        b = _CudaBackend() if is_compiled() else _NoCuda()
        _device.register_backend("cuda", b)


class _NoCuda(_device.Backend):
    type = "cuda"

    def device_count(self) -> int:
        return 0

    def unavailable_reason(self) -> str:
        return "this build has no CUDA backend (rebuild with -DCNNFAST_CUDA=ON)"
