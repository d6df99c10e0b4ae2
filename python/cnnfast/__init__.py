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

from .tensor import (  # noqa: E402,F401
    Tensor, tensor, as_tensor, from_numpy, no_grad, enable_grad, is_grad_enabled, set_grad_enabled,
    cat, concat, stack, zeros, ones, zeros_like, ones_like, full_like, empty_like, empty, full, arange, linspace, eye,
    rand, randn, randint, randperm, randn_like, rand_like, exp, log, where, maximum, minimum, flatten,
)
from ._device import device  # noqa: E402,F401
from ._toplevel import *  # noqa: E402,F401,F403 - torch's top-level functions and dtype names
from .random import manual_seed, seed, initial_seed, get_rng_state, set_rng_state, Generator  # noqa: E402,F401
from . import accelerator, backends  # noqa: E402,F401
from . import functional  # noqa: E402,F401
from . import nn  # noqa: E402,F401
from . import optim  # noqa: E402,F401
from .serialization import save, load  # noqa: E402,F401
from . import models  # noqa: E402,F401
from . import utils  # noqa: E402,F401
from .utils.summary import summary  # noqa: E402,F401
