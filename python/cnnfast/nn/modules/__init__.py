"""The layer modules of ``cnnfast.nn``, one family per file as in torch."""
from .module import Module, RemovableHandle  # noqa: F401
from .container import Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict  # noqa: F401
from .linear import Identity, Linear, Flatten, Unflatten  # noqa: F401
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  # noqa: F401
from .pooling import (  # noqa: F401
    MaxPool1d, MaxPool2d, MaxPool3d, AvgPool1d, AvgPool2d, AvgPool3d,
    AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d,
    MaxUnpool1d, MaxUnpool2d, MaxUnpool3d,
)
from .normalization import (  # noqa: F401
    BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
    LayerNorm, GroupNorm, LocalResponseNorm,
)
from .dropout import Dropout, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
from .activation import ReLU, LeakyReLU, ELU, Sigmoid, Tanh, SiLU, Swish, Softmax, LogSoftmax  # noqa: F401
from .loss import (  # noqa: F401
    L1Loss, MSELoss, HuberLoss, SmoothL1Loss, CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss, BCELoss,
    MultiMarginLoss, TripletMarginLoss,
)
from .activation_extra import GELU, Hardswish, Hardsigmoid, ReLU6, Mish, Softplus  # noqa: F401
from .resample import (  # noqa: F401
    Upsample, UpsamplingNearest2d, UpsamplingBilinear2d, PixelShuffle, PixelUnshuffle, ChannelShuffle, StochasticDepth,
    LayerNorm2d,
)
