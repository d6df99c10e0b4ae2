"""bfloat16 mixed precision: ``cnnfast.autocast`` and the bfloat16 dtype.

Inside ``with cnnfast.autocast(dtype="bfloat16"):`` convolutions (conv1d/2d/3d) and
linear layers multiply in bfloat16 with float32 accumulation: their float32 inputs and
weights are rounded to bfloat16 while the kernels pack them (no separate cast pass),
and their outputs and all gradients stay float32. Everything else (norms, softmax,
losses, reductions, optimizers) runs in float32 as usual, so the weights the optimizer
updates are float32 "master" weights and nothing else changes in a training loop.
Transposed convolutions and float64 inputs are left in full precision.

The kernel path (``bf16_path()``): ``"amx"`` (AMX tiles), ``"avx512_bf16"`` (VDPBF16PS) or
``"fallback"`` (scalar, correct everywhere, several times slower than float32); set it
with ``set_bf16_path`` or the environment variable ``CNNFAST_BF16_PATH`` at import.
Linux must grant AMX tile state to the process; when it refuses (or ``CNNFAST_AMX_DENY=1``),
the next path is used and ``amx_permission()`` says why.

NumPy bfloat16 arrays use ``ml_dtypes.bfloat16`` (``cnnfast.bfloat16``); the ``_C`` bf16
kernels take them directly (``_C.conv_forward_bf16`` and friends).
"""
import threading

from . import _C

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "bf16_path", "set_bf16_path", "bf16_paths",
           "amx_permission", "bfloat16", "bf16_hardware"]

_state = threading.local()
_DTYPES = ("bfloat16", "bf16")


def _bfloat16_dtype():
    try:
        import ml_dtypes
    except ImportError as e:  # pragma: no cover - ml_dtypes is a dependency
        raise ImportError("bfloat16 arrays need the ml_dtypes package (pip install ml_dtypes)") from e
    return ml_dtypes.bfloat16


def __getattr__(name):
    if name == "bfloat16":
        return _bfloat16_dtype()
    raise AttributeError(name)


def is_autocast_enabled() -> bool:
    """Whether conv/linear run in bfloat16 in this thread now."""
    return getattr(_state, "enabled", False)


def get_autocast_dtype() -> str:
    return "bfloat16"


class autocast:
    """Context manager (and decorator) running conv/linear in bfloat16 with float32 accumulation.

    ``autocast(device_type="cpu", dtype="bfloat16", enabled=True)``, as ``torch.autocast``.
    Only ``"cpu"`` and bfloat16 are supported; float16 is a ValueError (no CPU kernels).
    """

    def __init__(self, device_type: str = "cpu", dtype="bfloat16", enabled: bool = True, cache_enabled=None):
        if device_type != "cpu":
            raise ValueError(f"device_type: autocast supports 'cpu', got {device_type!r}")
        name = getattr(dtype, "__name__", None) or str(dtype)
        name = name.replace("torch.", "").replace("cnnfast.", "")
        if name not in _DTYPES:
            raise ValueError(f"dtype: autocast supports bfloat16, got {dtype!r}"
                             + (" (float16 has no CPU kernels)" if "16" in name else ""))
        self.enabled = bool(enabled)

    def __enter__(self):
        self._prev = is_autocast_enabled()
        _state.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(enabled=self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def bf16_path() -> str:
    """The bfloat16 kernel path in use: 'amx', 'avx512_bf16' or 'fallback'."""
    return _C.bf16_path()


def set_bf16_path(path: str) -> None:
    """Force a path ('amx', 'avx512_bf16', 'fallback'; ValueError if this CPU/OS cannot run it), or
    'auto' (the default: the best path available)."""
    _C.set_bf16_path(path)


def bf16_paths() -> list:
    """The paths this machine can run, fastest first."""
    return list(_C.bf16_paths())


def amx_permission() -> str:
    """'granted', or why AMX is unavailable (no AMX-BF16, refused by Linux, CNNFAST_AMX_DENY)."""
    return _C.amx_permission()


def bf16_hardware() -> bool:
    """Whether bfloat16 runs on bfloat16 hardware here (else the slower fallback)."""
    return bf16_path() != "fallback"
