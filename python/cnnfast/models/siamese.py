"""Siamese embedding network: one CNN, shared by every input, mapping images to vectors.

``SiameseNet.embed(x)`` maps (N, C, H, W) to (N, embedding_dim); ``forward(a, b)``
returns both embeddings (same weights), ``forward(a, p, n)`` three, for contrastive and
triplet losses (e.g. ``F.triplet_margin_loss``) respectively. The trunk is
``len(widths)`` stages of [conv3x3 -> BN -> ReLU -> 2x2 max-pool], then a global
average pool and a linear projection; ``normalize=True`` puts embeddings on the unit sphere.
"""
from .. import nn


class SiameseNet(nn.Module):
    """Shared-weight embedding CNN; inputs (N, in_channels, H, W) with H, W >= 2**len(widths)."""

    def __init__(self, in_channels=1, embedding_dim=128, widths=(32, 64, 128),
                 normalize=False):
        super().__init__()
        layers = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2, 2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, embedding_dim)
        self.normalize = normalize

    def embed(self, x):
        """(N, C, H, W) -> (N, embedding_dim)."""
        e = self.fc(self.avgpool(self.features(x)).flatten(1))
        if self.normalize:
            e = e / (((e * e).sum(1, keepdim=True) + 1e-12) ** 0.5)
        return e

    def forward(self, a, b=None, c=None):
        """One, two or three image batches -> one embedding each (a tuple for 2 or 3)."""
        if b is None:
            return self.embed(a)
        if c is None:
            return self.embed(a), self.embed(b)
        return self.embed(a), self.embed(b), self.embed(c)


def siamese(in_channels=1, embedding_dim=128, **kw):
    """Siamese embedding network (see SiameseNet)."""
    return SiameseNet(in_channels=in_channels, embedding_dim=embedding_dim, **kw)
