"""Online triplet mining for embedding networks (FaceNet-style verification).

Everything works on one batch of embeddings and their labels:

* ``pairwise_distances(x)``: the (N, N) matrix of (squared) Euclidean distances, as a
  differentiable op, so one forward pass of the network serves every triplet of the batch.
* ``batch_hard_triplets(d, labels)``: for each anchor, its farthest positive and its
  nearest negative (Hermans et al., "In Defense of the Triplet Loss", 2017).
* ``semi_hard_triplets(d, labels)``: for each (anchor, positive) pair, the nearest negative
  that is still farther than the positive (FaceNet, Schroff et al. 2015); when no negative
  is farther, the farthest one (the least hard of the hard ones), so that a collapsed batch
  never trains on its hardest, noisiest negatives.
* ``batch_triplet_loss(x, labels, margin)``: mines on the detached distances, then averages
  ``max(d(A, P) - d(A, N) + margin, 0)`` over the mined triplets, with gradients flowing
  through the distance matrix into the embeddings.

The convention is the course's: ``l(A, P, N) = max(d(A, P) - d(A, N) + alpha, 0)`` with
``d`` the squared Euclidean distance by default (``squared=False`` gives the plain one).
Mining selects indices only (no gradient); ties are broken towards the lower index.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..autograd import Function
from ..tensor import Tensor

__all__ = ["pairwise_distances", "batch_hard_triplets", "semi_hard_triplets", "mine_triplets",
           "batch_triplet_loss", "MINING"]

MINING = ("batch_hard", "semi_hard")


class _PairwiseDistances(Function):
    """D_ij = ||x_i - x_j||^2 (or its square root) from the Gram matrix.

    The squared form is sq_i + sq_j - 2 x_i.x_j, clipped at zero because rounding can make
    it slightly negative for (near-)equal rows; clipped entries and the diagonal pass no
    gradient (their true value is a minimum at zero). For the plain distance the gradient
    of sqrt is 1 / (2 d) where d > 0 and zero where d == 0, as torch.cdist defines it.
    """

    @staticmethod
    def forward(ctx, x, squared):
        sq = np.einsum("ij,ij->i", x, x)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        np.fill_diagonal(d2, 0.0)
        live = d2 > 0
        d2 = np.where(live, d2, 0.0).astype(x.dtype, copy=False)
        ctx.save_for_backward(x)
        ctx.live, ctx.squared = live, squared
        if squared:
            return d2
        d = np.sqrt(d2)
        ctx.d = d
        return d

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.squared:
            g2 = np.where(ctx.live, g, 0.0)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                g2 = np.where(ctx.live, g / (2.0 * np.where(ctx.live, ctx.d, 1.0)), 0.0)
        # d D_ij / d x_k = 2 (x_k - x_j) [k == i] + 2 (x_k - x_i) [k == j]; summed over i, j:
        # grad_k = 2 sum_j S_kj (x_k - x_j) with S = G + G^T.
        s = g2 + g2.T
        grad = 2.0 * (s.sum(axis=1)[:, None] * x - s @ x)
        return grad.astype(x.dtype, copy=False), None


def pairwise_distances(x: Tensor, squared: bool = True) -> Tensor:
    """(N, D) embeddings -> (N, N) Euclidean distances (squared by default), differentiable.

    The diagonal is exactly zero and the matrix is symmetric."""
    if not isinstance(x, Tensor):
        x = Tensor(np.asarray(x))
    if x.ndim != 2:
        raise ValueError(f"pairwise_distances: x must be (N, D), got shape {tuple(x.shape)}")
    return _PairwiseDistances.apply(x, bool(squared))


def _check_labels(dist: np.ndarray, labels) -> Tuple[np.ndarray, np.ndarray]:
    dist = np.asarray(dist)
    labels = np.asarray(labels).reshape(-1)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square (N, N) matrix, got shape {dist.shape}")
    if labels.shape[0] != dist.shape[0]:
        raise ValueError(f"labels must have N={dist.shape[0]} entries, got {labels.shape[0]}")
    return dist, labels


def batch_hard_triplets(dist, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchors, positives, negatives), each (T,) int64: for every anchor that has at least
    one other sample of its class and one of another class, the positive with the largest
    distance and the negative with the smallest. dist: (N, N), labels: (N,)."""
    dist, labels = _check_labels(dist, labels)
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~np.eye(n, dtype=bool)
    neg_mask = ~same
    valid = pos_mask.any(axis=1) & neg_mask.any(axis=1)
    pos = np.argmax(np.where(pos_mask, dist, -np.inf), axis=1)
    neg = np.argmin(np.where(neg_mask, dist, np.inf), axis=1)
    a = np.nonzero(valid)[0]
    return a.astype(np.int64), pos[a].astype(np.int64), neg[a].astype(np.int64)


