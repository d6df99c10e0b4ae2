"""Training checkpoints on top of ``cnnfast.save`` / ``cnnfast.load``.

A checkpoint is ``{"format": "cnnfast-train-1", "model": {name: array}, "trainer": state}``:
the model's state_dict as arrays, and the trainer state (optimizer and scheduler state
dicts, epoch, RNG state, normalisation statistics, history, configuration).
``cnnfast.save`` writes atomically (temporary file, fsync, rename), so a crash never
leaves a half-written checkpoint behind, and ``cnnfast.load`` checks a checksum.
"""
from __future__ import annotations

import os

import numpy as np

FORMAT = "cnnfast-train-1"


def _to_array(v):
    return v.data if hasattr(v, "grad_fn") and hasattr(v, "data") else np.asarray(v)


def model_arrays(model) -> dict:
    """The model's state_dict as a flat dict of NumPy arrays (copies)."""
    return {k: np.array(_to_array(v), copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: str, model, trainer_state: dict) -> str:
    """Write the model's weights and ``trainer_state`` to ``path`` (atomically)."""
    import cnnfast

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cnnfast.save({"format": FORMAT, "model": model_arrays(model), "trainer": trainer_state}, path)
    return path


def load_checkpoint(path: str) -> tuple:
    """``(model_state: dict of arrays, trainer_state: dict)`` from ``save_checkpoint``'s file."""
    import cnnfast

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    obj = cnnfast.load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cnnfast training checkpoint (written by `cnnfast train`)")
    return {k: _to_array(v) for k, v in obj["model"].items()}, obj["trainer"]
