"""``Linear``, ``Identity``, ``Flatten``, ``Unflatten``."""
from __future__ import annotations

import math

import numpy as np

from ... import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module


def _dtype(dtype):
    return np.dtype(dtype) if dtype is not None else np.dtype(np.float32)


class Identity(Module):
    """Returns its input; ignores any constructor arguments (as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b.  input: (*, in_features) -> (*, out_features).

    weight: (out_features, in_features) and bias: (out_features,), both drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch's default."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"in_features/out_features: expected non-negative sizes, got {in_features}, {out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in_features), _dtype(dtype)))
        if bias:
            self.bias = Parameter(np.empty((out_features,), _dtype(dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # kaiming_uniform_ with a = sqrt(5) gives bound = 1/sqrt(fan_in), torch's long-standing default.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flattens dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Expands dim ``dim`` into ``unflattened_size``: (N, 12) -> (N, 3, 2, 2)."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input):
        dim = self.dim % input.ndim
        shape = list(self.unflattened_size)
        if -1 in shape:
            known = int(np.prod([s for s in shape if s != -1]))
            shape[shape.index(-1)] = input.shape[dim] // known
        if int(np.prod(shape)) != input.shape[dim]:
            raise ValueError(f"unflattened_size: {self.unflattened_size} does not multiply to the size "
                             f"{input.shape[dim]} of dim {self.dim}")
        return input.reshape(input.shape[:dim] + tuple(shape) + input.shape[dim + 1:])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
