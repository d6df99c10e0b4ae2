"""The few tensor operations the architectures use outside of layers.

They are gathered here so that every model file takes them from one place:
``cat`` joins branch outputs along channels (Inception, DenseNet, U-Net skips),
``relu`` is the functional activation torchvision applies without a module,
``flatten`` turns (N, C, 1, 1) features into (N, C) before a classifier.
"""
from .. import functional as F
from ..tensor import cat  # noqa: F401

relu = F.relu


def flatten(x, start_dim: int = 1):
    """(N, C, H, W) -> (N, C*H*W), as ``torch.flatten(x, 1)``."""
    return x.flatten(start_dim)
