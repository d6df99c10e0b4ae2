"""Non-max suppression, per class, soft-NMS, and the CS-230 score filter.

``nms(boxes, scores, iou_threshold)`` behaves like torchvision's: no box is dropped
for its score unless ``score_threshold`` is given. The CS-230 pipeline is two steps,
each its own call: drop every box whose score is below 0.6 (``score_filter``); then,
for each class, repeat while boxes remain: keep the box with the largest score,
discard every box whose IoU with it is >= 0.5 (``batched_nms``). The one difference
from torchvision that remains is the ``>=``: torchvision suppresses on ``>``.

The greedy loop runs in C++ (``cnnfast._C.nms_forward``) over a stable sort by
decreasing score, so among equal scores the lower index is kept first; NaN
scores never pass the score threshold. Boxes follow the convention of
:mod:`cnnfast.detection.boxes` (corners x1, y1, x2, y2; degenerate boxes have
area 0 and IoU 0 with everything, so they are never suppressed and never
suppress).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import _C
from ..tensor import Tensor
from .boxes import _as_boxes

__all__ = ["nms", "batched_nms", "soft_nms", "score_filter"]


def _plain(x):
    return x.detach().numpy() if isinstance(x, Tensor) else x


def _prepare(boxes, scores, idxs=None):
    b = _as_boxes(boxes, "boxes")
    s = np.ascontiguousarray(np.asarray(_plain(scores), dtype=b.dtype))
    if s.shape != (len(b),):
        raise ValueError(f"scores: expected shape ({len(b)},) (one per box), got {s.shape}")
    labels = None
    if idxs is not None:
        raw = np.asarray(_plain(idxs))
        if raw.shape != (len(b),):
            raise ValueError(f"idxs: expected shape ({len(b)},) (one class per box), got {raw.shape}")
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise TypeError(f"idxs: expected integer class indices, got dtype {raw.dtype}")
        labels = np.ascontiguousarray(raw, dtype=np.int64)
    return b, s, labels


def _threshold(score_threshold: Optional[float]) -> float:
    return -np.inf if score_threshold is None else float(score_threshold)


def score_filter(scores, score_threshold: float = 0.6) -> np.ndarray:
    """The CS-230 first step: indices (K,) int64, in input order, of the boxes whose score is
    >= ``score_threshold`` (default 0.6, the sheet's); NaN scores never pass.
    scores: (N,). Index the boxes, scores and labels with the result before ``nms``."""
    s = np.asarray(_plain(scores))
    if s.ndim != 1:
        raise ValueError(f"scores: expected shape (N,), got {s.shape}")
    return np.flatnonzero(s >= float(score_threshold)).astype(np.int64)


def nms(boxes, scores, iou_threshold: float = 0.5, score_threshold: Optional[float] = None) -> np.ndarray:
    """boxes (N, 4), scores (N,) -> indices (K,) int64 of the kept boxes, by decreasing score.
    A box is suppressed when its IoU with a kept box is >= ``iou_threshold``; all boxes are
    one class. By default no box is dropped for its score (as torchvision); with
    ``score_threshold`` boxes scoring below it are dropped first (``score_filter``'s rule)."""
    b, s, _ = _prepare(boxes, scores)
    return _C.nms_forward(b, s, float(iou_threshold), _threshold(score_threshold))


def batched_nms(boxes, scores, idxs, iou_threshold: float = 0.5,
                score_threshold: Optional[float] = None) -> np.ndarray:
    """Per-class NMS: ``idxs`` (N,) integer classes; a box is only suppressed by a kept box
    of its own class. Returns kept indices (K,) int64, by decreasing score over all classes."""
    b, s, labels = _prepare(boxes, scores, idxs)
    return _C.nms_forward(b, s, float(iou_threshold), _threshold(score_threshold), labels=labels)


def soft_nms(boxes, scores, idxs=None, method: str = "gaussian", sigma: float = 0.5, iou_threshold: float = 0.3,
             score_threshold: float = 0.001) -> Tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al., 2017): instead of discarding overlapping boxes, decay their
    scores by the IoU with each selected box, ``s *= 1 - iou`` when ``iou >= iou_threshold``
    (``method="linear"``) or ``s *= exp(-iou^2 / sigma)`` (``"gaussian"``), and drop boxes
    whose score falls below ``score_threshold``. ``idxs`` (N,) makes it per class.
    Returns (kept indices (K,) int64 in selection order, their decayed scores (K,))."""
    b, s, labels = _prepare(boxes, scores, idxs)
    keep, new_scores = _C.soft_nms_forward(b, s, method, float(sigma), float(iou_threshold),
                                           float(score_threshold), labels=labels)
    return keep, new_scores[keep]
