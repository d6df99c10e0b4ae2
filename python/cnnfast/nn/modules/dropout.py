"""Dropout layers: active in ``train()`` mode, the identity in ``eval()`` mode.
Masks come from ``cnnfast.random`` so ``cnnfast.manual_seed`` fixes them."""
from __future__ import annotations

from ... import functional as F
from .module import Module


class _DropoutNd(Module):
    _fn = "dropout"

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return getattr(F, self._fn)(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zeroes each element with probability p and scales the rest by 1/(1-p). Any shape."""
    _fn = "dropout"


class Dropout1d(_DropoutNd):
    """Zeroes whole channels: (N, C, L) or (C, L)."""
    _fn = "dropout1d"


class Dropout2d(_DropoutNd):
    """Zeroes whole channels: (N, C, H, W) or (C, H, W)."""
    _fn = "dropout2d"


class Dropout3d(_DropoutNd):
    """Zeroes whole channels: (N, C, D, H, W) or (C, D, H, W)."""
    _fn = "dropout3d"
