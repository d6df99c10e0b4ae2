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


def tune_host_allocator() -> bool:
    """Let glibc keep freed heap for reuse instead of returning it to the OS (Linux/glibc;
    returns True when applied, False elsewhere).

    Each new activation-sized NumPy array otherwise arrives as fresh pages that fault on
    first touch; with this, freed blocks are reused (see benchmarks/RESULTS.md, "Host
    allocator", for what it buys). It changes ``malloc`` for the whole process, not only
    for cnnfast, and keeps up to 1 GiB of freed memory with the process, so importing
    cnnfast never does it: call it from your program, or set ``CNNFAST_HOST_ALLOCATOR=tuned``
    before the import. It cannot be undone in a running process.
    """
    return _C.tune_host_allocator()


from . import cuda  # noqa: E402

from .tensor import (  # noqa: E402,F401
    Tensor, tensor, from_numpy, no_grad, enable_grad, is_grad_enabled, set_grad_enabled,
    cat, concat, stack, zeros, ones, zeros_like, ones_like, empty, full, arange, linspace, eye,
    rand, randn, randint, randn_like, rand_like, exp, log, where, maximum, minimum, flatten, float32, float64, int64,
)
from .random import manual_seed, seed, initial_seed, get_rng_state, set_rng_state  # noqa: E402,F401
from . import functional  # noqa: E402,F401
from . import nn  # noqa: E402,F401
from . import optim  # noqa: E402,F401
from .serialization import save, load  # noqa: E402,F401
from . import models  # noqa: E402,F401
from . import utils  # noqa: E402,F401
from .utils.summary import summary  # noqa: E402,F401
