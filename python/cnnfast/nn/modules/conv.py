"""Convolutions: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` with torch's arguments,
weight layouts, attribute names and default initialisation.

weight: Conv (out_channels, in_channels/groups, *kernel_size);
        ConvTranspose (in_channels, out_channels/groups, *kernel_size).
Default init: weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with
a = sqrt(5)), bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in computed from the
weight's dims 1.. as torch does.
"""
from __future__ import annotations

import math

import numpy as np

from ... import functional as F
from ...utils.shapes import conv_transpose_output_size
from .. import init
from ..parameter import Parameter
from .linear import _dtype
from .module import Module


def _ntuple(value, n: int, name: str) -> tuple:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name}: expected an int or {n} values, got {value}")
    return value


class _ConvNd(Module):
    _n = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                 padding_mode, output_padding=0, device=None, dtype=None):
        super().__init__()
        n = self._n
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode: only 'zeros' is supported, got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, n, "kernel_size")
        self.stride = _ntuple(stride, n, "stride")
        if isinstance(padding, str):
            if padding not in ("valid", "same", "full"):
                raise ValueError(f"padding: expected 'valid', 'same', 'full', an int or a tuple, got {padding!r}")
            if self._transposed:
                raise ValueError(f"padding: string padding is not supported for {type(self).__name__}")
            self.padding = padding
        elif isinstance(padding, (int, np.integer)):
            self.padding = (int(padding),) * n
        else:
            self.padding = tuple(p if isinstance(p, (int, np.integer)) else tuple(p) for p in padding)
        self.dilation = _ntuple(dilation, n, "dilation")
        self.transposed = self._transposed
        self.output_padding = _ntuple(output_padding, n, "output_padding")
        self.groups = groups
        self.padding_mode = padding_mode
        dt = _dtype(dtype)
        if self._transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dt))
        if bias:
            self.bias = Parameter(np.empty((out_channels,), dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if isinstance(self.padding, str) or self.padding != (0,) * self._n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, device, dtype)

    def forward(self, input):
        fn = getattr(F, f"conv{self._n}d")
        return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_Conv):
    """1-D convolution. input (N, C_in, L) -> (N, C_out, L_out)."""
    _n = 1


class Conv2d(_Conv):
    """2-D convolution. input (N, C_in, H, W) -> (N, C_out, H_out, W_out),
    H_out = floor((H + pad_top + pad_bottom - dilation*(k-1) - 1) / stride) + 1."""
    _n = 2


class Conv3d(_Conv):
    """3-D convolution. input (N, C_in, D, H, W) -> (N, C_out, D_out, H_out, W_out)."""
    _n = 3


class _ConvTranspose(_ConvNd):
    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, device, dtype)

    def _output_padding(self, input, output_size) -> tuple:
        if output_size is None:
            return self.output_padding
        n = self._n
        output_size = tuple(int(s) for s in output_size)[-n:]
        if len(output_size) != n:
            raise ValueError(f"output_size: expected {n} or {n + 2} elements, got {len(output_size)}")
        out = []
        for d in range(n):
            smallest = conv_transpose_output_size(int(input.shape[d + 2]), self.kernel_size[d],
                                                  self.stride[d], self.padding[d], 0,
                                                  self.dilation[d])
            extra = output_size[d] - smallest
            if not 0 <= extra < max(self.stride[d], self.dilation[d]):
                raise ValueError(f"output_size: requested {output_size} is not reachable from input "
                                 f"{tuple(input.shape)} (dim {d}: between {smallest} and "
                                 f"{smallest + max(self.stride[d], self.dilation[d]) - 1})")
            out.append(extra)
        return tuple(out)

    def forward(self, input, output_size=None):
        fn = getattr(F, f"conv_transpose{self._n}d")
        output_padding = self._output_padding(input, output_size)
        return fn(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                  self.dilation)


class ConvTranspose1d(_ConvTranspose):
    """Transposed 1-D convolution. (N, C_in, L) -> (N, C_out, L_out),
    L_out = (L - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1."""
    _n = 1


class ConvTranspose2d(_ConvTranspose):
    """Transposed 2-D convolution. (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
    _n = 2


class ConvTranspose3d(_ConvTranspose):
    """Transposed 3-D convolution. (N, C_in, D, H, W) -> (N, C_out, D_out, H_out, W_out)."""
    _n = 3
