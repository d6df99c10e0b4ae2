"""The tensor operations the architectures use outside of layers, gathered in one place:
``cat`` joins branch outputs along channels (Inception, DenseNet, U-Net skips) and
``relu`` is the functional activation of GoogLeNet's auxiliary head."""
from .. import functional as F
from ..tensor import cat  # noqa: F401

relu = F.relu
