"""DenseNet-BC (Huang et al., 2017): every layer of a dense block sees the concatenation
of all earlier feature maps of the block; transitions halve channels and resolution.

torchvision's layout and names: ``features.conv0`` 7x7/2 -> ``norm0`` -> ``relu0`` ->
``pool0`` 3x3/2 -> ``denseblockK`` (``denselayerJ``: norm1 -> relu1 -> conv1 1x1
(bn_size*growth) -> norm2 -> relu2 -> conv2 3x3 (growth)) -> ``transitionK`` (norm -> relu
-> 1x1 conv -> 2x2 average pool) ... -> ``norm5``; then ReLU, global average pool and
``classifier``. DenseNet-121: 7,978,856 parameters at 1000 classes.

``memory_efficient=True`` (torchvision's name): each layer's concatenation -> norm1 ->
relu1 -> conv1 runs under activation checkpointing, so backward keeps only the block's
feature maps and the bottleneck output instead of a new full concatenation (and its
normalised copy) per layer, and recomputes them; memory per block grows linearly with
its depth instead of quadratically, for about one more 1x1 convolution per layer.
"""
from .. import nn
from ..utils.checkpoint import checkpoint
from ._init import init_like_torchvision
from ._ops import cat


class DenseLayer(nn.Module):
    """features: list of (N, Ci, H, W) -> new features (N, growth_rate, H, W)."""

    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate=0.0, memory_efficient=False):
        super().__init__()
        self.memory_efficient = memory_efficient
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1,
                               bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1,
                               bias=False)
        self.dropout = nn.Dropout(p=drop_rate) if drop_rate > 0 else None

    def _recomputed_modules(self) -> list:
        """The layers run under checkpointing in training (cnnfast.summary's accounting)."""
        return [self.norm1, self.relu1, self.conv1] if self.memory_efficient else []

    def bottleneck(self, *features):
        x = cat(features, 1) if len(features) > 1 else features[0]
        return self.conv1(self.relu1(self.norm1(x)))

    def forward(self, features):
        if self.memory_efficient and self.training:
            out = checkpoint(self.bottleneck, *features)
        else:
            out = self.bottleneck(*features)
        out = self.conv2(self.relu2(self.norm2(out)))
        return self.dropout(out) if self.dropout is not None else out


class DenseBlock(nn.Module):
    """(N, C, H, W) -> (N, C + num_layers*growth_rate, H, W); layers named denselayer1..n."""

    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate=0.0, memory_efficient=False):
        super().__init__()
        self._names = []
        for i in range(num_layers):
            name = f"denselayer{i + 1}"
            setattr(self, name, DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                           bn_size, drop_rate, memory_efficient))
            self._names.append(name)

    def forward(self, x):
        features = [x]
        for name in self._names:
            features.append(getattr(self, name)(features))
        return cat(features, 1)


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv -> 2x2/2 average pool: (N, C, H, W) -> (N, C', H/2, W/2)."""

    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1,
                              bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    """x: (N, in_channels, H, W) with H, W >= 32 (224 canonical) -> logits (N, num_classes)."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                 bn_size=4, drop_rate=0.0, num_classes=1000, in_channels=3, compression=0.5,
                 memory_efficient=False):
        super().__init__()
        self.features = nn.Sequential()
        f = self.features
        f.conv0 = nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3,
                            bias=False)
        f.norm0 = nn.BatchNorm2d(num_init_features)
        f.relu0 = nn.ReLU()
        f.pool0 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c = num_init_features
        for i, n in enumerate(block_config):
            setattr(f, f"denseblock{i + 1}", DenseBlock(n, c, bn_size, growth_rate, drop_rate, memory_efficient))
            c += n * growth_rate
            if i != len(block_config) - 1:
                out = int(c * compression)
                setattr(f, f"transition{i + 1}", Transition(c, out))
                c = out
        f.norm5 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(c, num_classes)
        init_like_torchvision(self, conv="kaiming_fan_in")

    def forward(self, x):
        x = self.relu(self.features(x))
        return self.classifier(self.avgpool(x).flatten(1))


def densenet121(num_classes=1000, in_channels=3, growth_rate=32, num_init_features=64,
                bn_size=4, **kw):
    """DenseNet-121 (growth 32, blocks 6-12-24-16): 7,978,856 parameters at 1000 classes."""
    return DenseNet(growth_rate, (6, 12, 24, 16), num_init_features, bn_size, num_classes=num_classes,
                    in_channels=in_channels, **kw)


def densenet169(num_classes=1000, in_channels=3, growth_rate=32, num_init_features=64,
                bn_size=4, **kw):
    """DenseNet-169 (growth 32, blocks 6-12-32-32): 14,149,480 parameters."""
    return DenseNet(growth_rate, (6, 12, 32, 32), num_init_features, bn_size, num_classes=num_classes,
                    in_channels=in_channels, **kw)


def densenet201(num_classes=1000, in_channels=3, growth_rate=32, num_init_features=64,
                bn_size=4, **kw):
    """DenseNet-201 (growth 32, blocks 6-12-48-32): 20,013,928 parameters."""
    return DenseNet(growth_rate, (6, 12, 48, 32), num_init_features, bn_size, num_classes=num_classes,
                    in_channels=in_channels, **kw)
