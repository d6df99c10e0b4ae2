"""Detection metrics: average precision per class and mAP at an IoU threshold
(PASCAL VOC 2010+ style: area under the precision envelope, all recall points),
and the landmark error of matched detections."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .boxes import box_iou

__all__ = ["match_detections", "average_precision", "mean_average_precision", "landmark_error"]


def match_detections(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray,
                     iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy matching of one image's detections of one class, by decreasing score (stable:
    lower index first on ties). A detection is a true positive when its best-IoU ground
    truth box has IoU >= ``iou_threshold`` and is not taken yet. Returns (m,) int64: the
    matched ground-truth index per detection, -1 for false positives."""
    m = len(pred_boxes)
    out = np.full(m, -1, dtype=np.int64)
    if m == 0 or len(gt_boxes) == 0:
        return out
    ious = box_iou(np.asarray(pred_boxes, np.float64), np.asarray(gt_boxes, np.float64))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        j = int(np.argmax(ious[i]))
        if ious[i, j] >= iou_threshold and not taken[j]:
            taken[j] = True
            out[i] = j
    return out


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """AP from detections pooled over images: tp (m,) bools, scores (m,), num_gt > 0 ground
    truths. Precision is made monotone (non-increasing in recall) before integrating."""
    if num_gt <= 0:
        raise ValueError(f"num_gt: expected > 0, got {num_gt}")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(tp, dtype=np.float64)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = np.concatenate([[0.0], ctp / num_gt, [ctp[-1] / num_gt if len(ctp) else 0.0]])
    precision = np.concatenate([[1.0], ctp / np.maximum(ctp + cfp, 1e-12), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def mean_average_precision(predictions: Sequence[dict], ground_truth: Sequence[dict], num_classes: int,
                           iou_threshold: float = 0.5) -> Dict[str, object]:
    """mAP over the classes present in the ground truth.

    predictions[i]: dict with ``boxes`` (m, 4), ``scores`` (m,), ``labels`` (m,);
    ground_truth[i]: dict with ``boxes`` (g, 4), ``labels`` (g,). Returns
    ``{"map": float, "ap": [per class, None where a class has no ground truth]}``."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"predictions: expected one entry per image ({len(ground_truth)}), got {len(predictions)}")
    aps: List = []
    for c in range(num_classes):
        tps, scores, num_gt = [], [], 0
        for pred, gt in zip(predictions, ground_truth):
            gm = np.asarray(gt["labels"]) == c
            pm = np.asarray(pred["labels"]) == c
            num_gt += int(gm.sum())
            pb, ps = np.asarray(pred["boxes"])[pm], np.asarray(pred["scores"])[pm]
            tps.append(match_detections(pb, ps, np.asarray(gt["boxes"])[gm], iou_threshold) >= 0)
            scores.append(ps)
        aps.append(average_precision(np.concatenate(tps), np.concatenate(scores), num_gt) if num_gt else None)
    present = [a for a in aps if a is not None]
    return {"map": float(np.mean(present)) if present else 0.0, "ap": aps}


def landmark_error(predictions: Sequence[dict], ground_truth: Sequence[dict],
                   iou_threshold: float = 0.5) -> float:
    """Mean Euclidean distance (pixels) between predicted and true visible landmarks over
    the detections matched to a ground truth of the same class (NaN when none).
    predictions[i] needs ``landmarks`` (m, L, 2); ground_truth[i] ``landmarks`` (g, L, 2)
    and ``visible`` (g, L)."""
    dists = []
    for pred, gt in zip(predictions, ground_truth):
        for c in np.unique(np.asarray(gt["labels"])):
            gm = np.flatnonzero(np.asarray(gt["labels"]) == c)
            pm = np.flatnonzero(np.asarray(pred["labels"]) == c)
            match = match_detections(np.asarray(pred["boxes"])[pm], np.asarray(pred["scores"])[pm],
                                     np.asarray(gt["boxes"])[gm], iou_threshold)
            for i, j in zip(pm, match):
                if j < 0:
                    continue
                g = gm[j]
                vis = np.asarray(gt["visible"])[g].astype(bool)
                d = np.linalg.norm(np.asarray(pred["landmarks"])[i][vis] - np.asarray(gt["landmarks"])[g][vis],
                                   axis=-1)
                dists.extend(d.tolist())
    return float(np.mean(dists)) if dists else float("nan")
