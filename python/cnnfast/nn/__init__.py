"""``cnnfast.nn``: Module, Parameter, containers, layers, losses and ``init``, with
``torch.nn``'s names, constructor arguments, attribute names and state-dict keys."""
from .parameter import Parameter, Buffer  # noqa: F401
from .modules import *  # noqa: F401,F403
from .modules import Module  # noqa: F401
from . import init  # noqa: F401
from . import functional  # noqa: F401
from . import utils  # noqa: F401
