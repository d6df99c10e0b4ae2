"""Resampling and rearranging of feature maps: ``interpolate`` (nearest, nearest-exact,
linear, bilinear, trilinear, bicubic; ``align_corners``; ``size`` or ``scale_factor``)
with torch's coordinate conventions, ``pixel_shuffle`` / ``pixel_unshuffle`` and
``channel_shuffle``.

Interpolation is separable: for each spatial axis a small table says which source
positions (taps) every output position reads and with what weights; the
``cnnfast._C.resample_*`` kernel (csrc/cpu/resample.*) applies the tensor product of
the tables. ``axis_table`` builds them for torch's conventions and the ONNX importer
for ONNX's. The shuffles are pure permutations (reshape + transpose, whose backward
is the inverse permutation): they move data and have no arithmetic to vectorise.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _C
from .._device import dispatch as _D
from ..autograd import Function
from ._util import check_tensor, contiguous

__all__ = ["interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pixel_shuffle",
           "pixel_unshuffle", "channel_shuffle", "resample"]

_LINEAR_RANK = {"linear": 1, "bilinear": 2, "trilinear": 3, "bicubic": 2}
_CUBIC_A = -0.75


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(src)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def axis_table(in_len: int, out_len: int, mode: str, align_corners, scale=None, dtype=np.float32):
    """(index, weight), each (out_len, taps), for one axis in torch's conventions.

    scale: the user's scale_factor for this axis (torch then uses 1/scale_factor as the
    source step instead of in/out), or None."""
    dst = np.arange(out_len, dtype=np.float64)
    if mode in ("nearest", "nearest-exact"):
        # torch computes these in float32; rounding at exact boundaries must agree.
        step = np.float32(1.0 / scale) if scale else np.float32(in_len) / np.float32(out_len)
        d32 = dst.astype(np.float32)
        src = np.floor((d32 + np.float32(0.5)) * step if mode == "nearest-exact" else d32 * step)
        idx = np.minimum(src.astype(np.int64), in_len - 1)
        return idx.reshape(-1, 1), np.ones((out_len, 1), dtype)
    if align_corners:
        step = (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
        src = dst * step
    else:
        step = 1.0 / scale if scale else in_len / out_len
        src = (dst + 0.5) * step - 0.5
    if mode == "bicubic":
        i0 = np.floor(src)
        w = _cubic_weights(src - i0, _CUBIC_A)
        idx = np.clip(i0.astype(np.int64)[:, None] + np.arange(-1, 3), 0, in_len - 1)
        return idx, w.astype(dtype)
    src = np.maximum(src, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_len - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, in_len - 1)
    return np.stack([i0, i1], 1), np.stack([1.0 - lam, lam], 1).astype(dtype)


class _Resample(Function):
    @staticmethod
    def forward(ctx, x, tables):
        ctx.shape, ctx.tables = x.shape, tables
        return _D.resample_forward(contiguous(x), **tables)

    @staticmethod
    def backward(ctx, g):
        return _D.resample_backward(contiguous(g), list(ctx.shape), **ctx.tables), None


def resample(input, tables):
    """Apply per-axis (index, weight) tables, a list with one pair per spatial axis of
    ``input`` (N, C, *spatial), 1-3 spatial axes; weights must have ``input``'s dtype."""
    check_tensor(input, "input")
    nsp = input.ndim - 2
    if nsp not in (1, 2, 3) or len(tables) != nsp:
        raise ValueError(f"tables: expected one (index, weight) pair per spatial axis of input {input.shape}")
    kw = {}
    for name, (idx, w) in zip("dhw"[3 - nsp:], tables):
        kw[f"index_{name}"] = np.ascontiguousarray(idx, np.int64)
        kw[f"weight_{name}"] = np.ascontiguousarray(w, input.dtype)
    return _Resample.apply(input, kw)


