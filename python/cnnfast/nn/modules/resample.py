"""Upsampling and rearranging modules (torch.nn names): Upsample, UpsamplingNearest2d,
UpsamplingBilinear2d, PixelShuffle, PixelUnshuffle, ChannelShuffle; and the two
layers today's CNNs add around them: StochasticDepth (torchvision.ops) and
LayerNorm2d (ConvNeXt's LayerNorm over the channels of NCHW maps)."""
from __future__ import annotations

from ... import functional as F
from .module import Module
from .normalization import LayerNorm


class Upsample(Module):
    """input: (N, C, *spatial), 1-3 spatial dims; see cnnfast.functional.interpolate."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self) -> str:
        what = f"scale_factor={self.scale_factor}" if self.scale_factor is not None else f"size={self.size}"
        return f"{what}, mode='{self.mode}'"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class PixelShuffle(Module):
    def __init__(self, upscale_factor: int):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    def __init__(self, downscale_factor: int):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


class ChannelShuffle(Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, input):
        return F.channel_shuffle(input, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class StochasticDepth(Module):
    """Drops the whole input per sample ("row") or per batch ("batch") while training."""

    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        return F.stochastic_depth(input, self.p, self.mode, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class LayerNorm2d(LayerNorm):
    """LayerNorm over C of (N, C, H, W) maps; parameters and state-dict keys as LayerNorm(C)."""

    def forward(self, input):
        return F.layer_norm2d(input, self.weight, self.bias, self.eps)
