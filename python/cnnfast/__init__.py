"""cnnfast: convolutional networks on our own AVX2/AVX-512 and CUDA kernels.

The kernels live in ``cnnfast._C`` (tensor-free functions on NumPy arrays); the
differentiable layer on top follows PyTorch's names: ``cnnfast.tensor``,
``cnnfast.functional``, ``cnnfast.nn``, ``cnnfast.optim``.
"""
from . import _C
from ._info import info
from ._C import get_num_threads, set_num_threads

__version__ = _C.__version__


SIMD_LEVELS = ("scalar", "avx2", "avx512")


def set_simd_level(level: str) -> None:
    """Put the CPU kernels on ``"scalar"``, ``"avx2"`` or ``"avx512"``.

    The default is the widest level the CPU offers (:func:`simd_levels` lists them).
    A level the CPU lacks raises ``ValueError`` instead of running instructions it
    cannot execute. The scalar path is the readable reference; forcing a level is how
    tests compare the kernels of every level on the same inputs. The environment
    variable ``CNNFAST_SIMD`` sets the level at import time (it can only lower it).
    """
    _C.set_simd_level(level)


def simd_level() -> str:
    """The SIMD level the CPU kernels take now: ``"scalar"``, ``"avx2"`` or ``"avx512"``."""
    return _C.simd_level()


def simd_levels() -> list:
    """Every level this CPU and build can run, narrowest first (e.g. ``["scalar", "avx2", "avx512"]``)."""
    best = SIMD_LEVELS.index(_C.best_simd_level())
    return list(SIMD_LEVELS[: best + 1])


def _check_simd_env() -> None:
    import os
    import warnings

    asked = os.environ.get("CNNFAST_SIMD")
    if not asked:
        return
    if asked not in SIMD_LEVELS:
        warnings.warn(f"CNNFAST_SIMD={asked!r} is not one of {SIMD_LEVELS}; using {_C.simd_level()!r}",
                      RuntimeWarning, stacklevel=3)
    elif asked not in simd_levels():
        warnings.warn(f"CNNFAST_SIMD={asked!r}: this CPU (or build) offers only {simd_levels()}; "
                      f"using {_C.simd_level()!r}", RuntimeWarning, stacklevel=3)


_check_simd_env()

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
    Tensor, tensor, as_tensor, from_numpy, from_dlpack, no_grad, enable_grad, is_grad_enabled,
    set_grad_enabled,
    cat, concat, stack, zeros, ones, zeros_like, ones_like, full_like, empty_like, empty, full, arange, linspace, eye,
    rand, randn, randint, randperm, randn_like, rand_like, exp, log, where, maximum, minimum, flatten,
)
from ._device import device  # noqa: E402,F401
from ._toplevel import *  # noqa: E402,F401,F403 - torch's top-level functions and dtype names
from .random import manual_seed, seed, initial_seed, get_rng_state, set_rng_state, Generator  # noqa: E402,F401
from . import accelerator, backends  # noqa: E402,F401
from . import functional  # noqa: E402,F401
from .functional.conv import set_conv_algorithm, get_conv_algorithm  # noqa: E402,F401
from . import nn  # noqa: E402,F401
from . import optim  # noqa: E402,F401
from .serialization import save, load  # noqa: E402,F401
from . import models  # noqa: E402,F401
from . import utils  # noqa: E402,F401
from . import memory  # noqa: E402,F401
from .utils.summary import summary  # noqa: E402,F401
from . import amp  # noqa: E402,F401
from .amp import autocast, bf16_path, set_bf16_path  # noqa: E402,F401


def __getattr__(name):
    if name == "bfloat16":  # ml_dtypes.bfloat16, imported on first use
        return amp.bfloat16
    raise AttributeError(f"module 'cnnfast' has no attribute {name!r}")
