"""``cnnfast.accelerator``: torch's device-agnostic query, so scripts written as
``device = accelerator.current_accelerator() if accelerator.is_available() else "cpu"``
run unchanged. It answers for the CUDA backend: with no usable GPU there is none."""
from __future__ import annotations

from . import _device, cuda
from ._device import device


def is_available() -> bool:
    """Whether an accelerator can hold tensors: a CUDA build with a device that answers."""
    return _device.is_available("cuda")


def current_accelerator(check_available: bool = False):
    """The accelerator device, or None when there is none (as torch)."""
    return device("cuda") if is_available() else None


def device_count() -> int:
    return _device.backend_for("cuda").device_count() if is_available() else 0


def synchronize(device=None) -> None:
    cuda.synchronize()
