"""DCGAN generator and discriminator (Radford, Metz & Chintala, 2016) for small images.

Generator: z (N, nz) -> [ConvTranspose2d 4x4 from 1x1 to 4x4] -> BN -> ReLU -> k x
[ConvTranspose2d 4x4 stride 2 (doubles the size)] -> BN -> ReLU, the last one to the image
channels followed by Tanh: images in [-1, 1]. Discriminator mirrors it: strided 4x4
convolutions (halving the size) with LeakyReLU(0.2), BatchNorm on all but the first, and
a final 4x4 convolution to one logit per image (use BCE-with-logits). No pooling and no
fully connected hidden layers, as the paper recommends; weights start from N(0, 0.02),
BN scales from N(1, 0.02).
"""
from __future__ import annotations

from .. import nn

__all__ = ["Generator", "Discriminator", "dcgan_init_"]


def _stages(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and image_size (a power of two >= 8)."""
    k, s = 0, 4
    while s < image_size:
        s *= 2
        k += 1
    if s != image_size or k < 1:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return k


class Generator(nn.Module):
    """z: (N, nz) or (N, nz, 1, 1) -> images (N, channels, image_size, image_size) in [-1, 1].
    Widths: ngf * 2**(k-1) at 4x4, halving at every doubling of the size."""

    def __init__(self, nz: int = 32, ngf: int = 32, channels: int = 1, image_size: int = 16):
        super().__init__()
        k = _stages(image_size)
        self.nz = nz
        w = ngf * 2 ** (k - 1)
        layers = [nn.ConvTranspose2d(nz, w, 4, 1, 0, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        for _ in range(k - 1):
            layers += [nn.ConvTranspose2d(w, w // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w // 2), nn.ReLU()]
            w //= 2
        layers += [nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        if z.ndim == 2:
            z = z.reshape(z.shape[0], z.shape[1], 1, 1)
        return self.main(z)


class Discriminator(nn.Module):
    """images (N, channels, image_size, image_size) -> logits (N,) (real: high)."""

    def __init__(self, ndf: int = 32, channels: int = 1, image_size: int = 16):
        super().__init__()
        k = _stages(image_size)
        w = ndf
        layers = [nn.Conv2d(channels, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        for _ in range(k - 1):
            layers += [nn.Conv2d(w, w * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2), nn.LeakyReLU(0.2)]
            w *= 2
        layers += [nn.Conv2d(w, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).reshape(x.shape[0])


def dcgan_init_(module: nn.Module) -> nn.Module:
    """The paper's initialisation, in place: (transposed) convolution weights N(0, 0.02),
    BatchNorm weight N(1, 0.02) and bias 0. Returns the module."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
