"""Box formats, areas, IoU / GIoU / DIoU / CIoU matrices and the matching
differentiable IoU losses (torchvision.ops names and signatures).

Box convention
--------------
Boxes are float32/float64 arrays of shape (N, 4) in corner format
``(x1, y1, x2, y2)`` (``"xyxy"``) with x to the right and y downwards, in
continuous coordinates: a box covers [x1, x2) x [y1, y2), so its width is
``x2 - x1`` (no "+1" pixel rule) and a box with x2 <= x1 or y2 <= y1 (a point, a
line, an inverted box) has area 0. Other formats, for ``box_convert``:

- ``"xywh"``: top-left corner, width, height;
- ``"cxcywh"``: centre, width, height (the CS-230 sheet's b_x, b_y, b_w, b_h).

Zero denominators: the IoU of two zero-area boxes is 0 (even when identical);
the GIoU and DIoU penalties are 0 when the enclosing box has zero area or zero
diagonal; CIoU's alpha = v / (1 - IoU + v) is 0 where 1 - IoU + v = 0, and the
aspect term uses atan2(w, h), defined for h = 0. The values are computed by the
C++ kernels ``cnnfast._C.box_iou_forward`` (matrix) and
``box_iou_pairs_forward/_backward`` (matched pairs, with the exact gradient,
alpha included).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from ..tensor import Tensor

__all__ = ["box_convert", "box_area", "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou",
           "box_iou_pairs", "iou_loss", "generalized_box_iou_loss", "distance_box_iou_loss",
           "complete_box_iou_loss"]

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_boxes(boxes, name: str) -> np.ndarray:
    """A C-contiguous float (N, 4) array; integer boxes become float32, like torch's."""
    if isinstance(boxes, Tensor):
        boxes = boxes.detach().numpy()
    a = np.asarray(boxes)
    if a.dtype not in (np.float32, np.float64):
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{name}: expected numeric boxes, got dtype {a.dtype}")
        a = a.astype(np.float32)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape (N, 4), got shape {a.shape}")
    return np.ascontiguousarray(a)


def box_convert(boxes, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Converts (N, 4) boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.
    Returns a new (N, 4) array of the input's float dtype."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{name}: expected one of {_FORMATS}, got {fmt!r}")
    b = _as_boxes(boxes, "boxes").copy()
    if in_fmt == out_fmt:
        return b
    if in_fmt == "xywh":
        b[:, 2:] += b[:, :2]
    elif in_fmt == "cxcywh":
        half = b[:, 2:] / 2
        b = np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)
    if out_fmt == "xywh":
        b[:, 2:] -= b[:, :2]
    elif out_fmt == "cxcywh":
        b = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
    return b


def box_area(boxes) -> np.ndarray:
    """(N, 4) corner boxes -> (N,) areas, 0 for degenerate boxes."""
    b = _as_boxes(boxes, "boxes")
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def _matrix(boxes1, boxes2, kind: str) -> np.ndarray:
    a = _as_boxes(boxes1, "boxes1")
    b = _as_boxes(boxes2, "boxes2")
    if a.dtype != b.dtype:
        b = b.astype(a.dtype)
    return _C.box_iou_forward(a, b, kind)


def box_iou(boxes1, boxes2) -> np.ndarray:
    """IoU of every pair: boxes1 (N, 4), boxes2 (M, 4) -> (N, M), values in [0, 1]."""
    return _matrix(boxes1, boxes2, "iou")


def generalized_box_iou(boxes1, boxes2) -> np.ndarray:
    """GIoU = IoU - (C - U) / C, C the smallest enclosing box: (N, 4), (M, 4) -> (N, M) in [-1, 1]."""
    return _matrix(boxes1, boxes2, "giou")


def distance_box_iou(boxes1, boxes2) -> np.ndarray:
    """DIoU = IoU - d^2 / c^2 (centre distance over enclosing diagonal): (N, 4), (M, 4) -> (N, M)."""
    return _matrix(boxes1, boxes2, "diou")


def complete_box_iou(boxes1, boxes2) -> np.ndarray:
    """CIoU = DIoU - alpha v, v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2, alpha = v / (1 - IoU + v):
    (N, 4), (M, 4) -> (N, M)."""
    return _matrix(boxes1, boxes2, "ciou")


class _BoxIoUPairs(Function):
    @staticmethod
    def forward(ctx, a, b, kind):
        a = np.ascontiguousarray(a)
        b = np.ascontiguousarray(b)
        ctx.save_for_backward(a, b)
        ctx.kind = kind
        return _C.box_iou_pairs_forward(a, b, kind)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga, gb = _C.box_iou_pairs_backward(np.ascontiguousarray(g), a, b, ctx.kind)
        return ga, gb, None


_KINDS = ("iou", "giou", "diou", "ciou")


def box_iou_pairs(boxes1: Tensor, boxes2: Tensor, kind: str = "iou") -> Tensor:
    """Differentiable IoU-type value of matched pairs: boxes1, boxes2 (N, 4) Tensors
    -> (N,) Tensor; ``kind`` is ``"iou"``, ``"giou"``, ``"diou"`` or ``"ciou"``."""
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
    for name, t in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a cnnfast.Tensor, got {type(t).__name__}")
    return _BoxIoUPairs.apply(boxes1, boxes2, kind)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")


def _loss(kind: str, boxes1, boxes2, reduction: str) -> Tensor:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
    return _reduce(1 - box_iou_pairs(boxes1, boxes2, kind), reduction)


def iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """1 - IoU of matched pairs (N, 4), (N, 4); (N,) for 'none', a scalar for 'mean'/'sum'."""
    return _loss("iou", boxes1, boxes2, reduction)


def generalized_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """1 - GIoU of matched pairs (N, 4), (N, 4); has a gradient even for disjoint boxes."""
    return _loss("giou", boxes1, boxes2, reduction)


def distance_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """1 - DIoU of matched pairs (N, 4), (N, 4)."""
    return _loss("diou", boxes1, boxes2, reduction)


def complete_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """1 - CIoU of matched pairs (N, 4), (N, 4)."""
    return _loss("ciou", boxes1, boxes2, reduction)
