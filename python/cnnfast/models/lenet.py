"""LeNet-5 (LeCun et al., 1998): two conv/pool stages and three fully connected layers.

The classic 6-16-120-84 layout on a 32x32 input: conv 5x5 (6) -> pool 2 -> conv 5x5 (16)
-> pool 2 -> FC 120 -> FC 84 -> FC num_classes. Tanh and average pooling as in the
paper by default; ``activation="relu"`` and ``pool="max"`` give the modern variant.
"""
from .. import nn


class LeNet5(nn.Module):
    """LeNet-5.

    x: (N, in_channels, input_size, input_size) -> logits (N, num_classes).
    ``input_size`` is 32 in the paper; any size >= 16 for which the two 5x5 valid
    convolutions and 2x2 poolings leave a positive map works (the FC sizes follow).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 32,
                 activation: str = "tanh", pool: str = "avg"):
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: expected 'tanh' or 'relu', got {activation!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool: expected 'avg' or 'max', got {pool!r}")
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"input_size: expected >= 16 for LeNet-5, got {input_size}")
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5), act(), pool_layer(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), act(), pool_layer(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 32, **kw) -> LeNet5:
    """LeNet-5 for (N, in_channels, 32, 32) inputs: 61,706 parameters at 10 classes."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw)
