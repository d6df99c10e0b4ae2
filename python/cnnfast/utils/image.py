"""Image grids: ``make_grid`` tiles a batch into one image and ``save_image`` writes it,
with torchvision.utils' names and arguments (written for cnnfast; PNG/JPEG via Pillow)."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor

__all__ = ["make_grid", "save_image"]


def _batch(tensor) -> np.ndarray:
    """(B, C, H, W) float array from a Tensor/array of 2, 3 or 4 dims or a list of (C, H, W)."""
    if isinstance(tensor, (list, tuple)):
        tensor = np.stack([np.asarray(t._array if isinstance(t, Tensor) else t) for t in tensor])
    a = np.asarray(tensor._array if isinstance(tensor, Tensor) else tensor)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[None] if a.shape[0] in (1, 3) else a[:, None]
    if a.ndim != 4:
        raise ValueError(f"tensor: expected (B, C, H, W), (C, H, W) or (H, W), got shape {a.shape}")
    if a.shape[1] == 1:
        a = np.repeat(a, 3, axis=1)  # a grey batch becomes RGB, as torchvision
    return a.astype(np.float32, copy=True)


def _rescale(a: np.ndarray, value_range) -> np.ndarray:
    lo, hi = (float(a.min()), float(a.max())) if value_range is None else map(float, value_range)
    return (np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-5)


def make_grid(tensor, nrow: int = 8, padding: int = 2, normalize: bool = False, value_range=None,
              scale_each: bool = False, pad_value: float = 0.0) -> Tensor:
    """Tile ``tensor`` (B, C, H, W) into one (C, rows*(H+padding)+padding, nrow*(W+padding)+padding)
    image, ``nrow`` images per row. ``normalize`` maps ``value_range`` (default: the min and
    max, per image with ``scale_each``) to [0, 1]. One-channel input is repeated to RGB."""
    if int(nrow) < 1:
        raise ValueError(f"nrow: expected a positive integer, got {nrow}")
    a = _batch(tensor)
    if normalize:
        a = np.stack([_rescale(img, value_range) for img in a]) if scale_each else _rescale(a, value_range)
    if a.shape[0] == 1:
        return Tensor(a[0])
    b, c, h, w = a.shape
    cols = min(int(nrow), b)
    rows = math.ceil(b / cols)
    ph, pw = h + padding, w + padding
    grid = np.full((c, rows * ph + padding, cols * pw + padding), pad_value, np.float32)
    for k in range(b):
        y, x = divmod(k, cols)
        grid[:, y * ph + padding:y * ph + padding + h, x * pw + padding:x * pw + padding + w] = a[k]
    return Tensor(grid)


def save_image(tensor, fp, format: str | None = None, **kwargs) -> None:  # noqa: A002 - torchvision's name
    """``make_grid(tensor, **kwargs)`` written to ``fp`` (a path or file object) as 8-bit RGB;
    values in [0, 1] map to 0..255."""
    from PIL import Image

    grid = make_grid(tensor, **kwargs)._array
    pixels = np.clip(grid * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(pixels).save(fp, format=format)
