"""AlexNet (Krizhevsky et al., 2012) in its original form (96-256-384-384-256 filters).

227x227x3 input; conv 11x11/4 (96) -> LRN -> overlapping max-pool 3x3/2 -> conv 5x5 (256)
-> LRN -> pool -> conv 3x3 (384, 384, 256) -> pool -> FC 4096 -> FC 4096 -> FC classes,
with ReLU after every conv/FC and dropout 0.5 before the first two FC layers.
The two GPU towers of the paper are merged (no grouped convolutions), giving
62,378,344 parameters at 1000 classes.

Module names follow torchvision's AlexNet (``features.N``, ``avgpool``, ``classifier.N``)
so its state_dict keys have the same form; the layer widths are the paper's.
"""
from .. import nn


class AlexNet(nn.Module):
    """x: (N, in_channels, 227, 227) -> logits (N, num_classes).

    The adaptive average pool to 6x6 is the identity at 227x227 and lets other input
    sizes (>= 67) reach the 9216-wide classifier, as torchvision does. ``width`` scales
    the conv widths and ``hidden`` sets the FC width (1.0 and 4096 in the paper), for
    cheap structurally identical test networks.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5,
                 lrn: bool = True, width: float = 1.0, hidden: int = 4096):
        super().__init__()
        c1, c2, c3, c4, c5 = (max(1, int(round(c * width))) for c in (96, 256, 384, 384, 256))

        def norm():
            if lrn:
                return [nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)]
            return []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=0), nn.ReLU(), *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(), *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(c5 * 6 * 6, hidden), nn.ReLU(),
            nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def alexnet(num_classes: int = 1000, in_channels: int = 3, **kw) -> AlexNet:
    """AlexNet for 227x227 inputs (62,378,344 parameters at 1000 classes)."""
    return AlexNet(num_classes=num_classes, in_channels=in_channels, **kw)
