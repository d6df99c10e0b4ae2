"""torchvision's weight initialisations, so a freshly built model starts where
torchvision's would (the layer defaults alone leave deep plain nets such as VGG with
vanishing activations)."""
import numpy as np

from .. import nn
from .. import random as _random
from ..nn import init


def _normal_f32_(param, std: float) -> None:
    """N(0, std^2) drawn directly in float32 for float32 weights: VGG's 102M-weight first
    FC layer would otherwise go through a float64 temporary (about twice the time)."""
    arr = param._array
    if arr.dtype == np.float32:
        _random.generator().standard_normal(out=arr, dtype=np.float32)
        arr *= np.float32(std)
    else:
        init.normal_(param, 0.0, std)


def _zero_bias(m):
    if getattr(m, "bias", None) is not None:
        init.zeros_(m.bias)


def init_like_torchvision(model, conv: str = "kaiming_fan_out", linear: str | None = None,
                          trunc_std: float | None = None) -> None:
    """conv: "kaiming_fan_out" (VGG, ResNet), "kaiming_fan_in" (DenseNet) or "trunc_normal"
    (GoogLeNet, std ``trunc_std``); linear: None (layer default, bias zeroed), "normal"
    (N(0, 0.01), VGG) or "trunc_normal"; BatchNorm: weight 1, bias 0 in every case."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if conv == "kaiming_fan_out":
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif conv == "kaiming_fan_in":
                init.kaiming_normal_(m.weight)
            else:
                init.trunc_normal_(m.weight, mean=0.0, std=trunc_std, a=-2, b=2)
            _zero_bias(m)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            init.ones_(m.weight)
            init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear == "normal":
                _normal_f32_(m.weight, 0.01)
            elif linear == "trunc_normal":
                init.trunc_normal_(m.weight, mean=0.0, std=trunc_std, a=-2, b=2)
            _zero_bias(m)
