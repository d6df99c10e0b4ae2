"""Building blocks shared by the efficient CNNs, with torchvision.ops' names and
state-dict layouts: ``Conv2dNormActivation`` (a Sequential conv -> norm -> activation,
keys ``0.weight``, ``1.weight``...), ``SqueezeExcitation`` (``fc1``/``fc2`` 1x1 convs)
and ``make_divisible`` (channel rounding of the MobileNet/EfficientNet papers)."""
from __future__ import annotations

from .. import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """v rounded to the nearest multiple of divisor, never more than 10% below v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    """conv (k x k, 'same' padding for odd k, bias only without a norm) -> norm -> activation."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU, dilation=1, bias=None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                            groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """x * scale(fc2(act(fc1(avgpool(x))))); x: (N, C, H, W), squeeze to (N, C, 1, 1)."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


def init_efficient(model, linear: str = "normal") -> None:
    """torchvision's initialisation of the efficient nets: convs kaiming-normal (fan_out),
    norms 1/0, Linear N(0, 0.01) ("normal") or U(-1/sqrt(out), 1/sqrt(out)) ("uniform")."""
    from ..nn import init
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            init.ones_(m.weight)
            init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear == "normal":
                init.normal_(m.weight, 0.0, 0.01)
            else:
                r = 1.0 / m.out_features ** 0.5
                init.uniform_(m.weight, -r, r)
            init.zeros_(m.bias)
