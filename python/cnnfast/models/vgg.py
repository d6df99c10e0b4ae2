"""VGG (Simonyan & Zisserman, 2014), configurations A/B/D/E = VGG-11/13/16/19, with or
without batch normalisation, in torchvision's layout (``features.N``, ``avgpool``,
``classifier.N``): 3x3 stride-1 pad-1 convolutions, 2x2/2 max-pools, adaptive average
pool to 7x7, then FC 4096 -> FC 4096 -> FC classes with ReLU and dropout 0.5.
VGG-16: 138,357,544 parameters at 1000 classes.
"""
from .. import nn
from ._init import init_like_torchvision

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_features(cfg, in_channels: int = 3, batch_norm: bool = False, width: float = 1.0):
    """The convolutional trunk: each int is a conv3x3 (+BN) + ReLU of that width, "M" a pool.

    ``width`` scales every channel count (1.0 = the paper); small widths make the
    network cheap enough for tests without changing its structure.
    """
    layers = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = max(1, int(round(v * width)))
        layers.append(nn.Conv2d(c, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        c = out
    return nn.Sequential(*layers), c


class VGG(nn.Module):
    """x: (N, in_channels, H, W) with H, W >= 32 -> logits (N, num_classes).

    The canonical input is 224x224 (7x7 after five pools); the adaptive pool makes
    the classifier input 512*7*7 for any size.
    """

    def __init__(self, cfg, num_classes: int = 1000, in_channels: int = 3,
                 batch_norm: bool = False, dropout: float = 0.5, width: float = 1.0,
                 hidden: int = 4096):
        super().__init__()
        self.features, c = make_features(cfg, in_channels, batch_norm, width)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, hidden), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        init_like_torchvision(self, conv="kaiming_fan_out", linear="normal")

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def _vgg(name, batch_norm, num_classes, in_channels, **kw):
    return VGG(CONFIGS[name], num_classes=num_classes, in_channels=in_channels,
               batch_norm=batch_norm, **kw)


def vgg11(num_classes=1000, in_channels=3, **kw):
    """VGG-11 (config A): 132,863,336 parameters at 1000 classes."""
    return _vgg("vgg11", False, num_classes, in_channels, **kw)


def vgg11_bn(num_classes=1000, in_channels=3, **kw):
    """VGG-11 with batch norm after every conv."""
    return _vgg("vgg11", True, num_classes, in_channels, **kw)


def vgg13(num_classes=1000, in_channels=3, **kw):
    """VGG-13 (config B): 133,047,848 parameters at 1000 classes."""
    return _vgg("vgg13", False, num_classes, in_channels, **kw)


def vgg13_bn(num_classes=1000, in_channels=3, **kw):
    """VGG-13 with batch norm after every conv."""
    return _vgg("vgg13", True, num_classes, in_channels, **kw)


def vgg16(num_classes=1000, in_channels=3, **kw):
    """VGG-16 (config D): 138,357,544 parameters at 1000 classes."""
    return _vgg("vgg16", False, num_classes, in_channels, **kw)


def vgg16_bn(num_classes=1000, in_channels=3, **kw):
    """VGG-16 with batch norm after every conv: 138,365,992 parameters."""
    return _vgg("vgg16", True, num_classes, in_channels, **kw)


def vgg19(num_classes=1000, in_channels=3, **kw):
    """VGG-19 (config E): 143,667,240 parameters at 1000 classes."""
    return _vgg("vgg19", False, num_classes, in_channels, **kw)


def vgg19_bn(num_classes=1000, in_channels=3, **kw):
    """VGG-19 with batch norm after every conv."""
    return _vgg("vgg19", True, num_classes, in_channels, **kw)
