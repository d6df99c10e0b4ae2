"""Non-max suppression as on the CS-230 sheet, per class, and soft-NMS.

CS-230: drop every box whose score is below 0.6; then, for each class, repeat
while boxes remain: keep the box with the largest score, discard every box whose
IoU with it is >= 0.5. Hence the defaults ``score_threshold=0.6`` and
``iou_threshold=0.5`` and the ``>=`` (torchvision's ``nms`` suppresses on ``>``
and has no score threshold; pass ``score_threshold=None`` to keep every box).

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

__all__ = ["nms", "batched_nms", "soft_nms"]


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


def nms(boxes, scores, iou_threshold: float = 0.5, score_threshold: Optional[float] = 0.6) -> np.ndarray:
    """boxes (N, 4), scores (N,) -> indices (K,) int64 of the kept boxes, by decreasing score.
    Boxes with score < ``score_threshold`` are dropped first; a box is suppressed when its
    IoU with a kept box is >= ``iou_threshold``. All boxes are treated as one class."""
    b, s, _ = _prepare(boxes, scores)
    return _C.nms_forward(b, s, float(iou_threshold), _threshold(score_threshold))


def batched_nms(boxes, scores, idxs, iou_threshold: float = 0.5,
                score_threshold: Optional[float] = 0.6) -> np.ndarray:
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
