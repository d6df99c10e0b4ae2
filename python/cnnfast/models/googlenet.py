"""GoogLeNet / Inception v1 (Szegedy et al., 2014) in torchvision's layout.

Every convolution is a ``BasicConv2d`` (conv without bias -> BatchNorm(eps=0.001) -> ReLU).
An ``Inception`` module runs four branches on the same input and concatenates them on
channels: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 3x3 (torchvision's kernel in place of
the paper's 5x5); 3x3/1 max-pool -> 1x1 projection. The stem is conv 7x7/2 -> pool ->
1x1 -> 3x3 -> pool; then 3a, 3b, pool, 4a..4e, pool, 5a, 5b, global average pool,
dropout 0.2 and ``fc``. Optional auxiliary heads (``aux1`` on 4a, ``aux2`` on 4d) are
returned in training mode. 6,624,904 parameters at 1000 classes without aux heads.
"""
from collections import namedtuple

from .. import nn
from ._init import init_like_torchvision
from ._ops import cat, relu

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    """conv (no bias) -> BN(eps=1e-3) -> ReLU; extra kwargs go to Conv2d."""

    def __init__(self, in_channels, out_channels, **kw):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kw)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """(N, in, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x):
        return cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: avg-pool to 4x4 -> 1x1 conv (128) -> FC 1024 -> dropout 0.7 -> FC."""

    def __init__(self, in_channels, num_classes, dropout=0.7):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x):
        x = self.conv(self.avgpool(x)).flatten(1)
        return self.fc2(self.dropout(relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    """x: (N, in_channels, H, W) with H, W >= 32 (224 canonical) -> logits (N, num_classes).

    With ``aux_logits=True`` and in training mode, returns ``GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)`` as torchvision; in eval mode only the logits.
    """

    def __init__(self, num_classes=1000, aux_logits=False, in_channels=3, dropout=0.2,
                 dropout_aux=0.7):
        super().__init__()
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        init_like_torchvision(self, conv="trunc_normal", linear="trunc_normal", trunc_std=0.01)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        if self.aux_logits and self.training:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(num_classes=1000, aux_logits=False, in_channels=3, **kw):
    """GoogLeNet (Inception v1): 6,624,904 parameters at 1000 classes without aux heads."""
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, in_channels=in_channels,
                     **kw)
