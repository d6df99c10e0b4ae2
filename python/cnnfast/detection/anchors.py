"""Anchor boxes from k-means over box shapes with the distance 1 - IoU (YOLOv2).

A box shape is its (width, height); the IoU of two shapes is that of the two boxes
placed with the same centre (equivalently, the same top-left corner), so the
distance ignores position and does not favour large boxes the way Euclidean
distance on (w, h) would.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .boxes import box_iou

__all__ = ["wh_iou", "kmeans_anchors"]


def _as_wh(wh, name: str) -> np.ndarray:
    a = np.asarray(wh, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: expected (N, 2) widths and heights, got shape {a.shape}")
    return a


def wh_iou(wh1, wh2) -> np.ndarray:
    """IoU of box shapes placed at a common corner: wh1 (N, 2), wh2 (M, 2) -> (N, M)."""
    a, b = _as_wh(wh1, "wh1"), _as_wh(wh2, "wh2")
    za, zb = np.zeros_like(a), np.zeros_like(b)
    return box_iou(np.concatenate([za, a], 1), np.concatenate([zb, b], 1))


def kmeans_anchors(wh, k: int, iters: int = 100, seed: int = 0) -> Tuple[np.ndarray, float]:
    """k-means on box shapes with d = 1 - IoU. wh: (N, 2) widths and heights (N >= k).

    Initialisation is k-means++ under the same distance (seeded); each step assigns
    every shape to the anchor of highest IoU (ties: the lower anchor index) and moves
    each anchor to the mean shape of its members (an empty cluster keeps its anchor).
    Stops when the assignment no longer changes or after ``iters`` steps.
    Returns (anchors (k, 2) sorted by area, mean IoU of each shape with its best anchor).
    """
    x = _as_wh(wh, "wh")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if len(x) < k:
        raise ValueError(f"wh: expected at least k = {k} shapes, got {len(x)}")
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("wh: expected finite, positive widths and heights")
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1.0 - wh_iou(x, np.array(centres)).max(axis=1)
        total = d.sum()
        p = d / total if total > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
    anchors = np.array(centres)
    assign = None
    for _ in range(iters):
        new = np.argmax(wh_iou(x, anchors), axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                anchors[j] = members.mean(axis=0)
    anchors = anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]
    return anchors, float(wh_iou(x, anchors).max(axis=1).mean())
