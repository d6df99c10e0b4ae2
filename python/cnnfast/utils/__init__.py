"""Utilities: CS-230 shape formulas (``shapes``), the model summary (``summary``) and
``load_torch_state_dict`` (PyTorch checkpoints into cnnfast modules, ``torch_weights``).

``cnnfast.utils.summary`` stays the module (``cnnfast.utils.summary.summary`` is the
function, exported at top level as ``cnnfast.summary``), so ``import
cnnfast.utils.summary`` and ``from cnnfast.utils.summary import summary_main`` both work.
"""
from . import shapes, summary  # noqa: F401
from .shapes import *  # noqa: F401,F403
from .summary import (ModelSummary, LayerInfo, estimate_training_memory,  # noqa: F401
                      measure_training_memory, summary_main)
from .torch_weights import load_torch_state_dict  # noqa: F401,E402
from . import data  # noqa: F401,E402 - torch.utils.data's names
from . import checkpoint  # noqa: F401,E402 - torch.utils.checkpoint
from .image import make_grid, save_image  # noqa: F401,E402
