"""Stochastic depth (DropPath): drop a residual branch for whole samples (``mode="row"``)
or for the whole batch (``"batch"``) with probability ``p``, scaling the kept ones by
1/(1-p), as torchvision.ops.stochastic_depth. It is channel dropout on a (1, N, rest)
view of the input (each sample one "channel"), so it runs on the dropout kernels and
their reproducible counter-based masks."""
from __future__ import annotations

from ._util import check_tensor
from .dropout import _apply

__all__ = ["stochastic_depth", "drop_path"]


def stochastic_depth(input, p: float, mode: str, training: bool = True):
    """input: (N, *). Returns a tensor of input's shape; identity when not training or p == 0."""
    check_tensor(input, "input")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p: drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"mode: expected 'batch' or 'row', got {mode!r}")
    if not training or p == 0.0:
        return input
    if input.ndim == 0:
        raise ValueError("input: stochastic depth needs at least one dimension")
    rows = input.shape[0] if mode == "row" else 1
    y = _apply(input.reshape(1, rows, -1), float(p), True, False, None, True, False)
    return y.reshape(*input.shape)


def drop_path(input, drop_prob: float = 0.0, training: bool = False):
    """timm's name for per-sample stochastic depth."""
    return stochastic_depth(input, drop_prob, "row", training)
