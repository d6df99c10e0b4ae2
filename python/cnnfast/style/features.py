"""The feature network of the style transfer: a small VGG-like stack of 3x3
convolutions + ReLU with 2x2 average pooling, whose layers are named as VGG's
(``conv1_1``, ``relu1_1``, ..., ``pool1``, ``relu2_1``, ...).

Its weights are random (fixed by a seed), not trained. No pretrained ImageNet weights
can be fetched here, and the only data that ship with the dependencies large enough to
train on are scikit-learn's 8x8 grey digits, whose features (pen strokes on one
channel) say little about colour photographs. Random convolution + ReLU features are
known to carry enough of an image for both tasks: the content of an image can be
reconstructed from them, and their Gram matrices describe textures (Ustyuzhaninov et
al., "What does it take to generate natural textures?", ICLR 2017; He, Wang & Hopcroft,
"A powerful generative model using random weights for the deep image representation",
NeurIPS 2016). Average pooling (as Gatys et al. suggest) gives smoother gradients to
the image than max pooling. The weights are Kaiming-normal and the biases zero, so the
activation scale stays about constant with depth. Each convolution pads by reflection
(as ``padding_mode="reflect"``): zero padding makes the border look like an edge to every
filter, and the optimised image then grows a frame of false texture along its border.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .. import nn
from ..autograd import Function
from ..tensor import Tensor

BLOCKS = (2, 2, 2, 1)  # convolutions per block; block b has base_width * 2**(b-1) channels


def _reflect_index(n: int, pad: int) -> np.ndarray:
    return np.pad(np.arange(n), (pad, pad), mode="reflect")


class _ReflectPad2d(Function):
    """(N, C, H, W) -> (N, C, H + 2p, W + 2p), mirroring about the edge pixels (torch's "reflect");
    the gradient of each mirrored pixel is added back onto its source."""

    @staticmethod
    def forward(ctx, x, pad):
        H, W = x.shape[-2:]
        if pad >= H or pad >= W:
            raise ValueError(f"input: reflect padding {pad} needs H and W > {pad}, got {H}x{W}")
        ctx.rows, ctx.cols, ctx.shape = _reflect_index(H, pad), _reflect_index(W, pad), x.shape
        return np.ascontiguousarray(x[..., ctx.rows[:, None], ctx.cols[None, :]])

    @staticmethod
    def backward(ctx, g):
        gx = np.zeros(ctx.shape, g.dtype)
        np.add.at(gx, (Ellipsis, ctx.rows[:, None], ctx.cols[None, :]), g)
        return gx, None


def reflect_pad2d(x: Tensor, pad: int) -> Tensor:
    """Reflection padding by ``pad`` on each side of the last two dims; x: (N, C, H, W)."""
    return _ReflectPad2d.apply(x, int(pad))


def layer_names(blocks: Iterable[int] = BLOCKS) -> list[str]:
    """Every layer name of the network in order, e.g. conv1_1, relu1_1, conv1_2, relu1_2, pool1, ..."""
    names = []
    blocks = list(blocks)
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        if b < len(blocks):
            names.append(f"pool{b}")
    return names


class FeatureNet(nn.Module):
    """VGG-like feature extractor. ``forward(x, layers)``: x (N, 3, H, W) -> {name: activation}
    for the requested layer names; it stops after the deepest one."""

    def __init__(self, base_width: int = 32, blocks: Iterable[int] = BLOCKS, seed: int = 0, dtype=np.float32):
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width: expected a positive integer, got {base_width}")
        self.blocks = tuple(blocks)
        self.names = layer_names(self.blocks)
        rng = np.random.default_rng(seed)
        channels = 3
        for name in self.names:
            kind = name.rstrip("0123456789_")
            if kind == "conv":
                block = int(name[4:].split("_")[0])
                out = base_width * 2 ** (block - 1)
                conv = nn.Conv2d(channels, out, 3, padding=0)
                fan_in = channels * 9
                conv.weight._array = (rng.standard_normal(conv.weight.shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
                conv.bias._array = np.zeros(out, dtype)
                self.add_module(name, conv)
                channels = out
            elif kind == "relu":
                self.add_module(name, nn.ReLU())
            else:
                self.add_module(name, nn.AvgPool2d(2))
        self.requires_grad_(False)  # the image is optimised, never the network

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict:
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"layers: unknown layer(s) {sorted(unknown)}; expected names among {self.names}")
        out = {}
        for name in self.names:
            if name.startswith("conv"):
                x = reflect_pad2d(x, 1)
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out
