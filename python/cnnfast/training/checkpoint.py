"""Training checkpoints on top of ``cnnfast.save`` / ``cnnfast.load``.

A checkpoint is ``{"format": "cnnfast-train-1", "model": {name: array}, "trainer": state}``:
the model's state_dict as arrays, and the trainer state (optimizer and scheduler state
dicts, epoch, RNG state, normalisation statistics, history, configuration).
``cnnfast.save`` writes atomically (temporary file, fsync, rename), so a crash never
leaves a half-written checkpoint behind, and ``cnnfast.load`` checks the format version
and a SHA-256 checksum before decoding anything.

``save_checkpoint`` refuses weights that hold NaN or infinity, so a run that diverged can
never replace a good checkpoint with a broken one; ``load_checkpoint`` checks the
structure (format tag, a dict of numeric arrays, a trainer-state dict) before returning.
"""
from __future__ import annotations

import os

import numpy as np

from .. import _device

FORMAT = "cnnfast-train-1"


def _to_array(v):
    if hasattr(v, "grad_fn") and hasattr(v, "_array"):
        return _device.host(v._array)  # a device tensor's weights are written as host data
    return np.asarray(v)


def model_arrays(model) -> dict:
    """The model's state_dict as a flat dict of NumPy arrays (copies)."""
    return {k: np.array(_to_array(v), copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: str, model, trainer_state: dict) -> str:
    """Write the model's weights (``model``: a Module, or a dict of arrays from
    ``model_arrays``) and ``trainer_state`` to ``path``, atomically.

    Raises FloatingPointError, writing nothing, when a floating weight holds NaN or Inf."""
    import cnnfast

    weights = model if isinstance(model, dict) else model_arrays(model)
    for k, a in weights.items():
        a = _to_array(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise FloatingPointError(f"{path}: refusing to write a checkpoint whose {k} holds NaN or Inf values")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cnnfast.save({"format": FORMAT, "model": weights, "trainer": trainer_state}, path)
    return path


def load_checkpoint(path: str) -> tuple:
    """``(model_state: dict of arrays, trainer_state: dict)`` from ``save_checkpoint``'s file.

    Raises FileNotFoundError for a missing file, ``CheckpointError`` (a ValueError) for a
    damaged one, and ValueError for a valid cnnfast file that is not a training checkpoint
    of this format version."""
    import cnnfast

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    obj = cnnfast.load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("format"), str) \
            or not obj["format"].startswith("cnnfast-train-"):
        raise ValueError(f"{path}: not a cnnfast training checkpoint (written by `cnnfast train`)")
    if obj["format"] != FORMAT:
        raise ValueError(f"{path}: unsupported training checkpoint version {obj['format']!r} "
                         f"(this cnnfast reads {FORMAT!r})")
    model, trainer = obj.get("model"), obj.get("trainer")
    if not isinstance(model, dict) or not isinstance(trainer, dict):
        raise ValueError(f"{path}: damaged training checkpoint: 'model' and 'trainer' must be dicts")
    arrays = {}
    for k, v in model.items():
        a = _to_array(v)
        if not isinstance(k, str) or not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: damaged training checkpoint: model entry {k!r} is not a numeric array")
        arrays[k] = a
    return arrays, trainer