def _out_sizes(shape, size, scale_factor, nsp):
    if (size is None) == (scale_factor is None):
        raise ValueError("size, scale_factor: exactly one of them must be given")
    if size is not None:
        sizes = [int(size)] * nsp if np.isscalar(size) else [int(s) for s in size]
        if len(sizes) != nsp:
            raise ValueError(f"size: expected {nsp} values for input of shape {shape}, got {size}")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"size: expected positive sizes, got {size}")
        return sizes, [None] * nsp
    scales = [float(scale_factor)] * nsp if np.isscalar(scale_factor) else [float(s) for s in scale_factor]
    if len(scales) != nsp:
        raise ValueError(f"scale_factor: expected {nsp} values for input of shape {shape}, got {scale_factor}")
    if any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ValueError(f"scale_factor: expected positive finite factors, got {scale_factor}")
    sizes = [int(math.floor(i * s)) for i, s in zip(shape[2:], scales)]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"scale_factor: {scale_factor} gives an empty output for input of shape {shape}")
    return sizes, scales


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias: bool = False):
    """Resize (N, C, *spatial) to ``size`` or ``spatial * scale_factor`` (floored).

    mode: nearest, nearest-exact (1-3 spatial dims), linear (1), bilinear (2), trilinear (3),
    bicubic (2). align_corners (linear modes only; default False) maps the corner pixels'
    centres onto each other. Returns (N, C, *out_size)."""
    check_tensor(input, "input")
    nsp = input.ndim - 2
    if nsp not in (1, 2, 3):
        raise ValueError(f"input: expected (N, C, *spatial) with 1-3 spatial dims, got shape {input.shape}")
    if mode not in ("nearest", "nearest-exact") and mode not in _LINEAR_RANK:
        raise ValueError(f"mode: expected nearest, nearest-exact, linear, bilinear, trilinear or bicubic, got {mode!r}")
    if mode in _LINEAR_RANK and _LINEAR_RANK[mode] != nsp:
        raise ValueError(f"mode: {mode!r} needs a {_LINEAR_RANK[mode] + 2}-D input, got shape {input.shape}")
    if mode in ("nearest", "nearest-exact") and align_corners:
        raise ValueError("align_corners: only valid for linear, bilinear, trilinear and bicubic modes")
    if antialias:
        raise NotImplementedError("antialias=True is not supported")
    sizes, scales = _out_sizes(input.shape, size, scale_factor, nsp)
    if recompute_scale_factor:
        scales = [None] * nsp
    tables = [axis_table(i, o, mode, bool(align_corners), s, input.dtype)
              for i, o, s in zip(input.shape[2:], sizes, scales)]
    return resample(input, tables)


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    return interpolate(input, size, scale_factor, "nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """torch's deprecated form: bilinear with align_corners=True."""
    return interpolate(input, size, scale_factor, "bilinear", align_corners=True)


def pixel_shuffle(input, upscale_factor: int):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""
    check_tensor(input, "input")
    r = int(upscale_factor)
    if r <= 0:
        raise ValueError(f"upscale_factor: expected a positive int, got {upscale_factor}")
    if input.ndim < 3 or input.shape[-3] % (r * r):
        raise ValueError(f"input: expected (*, C*{r * r}, H, W), got shape {input.shape}")
    *b, c, h, w = input.shape
    oc = c // (r * r)
    x = input.reshape(*b, oc, r, r, h, w)
    n = len(b)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*b, oc, h * r, w * r)


def pixel_unshuffle(input, downscale_factor: int):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""
    check_tensor(input, "input")
    r = int(downscale_factor)
    if r <= 0:
        raise ValueError(f"downscale_factor: expected a positive int, got {downscale_factor}")
    if input.ndim < 3 or input.shape[-1] % r or input.shape[-2] % r:
        raise ValueError(f"input: expected (*, C, H*{r}, W*{r}), got shape {input.shape}")
    *b, c, h, w = input.shape
    x = input.reshape(*b, c, h // r, r, w // r, r)
    n = len(b)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*b, c * r * r, h // r, w // r)


class _ChannelShuffle(Function):
    """One threaded copy of whole planes each way (cnnfast._C.channel_shuffle_*). The
    composite reshape-transpose-reshape form cost two single-threaded copies in backward
    and three recorded ops."""

    @staticmethod
    def forward(ctx, x, g):
        ctx.g = g
        return _C.channel_shuffle_forward(contiguous(x), g)

    @staticmethod
    def backward(ctx, gy):
        return _C.channel_shuffle_backward(contiguous(gy), ctx.g), None


def channel_shuffle(input, groups: int):
    """(N, g*k, *) -> (N, k*g, *): channel i*k + j moves to j*g + i (ShuffleNet)."""
    check_tensor(input, "input")
    g = int(groups)
    if g <= 0:
        raise ValueError(f"groups: expected a positive int, got {groups}")
    if input.ndim < 3 or input.shape[1] % g:
        raise ValueError(f"input: expected (N, C, *spatial) with C divisible by groups={g}, got shape {input.shape}")
    n, c, *rest = input.shape
    if Function._observers or not isinstance(input._array, np.ndarray) or input.dtype.kind != "f":
        # ONNX export traces the reshape/transpose form; device arrays have no permuted copy here.
        return input.reshape(n, g, c // g, *rest).transpose(1, 2).reshape(n, c, *rest)
    return _ChannelShuffle.apply(input, g)
