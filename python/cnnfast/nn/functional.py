"""``cnnfast.nn.functional`` is ``cnnfast.functional`` (as ``torch.nn.functional``), so
``import cnnfast.nn.functional as F`` works."""
from ..functional import *  # noqa: F401,F403
from .. import functional as _functional


def __getattr__(name):
    # Ops added to cnnfast.functional after this module was imported stay reachable.
    return getattr(_functional, name)
