"""RegNetX and RegNetY (Radosavovic et al., 2020) with torchvision's names, defaults,
parameter counts and state-dict keys (``stem.0.weight``,
``trunk_output.block1.block1-0.f.a.0.weight``...), so torchvision's weights load.

A RegNet is a stem (3x3/2 conv, BN, ReLU), four stages of residual bottleneck blocks
(1x1 -> grouped 3x3 [-> squeeze-excitation for Y] -> 1x1, the first block of a stage
strided by 2 and projected), global average pooling and a linear classifier. The
per-stage widths and depths are not listed but generated from four numbers (depth,
w_0, w_a, w_m): block j gets the width w_0 + j * w_a, snapped to the nearest power
of w_m times w_0 and to a multiple of 8; runs of equal widths form the stages.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from .. import nn
from ._blocks import Conv2dNormActivation, SqueezeExcitation, make_divisible


class SimpleStemIN(Conv2dNormActivation):
    """3x3 stride-2 conv -> norm -> activation: (N, width_in, H, W) -> (N, width_out, H/2, W/2)."""

    def __init__(self, width_in, width_out, norm_layer, activation_layer):
        super().__init__(width_in, width_out, kernel_size=3, stride=2, norm_layer=norm_layer,
                         activation_layer=activation_layer)


class BottleneckTransform(nn.Sequential):
    """a: 1x1 to w_b, b: grouped 3x3 (stride), se (RegNetY), c: 1x1 to width_out, no activation."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width,
                 bottleneck_multiplier, se_ratio):
        w_b = int(round(width_out * bottleneck_multiplier))
        layers = [("a", Conv2dNormActivation(width_in, w_b, 1, norm_layer=norm_layer,
                                             activation_layer=activation_layer)),
                  ("b", Conv2dNormActivation(w_b, w_b, 3, stride=stride, groups=w_b // group_width,
                                             norm_layer=norm_layer, activation_layer=activation_layer))]
        if se_ratio:
            # The squeeze width follows the block's input width, not w_b (as in the paper's code).
            layers.append(("se", SqueezeExcitation(w_b, int(round(se_ratio * width_in)),
                                                   activation=activation_layer)))
        layers.append(("c", Conv2dNormActivation(w_b, width_out, 1, norm_layer=norm_layer,
                                                 activation_layer=None)))
        super().__init__()
        for name, m in layers:
            self.add_module(name, m)


