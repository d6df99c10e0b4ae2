"""MobileNetV2 (Sandler et al., 2018) and MobileNetV3 small/large (Howard et al., 2019)
with torchvision's module names, defaults and parameter counts (3,504,872; 2,542,856;
5,483,032 at 1000 classes), so torchvision weights load as they are.

V2: inverted residuals (1x1 expand, ReLU6 -> 3x3 depthwise, ReLU6 -> 1x1 linear project),
a residual where stride is 1 and widths match. V3 adds squeeze-excitation (hard-sigmoid
gate), Hardswish in the later blocks and a 2-layer classifier. ``dilated=True`` (V3)
halves the last stage's widths and dilates it, as the DeepLabV3/LR-ASPP backbones.
"""
from __future__ import annotations

from functools import partial

from .. import nn
from ._blocks import Conv2dNormActivation, SqueezeExcitation, init_efficient, make_divisible


class InvertedResidual(nn.Module):
    """MobileNetV2 block; x: (N, inp, H, W) -> (N, oup, H/stride, W/stride)."""

    def __init__(self, inp, oup, stride, expand_ratio, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.stride = stride
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden, norm_layer=norm_layer,
                                        activation_layer=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), norm_layer(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


_V2_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
               [6, 320, 1, 1]]


class MobileNetV2(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes); 224x224 canonical, any H, W >= 32."""

    def __init__(self, num_classes=1000, width_mult=1.0, inverted_residual_setting=None, round_nearest=8,
                 block=None, norm_layer=None, dropout=0.2):
        super().__init__()
        block = block or InvertedResidual
        norm_layer = norm_layer or nn.BatchNorm2d
        setting = inverted_residual_setting or _V2_SETTING
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [Conv2dNormActivation(3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)]
        for t, c, n, s in setting:
            out = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(block(input_channel, out, s if i == 0 else 1, expand_ratio=t, norm_layer=norm_layer))
                input_channel = out
        features.append(Conv2dNormActivation(input_channel, self.last_channel, 1, norm_layer=norm_layer,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_efficient(self)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(x.flatten(1))


def mobilenet_v2(num_classes=1000, **kw):
    """MobileNetV2 (width 1.0): 3,504,872 parameters at 1000 classes."""
    return MobileNetV2(num_classes=num_classes, **kw)


class InvertedResidualConfig:
    def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, activation, stride,
                 dilation, width_mult):
        self.input_channels = make_divisible(input_channels * width_mult, 8)
        self.kernel = kernel
        self.expanded_channels = make_divisible(expanded_channels * width_mult, 8)
        self.out_channels = make_divisible(out_channels * width_mult, 8)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block (torchvision's ``InvertedResidual`` of mobilenetv3.py): ``block``."""

    def __init__(self, cnf, norm_layer, se_layer=partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1, norm_layer=norm_layer,
                                               activation_layer=act))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, stride,
                                           dilation=cnf.dilation, groups=cnf.expanded_channels,
                                           norm_layer=norm_layer, activation_layer=act))
        if cnf.use_se:
            layers.append(se_layer(cnf.expanded_channels, make_divisible(cnf.expanded_channels // 4, 8)))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


def _v3_conf(arch, width_mult=1.0, reduced_tail=False, dilated=False):
    rd = 2 if reduced_tail else 1
    d = 2 if dilated else 1
    c = partial(InvertedResidualConfig, width_mult=width_mult)
    if arch == "mobilenet_v3_large":
        setting = [c(16, 3, 16, 16, False, "RE", 1, 1), c(16, 3, 64, 24, False, "RE", 2, 1),
                   c(24, 3, 72, 24, False, "RE", 1, 1), c(24, 5, 72, 40, True, "RE", 2, 1),
                   c(40, 5, 120, 40, True, "RE", 1, 1), c(40, 5, 120, 40, True, "RE", 1, 1),
                   c(40, 3, 240, 80, False, "HS", 2, 1), c(80, 3, 200, 80, False, "HS", 1, 1),
                   c(80, 3, 184, 80, False, "HS", 1, 1), c(80, 3, 184, 80, False, "HS", 1, 1),
                   c(80, 3, 480, 112, True, "HS", 1, 1), c(112, 3, 672, 112, True, "HS", 1, 1),
                   c(112, 5, 672, 160 // rd, True, "HS", 2, d),
                   c(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, d),
                   c(160 // rd, 5, 960 // rd, 160 // rd, True, "HS", 1, d)]
        last = make_divisible(1280 // rd * width_mult, 8)
    else:
        setting = [c(16, 3, 16, 16, True, "RE", 2, 1), c(16, 3, 72, 24, False, "RE", 2, 1),
                   c(24, 3, 88, 24, False, "RE", 1, 1), c(24, 5, 96, 40, True, "HS", 2, 1),
                   c(40, 5, 240, 40, True, "HS", 1, 1), c(40, 5, 240, 40, True, "HS", 1, 1),
                   c(40, 5, 120, 48, True, "HS", 1, 1), c(48, 5, 144, 48, True, "HS", 1, 1),
                   c(48, 5, 288, 96 // rd, True, "HS", 2, d),
                   c(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, d),
                   c(96 // rd, 5, 576 // rd, 96 // rd, True, "HS", 1, d)]
        last = make_divisible(1024 // rd * width_mult, 8)
    return setting, last


class MobileNetV3(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes)."""

    def __init__(self, inverted_residual_setting, last_channel, num_classes=1000, block=None, norm_layer=None,
                 dropout=0.2):
        super().__init__()
        block = block or InvertedResidualV3
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        first = inverted_residual_setting[0].input_channels
        layers = [Conv2dNormActivation(3, first, 3, 2, norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        layers += [block(cnf, norm_layer) for cnf in inverted_residual_setting]
        last_in = inverted_residual_setting[-1].out_channels
        layers.append(Conv2dNormActivation(last_in, 6 * last_in, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(), nn.Dropout(p=dropout),
                                        nn.Linear(last_channel, num_classes))
        init_efficient(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def mobilenet_v3_large(num_classes=1000, width_mult=1.0, reduced_tail=False, dilated=False, **kw):
    """MobileNetV3-Large: 5,483,032 parameters at 1000 classes."""
    setting, last = _v3_conf("mobilenet_v3_large", width_mult, reduced_tail, dilated)
    return MobileNetV3(setting, last, num_classes=num_classes, **kw)


def mobilenet_v3_small(num_classes=1000, width_mult=1.0, reduced_tail=False, dilated=False, **kw):
    """MobileNetV3-Small: 2,542,856 parameters at 1000 classes."""
    setting, last = _v3_conf("mobilenet_v3_small", width_mult, reduced_tail, dilated)
    return MobileNetV3(setting, last, num_classes=num_classes, **kw)
