"""ConvNeXt tiny/small (Liu et al., 2022) with torchvision's names and parameter counts
(28,589,128 / 50,223,688 at 1000 classes): 4x4/4 patchify stem, blocks of 7x7 depthwise
conv -> LayerNorm over channels -> 4x MLP with GELU, a learnt per-channel layer scale and
stochastic depth; LayerNorm2d + 2x2/2 conv between stages."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import nn
from ..nn import init
from ._blocks import Conv2dNormActivation


class Permute(nn.Module):
    """x.permute(*dims) as a layer (torchvision.ops.Permute); no parameters."""

    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """x: (N, dim, H, W) -> same shape; keys ``block.0`` (dwconv), ``block.2`` (norm),
    ``block.3``/``block.5`` (MLP), ``layer_scale`` (dim, 1, 1)."""

    def __init__(self, dim, layer_scale, stochastic_depth_prob, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   norm_layer(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                   Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(np.full((dim, 1, 1), layer_scale, np.float32))
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class CNBlockConfig:
    def __init__(self, input_channels, out_channels, num_layers):
        self.input_channels, self.out_channels, self.num_layers = input_channels, out_channels, num_layers


class ConvNeXt(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes); H, W multiples of 32."""

    def __init__(self, block_setting, stochastic_depth_prob=0.0, layer_scale=1e-6, num_classes=1000, block=None,
                 norm_layer=None):
        super().__init__()
        block = block or CNBlock
        norm_layer = norm_layer or partial(nn.LayerNorm2d, eps=1e-6)
        layers = [Conv2dNormActivation(3, block_setting[0].input_channels, 4, 4, padding=0, norm_layer=norm_layer,
                                       activation_layer=None, bias=True)]
        total = sum(c.num_layers for c in block_setting)
        block_id = 0
        for cnf in block_setting:
            stage = []
            for _ in range(cnf.num_layers):
                stage.append(block(cnf.input_channels, layer_scale, stochastic_depth_prob * block_id / (total - 1.0)))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if cnf.out_channels is not None:
                layers.append(nn.Sequential(norm_layer(cnf.input_channels),
                                            nn.Conv2d(cnf.input_channels, cnf.out_channels, 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = block_setting[-1]
        c = last.out_channels if last.out_channels is not None else last.input_channels
        self.classifier = nn.Sequential(norm_layer(c), nn.Flatten(1), nn.Linear(c, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(num_classes=1000, stochastic_depth_prob=0.1, **kw):
    """ConvNeXt-T: 28,589,128 parameters at 1000 classes."""
    s = [CNBlockConfig(96, 192, 3), CNBlockConfig(192, 384, 3), CNBlockConfig(384, 768, 9), CNBlockConfig(768, None, 3)]
    return ConvNeXt(s, stochastic_depth_prob, num_classes=num_classes, **kw)


def convnext_small(num_classes=1000, stochastic_depth_prob=0.4, **kw):
    """ConvNeXt-S: 50,223,688 parameters at 1000 classes."""
    s = [CNBlockConfig(96, 192, 3), CNBlockConfig(192, 384, 3), CNBlockConfig(384, 768, 27),
         CNBlockConfig(768, None, 3)]
    return ConvNeXt(s, stochastic_depth_prob, num_classes=num_classes, **kw)
