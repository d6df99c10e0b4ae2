"""ShuffleNetV2 (Ma et al., 2018) x0.5 / x1.0 / x1.5 / x2.0 with torchvision's names and
parameter counts (x1.0: 2,278,604 at 1000 classes): each unit splits the channels in
two (stride 1) or processes both copies (stride 2), concatenates and shuffles the two
halves so information crosses between them."""
from __future__ import annotations

from .. import functional as F
from .. import nn
from ._ops import cat


def _dw(i, o, stride):
    return nn.Conv2d(i, o, 3, stride, 1, bias=False, groups=i)


class ShuffleUnit(nn.Module):
    """torchvision's shufflenetv2 ``InvertedResidual``: (N, inp, H, W) -> (N, oup, H/s, W/s)."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"stride: expected 1, 2 or 3, got {stride}")
        self.stride = stride
        bf = oup // 2
        if stride == 1 and inp != bf << 1:
            raise ValueError(f"inp, oup: with stride 1, inp ({inp}) must equal oup ({oup}) rounded to even")
        if stride > 1:
            self.branch1 = nn.Sequential(_dw(inp, inp, stride), nn.BatchNorm2d(inp),
                                         nn.Conv2d(inp, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(),
            _dw(bf, bf, stride), nn.BatchNorm2d(bf), nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = cat([x[:, :half], self.branch2(x[:, half:])], 1)
        else:
            out = cat([self.branch1(x), self.branch2(x)], 1)
        return F.channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """x: (N, 3, H, W) -> (N, num_classes)."""

    def __init__(self, stages_repeats, stages_out_channels, num_classes=1000, inverted_residual=ShuffleUnit):
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError("stages_repeats, stages_out_channels: expected 3 and 5 positive ints")
        self._stage_out_channels = stages_out_channels
        inp = 3
        out = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(inp, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU())
        inp = out
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, out in zip(("stage2", "stage3", "stage4"), stages_repeats, stages_out_channels[1:]):
            seq = [inverted_residual(inp, out, 2)] + [inverted_residual(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            inp = out
        out = stages_out_channels[-1]
        self.conv5 = nn.Sequential(nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU())
        self.fc = nn.Linear(out, num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.conv5(x).mean((2, 3)))


def shufflenet_v2_x0_5(num_classes=1000, **kw):
    return ShuffleNetV2([4, 8, 4], [24, 48, 96, 192, 1024], num_classes, **kw)


def shufflenet_v2_x1_0(num_classes=1000, **kw):
    """ShuffleNetV2 x1.0: 2,278,604 parameters at 1000 classes."""
    return ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], num_classes, **kw)


def shufflenet_v2_x1_5(num_classes=1000, **kw):
    return ShuffleNetV2([4, 8, 4], [24, 176, 352, 704, 1024], num_classes, **kw)


def shufflenet_v2_x2_0(num_classes=1000, **kw):
    return ShuffleNetV2([4, 8, 4], [24, 244, 488, 976, 2048], num_classes, **kw)
