"""EfficientNet B0-B7 (Tan & Le, 2019) with torchvision's names, defaults and parameter
counts (B0: 5,288,548 at 1000 classes): MBConv blocks (1x1 expand, SiLU -> k x k
depthwise, SiLU -> squeeze-excitation -> 1x1 project) whose residual branch is dropped
per sample with a probability rising linearly over the network (stochastic depth);
widths and depths scaled by the compound coefficients."""
from __future__ import annotations

import copy
import math
from functools import partial

from .. import nn
from ._blocks import Conv2dNormActivation, SqueezeExcitation, init_efficient, make_divisible


class MBConvConfig:
    def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, num_layers, width_mult=1.0,
                 depth_mult=1.0):
        self.expand_ratio, self.kernel, self.stride = expand_ratio, kernel, stride
        self.input_channels = make_divisible(input_channels * width_mult, 8)
        self.out_channels = make_divisible(out_channels * width_mult, 8)
        self.num_layers = int(math.ceil(num_layers * depth_mult))


class MBConv(nn.Module):
    """x: (N, in, H, W) -> (N, out, H/stride, W/stride); keys ``block.*``."""

    def __init__(self, cnf, stochastic_depth_prob, norm_layer, se_layer=SqueezeExcitation):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        expanded = make_divisible(cnf.input_channels * cnf.expand_ratio, 8)
        layers = []
        if expanded != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded, 1, norm_layer=norm_layer,
                                               activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, cnf.kernel, cnf.stride, groups=expanded,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))
        layers.append(se_layer(expanded, max(1, cnf.input_channels // 4), activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, x):
        y = self.block(x)
        return self.stochastic_depth(y) + x if self.use_res_connect else y


class EfficientNet(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes)."""

    def __init__(self, inverted_residual_setting, dropout, stochastic_depth_prob=0.2, num_classes=1000,
                 norm_layer=None, last_channel=None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        setting = inverted_residual_setting
        layers = [Conv2dNormActivation(3, setting[0].input_channels, 3, 2, norm_layer=norm_layer,
                                       activation_layer=nn.SiLU)]
        total = sum(c.num_layers for c in setting)
        block_id = 0
        for cnf in setting:
            stage = []
            for _ in range(cnf.num_layers):
                b = copy.copy(cnf)
                if stage:
                    b.input_channels, b.stride = b.out_channels, 1
                stage.append(MBConv(b, stochastic_depth_prob * float(block_id) / total, norm_layer))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = setting[-1].out_channels
        last_out = last_channel if last_channel is not None else 4 * last_in
        layers.append(Conv2dNormActivation(last_in, last_out, 1, norm_layer=norm_layer, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_out, num_classes))
        init_efficient(self, linear="uniform")

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _setting(width_mult, depth_mult):
    c = partial(MBConvConfig, width_mult=width_mult, depth_mult=depth_mult)
    return [c(1, 3, 1, 32, 16, 1), c(6, 3, 2, 16, 24, 2), c(6, 5, 2, 24, 40, 2), c(6, 3, 2, 40, 80, 3),
            c(6, 5, 1, 80, 112, 3), c(6, 5, 2, 112, 192, 4), c(6, 3, 1, 192, 320, 1)]


# name: (width_mult, depth_mult, dropout, BatchNorm eps/momentum as torchvision: B5-B7 use 1e-3/0.01)
_B = {0: (1.0, 1.0, 0.2, False), 1: (1.0, 1.1, 0.2, False), 2: (1.1, 1.2, 0.3, False), 3: (1.2, 1.4, 0.3, False),
      4: (1.4, 1.8, 0.4, False), 5: (1.6, 2.2, 0.4, True), 6: (1.8, 2.6, 0.5, True), 7: (2.0, 3.1, 0.5, True)}


def _efficientnet(b, num_classes=1000, **kw):
    w, d, dropout, tf_norm = _B[b]
    if tf_norm:
        kw.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    return EfficientNet(_setting(w, d), kw.pop("dropout", dropout), num_classes=num_classes, **kw)


def efficientnet_b0(num_classes=1000, **kw):
    """EfficientNet-B0: 5,288,548 parameters at 1000 classes."""
    return _efficientnet(0, num_classes, **kw)


def efficientnet_b1(num_classes=1000, **kw):
    return _efficientnet(1, num_classes, **kw)


def efficientnet_b2(num_classes=1000, **kw):
    return _efficientnet(2, num_classes, **kw)


def efficientnet_b3(num_classes=1000, **kw):
    return _efficientnet(3, num_classes, **kw)


def efficientnet_b4(num_classes=1000, **kw):
    return _efficientnet(4, num_classes, **kw)


def efficientnet_b5(num_classes=1000, **kw):
    return _efficientnet(5, num_classes, **kw)


def efficientnet_b6(num_classes=1000, **kw):
    return _efficientnet(6, num_classes, **kw)


def efficientnet_b7(num_classes=1000, **kw):
    return _efficientnet(7, num_classes, **kw)
