"""Load PyTorch weights (e.g. torchvision's pretrained checkpoints) into cnnfast modules.

cnnfast's layers keep torch's attribute names and layouts (conv weights O x I/groups x kH x kW,
linear weights out x in, batch-norm running statistics and ``num_batches_tracked``), and
``cnnfast.models`` follows torchvision's module names, so a torch state dict maps key for key.
Converting a checkpoint needs torch once; loading it does not:

    sd = {k: v.numpy() for k, v in torch.load("resnet18.pth", map_location="cpu").items()}
    np.savez("resnet18.npz", **sd)                           # optional: keep it torch-free
    cnnfast.utils.load_torch_state_dict(cnnfast.models.resnet18(), np.load("resnet18.npz"))
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["load_torch_state_dict"]

_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def _to_numpy(value, key):
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    if isinstance(getattr(value, "_array", None), np.ndarray):  # a cnnfast Tensor
        return value._array
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the key
        raise TypeError(f"state_dict[{key!r}]: expected an array, got {type(value).__name__}") from exc


def _unwrap(state_dict):
    """Training scripts often save {"state_dict": ...} or {"model": ...}; DataParallel prefixes 'module.'."""
    keys = list(state_dict.keys())
    if len(keys) <= 3:
        for w in _WRAPPERS:
            if w in state_dict and hasattr(state_dict[w], "keys"):
                return _unwrap(state_dict[w])
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: state_dict[k] for k in keys}
    return state_dict


def load_torch_state_dict(module, state_dict, strict: bool = True):
    """Copy a PyTorch state dict into ``module`` (a cnnfast ``nn.Module``) by key.

    state_dict: a mapping from torch's dotted names to NumPy arrays (or torch tensors), a path to
    an ``.npz`` holding them, or a checkpoint that wraps one under "state_dict"/"model". A
    ``module.`` prefix (DataParallel) is dropped. Values are cast to the module's dtypes.
    strict: every key must match (as torch's ``load_state_dict``); shapes must always match.
    Returns ``(missing_keys, unexpected_keys)``. Raises RuntimeError listing every mismatched,
    missing or unexpected key at once, so an architecture mismatch is named, never half-loaded.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        path = os.fspath(state_dict)
        if not path.endswith(".npz"):
            raise ValueError(f"state_dict: a path must name an .npz file of arrays (convert a .pth with the "
                             f"one-liner in the docstring), got {path!r}")
        with np.load(path, allow_pickle=False) as z:
            state_dict = {k: z[k] for k in z.files}
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    state_dict = _unwrap(state_dict)
    arrays = {k: _to_numpy(state_dict[k], k) for k in state_dict.keys()}
    return module.load_state_dict(arrays, strict=strict)
