"""U-Net (Ronneberger et al., 2015) for dense (per-pixel) prediction.

Contracting path: ``depth`` times [DoubleConv -> 2x2 max-pool], the width doubling at
each level from ``base_width``; a DoubleConv bottleneck; expanding path: ``depth`` times
[2x2 stride-2 transposed conv halving the width -> concatenate the skip of the same
level on channels -> DoubleConv]; a 1x1 conv to ``num_classes``. DoubleConv is two
3x3 pad-1 convs, each followed by BatchNorm (optional) and ReLU, so with H and W
divisible by 2**depth the output map has the input's size.

``bilinear=True`` is the lighter variant most U-Net code offers: the up path doubles
the map by bilinear interpolation (align_corners=True, no weights) instead of a
transposed conv, so the channels halve in the DoubleConvs instead: the bottleneck keeps
the width of the deepest skip, each up level emits the width of the next skip, and the
first conv of its DoubleConv goes to the middle width (in + skip) / 2. 17,263,042
parameters for 3 input channels and 2 classes (the common configuration), 17,261,890
for 1 input channel.
"""
from .. import nn
from ._ops import cat


class DoubleConv(nn.Module):
    """(N, cin, H, W) -> (N, cout, H, W): [conv3x3 -> (BN) -> ReLU] x 2."""

    def __init__(self, cin, cout, batch_norm=True, mid=None):
        super().__init__()
        mid = cout if mid is None else mid
        layers = []
        for a, b in ((cin, mid), (mid, cout)):
            layers.append(nn.Conv2d(a, b, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU())
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class Down(nn.Module):
    """2x2 max-pool then DoubleConv: (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin, cout, batch_norm=True):
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)
        self.conv = DoubleConv(cin, cout, batch_norm)

    def forward(self, x):
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Transposed conv 2x2/2 (cin -> cin/2), concat the skip (cin/2), DoubleConv -> cout."""

    def __init__(self, cin, cout, batch_norm=True):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin // 2 + cout, cout, batch_norm)

    def forward(self, x, skip):
        return self.conv(cat([skip, self.up(x)], 1))


class UpBilinear(nn.Module):
    """Bilinear x2 (align_corners=True), concat the skip (skip channels), DoubleConv with the
    middle width (cin + skip) / 2 -> cout."""

    def __init__(self, cin, skip, cout, batch_norm=True):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(cin + skip, cout, batch_norm, mid=(cin + skip) // 2)

    def forward(self, x, skip):
        return self.conv(cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """x: (N, in_channels, H, W), H and W divisible by 2**depth -> (N, num_classes, H, W).

    ``base_width`` (64 in the paper) is the width of the first level; ``depth`` (4 in
    the paper) the number of poolings.
    """

    def __init__(self, in_channels=1, num_classes=2, base_width=64, depth=4, batch_norm=True, bilinear=False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected >= 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"base_width: expected >= 1, got {base_width}")
        self.depth, self.bilinear = depth, bilinear
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        if bilinear:
            # The bottleneck keeps the last skip's width: every up level then meets a skip
            # as wide as its input.
            widths[-1] = widths[-2]
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        for i in range(depth):
            setattr(self, f"down{i + 1}", Down(widths[i], widths[i + 1], batch_norm))
        for i in range(depth):
            level = depth - i - 1  # the skip's level
            if bilinear:
                below = widths[depth] if i == 0 else getattr(self, f"up{i}").out_channels
                out = widths[level - 1] if level > 0 else widths[0]
                up = UpBilinear(below, widths[level], out, batch_norm)
                up.out_channels = out
            else:
                up = Up(widths[depth - i], widths[level], batch_norm)
            setattr(self, f"up{i + 1}", up)
        self.outc = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x):
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        if h % m or w % m:
            raise ValueError(f"x: expected H and W divisible by 2**depth = {m}, got {h}x{w}")
        skips = [self.inc(x)]
        for i in range(self.depth):
            skips.append(getattr(self, f"down{i + 1}")(skips[-1]))
        y = skips.pop()
        for i in range(self.depth):
            y = getattr(self, f"up{i + 1}")(y, skips.pop())
        return self.outc(y)


def unet(in_channels=1, num_classes=2, base_width=64, depth=4, bilinear=False, **kw):
    """U-Net with the paper's widths 64..1024 at the defaults: 31,036,546 parameters for
    1 input channel and 2 classes; with ``bilinear=True`` 17,261,890 (17,263,042 for 3
    input channels)."""
    return UNet(in_channels=in_channels, num_classes=num_classes, base_width=base_width,
                depth=depth, bilinear=bilinear, **kw)
