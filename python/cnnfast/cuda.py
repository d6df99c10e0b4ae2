"""CUDA queries. A CUDA-built cnnfast imports and runs on the CPU where there is
no GPU or driver; ``is_available()`` then answers False."""
from . import _C


def is_compiled() -> bool:
    """Whether this build contains the CUDA backend."""
    return bool(_C.built_with_cuda)


def device_count() -> int:
    """Usable CUDA devices (0 without a GPU, a driver, or a CUDA build)."""
    return int(_C.cuda_device_count())


def is_available() -> bool:
    """True when the CUDA backend is compiled in and at least one device answers."""
    return is_compiled() and device_count() > 0


def get_device_name(index: int = 0) -> str:
    return _C.cuda_device_name(index)
