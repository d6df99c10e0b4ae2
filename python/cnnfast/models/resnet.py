"""ResNet (He et al., 2015): residual blocks with identity or 1x1 projection shortcuts.

torchvision's layout and names: ``conv1`` 7x7/2 -> ``bn1`` -> ``relu`` -> ``maxpool`` 3x3/2
-> ``layer1..layer4`` -> ``avgpool`` -> ``fc``. ResNet-18/34 stack ``BasicBlock`` (two 3x3
convs), ResNet-50/101/152 stack ``Bottleneck`` (1x1 reduce, 3x3 with the stride, 1x1
expand x4). A block whose stride or width changes gets a ``downsample`` projection
(1x1 conv with the stride + BN). Convolutions feeding a BN have no bias.
Parameters at 1000 classes: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808.
"""
from .. import nn
from ._init import init_like_torchvision


def conv3x3(cin, cout, stride=1, groups=1, dilation=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); x: (N, cin, H, W)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, width_per_group=64, dilation=1):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("groups, width_per_group: BasicBlock only supports groups=1 and width_per_group=64")
        if dilation > 1:
            raise ValueError("dilation: BasicBlock does not support dilation > 1")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 (width) -> 3x3 (width, stride, groups, dilation) -> 1x1 (4*planes), plus the
    shortcut; width = planes * width_per_group / 64 * groups (ResNeXt, Wide ResNet)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, width_per_group=64, dilation=1):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """x: (N, in_channels, H, W) -> logits (N, num_classes); H, W >= 32 (224 canonical).

    ``base_width`` scales the stage widths (64, 128, 256, 512 at the default 64) so
    tests can train a structurally identical, much smaller network.
    """

    def __init__(self, block, layers, num_classes: int = 1000, in_channels: int = 3,
                 base_width: int = 64, groups: int = 1, width_per_group: int = 64,
                 replace_stride_with_dilation=None):
        super().__init__()
        self.inplanes = base_width
        self.groups, self.width_per_group, self.dilation = groups, width_per_group, 1
        dilate = list(replace_stride_with_dilation or [False, False, False])
        if len(dilate) != 3:
            raise ValueError(f"replace_stride_with_dilation: expected 3 booleans, got {dilate}")
        self.conv1 = nn.Conv2d(in_channels, base_width, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base_width, layers[0])
        self.layer2 = self._make_layer(block, base_width * 2, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, base_width * 4, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, base_width * 8, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base_width * 8 * block.expansion, num_classes)
        init_like_torchvision(self, conv="kaiming_fan_out")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        previous_dilation = self.dilation
        if dilate:  # keep the resolution, widen the receptive field instead (segmentation backbones)
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        g = dict(groups=self.groups, width_per_group=self.width_per_group)
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation, **g)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation, **g) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes=1000, in_channels=3, **kw):
    """ResNet-18: BasicBlock x (2, 2, 2, 2), 11,689,512 parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, **kw)


def resnet34(num_classes=1000, in_channels=3, **kw):
    """ResNet-34: BasicBlock x (3, 4, 6, 3), 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, **kw)


def resnet50(num_classes=1000, in_channels=3, **kw):
    """ResNet-50: Bottleneck x (3, 4, 6, 3), 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kw)


def resnet101(num_classes=1000, in_channels=3, **kw):
    """ResNet-101: Bottleneck x (3, 4, 23, 3), 44,549,160 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kw)


def resnet152(num_classes=1000, in_channels=3, **kw):
    """ResNet-152: Bottleneck x (3, 8, 36, 3), 60,192,808 parameters."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, **kw)


def resnext50_32x4d(num_classes=1000, in_channels=3, **kw):
    """ResNeXt-50 32x4d: 25,028,904 parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, groups=32, width_per_group=4, **kw)


def resnext101_32x8d(num_classes=1000, in_channels=3, **kw):
    """ResNeXt-101 32x8d: 88,791,336 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, groups=32, width_per_group=8, **kw)


def wide_resnet50_2(num_classes=1000, in_channels=3, **kw):
    """Wide ResNet-50-2 (bottleneck width doubled): 68,883,240 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width_per_group=128, **kw)


def wide_resnet101_2(num_classes=1000, in_channels=3, **kw):
    """Wide ResNet-101-2: 126,886,696 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, width_per_group=128, **kw)
