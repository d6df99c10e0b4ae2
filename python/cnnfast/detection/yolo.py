"""YOLO target encoding, decoding and loss on the CS-230 sheet's grid.

The sheet's output for a G x G grid, k anchors and p classes is
y in R^{G x G x k x (5 + p)}, one vector per (cell, anchor):

    [p_c, b_x, b_y, b_h, b_w, c_1, ..., c_p]

Here ``y[n, row, col, a]`` (row = y index, col = x index) holds, for the object
whose box centre (cx, cy) lies in that cell and that was assigned to anchor a:

- ``p_c = 1`` (0 everywhere else; then the rest is ignored, as the sheet says);
- ``b_x = cx / cell - col`` and ``b_y = cy / cell - row``: the centre's offset in
  the cell, in [0, 1);
- ``b_h = log(h / anchor_h)`` and ``b_w = log(w / anchor_w)`` (YOLOv2's
  parameterisation: any positive size is reachable and the scale is relative);
- ``c``: the one-hot class.

An object goes to the anchor whose shape has the highest IoU with its box (see
:func:`cnnfast.detection.anchors.wh_iou`), or, when another object of the same
cell already holds that anchor, to the next best free one; objects that find no
free anchor, whose centre lies outside the image, or whose box has no area are
not encoded and are counted in ``dropped``. With at most k objects per cell,
``decode(encode(boxes))`` returns the boxes (up to float rounding).

Landmarks (optional, L points per object) are encoded as offsets from the box
centre in anchor units, ``((lx - cx) / anchor_w, (ly - cy) / anchor_h)``, with a
visibility mask; a network predicts them as 2L extra channels per anchor.

Network outputs are NCHW: ``(N, k * (5 + p + 2L), G, G)`` with channel
``a * (5 + p + 2L) + j`` holding entry j of anchor a; :func:`to_grid` rearranges
them to ``(N, G, G, k, 5 + p + 2L)``. Raw outputs are logits for p_c, b_x, b_y
(sigmoid) and the classes (softmax); b_h, b_w and the landmarks are linear.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from .anchors import wh_iou

__all__ = ["YoloGrid", "encode", "decode", "to_grid", "activate", "yolo_loss"]


@dataclass
class YoloGrid:
    """The geometry shared by encoding, decoding and the loss.

    image_size: side S of the square input, pixels; grid: G cells per side (S / G
    pixels each); anchors: (k, 2) widths and heights in pixels; num_classes: p;
    num_landmarks: L points per object (0: none)."""

    image_size: int
    grid: int
    anchors: np.ndarray
    num_classes: int
    num_landmarks: int = 0

    def __post_init__(self):
        self.anchors = np.asarray(self.anchors, dtype=np.float64).reshape(-1, 2)
        if self.image_size < 1 or self.grid < 1:
            raise ValueError(f"image_size, grid: expected positive ints, got {self.image_size}, {self.grid}")
        if len(self.anchors) < 1 or np.any(self.anchors <= 0):
            raise ValueError(f"anchors: expected (k, 2) positive widths and heights, got {self.anchors.tolist()}")
        if self.num_classes < 1 or self.num_landmarks < 0:
            raise ValueError(f"num_classes, num_landmarks: expected >= 1 and >= 0, got "
                             f"{self.num_classes}, {self.num_landmarks}")

    @property
    def k(self) -> int:
        return len(self.anchors)

    @property
    def cell(self) -> float:
        return self.image_size / self.grid

    @property
    def depth(self) -> int:
        """Entries per anchor in the network output: 5 + p + 2L."""
        return 5 + self.num_classes + 2 * self.num_landmarks

    @property
    def channels(self) -> int:
        """Output channels of a network head: k (5 + p + 2L)."""
        return self.k * self.depth


def encode(spec: YoloGrid, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
           landmarks: Optional[Sequence[np.ndarray]] = None, visible: Optional[Sequence[np.ndarray]] = None):
    """Targets for a batch. boxes[i]: (m_i, 4) corners in pixels; labels[i]: (m_i,) ints in
    [0, p); landmarks[i]: (m_i, L, 2) pixels and visible[i]: (m_i, L) bools (when L > 0).

    Returns a dict: ``target`` (N, G, G, k, 5 + p) float64 in the sheet's layout,
    ``landmarks`` (N, G, G, k, L, 2) and ``landmark_mask`` (N, G, G, k, L) (zeros where
    unused), and ``dropped``, the number of objects that could not be encoded."""
    n = len(boxes)
    if len(labels) != n:
        raise ValueError(f"labels: expected one array per image ({n}), got {len(labels)}")
    G, k, p, L = spec.grid, spec.k, spec.num_classes, spec.num_landmarks
    if L and (landmarks is None or visible is None):
        raise ValueError(f"landmarks, visible: required when the grid has num_landmarks = {L}")
    target = np.zeros((n, G, G, k, 5 + p))
    lm = np.zeros((n, G, G, k, L, 2))
    lm_mask = np.zeros((n, G, G, k, L))
    dropped = 0
    for i in range(n):
        b = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4)
        lab = np.asarray(labels[i]).reshape(-1)
        if len(lab) != len(b):
            raise ValueError(f"labels[{i}]: expected {len(b)} labels (one per box), got {len(lab)}")
        if len(lab) and (lab.min() < 0 or lab.max() >= p):
            raise ValueError(f"labels[{i}]: expected classes in [0, {p}), got {lab.tolist()}")
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        ok = (w > 0) & (h > 0) & (cx >= 0) & (cy >= 0) & (cx < spec.image_size) & (cy < spec.image_size)
        ious = wh_iou(np.stack([np.maximum(w, 1e-12), np.maximum(h, 1e-12)], 1), spec.anchors) if len(b) else None
        for j in range(len(b)):
            if not ok[j]:
                dropped += 1
                continue
            col = min(int(cx[j] / spec.cell), G - 1)
            row = min(int(cy[j] / spec.cell), G - 1)
            slot = next((a for a in np.argsort(-ious[j], kind="stable") if target[i, row, col, a, 0] == 0), None)
            if slot is None:
                dropped += 1
                continue
            aw, ah = spec.anchors[slot]
            t = target[i, row, col, slot]
            t[0] = 1.0
            t[1] = cx[j] / spec.cell - col
            t[2] = cy[j] / spec.cell - row
            t[3] = np.log(h[j] / ah)
            t[4] = np.log(w[j] / aw)
            t[5 + int(lab[j])] = 1.0
            if L:
                pts = np.asarray(landmarks[i], dtype=np.float64)[j].reshape(L, 2)
                vis = np.asarray(visible[i])[j].reshape(L).astype(bool)
                lm[i, row, col, slot, :, 0] = np.where(vis, (pts[:, 0] - cx[j]) / aw, 0)
                lm[i, row, col, slot, :, 1] = np.where(vis, (pts[:, 1] - cy[j]) / ah, 0)
                lm_mask[i, row, col, slot] = vis
    return {"target": target, "landmarks": lm, "landmark_mask": lm_mask, "dropped": dropped}


def decode(spec: YoloGrid, y: np.ndarray, landmarks: Optional[np.ndarray] = None,
           score_threshold: float = 0.5) -> List[dict]:
    """Boxes from a grid in the target layout (probabilities, not logits; see :func:`activate`).

    y: (N, G, G, k, 5 + p); landmarks: (N, G, G, k, L, 2) offsets or None. An entry is
    reported when its score p_c * max_c c_c is >= ``score_threshold``. Returns per image a
    dict with ``boxes`` (m, 4) corners in pixels, ``scores`` (m,), ``labels`` (m,) int64
    and, with landmarks, ``landmarks`` (m, L, 2) pixels; entries in (row, col, anchor) order."""
    G, k, p = spec.grid, spec.k, spec.num_classes
    y = np.asarray(y)
    if y.ndim != 5 or y.shape[1:] != (G, G, k, 5 + p):
        raise ValueError(f"y: expected shape (N, {G}, {G}, {k}, {5 + p}), got {y.shape}")
    rows, cols = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
    out = []
    for i in range(len(y)):
        g = y[i]
        cls_prob = g[..., 5:]
        labels = np.argmax(cls_prob, axis=-1)
        scores = g[..., 0] * np.max(cls_prob, axis=-1)
        cx = (cols[..., None] + g[..., 1]) * spec.cell
        cy = (rows[..., None] + g[..., 2]) * spec.cell
        # exp of a huge logit would overflow; no box is larger than e^30 anchors anyway.
        h = np.exp(np.minimum(g[..., 3], 30)) * spec.anchors[:, 1]
        w = np.exp(np.minimum(g[..., 4], 30)) * spec.anchors[:, 0]
        sel = scores >= score_threshold
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)[sel]
        d = {"boxes": boxes, "scores": scores[sel], "labels": labels[sel].astype(np.int64)}
        if landmarks is not None:
            off = np.asarray(landmarks[i])
            pts = np.stack([cx[..., None] + off[..., 0] * spec.anchors[:, 0, None],
                            cy[..., None] + off[..., 1] * spec.anchors[:, 1, None]], axis=-1)
            d["landmarks"] = pts[sel]
        out.append(d)
    return out


def to_grid(spec: YoloGrid, raw: np.ndarray) -> np.ndarray:
    """(N, k * depth, G, G) network output -> (N, G, G, k, depth) view of it."""
    raw = np.asarray(raw)
    n = raw.shape[0]
    if raw.ndim != 4 or raw.shape[1:] != (spec.channels, spec.grid, spec.grid):
        raise ValueError(f"raw: expected shape (N, {spec.channels}, {spec.grid}, {spec.grid}), got {raw.shape}")
    return raw.reshape(n, spec.k, spec.depth, spec.grid, spec.grid).transpose(0, 3, 4, 1, 2)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + e^-z)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activate(spec: YoloGrid, raw: np.ndarray):
    """Network logits (N, k * depth, G, G) -> (grid (N, G, G, k, 5 + p) in the target
    layout with sigmoid on p_c, b_x, b_y and softmax over the classes, landmark offsets
    (N, G, G, k, L, 2) or None), ready for :func:`decode`."""
    g = to_grid(spec, raw).astype(np.float64)
    p = spec.num_classes
    y = np.empty(g.shape[:4] + (5 + p,))
    y[..., :3] = _sigmoid(g[..., :3])
    y[..., 3:5] = g[..., 3:5]
    y[..., 5:] = _softmax(g[..., 5:5 + p])
    lm = g[..., 5 + p:].reshape(g.shape[:4] + (spec.num_landmarks, 2)) if spec.num_landmarks else None
    return y, lm


def _bce_logits(z, t):
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def _loss_and_grad(g, target, lm_t, lm_m, lam):
    """Loss terms and d(total)/d(g) for g: (N, G, G, k, depth) float64 logits."""
    n = g.shape[0]
    p = target.shape[-1] - 5
    obj = target[..., 0] > 0.5
    grad = np.zeros_like(g)
    terms = {}
    z = g[..., 0]
    s = _sigmoid(z)
    w = np.where(obj, lam["obj"], lam["noobj"])
    terms["objectness"] = float((w * _bce_logits(z, obj.astype(np.float64))).sum())
    grad[..., 0] = w * (s - obj)
    sx = _sigmoid(g[..., 1:3])
    dxy = (sx - target[..., 1:3]) * obj[..., None]
    terms["xy"] = float(lam["coord"] * (dxy ** 2).sum())
    grad[..., 1:3] = lam["coord"] * 2 * dxy * sx * (1 - sx)
    dwh = (g[..., 3:5] - target[..., 3:5]) * obj[..., None]
    terms["wh"] = float(lam["coord"] * (dwh ** 2).sum())
    grad[..., 3:5] = lam["coord"] * 2 * dwh
    logits = g[..., 5:5 + p]
    logp = logits - logits.max(axis=-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    onehot = target[..., 5:]
    terms["class"] = float(lam["cls"] * -(onehot * logp * obj[..., None]).sum())
    grad[..., 5:5 + p] = lam["cls"] * (np.exp(logp) - onehot) * obj[..., None]
    L = lm_m.shape[-1] if lm_m is not None else 0
    if L:
        pl = g[..., 5 + p:].reshape(g.shape[:4] + (L, 2))
        m = (lm_m * obj[..., None])[..., None]
        dl = (pl - lm_t) * m
        terms["landmark"] = float(lam["landmark"] * (dl ** 2).sum())
        grad[..., 5 + p:] = (lam["landmark"] * 2 * dl).reshape(g.shape[:4] + (2 * L,))
    total = sum(terms.values()) / n
    return total, {k_: v / n for k_, v in terms.items()}, grad / n


class _YoloLoss(Function):
    @staticmethod
    def forward(ctx, raw, target, lm_t, lm_m, k, lam, components):
        n, c, gh, gw = raw.shape
        depth = c // k
        g = raw.reshape(n, k, depth, gh, gw).transpose(0, 3, 4, 1, 2).astype(np.float64)
        total, terms, grad = _loss_and_grad(g, target, lm_t, lm_m, lam)
        if components is not None:
            components.update(terms)
        ctx.grad = np.ascontiguousarray(grad.transpose(0, 3, 4, 1, 2).reshape(raw.shape)).astype(raw.dtype)
        return np.array(total, dtype=raw.dtype)

    @staticmethod
    def backward(ctx, g):
        return ctx.grad * g, None, None, None, None, None, None


def yolo_loss(pred: Tensor, target: np.ndarray, landmarks: Optional[np.ndarray] = None,
              landmark_mask: Optional[np.ndarray] = None, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
              lambda_obj: float = 1.0, lambda_class: float = 1.0, lambda_landmark: float = 1.0,
              components: Optional[dict] = None) -> Tensor:
    """The YOLO loss, summed over cells and anchors and averaged over the batch.

    pred: (N, k (5 + p + 2L), G, G) logits; target: (N, G, G, k, 5 + p) from
    :func:`encode`; landmarks (N, G, G, k, L, 2) and landmark_mask (N, G, G, k, L) from
    :func:`encode` when L > 0. With obj the cells/anchors holding an object:

    - objectness: binary cross-entropy of sigmoid(p_c) against obj, weighted
      ``lambda_obj`` on obj and ``lambda_noobj`` elsewhere (most anchors are empty);
    - xy: ``lambda_coord`` * squared error of sigmoid(b_x), sigmoid(b_y) (obj only);
    - wh: ``lambda_coord`` * squared error of b_h, b_w (log-ratios to the anchor; obj only);
    - class: ``lambda_class`` * softmax cross-entropy over the p classes (obj only);
    - landmark: ``lambda_landmark`` * squared error of the visible landmark offsets (obj only).

    ``components``, when a dict, receives each term (batch-averaged) as a float.
    Returns a 0-d Tensor of pred's dtype."""
    if not isinstance(pred, Tensor):
        raise TypeError(f"pred: expected a cnnfast.Tensor, got {type(pred).__name__}")
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 5 or target.shape[-1] < 6:
        raise ValueError(f"target: expected shape (N, G, G, k, 5 + p), got {target.shape}")
    n, gh, gw, k, d = target.shape
    L = 0
    if landmarks is not None or landmark_mask is not None:
        if landmarks is None or landmark_mask is None:
            raise ValueError("landmarks, landmark_mask: give both or neither")
        landmarks = np.asarray(landmarks, dtype=np.float64)
        landmark_mask = np.asarray(landmark_mask, dtype=np.float64)
        L = landmark_mask.shape[-1]
        if landmark_mask.shape != (n, gh, gw, k, L) or landmarks.shape != (n, gh, gw, k, L, 2):
            raise ValueError(f"landmarks, landmark_mask: expected shapes (N, G, G, k, L, 2) and (N, G, G, k, L) "
                             f"matching target {target.shape}, got {landmarks.shape} and {landmark_mask.shape}")
    expected = (n, k * (d + 2 * L), gh, gw)
    if tuple(pred.shape) != expected:
        raise ValueError(f"pred: expected shape {expected} for target {target.shape} and {L} landmarks, "
                         f"got {tuple(pred.shape)}")
    lam = {"coord": lambda_coord, "noobj": lambda_noobj, "obj": lambda_obj, "cls": lambda_class,
           "landmark": lambda_landmark}
    return _YoloLoss.apply(pred, target, landmarks, landmark_mask, k, lam, components)
