"""Transfer learning (CS231n): start from a trained model, then either

* freeze every layer but the last and re-initialise that head (a small new dataset
  similar to the old one: the early layers already are a good feature extractor), or
* fine-tune all layers (a large new dataset).

The "head" is the last module (in registration order) that owns parameters, i.e. the
final classifier layer of every architecture in ``cnnfast.models``.
"""
from __future__ import annotations

import numpy as np


def find_head(model):
    """``(name, module)`` of the last module with its own parameters."""
    head = None
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            head = (name, m)
    if head is None:
        raise ValueError("model: has no parameters, so it has no head to re-initialise")
    return head


def load_pretrained(model, state: dict, skip_mismatched: bool = True) -> dict:
    """Copy the arrays of ``state`` into ``model`` where names and shapes match.

    Returns ``{"loaded": [...], "skipped": [...], "missing": [...]}``: ``skipped`` are keys
    whose shapes differ (e.g. a head trained for another number of classes), which
    stay freshly initialised; with ``skip_mismatched=False`` they raise instead.
    """
    own = model.state_dict()
    usable, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            continue
        arr = np.asarray(v)
        if tuple(arr.shape) != tuple(own[k].shape):
            if not skip_mismatched:
                raise ValueError(f"pretrained: {k} has shape {arr.shape}, the model expects {tuple(own[k].shape)}")
            skipped.append(k)
            continue
        usable[k] = arr
    model.load_state_dict(usable, strict=False)
    return {"loaded": sorted(usable), "skipped": skipped, "missing": sorted(set(own) - set(usable))}


def reinit_head(model, seed: int = 0):
    """Re-initialise the head: its ``reset_parameters()`` drawn from cnnfast's seeded
    generator (the default nn initialisation)."""
    import cnnfast

    name, head = find_head(model)
    state = cnnfast.get_rng_state()
    cnnfast.manual_seed(seed)
    try:
        if hasattr(head, "reset_parameters"):
            head.reset_parameters()
        else:
            rng = np.random.default_rng(seed)
            for p in head.parameters(recurse=False):
                fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else p.shape[0]
                bound = 1.0 / np.sqrt(max(fan_in, 1))
                p._array[...] = rng.uniform(-bound, bound, p.shape).astype(p.dtype)
    finally:
        cnnfast.set_rng_state(state)
    return name


def freeze_backbone(model) -> list:
    """Stop gradients for every parameter outside the head; returns the names still trainable."""
    name, head = find_head(model)
    head_ids = {id(p) for p in head.parameters()}
    trainable = []
    for pname, p in model.named_parameters():
        keep = id(p) in head_ids
        p.requires_grad_(keep)
        if keep:
            trainable.append(pname)
    return trainable


def add_dropout_before_head(model, p: float):
    """Put ``nn.Dropout(p)`` in front of the head (for models whose builder has no dropout
    argument); the head becomes ``Sequential(Dropout, head)``."""
    from .. import nn

    name, head = find_head(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Sequential(nn.Dropout(p), head))
    return model
