"""Semantic segmentation with torchvision's names and state-dict keys: FCN (Long et al.,
2015) and DeepLabV3 (Chen et al., 2017) heads on a dilated ResNet-50 or MobileNetV3-Large
backbone (output stride 8 / 16). The head's logits are upsampled bilinearly to the input
size. ``forward`` returns a dict ``{"out": (N, num_classes, H, W)}`` (plus ``"aux"`` with
``aux_loss=True``), as torchvision does.

fcn_resnet50: 32,957,013 parameters at 21 classes; deeplabv3_resnet50: 39,633,493;
deeplabv3_mobilenet_v3_large: 11,025,477 (no auxiliary head)."""
from __future__ import annotations

from .. import functional as F
from .. import nn
from ._ops import cat
from .mobilenet import mobilenet_v3_large
from .resnet import resnet50


class IntermediateLayerGetter(nn.ModuleDict):
    """The backbone's children up to the last one named in return_layers; returns a dict
    {new_name: that child's output}."""

    def __init__(self, model, return_layers):
        wanted = dict(return_layers)
        layers = {}
        left = set(wanted)
        for name, module in model.named_children():
            layers[name] = module
            left.discard(name)
            if not left:
                break
        super().__init__(layers)
        self.return_layers = wanted

    def forward(self, x):
        out = {}
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class _SegmentationModel(nn.Module):
    def __init__(self, backbone, classifier, aux_classifier=None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x):
        size = tuple(x.shape[-2:])
        features = self.backbone(x)
        result = {"out": F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear",
                                       align_corners=False)}
        if self.aux_classifier is not None:
            result["aux"] = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear",
                                          align_corners=False)
        return result


class FCN(_SegmentationModel):
    pass


class DeepLabV3(_SegmentationModel):
    pass


class FCNHead(nn.Sequential):
    def __init__(self, in_channels, channels):
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(),
                         nn.Dropout(0.1), nn.Conv2d(inter, channels, 1))


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels, out_channels, dilation):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPPooling(nn.Sequential):
    """Image-level features: global average, 1x1 conv, then broadcast back to H x W."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x):
        size = tuple(x.shape[-2:])
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and the pooled branch, concatenated and projected."""

    def __init__(self, in_channels, atrous_rates, out_channels=256):
        super().__init__()
        mods = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                              nn.ReLU())]
        mods += [ASPPConv(in_channels, out_channels, r) for r in atrous_rates]
        mods.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(mods)
        self.project = nn.Sequential(nn.Conv2d(len(mods) * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(cat([conv(x) for conv in self.convs], 1))


class DeepLabHead(nn.Sequential):
    def __init__(self, in_channels, num_classes, atrous_rates=(12, 24, 36)):
        super().__init__(ASPP(in_channels, atrous_rates), nn.Conv2d(256, 256, 3, padding=1, bias=False),
                         nn.BatchNorm2d(256), nn.ReLU(), nn.Conv2d(256, num_classes, 1))


def _resnet_backbone(aux):
    backbone = resnet50(replace_stride_with_dilation=[False, True, True])
    return IntermediateLayerGetter(backbone, {"layer4": "out", **({"layer3": "aux"} if aux else {})})


def fcn_resnet50(num_classes=21, aux_loss=False):
    """FCN-ResNet50 (output stride 8)."""
    return FCN(_resnet_backbone(aux_loss), FCNHead(2048, num_classes), FCNHead(1024, num_classes) if aux_loss else None)


def deeplabv3_resnet50(num_classes=21, aux_loss=False):
    """DeepLabV3-ResNet50 (output stride 8)."""
    return DeepLabV3(_resnet_backbone(aux_loss), DeepLabHead(2048, num_classes),
                     FCNHead(1024, num_classes) if aux_loss else None)


def deeplabv3_mobilenet_v3_large(num_classes=21, aux_loss=False):
    """DeepLabV3 on a dilated MobileNetV3-Large (output stride 16)."""
    features = mobilenet_v3_large(dilated=True).features
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    out_pos, aux_pos = stages[-1], stages[-4]
    layers = {str(out_pos): "out", **({str(aux_pos): "aux"} if aux_loss else {})}
    backbone = IntermediateLayerGetter(features, layers)
    aux = FCNHead(features[aux_pos].out_channels, num_classes) if aux_loss else None
    return DeepLabV3(backbone, DeepLabHead(features[out_pos].out_channels, num_classes), aux)
