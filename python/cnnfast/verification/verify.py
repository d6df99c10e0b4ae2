"""Verification by distance threshold: pairs, threshold selection, ROC and AUC in NumPy.

A pair of images is declared "same" when the distance of their embeddings is at most a
threshold. The threshold is chosen on validation pairs (``best_threshold``) and then
applied unchanged to test pairs (``verification_accuracy``). ``roc_curve`` and ``auc``
follow scikit-learn's definitions (scores: larger means "more likely positive", so pass
``-distance``), without depending on it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["roc_curve", "auc", "best_threshold", "verification_accuracy", "make_pairs", "pair_distances"]


def roc_curve(y_true, y_score, drop_intermediate: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of binary labels ``y_true`` (N,) in {0, 1} against scores (N,).

    One point per distinct score, from the highest down: predicting positive for every
    score >= threshold gives (fpr, tpr). The first point is (0, 0) at threshold +inf.
    ``drop_intermediate`` removes points that lie on a straight segment between their
    neighbours (they do not change the curve or its area), as scikit-learn does."""
    y_true = np.asarray(y_true).reshape(-1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must have the same length, got {y_true.shape[0]} and {y_score.shape[0]}")
    if y_true.size == 0:
        raise ValueError("roc_curve: no samples")
    if not np.all(np.isin(y_true, (0, 1))):
        raise ValueError("roc_curve: y_true must hold only 0 and 1")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("roc_curve: y_score must be finite")
    order = np.argsort(-y_score, kind="mergesort")
    s, y = y_score[order], y_true[order].astype(np.float64)
    # The last index of every run of equal scores: all tied samples switch together.
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    thresholds = s[ends]
    if drop_intermediate and len(tps) > 2:
        # Keep a point when the curve bends there: its second difference is not zero.
        bend = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        tps, fps, thresholds = tps[bend], fps[bend], thresholds[bend]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def auc(x, y) -> float:
    """Area under the curve (x, y) by the trapezoidal rule; x must be monotonic."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"auc: x and y must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    dx = np.diff(x)
    if np.all(dx >= 0):
        sign = 1.0
    elif np.all(dx <= 0):
        sign = -1.0
    else:
        raise ValueError("auc: x is neither increasing nor decreasing")
    return float(sign * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


def verification_accuracy(distances, same, threshold: float) -> float:
    """Fraction of pairs classified right when "same" means distance <= threshold."""
    d, same = np.asarray(distances, dtype=np.float64), np.asarray(same).astype(bool)
    return float(np.mean((d <= threshold) == same))


def best_threshold(distances, same) -> Tuple[float, float]:
    """(threshold, accuracy): the distance threshold that classifies the most pairs right.

    Every way of splitting the sorted distances is tried (O(N log N)); the threshold is
    the midpoint between the two distances where the best split falls, or just below the
    smallest / at the largest distance for the all-different / all-same splits."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    same = np.asarray(same).astype(bool).reshape(-1)
    if d.size == 0 or d.shape != same.shape:
        raise ValueError(f"best_threshold: need equal, non-empty distances and labels, got {d.shape} and {same.shape}")
    order = np.argsort(d, kind="mergesort")
    ds, ss = d[order], same[order]
    # Splitting after position k (k = 0..N) declares the first k pairs "same".
    correct = np.r_[0, np.cumsum(ss)] + np.r_[np.sum(~ss), np.sum(~ss) - np.cumsum(~ss)]
    # A split inside a run of equal distances cannot be realised by any threshold.
    allowed = np.r_[True, np.r_[ds[1:] != ds[:-1], True]]
    correct = np.where(allowed, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        t = ds[0] - max(1e-12, 1e-6 * abs(ds[0]))
    elif k == len(ds):
        t = ds[-1]
    else:
        t = 0.5 * (ds[k - 1] + ds[k])
    return float(t), float(correct[k] / len(ds))


def make_pairs(labels, n_pairs: int,
               rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, same): ``n_pairs`` index pairs, half of the same class (i != j) and half of
    two different classes, drawn uniformly over classes first so that every class weighs
    the same. Classes with a single sample give no same-class pairs."""
    rng = rng if rng is not None else np.random.default_rng(0)
    labels = np.asarray(labels).reshape(-1)
    classes = np.unique(labels)
    members = {c: np.nonzero(labels == c)[0] for c in classes}
    multi = [c for c in classes if len(members[c]) >= 2]
    if not multi or len(classes) < 2:
        raise ValueError("make_pairs: need a class with two samples and at least two classes")
    n_same = n_pairs // 2
    i, j = [], []
    for c in rng.choice(multi, n_same):
        a, b = rng.choice(members[c], 2, replace=False)
        i.append(a)
        j.append(b)
    for _ in range(n_pairs - n_same):
        c1, c2 = rng.choice(classes, 2, replace=False)
        i.append(rng.choice(members[c1]))
        j.append(rng.choice(members[c2]))
    same = np.r_[np.ones(n_same, bool), np.zeros(n_pairs - n_same, bool)]
    return np.asarray(i, np.int64), np.asarray(j, np.int64), same


def pair_distances(emb: np.ndarray, i, j, squared: bool = True) -> np.ndarray:
    """Distances between rows ``emb[i]`` and ``emb[j]`` (squared Euclidean by default)."""
    diff = np.asarray(emb, dtype=np.float64)[i] - np.asarray(emb, dtype=np.float64)[j]
    d2 = np.sum(diff * diff, axis=1)
    return d2 if squared else np.sqrt(d2)
