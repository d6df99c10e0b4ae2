"""Utilities: CS-230 shape formulas (``shapes``) and the model summary (``summary``)."""
from . import shapes  # noqa: F401
from .shapes import *  # noqa: F401,F403
from .summary import (ModelSummary, LayerInfo, estimate_training_memory,  # noqa: F401
                      measure_training_memory, summary, summary_main)
