"""Dropout with ``torch.nn.functional``'s names: ``dropout`` (elementwise) and
``dropout1d/2d/3d`` (whole channels), inverted scaling (kept values times
1/(1-p)), identity when ``training=False`` or ``p=0``, zeros when ``p=1``.

Masks come from a counter-based hash keyed by ``(seed, offset)``: the same key
gives the same mask whatever the thread count or SIMD path, and the backward
recomputes the mask instead of storing it. By default each call takes the next
key from ``cnnfast.random.next_dropout_seed()`` (so ``cnnfast.manual_seed``
makes runs reproducible); pass ``seed=`` (an int, or a ``(seed, offset)`` pair)
to choose the mask explicitly.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._device import dispatch as _D
from .. import random as _random
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["dropout", "dropout1d", "dropout2d", "dropout3d", "dropout_mask"]


class _Dropout(Function):
    onnx_op = "dropout"

    @staticmethod
    def forward(ctx, x, p, seed, offset, feature, unbatched):
        x = contiguous(x)
        xb = x[None] if unbatched else x
        fwd = _D.feature_dropout_forward if feature else _D.dropout_forward
        y = fwd(xb, p, seed, offset)
        ctx.key = (p, seed, offset)
        ctx.feature, ctx.unbatched = feature, unbatched
        return y[0] if unbatched else y

    @staticmethod
    def backward(ctx, g):
        g = contiguous(g)
        gb = g[None] if ctx.unbatched else g
        bwd = _D.feature_dropout_backward if ctx.feature else _D.dropout_backward
        gx = bwd(gb, *ctx.key)
        return (gx[0] if ctx.unbatched else gx,) + (None,) * 5


def _check_p(p) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return p


def _key(seed) -> tuple[int, int]:
    if seed is None:
        return _random.next_dropout_seed()
    if isinstance(seed, tuple):
        if len(seed) != 2:
            raise ValueError(f"seed: expected an int or a (seed, offset) pair, got {seed}")
        s, o = int(seed[0]), int(seed[1])
    else:
        s, o = int(seed), 0
    if s < 0 or o < 0:
        raise ValueError(f"seed: expected non-negative integers, got {seed}")
    return s, o


def _apply(input, p, training, inplace, seed, feature, unbatched):
    p = _check_p(p)
    if not training or p == 0.0:
        # As torch: the input itself, no copy and no graph node.
        return input
    s, o = _key(seed)
    if inplace:
        def fast():
            data = input._array[None] if unbatched else input._array
            (_D.feature_dropout_forward if feature else _D.dropout_forward)(data, p, s, o, out=data)

        writable = input._array.flags.c_contiguous and input._array.flags.writeable
        return input._inplace("dropout_", lambda t: _Dropout.apply(t, p, s, o, feature, unbatched),
                              fast=fast if writable else None)
    return _Dropout.apply(input, p, s, o, feature, unbatched)


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).
    Any shape; the output has the input's shape. ``inplace`` writes into the input when
    it does not take part in autograd, else a new tensor is returned."""
    check_tensor(input, "input")
    return _apply(input, p, training, inplace, seed, False, False)


def dropout1d(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None):
    """Zero whole channels of (N, C, L) or unbatched (C, L) with probability ``p``."""
    check_tensor(input, "input")
    if input.ndim not in (2, 3):
        raise ValueError(f"input: dropout1d expects a 2-D (C, L) or 3-D (N, C, L) array, got shape {input.shape}")
    return _apply(input, p, training, inplace, seed, True, input.ndim == 2)


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None):
    """Zero whole channels of (N, C, H, W) with probability ``p``. As torch, a 3-D input is
    read as (N, C, L) with a warning, and other ranks warn but still drop (N, C) planes."""
    check_tensor(input, "input")
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: received a {input.ndim}-D input; dropout2d expects 3-D or 4-D input",
                      stacklevel=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: received a 3-D input and treats it as (N, C, L), as torch does; "
                      "use dropout1d for channel-wise 1-D dropout", stacklevel=2)
    if input.ndim < 2:
        raise ValueError(f"input: channel dropout needs at least 2 dimensions, got shape {input.shape}")
    return _apply(input, p, training, inplace, seed, True, False)


def dropout3d(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed=None):
    """Zero whole channels of (N, C, D, H, W) or unbatched (C, D, H, W) with probability ``p``."""
    check_tensor(input, "input")
    if input.ndim not in (4, 5):
        warnings.warn(f"dropout3d: received a {input.ndim}-D input; dropout3d expects 4-D or 5-D input",
                      stacklevel=2)
    if input.ndim < 2:
        raise ValueError(f"input: channel dropout needs at least 2 dimensions, got shape {input.shape}")
    return _apply(input, p, training, inplace, seed, True, input.ndim == 4)


def dropout_mask(shape, p: float, seed: int, offset: int = 0):
    """The keep mask (bool array of ``shape``) that ``dropout(..., seed=(seed, offset))`` applies to
    an input of that shape (for dropout1d/2d/3d pass the (N, C) shape); for checking masks
    against another implementation such as a CUDA kernel. Not a torch function."""
    n = int(np.prod(shape))
    return _D.dropout_mask(n, _check_p(p), int(seed), int(offset)).astype(bool).reshape(shape)
