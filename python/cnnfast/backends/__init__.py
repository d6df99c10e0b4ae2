"""``cnnfast.backends``: the switches training scripts set on ``torch.backends``.

``cudnn.benchmark``, ``cudnn.deterministic``, ``cudnn.enabled`` and ``cudnn.allow_tf32``
are accepted and kept (cnnfast picks its convolution algorithm itself and its CPU
kernels are deterministic); ``cudnn.allow_tf32`` / ``cuda.matmul.allow_tf32`` are the
defaults given to ``cnnfast.cuda.set_allow_tf32`` when CUDA is usable.
``mps.is_available()`` is False.
"""
from __future__ import annotations

from types import SimpleNamespace


class _Flags(SimpleNamespace):
    def is_available(self) -> bool:
        return False


cudnn = _Flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=True)
cudnn.version = lambda: None
cuda = SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False))
mps = _Flags()
mkldnn = _Flags(enabled=True)
openmp = _Flags()

__all__ = ["cudnn", "cuda", "mps", "mkldnn", "openmp"]
