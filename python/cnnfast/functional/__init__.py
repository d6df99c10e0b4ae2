"""Differentiable operations with ``torch.nn.functional``'s names and arguments.

Each family lives in its own module and calls the kernels of ``cnnfast._C``.
"""
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .activation_extra import *  # noqa: F401,F403
from .resample import *  # noqa: F401,F403
from .regularization import *  # noqa: F401,F403
from .normalization_extra import *  # noqa: F401,F403
