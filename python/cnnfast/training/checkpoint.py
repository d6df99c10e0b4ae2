"""Training checkpoints on top of ``cnnfast.save`` / ``cnnfast.load``.

A checkpoint is a nested dict of arrays::

    {"model": {"features.0.weight": array, ...},      # the model's state_dict as arrays
     "trainer": {"arrays": {"a0": array, ...},        # every array of the trainer state
                 "meta": uint8 array}}                # JSON of the rest, arrays referenced by name

The trainer state (optimizer and scheduler state dicts, epoch, RNG state, normalisation
statistics, history, configuration) has ints as dict keys, tuples, 128-bit generator
states and 0-d arrays; ``pack``/``unpack`` carry all of them exactly through a format
that only has to store arrays. ``save_checkpoint`` writes to a temporary file in the
same folder and renames it, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "cnnfast-train-1"


def _to_array(v):
    return v.data if hasattr(v, "grad_fn") and hasattr(v, "data") else v


def pack(obj) -> dict:
    """Nested Python/NumPy object -> {"arrays": {name: ndarray}, "meta": uint8 JSON}."""
    arrays: dict = {}

    def enc(v):
        v = _to_array(v)
        if isinstance(v, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = np.ascontiguousarray(v)
            return {"__array__": name}
        if isinstance(v, np.generic):
            return enc(np.asarray(v))
        if isinstance(v, dict):
            return {"__dict__": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return {"__float__": repr(v)}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"checkpoint: cannot store a value of type {type(v).__name__}")

    meta = json.dumps(enc(obj)).encode("utf-8")
    return {"arrays": arrays, "meta": np.frombuffer(meta, dtype=np.uint8).copy()}


def unpack(packed: dict):
    """Inverse of ``pack``."""
    arrays = packed["arrays"]

    def dec(v):
        if isinstance(v, list):
            return [dec(x) for x in v]
        if isinstance(v, dict):
            if "__array__" in v:
                return np.asarray(arrays[v["__array__"]])
            if "__dict__" in v:
                return {dec(k): dec(x) for k, x in v["__dict__"]}
            if "__tuple__" in v:
                return tuple(dec(x) for x in v["__tuple__"])
            if "__float__" in v:
                return float(v["__float__"])
        return v

    return dec(json.loads(np.asarray(packed["meta"], dtype=np.uint8).tobytes().decode("utf-8")))


def model_arrays(model) -> dict:
    """The model's state_dict as a flat dict of NumPy arrays (copies)."""
    return {k: np.array(_to_array(v), copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: str, model, trainer_state: dict) -> str:
    """Write ``{"model": ..., "trainer": pack(trainer_state)}`` atomically to ``path``."""
    import cnnfast

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    obj = {"format": np.frombuffer(FORMAT.encode(), np.uint8).copy(), "model": model_arrays(model),
           "trainer": pack(trainer_state)}
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        cnnfast.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str) -> tuple:
    """``(model_state: dict of arrays, trainer_state: dict)`` from ``save_checkpoint``'s file."""
    import cnnfast

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    obj = cnnfast.load(path)
    if not isinstance(obj, dict) or "model" not in obj or "trainer" not in obj:
        raise ValueError(f"{path}: not a cnnfast training checkpoint (expected keys 'model' and 'trainer')")
    model_state = {k: np.asarray(_to_array(v)) for k, v in obj["model"].items()}
    return model_state, unpack(obj["trainer"])
