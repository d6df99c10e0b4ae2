"""Shape, padding, receptive-field and parameter formulas (the CS-230 notation), and the one
home of cnnfast's output-size and padding arithmetic: functional.conv, nn.Conv* and summary
call these.

Notation (per spatial dimension): input size I, filter size F, stride S, dilation D,
padding P_start / P_end, output size O. The effective filter size of a dilated filter
is D*(F - 1) + 1. All functions are pure integer arithmetic on Python ints.

- Output size:      O = floor((I - F_eff + P_start + P_end) / S) + 1
                    (ceil instead of floor with ``ceil_mode``, as pooling in PyTorch)
- Valid padding:    P_start = P_end = 0
- Same padding:     P_total = max(S*ceil(I/S) - I + F_eff - S, 0),
                    P_start = floor(P_total / 2), P_end = ceil(P_total / 2)  (extra at the end;
                    gives O = ceil(I / S) for any stride)
- Full padding:     P_start = P_end = F_eff - 1  (O = I + F_eff - 1 at stride 1)
- Receptive field:  R_k = 1 + sum_{j<=k} (F_j - 1) * prod_{i<j} S_i
- Parameters:       conv (F*F*C/g + 1)*K, FC (N_in + 1)*N_out, pooling 0.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

__all__ = [
    "effective_kernel_size", "same_padding", "resolve_padding", "resolve_padding_nd",
    "conv_output_size",
    "pool_output_size", "conv_transpose_output_size", "receptive_field",
    "receptive_field_steps", "conv_params", "conv_transpose_params", "fc_params",
    "pool_params", "batchnorm_params", "conv_macs", "fc_macs",
]


def _pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name}: expected " + ("non-negative values" if minimum == 0 else
                                                 f"an int >= {minimum}") + f", got {v}")
    return v


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Span of a dilated filter: D*(F - 1) + 1."""
    _pos_int("kernel_size", kernel_size)
    _pos_int("dilation", dilation)
    return dilation * (kernel_size - 1) + 1