class ResBottleneckBlock(nn.Module):
    """activation(proj(x) + f(x)); proj (1x1, stride, norm) only where the shape changes."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width=1,
                 bottleneck_multiplier=1.0, se_ratio=None):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = Conv2dNormActivation(width_in, width_out, 1, stride=stride, norm_layer=norm_layer,
                                             activation_layer=None)
        self.f = BottleneckTransform(width_in, width_out, stride, norm_layer, activation_layer, group_width,
                                     bottleneck_multiplier, se_ratio)
        self.activation = activation_layer()

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        return self.activation(skip + self.f(x))


class AnyStage(nn.Sequential):
    """``depth`` blocks named ``block{stage_index}-{i}``; only the first changes width and stride."""

    def __init__(self, width_in, width_out, stride, depth, block_constructor, norm_layer, activation_layer,
                 group_width, bottleneck_multiplier, se_ratio=None, stage_index=0):
        super().__init__()
        for i in range(depth):
            self.add_module(f"block{stage_index}-{i}",
                            block_constructor(width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                                              norm_layer, activation_layer, group_width, bottleneck_multiplier,
                                              se_ratio))


class BlockParams:
    """Per-stage depths, widths, group widths, bottleneck multipliers and strides."""

    def __init__(self, depths, widths, group_widths, bottleneck_multipliers, strides, se_ratio=None):
        self.depths, self.widths, self.group_widths = list(depths), list(widths), list(group_widths)
        self.bottleneck_multipliers, self.strides, self.se_ratio = list(bottleneck_multipliers), list(strides), se_ratio

    @classmethod
    def from_init_params(cls, depth, w_0, w_a, w_m, group_width, bottleneck_multiplier=1.0, se_ratio=None,
                         **kwargs):
        """The stages generated from the design-space parameters (see the module doc).
        The arithmetic is float32, as torchvision's (it runs on torch tensors), so the
        rounding of a width that lands near .5 goes the same way."""
        if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0:
            raise ValueError(f"RegNet settings: expected w_a >= 0, w_0 > 0 and divisible by 8, w_m > 1; "
                             f"got w_a={w_a}, w_0={w_0}, w_m={w_m}")
        f32 = np.float32
        widths_cont = np.arange(depth, dtype=f32) * f32(w_a) + f32(w_0)
        capacity = np.round(np.log(widths_cont / f32(w_0)) / f32(math.log(w_m))).astype(f32)
        block_widths = (np.round(f32(w_0) * np.power(f32(w_m), capacity) / f32(8)) * 8).astype(np.int64).tolist()
        # A stage ends wherever the width changes.
        starts = [j for j in range(len(block_widths)) if j == 0 or block_widths[j] != block_widths[j - 1]]
        stage_widths = [block_widths[j] for j in starts]
        stage_depths = [b - a for a, b in zip(starts, starts[1:] + [len(block_widths)])]
        n = len(stage_widths)
        mults, groups = [bottleneck_multiplier] * n, [group_width] * n
        stage_widths, groups = cls._adjust_widths_groups_compatibilty(stage_widths, mults, groups)
        return cls(stage_depths, stage_widths, groups, mults, [2] * n, se_ratio)

    def _get_expanded_params(self):
        return zip(self.widths, self.strides, self.depths, self.group_widths, self.bottleneck_multipliers)

    @staticmethod
    def _adjust_widths_groups_compatibilty(stage_widths, bottleneck_ratios, group_widths):
        """Bottleneck widths rounded to a multiple of their group width (itself capped at the
        bottleneck width), so the grouped 3x3 divides evenly."""
        bot = [int(w * b) for w, b in zip(stage_widths, bottleneck_ratios)]
        groups = [min(g, wb) for g, wb in zip(group_widths, bot)]
        bot = [make_divisible(wb, g) for wb, g in zip(bot, groups)]
        return [int(wb / b) for wb, b in zip(bot, bottleneck_ratios)], groups


class RegNet(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes); the spatial size shrinks 32-fold before pooling."""

    def __init__(self, block_params, num_classes=1000, stem_width=32, stem_type=None, block_type=None,
                 norm_layer=None, activation=None):
        super().__init__()
        stem_type = stem_type or SimpleStemIN
        norm_layer = norm_layer or nn.BatchNorm2d
        block_type = block_type or ResBottleneckBlock
        activation = activation or nn.ReLU
        self.stem = stem_type(3, stem_width, norm_layer, activation)
        width = stem_width
        self.trunk_output = nn.Sequential()
        for i, (w_out, stride, depth, gw, bm) in enumerate(block_params._get_expanded_params()):
            self.trunk_output.add_module(f"block{i + 1}", AnyStage(width, w_out, stride, depth, block_type, norm_layer,
                                                                   activation, gw, bm, block_params.se_ratio,
                                                                   stage_index=i + 1))
            width = w_out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, num_classes)
        _init_regnet(self)

    def forward(self, x):
        return self.fc(self.avgpool(self.trunk_output(self.stem(x))).flatten(1))


def _init_regnet(model):
    """torchvision's: conv N(0, 2 / (k*k*out)), norms 1/0, Linear N(0, 0.01) with zero bias."""
    from ..nn import init
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.weight.shape[-2:]
            init.normal_(m.weight, 0.0, math.sqrt(2.0 / (kh * kw * m.weight.shape[0])))
        elif isinstance(m, nn.BatchNorm2d):
            init.ones_(m.weight)
            init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            init.normal_(m.weight, 0.0, 0.01)
            init.zeros_(m.bias)


