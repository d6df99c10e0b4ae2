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

# The input each architecture is designed for, (C, H, W); summary and the CLI use it.
DEFAULT_INPUT = {name: (3, 224, 224) for name in _REGISTRY}
DEFAULT_INPUT.update({"lenet5": (1, 32, 32), "alexnet": (3, 227, 227), "unet": (1, 256, 256),
                      "siamese": (1, 64, 64)})


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
]