def same_padding(input_size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple:
    """(P_start, P_end) of "same" padding: O = ceil(I/S), the odd pixel padded at the end."""
    _pos_int("input_size", input_size)
    _pos_int("stride", stride)
    f = effective_kernel_size(kernel_size, dilation)
    total = max(stride * math.ceil(input_size / stride) - input_size + f - stride, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, input_size: int, kernel_size: int, stride: int = 1,
                    dilation: int = 1) -> tuple:
    """Turn an int, a (start, end) pair, or "valid" / "same" / "full" into (P_start, P_end)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0
        if mode == "same":
            return same_padding(input_size, kernel_size, stride, dilation)
        if mode == "full":
            f = effective_kernel_size(kernel_size, dilation)
            return f - 1, f - 1
        raise ValueError(f"padding: expected 'valid', 'same' or 'full', an int or a (start, end) "
                         f"pair, got {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"padding: expected a (start, end) pair, got {tuple(padding)}")
        pair = tuple(_pos_int("padding", p, 0) for p in padding)
    else:
        pair = (_pos_int("padding", padding, 0),) * 2
    return pair


def _per_dim(name: str, v, n: int) -> tuple:
    """An int or n ints -> n ints (stride, dilation of an n-d layer)."""
    if isinstance(v, numbers.Integral):
        return (int(v),) * n
    v = tuple(v)
    if len(v) != n:
        raise ValueError(f"{name}: expected an int or {n} ints, got {v}")
    return v


def resolve_padding_nd(padding, input_size: Sequence[int], kernel_size: Sequence[int],
                       stride=1, dilation=1) -> tuple:
    """Explicit ((start, end), ...) pairs, one per spatial dimension.

    padding: an int, one int per dim, one (start, end) pair per dim, or "valid" / "same" /
    "full"; input_size, kernel_size: one int per dim (their length fixes the dim count);
    stride, dilation: an int or one per dim. Each dim goes through ``resolve_padding``.
    """
    n = len(input_size)
    stride = _per_dim("stride", stride, n)
    dilation = _per_dim("dilation", dilation, n)
    if isinstance(padding, str) or isinstance(padding, numbers.Integral):
        per_dim = (padding,) * n
    else:
        per_dim = tuple(padding)
        if len(per_dim) != n:
            raise ValueError(f"padding: expected an int, {n} ints or {n} (start, end) pairs, "
                             f"got {padding!r}")
    return tuple(resolve_padding(p, i, f, s, d)
                 for p, i, f, s, d in zip(per_dim, input_size, kernel_size, stride, dilation))


def conv_output_size(input_size: int, kernel_size: int, stride: int = 1, padding=0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """O = floor((I - F_eff + P_start + P_end) / S) + 1 for one spatial dimension.

    ``padding`` is an int (both sides), a (start, end) pair, or "valid"/"same"/"full".
    Raises ValueError when the padded input is smaller than the filter.
    """
    _pos_int("input_size", input_size)
    _pos_int("stride", stride)
    ps, pe = resolve_padding(padding, input_size, kernel_size, stride, dilation)
    f = effective_kernel_size(kernel_size, dilation)
    span = input_size + ps + pe - f
    if span < 0:
        raise ValueError(f"input_size: padded input {input_size + ps + pe} is smaller than the "
                         f"effective kernel size {f}")
    if ceil_mode:
        out = -(-span // stride) + 1
        # PyTorch's rule: the last window must start inside the input or left padding.
        if (out - 1) * stride >= input_size + ps:
            out -= 1
        return out
    return span // stride + 1


def pool_output_size(input_size: int, kernel_size: int, stride: int | None = None, padding=0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Pooling output size; the stride defaults to the kernel size as in PyTorch."""
    return conv_output_size(input_size, kernel_size, kernel_size if stride is None else stride,
                            padding, dilation, ceil_mode)


def conv_transpose_output_size(input_size: int, kernel_size: int, stride: int = 1,
                               padding: int = 0, output_padding: int = 0,
                               dilation: int = 1) -> int:
    """O = (I - 1)*S - 2P + D*(F - 1) + output_padding + 1 (the inverse of conv_output_size)."""
    _pos_int("input_size", input_size)
    _pos_int("stride", stride)
    ps, pe = resolve_padding(padding, input_size, kernel_size, stride, dilation)
    out = (input_size - 1) * stride - ps - pe + effective_kernel_size(kernel_size, dilation) \
        + output_padding
    if out < 1:
        raise ValueError(f"padding: leaves a non-positive output size {out}")
    return out


def receptive_field(layers: Iterable[Sequence[int]]) -> int:
    """R_k = 1 + sum_j (F_j - 1) * prod_{i<j} S_i for a chain of (F, S) or (F, S, D) layers.

    >>> receptive_field([(3, 1), (3, 1)])
    5
    """
    return receptive_field_steps(layers)[-1][0] if layers else 1


def receptive_field_steps(layers: Iterable[Sequence[int]], paddings: Iterable[int] | None = None
                          ) -> list:
    """Per layer (R, jump, start): receptive field, input pixels between neighbouring
    outputs (product of strides), and the input coordinate of the centre of the first
    output's field (start_k = start_{k-1} + ((F_eff - 1)/2 - P_start) * jump_{k-1}).

    ``layers`` are (F, S) or (F, S, D); ``paddings`` (P_start per layer) default to 0.
    The input itself is R=1, jump=1, start=0.5 (pixel centres at half-integers).
    """
    layers = [tuple(l) for l in layers]
    pads = [0] * len(layers) if paddings is None else list(paddings)
    if len(pads) != len(layers):
        raise ValueError(f"paddings: expected {len(layers)} entries, got {len(pads)}")
    r, j, start = 1, 1, 0.5
    out = []
    for layer, p in zip(layers, pads):
        if len(layer) not in (2, 3):
            raise ValueError(f"layers: expected (F, S) or (F, S, D) tuples, got {layer}")
        f = effective_kernel_size(layer[0], layer[2] if len(layer) == 3 else 1)
        s = _pos_int("stride", layer[1])
        r = r + (f - 1) * j
        start = start + ((f - 1) / 2 - p) * j
        j = j * s
        out.append((r, j, start))
    return out


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv_params(in_channels: int, out_channels: int, kernel_size, groups: int = 1,
                bias: bool = True) -> int:
    """K * (C/g * kh * kw) weights + K biases (CS-230: (F*F*C + 1)*K at g=1)."""
    kh, kw = _pair(kernel_size)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} must divide in_channels {in_channels} and "
                         f"out_channels {out_channels}")
    return out_channels * (in_channels // groups) * kh * kw + (out_channels if bias else 0)


def conv_transpose_params(in_channels: int, out_channels: int, kernel_size, groups: int = 1,
                          bias: bool = True) -> int:
    """Same count as a convolution: weight I x O/g x kh x kw, plus O biases."""
    return conv_params(in_channels, out_channels, kernel_size, groups, bias)


def fc_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """(N_in + 1) * N_out with bias, N_in * N_out without."""
    return in_features * out_features + (out_features if bias else 0)


def pool_params(*_args, **_kw) -> int:
    """Pooling has no parameters (a VGG-16 table that
    circulates widely lists 65,664 for a max-pool row; that is an error)."""
    return 0


def batchnorm_params(num_features: int, affine: bool = True) -> int:
    """gamma and beta per channel (running statistics are buffers, not parameters)."""
    return 2 * num_features if affine else 0


def conv_macs(out_h: int, out_w: int, in_channels: int, out_channels: int, kernel_size,
              groups: int = 1) -> int:
    """Multiply-adds of one image: Ho*Wo*K*(C/g)*kh*kw (one MAC = one multiply + one add;
    FLOPs are about twice this). Bias additions are not counted."""
    kh, kw = _pair(kernel_size)
    return out_h * out_w * out_channels * (in_channels // groups) * kh * kw


def fc_macs(in_features: int, out_features: int) -> int:
    """Multiply-adds of one sample through a fully connected layer: N_in * N_out."""
    return in_features * out_features
