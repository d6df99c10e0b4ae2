"""Layer normalisation over the channels of NCHW maps (ConvNeXt's LayerNorm2d):
each (n, h, w) position's C values are normalised. It is ``layer_norm`` over the
last axis of the NHWC view (one transpose in, one out), so it shares the layer_norm
kernel, its statistics and its gradients."""
from __future__ import annotations

from ._util import check_tensor
from .normalization import layer_norm

__all__ = ["layer_norm2d"]


def layer_norm2d(input, weight=None, bias=None, eps: float = 1e-6):
    """input: (N, C, *spatial); weight, bias: (C,) or None. Returns input's shape."""
    check_tensor(input, "input")
    if input.ndim < 2:
        raise ValueError(f"input: expected (N, C, *spatial), got shape {input.shape}")
    nd = input.ndim
    last = input.permute(0, *range(2, nd), 1)
    y = layer_norm(last, (input.shape[1],), weight, bias, eps)
    return y.permute(0, nd - 1, *range(1, nd - 1))
