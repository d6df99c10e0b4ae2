"""Classic CNN architectures (LeNet-5 to DenseNet, U-Net, Siamese), with torchvision's module names.

Each builder returns an ``nn.Module``; ``get_model(name, **kw)`` builds one by name and
``list_models()`` lists the names. State-dict keys follow torchvision's layouts
(``features.0.weight``, ``layer1.0.conv1.weight``, ``features.denseblock1.denselayer1...``,
``inception3a.branch1.conv.weight``), so converted torchvision weights load as they are.
"""
from .alexnet import AlexNet, alexnet
from .densenet import DenseNet, densenet121, densenet169, densenet201
from .googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from .lenet import LeNet5, lenet5
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from .siamese import SiameseNet, siamese
from .unet import UNet, unet
from .vgg import (VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19,
                  vgg19_bn)
from .resnet import resnext50_32x4d, resnext101_32x8d, wide_resnet50_2, wide_resnet101_2
from .mobilenet import MobileNetV2, MobileNetV3, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from .efficientnet import (EfficientNet, efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3,
                           efficientnet_b4, efficientnet_b5, efficientnet_b6, efficientnet_b7)
from .shufflenet import (ShuffleNetV2, shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5,
                         shufflenet_v2_x2_0)
from .squeezenet import SqueezeNet, squeezenet1_0, squeezenet1_1
from .convnext import ConvNeXt, convnext_small, convnext_tiny
from .segmentation import (FCN, DeepLabV3, deeplabv3_mobilenet_v3_large, deeplabv3_resnet50,
                           fcn_resnet50)
from .regnet import (RegNet, regnet_x_1_6gf, regnet_x_3_2gf, regnet_x_8gf, regnet_x_16gf, regnet_x_32gf,
                     regnet_x_400mf, regnet_x_800mf, regnet_y_1_6gf, regnet_y_3_2gf, regnet_y_8gf, regnet_y_16gf,
                     regnet_y_32gf, regnet_y_128gf, regnet_y_400mf, regnet_y_800mf)
from .inception import Inception3, InceptionOutputs, inception_v3

_REGISTRY = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg11": vgg11, "vgg11_bn": vgg11_bn,
    "vgg13": vgg13, "vgg13_bn": vgg13_bn,
    "vgg16": vgg16, "vgg16_bn": vgg16_bn,
    "vgg19": vgg19, "vgg19_bn": vgg19_bn,
    "googlenet": googlenet,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
    "resnet101": resnet101, "resnet152": resnet152,
    "densenet121": densenet121, "densenet169": densenet169, "densenet201": densenet201,
    "unet": unet,
    "siamese": siamese,
}
# Today's efficient and modern CNNs and segmentation models (issue 20), torchvision's names.
_MODERN = [resnext50_32x4d, resnext101_32x8d, wide_resnet50_2, wide_resnet101_2, mobilenet_v2, mobilenet_v3_small,
           mobilenet_v3_large, efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4,
           efficientnet_b5, efficientnet_b6, efficientnet_b7, shufflenet_v2_x0_5, shufflenet_v2_x1_0,
           shufflenet_v2_x1_5, shufflenet_v2_x2_0, squeezenet1_0, squeezenet1_1, convnext_tiny, convnext_small,
           fcn_resnet50, deeplabv3_resnet50, deeplabv3_mobilenet_v3_large,
           regnet_y_400mf, regnet_y_800mf, regnet_y_1_6gf, regnet_y_3_2gf, regnet_y_8gf, regnet_y_16gf, regnet_y_32gf,
           regnet_y_128gf, regnet_x_400mf, regnet_x_800mf, regnet_x_1_6gf, regnet_x_3_2gf, regnet_x_8gf, regnet_x_16gf,
           regnet_x_32gf, inception_v3]
_REGISTRY.update({f.__name__: f for f in _MODERN})

# The input each architecture is designed for, (C, H, W); summary and the CLI use it.
DEFAULT_INPUT = {name: (3, 224, 224) for name in _REGISTRY}
DEFAULT_INPUT.update({"lenet5": (1, 32, 32), "alexnet": (3, 227, 227), "unet": (1, 256, 256),
                      "siamese": (1, 64, 64), "inception_v3": (3, 299, 299)})


def list_models() -> list:
    """Names accepted by ``get_model``, sorted."""
    return sorted(_REGISTRY)


def get_model_builder(name: str):
    """The builder function of the architecture ``name`` (see ``list_models()``), e.g. to
    inspect which keyword arguments it takes before calling it."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"name: expected one of {', '.join(list_models())}, got {name!r}")
    return _REGISTRY[key]


def get_model(name: str, **kw):
    """Build the architecture ``name`` (see ``list_models()``); kwargs go to its builder."""
    return get_model_builder(name)(**kw)


def default_input_shape(name: str) -> tuple:
    """The canonical (C, H, W) input of ``name``."""
    key = name.lower()
    if key not in DEFAULT_INPUT:
        raise ValueError(f"name: expected one of {', '.join(list_models())}, got {name!r}")
    return DEFAULT_INPUT[key]


__all__ = [
    "AlexNet", "BasicBlock", "Bottleneck", "DenseNet", "GoogLeNet", "GoogLeNetOutputs",
    "LeNet5", "ResNet", "SiameseNet", "UNet", "VGG",
    "alexnet", "densenet121", "densenet169", "densenet201", "googlenet", "lenet5",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "siamese", "unet",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "get_model", "get_model_builder", "list_models", "default_input_shape",
    "MobileNetV2", "MobileNetV3", "EfficientNet", "ShuffleNetV2", "SqueezeNet", "ConvNeXt", "FCN", "DeepLabV3",
    "RegNet", "Inception3", "InceptionOutputs",
] + [f.__name__ for f in _MODERN]