def semi_hard_triplets(dist, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchors, positives, negatives), each (T,) int64: one triplet per ordered pair (a, p)
    of distinct samples of the same class (whose anchor has a negative in the batch). The
    negative is the nearest one with d(a, n) > d(a, p); if no negative is that far, the
    farthest negative. A semi-hard negative within the margin gives a positive loss; one
    beyond the margin gives zero loss, so only triplets that carry signal move the weights.
    dist: (N, N), labels: (N,)."""
    dist, labels = _check_labels(dist, labels)
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    neg_mask = ~same
    a, p = np.nonzero(same & ~np.eye(n, dtype=bool))
    keep = neg_mask[a].any(axis=1)
    a, p = a[keep], p[keep]
    d_ap = dist[a, p][:, None]                       # (T, 1)
    d_an = dist[a]                                   # (T, N)
    farther = neg_mask[a] & (d_an > d_ap)
    nearest_farther = np.argmin(np.where(farther, d_an, np.inf), axis=1)
    farthest = np.argmax(np.where(neg_mask[a], d_an, -np.inf), axis=1)
    neg = np.where(farther.any(axis=1), nearest_farther, farthest)
    return a.astype(np.int64), p.astype(np.int64), neg.astype(np.int64)


def mine_triplets(dist, labels, mining: str = "batch_hard"):
    """Dispatch to ``batch_hard_triplets`` or ``semi_hard_triplets``."""
    if mining == "batch_hard":
        return batch_hard_triplets(dist, labels)
    if mining == "semi_hard":
        return semi_hard_triplets(dist, labels)
    raise ValueError(f"mining: expected one of {', '.join(MINING)}, got {mining!r}")


def batch_triplet_loss(embeddings: Tensor, labels, margin: float = 0.2, mining: str = "batch_hard",
                       squared: bool = True, return_stats: bool = False):
    """Mean over mined triplets of max(d(A, P) - d(A, N) + margin, 0).

    embeddings: (N, D) Tensor; labels: (N,) integer array. Mining uses the current
    distances without gradient; the loss is differentiable in the embeddings. Returns a
    0-d Tensor, or (loss, stats) with ``stats`` = {"triplets": T, "active": fraction of
    triplets with a positive loss, "d_ap", "d_an": their mean distances}. A batch without
    any valid triplet (one class only) gives a zero loss that still backpropagates."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels).reshape(-1)
    if len(labels) != embeddings.shape[0]:
        raise ValueError(f"labels must have N={embeddings.shape[0]} entries, got {len(labels)}")
    dist = pairwise_distances(embeddings, squared=squared)
    a, p, n = mine_triplets(dist._array, labels, mining)
    if len(a) == 0:
        loss = (dist * 0.0).sum()
        stats = {"triplets": 0, "active": 0.0, "d_ap": 0.0, "d_an": 0.0}
    else:
        d_ap, d_an = dist[a, p], dist[a, n]
        per = (d_ap - d_an + float(margin)).clamp(min=0.0)
        loss = per.mean()
        stats = {"triplets": int(len(a)), "active": float((per._array > 0).mean()),
                 "d_ap": float(d_ap._array.mean()), "d_an": float(d_an._array.mean())}
    return (loss, stats) if return_stats else loss