# name: (depth, w_0, w_a, w_m, group_width, se_ratio), torchvision's settings.
_SETTINGS = {
    "regnet_y_400mf": (16, 48, 27.89, 2.09, 8, 0.25), "regnet_y_800mf": (14, 56, 38.84, 2.4, 16, 0.25),
    "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24, 0.25), "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24, 0.25),
    "regnet_y_8gf": (17, 192, 76.82, 2.19, 56, 0.25), "regnet_y_16gf": (18, 200, 106.23, 2.48, 112, 0.25),
    "regnet_y_32gf": (20, 232, 115.89, 2.53, 232, 0.25), "regnet_y_128gf": (27, 456, 160.83, 2.52, 264, 0.25),
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16, None), "regnet_x_800mf": (16, 56, 35.73, 2.28, 16, None),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24, None), "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48, None),
    "regnet_x_8gf": (23, 80, 49.56, 2.88, 120, None), "regnet_x_16gf": (22, 216, 55.59, 2.1, 128, None),
    "regnet_x_32gf": (23, 320, 69.86, 2.0, 168, None),
}


def _regnet(name, **kw):
    depth, w_0, w_a, w_m, gw, se = _SETTINGS[name]
    params = BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m, group_width=gw, se_ratio=se)
    kw.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))
    return RegNet(params, **kw)


def regnet_y_400mf(**kw):
    """RegNetY-400MF: 4,344,144 parameters at 1000 classes."""
    return _regnet("regnet_y_400mf", **kw)


def regnet_y_800mf(**kw):
    """RegNetY-800MF: 6,432,512 parameters."""
    return _regnet("regnet_y_800mf", **kw)


def regnet_y_1_6gf(**kw):
    """RegNetY-1.6GF: 11,202,430 parameters."""
    return _regnet("regnet_y_1_6gf", **kw)


def regnet_y_3_2gf(**kw):
    """RegNetY-3.2GF: 19,436,338 parameters."""
    return _regnet("regnet_y_3_2gf", **kw)


def regnet_y_8gf(**kw):
    """RegNetY-8GF: 39,381,472 parameters."""
    return _regnet("regnet_y_8gf", **kw)


def regnet_y_16gf(**kw):
    """RegNetY-16GF: 83,590,140 parameters."""
    return _regnet("regnet_y_16gf", **kw)


def regnet_y_32gf(**kw):
    """RegNetY-32GF: 145,046,770 parameters."""
    return _regnet("regnet_y_32gf", **kw)


def regnet_y_128gf(**kw):
    """RegNetY-128GF: 644,812,894 parameters (2.6 GB of float32 weights)."""
    return _regnet("regnet_y_128gf", **kw)


def regnet_x_400mf(**kw):
    """RegNetX-400MF: 5,495,976 parameters."""
    return _regnet("regnet_x_400mf", **kw)


def regnet_x_800mf(**kw):
    """RegNetX-800MF: 7,259,656 parameters."""
    return _regnet("regnet_x_800mf", **kw)


def regnet_x_1_6gf(**kw):
    """RegNetX-1.6GF: 9,190,136 parameters."""
    return _regnet("regnet_x_1_6gf", **kw)


def regnet_x_3_2gf(**kw):
    """RegNetX-3.2GF: 15,296,552 parameters."""
    return _regnet("regnet_x_3_2gf", **kw)


def regnet_x_8gf(**kw):
    """RegNetX-8GF: 39,572,648 parameters."""
    return _regnet("regnet_x_8gf", **kw)


def regnet_x_16gf(**kw):
    """RegNetX-16GF: 54,278,536 parameters."""
    return _regnet("regnet_x_16gf", **kw)


def regnet_x_32gf(**kw):
    """RegNetX-32GF: 107,811,560 parameters."""
    return _regnet("regnet_x_32gf", **kw)
