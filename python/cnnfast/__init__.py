"""cnnfast: convolutional networks on our own AVX2/FMA and CUDA kernels.

The kernels live in ``cnnfast._C`` (tensor-free functions on NumPy arrays); the
differentiable layer on top follows PyTorch's names: ``cnnfast.tensor``,
``cnnfast.functional``, ``cnnfast.nn``, ``cnnfast.optim``.
"""
from . import _C
from ._info import info
from ._C import get_num_threads, set_num_threads

__version__ = _C.__version__


def set_simd_level(level: str) -> None:
    """Force the CPU kernels onto ``"scalar"`` or ``"avx2"`` (the default is the best the CPU has).

    The scalar path is the readable reference; forcing it is how tests compare it
    with the vector kernels. The environment variable ``CNNFAST_SIMD`` sets the
    level at import time.
    """
    _C.set_simd_level(level)


def simd_level() -> str:
    """The SIMD path the CPU kernels take now: ``"avx2"`` or ``"scalar"``."""
    return _C.simd_level()


from . import cuda  # noqa: E402

try:  # The differentiable layers arrive with the autograd issue.
    from .tensor import Tensor, tensor, from_numpy, no_grad, enable_grad, is_grad_enabled  # noqa: E402,F401
    from .random import manual_seed  # noqa: E402,F401
    from . import functional  # noqa: E402,F401
except ImportError as _missing:  # pragma: no cover - only while the layer is incomplete
    if "cnnfast" not in str(_missing):
        raise
