"""A generated detection data set: coloured circles, squares and triangles on noisy
backgrounds, with boxes, class labels and corner landmarks.

Coordinates are continuous pixels: pixel (row i, column j) covers [j, j+1) x [i, i+1)
and its centre is (j + 0.5, i + 0.5). Boxes are the tight corner boxes
(x1, y1, x2, y2) of the drawn geometric shape (not of its rasterised pixels).

Landmarks (the CS-230 sheet's landmark detection): up to ``NUM_LANDMARKS = 4``
corners per object, as (x, y), with a visibility flag. A square has 4 corners, a
triangle 3 (the 4th is invisible), a circle none. Squares are rotated by at most
30 degrees and triangles by at most 40, below their symmetry angles (45 and 60),
so "corner 0 is the square's upper-left corner / the triangle's apex, then
clockwise" names each corner without ambiguity and a regressor has a
well-defined target.

The colour of a shape is random and independent of its class, so a detector must
use the outline; the background is a random colour with a linear gradient and
Gaussian pixel noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

CLASSES = ("circle", "square", "triangle")
NUM_LANDMARKS = 4

__all__ = ["CLASSES", "NUM_LANDMARKS", "ShapesDataset", "generate_shapes"]


@dataclass
class ShapesDataset:
    """images: (N, 3, S, S) float32, roughly zero-mean; per image i: boxes[i] (m_i, 4)
    float32 corners, labels[i] (m_i,) int64 in [0, len(CLASSES)), landmarks[i]
    (m_i, NUM_LANDMARKS, 2) float32 (x, y), visible[i] (m_i, NUM_LANDMARKS) bool."""

    images: np.ndarray
    boxes: List[np.ndarray] = field(default_factory=list)
    labels: List[np.ndarray] = field(default_factory=list)
    landmarks: List[np.ndarray] = field(default_factory=list)
    visible: List[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _polygon_mask(xc: np.ndarray, yc: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the convex polygon ``corners`` (clockwise on
    screen, i.e. with y pointing down)."""
    inside = np.ones(xc.shape, dtype=bool)
    n = len(corners)
    for i in range(n):
        (x0, y0), (x1, y1) = corners[i], corners[(i + 1) % n]
        # The cross product keeps the same sign for every point on the inner side of each edge.
        inside &= (x1 - x0) * (yc - y0) - (y1 - y0) * (xc - x0) >= 0
    return inside


def _shape_geometry(cls: int, cx: float, cy: float, size: float, rng: np.random.Generator):
    """(box (4,), corners (k, 2) or None) of one shape of class ``cls`` whose box is
    about ``size`` pixels wide."""
    if cls == 0:
        r = size / 2
        return np.array([cx - r, cy - r, cx + r, cy + r]), None
    if cls == 1:
        theta = np.deg2rad(rng.uniform(-30, 30))
        half = size / 2 / (abs(np.cos(theta)) + abs(np.sin(theta)))  # the rotated square spans `size`
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * half
    else:
        theta = np.deg2rad(rng.uniform(-40, 40))
        r = size / 2
        angles = np.deg2rad([-90, 30, 150])  # apex straight up, then clockwise on screen
        base = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r
    c, s = np.cos(theta), np.sin(theta)
    corners = base @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])
    box = np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])
    return box, corners


def generate_shapes(n: int, image_size: int = 64, seed: int = 0, min_objects: int = 1, max_objects: int = 3,
                    min_size: float = 12.0, max_size: float = 28.0, noise: float = 0.08) -> ShapesDataset:
    """``n`` images of ``image_size`` x ``image_size`` with ``min_objects``..``max_objects``
    shapes each, reproducible from ``seed``. Shapes lie fully inside the image; two
    shapes overlap with IoU <= 0.1 and their centres are at least ``min_size`` / 2 apart,
    so few objects share a grid cell (YOLO encoding then gives them different anchors)."""
    if n < 1 or image_size < 8:
        raise ValueError(f"n and image_size: expected n >= 1 and image_size >= 8, got {n} and {image_size}")
    if not (0 < min_size <= max_size <= image_size):
        raise ValueError(f"min_size, max_size: expected 0 < min_size <= max_size <= image_size, got "
                         f"{min_size}, {max_size}")
    from .boxes import box_iou

    rng = np.random.default_rng(seed)
    s = image_size
    yc, xc = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    images = np.empty((n, 3, s, s), dtype=np.float32)
    data = ShapesDataset(images)
    for i in range(n):
        bg = rng.uniform(0.0, 1.0, 3)
        grad = rng.normal(0, 0.15, (3, 2))
        img = bg[:, None, None] + grad[:, 0, None, None] * (xc / s - 0.5) + grad[:, 1, None, None] * (yc / s - 0.5)
        boxes, labels, lms, vis = [], [], [], []
        want = rng.integers(min_objects, max_objects + 1)
        tries = 0
        while len(boxes) < want and tries < 100:
            tries += 1
            cls = int(rng.integers(len(CLASSES)))
            size = rng.uniform(min_size, max_size)
            cx, cy = rng.uniform(size / 2 + 0.5, s - size / 2 - 0.5, 2)
            box, corners = _shape_geometry(cls, cx, cy, size, rng)
            if boxes:
                prev = np.array(boxes)
                if box_iou(box[None], prev).max() > 0.1:
                    continue
                centres = (prev[:, :2] + prev[:, 2:]) / 2
                if np.min(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)) < min_size / 2:
                    continue
            colour = rng.uniform(0, 1, 3)
            while np.abs(colour - bg).mean() < 0.3:  # keep every shape visible against its background
                colour = rng.uniform(0, 1, 3)
            if corners is None:
                mask = (xc - cx) ** 2 + (yc - cy) ** 2 <= (size / 2) ** 2
            else:
                mask = _polygon_mask(xc, yc, corners)
            img[:, mask] = colour[:, None]
            lm = np.zeros((NUM_LANDMARKS, 2))
            v = np.zeros(NUM_LANDMARKS, dtype=bool)
            if corners is not None:
                lm[:len(corners)] = corners
                v[:len(corners)] = True
            boxes.append(box)
            labels.append(cls)
            lms.append(lm)
            vis.append(v)
        img = img + rng.normal(0, noise, img.shape)
        images[i] = (np.clip(img, 0, 1) - 0.5) / 0.25
        data.boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        data.labels.append(np.array(labels, dtype=np.int64))
        data.landmarks.append(np.array(lms, dtype=np.float32).reshape(-1, NUM_LANDMARKS, 2))
        data.visible.append(np.array(vis, dtype=bool).reshape(-1, NUM_LANDMARKS))
    return data
