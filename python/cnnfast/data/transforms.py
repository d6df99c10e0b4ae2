"""Batch transforms in NumPy: normalisation and the augmentations of the CS231n sheet
(horizontal and vertical flips, random crops and scales, colour jitter, brightness and
contrast, cutout).

Every transform takes a whole batch ``x``: (N, C, H, W) float array and a NumPy
generator, draws one set of random parameters per image, and returns a new array
(the input is never modified)::

    aug = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), Cutout(8)])
    x_aug = aug(x, rng)          # rng: np.random.Generator; same rng state -> same output

Called without ``rng``, a transform uses its own generator seeded with ``seed``.
Photometric transforms keep values inside ``value_range`` (default [0, 1], the range
the data loaders produce).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    "Transform", "Compose", "Normalize", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomCrop",
    "RandomResizedCrop", "ColorJitter", "RandomBrightness", "RandomContrast", "Cutout", "resize",
    "parse_augment", "AUGMENT_NAMES",
]


def _check_batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x: expected a batch of shape (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"x: expected a floating-point array, got dtype {x.dtype}")
    return x


def _pair(v, name: str) -> tuple:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


class Transform:
    """Base class: subclasses implement ``apply(x, rng)``."""

    def __init__(self, seed: Optional[int] = None):
        self._rng = np.random.default_rng(seed)

    def __call__(self, x, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        return self.apply(_check_batch(x), self._rng if rng is None else rng)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence, seed: Optional[int] = None):
        super().__init__(seed)
        self.transforms = list(transforms)

    def apply(self, x, rng):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __len__(self):
        return len(self.transforms)


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel; mean, std: (C,) (the training set's)."""

    def __init__(self, mean, std):
        super().__init__(None)
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if np.any(self.std <= 0):
            raise ValueError(f"std: expected positive values, got {self.std}")

    def apply(self, x, rng):
        if x.shape[1] != len(self.mean):
            raise ValueError(f"x: expected {len(self.mean)} channels (from mean/std), got {x.shape[1]}")
        shape = (1, -1, 1, 1)
        return ((x - self.mean.astype(x.dtype).reshape(shape)) / self.std.astype(x.dtype).reshape(shape)).astype(x.dtype)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: Optional[int] = None):
        super().__init__(seed)
        self.p = float(p)

    def apply(self, x, rng):
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out


class RandomVerticalFlip(Transform):
    """Mirror each image top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: Optional[int] = None):
        super().__init__(seed)
        self.p = float(p)

    def apply(self, x, rng):
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1, :]
        return out


class RandomCrop(Transform):
    """Pad each side by ``padding`` (with ``fill``), then cut a random ``size`` window per image.

    Output: (N, C, size_h, size_w).
    """

    def __init__(self, size, padding: int = 0, fill: float = 0.0, seed: Optional[int] = None):
        super().__init__(seed)
        self.size = _pair(size, "size")
        self.padding = int(padding)
        self.fill = float(fill)
        if self.padding < 0 or min(self.size) < 1:
            raise ValueError(f"RandomCrop: expected size >= 1 and padding >= 0, got size={size}, padding={padding}")

    def apply(self, x, rng):
        n, c, h, w = x.shape
        p = self.padding
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill) if p else x
        th, tw = self.size
        if th > h + 2 * p or tw > w + 2 * p:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded image {(h + 2 * p, w + 2 * p)}")
        top = rng.integers(0, h + 2 * p - th + 1, size=n)
        left = rng.integers(0, w + 2 * p - tw + 1, size=n)
        rows = (top[:, None] + np.arange(th))[:, None, :, None]
        cols = (left[:, None] + np.arange(tw))[:, None, None, :]
        return xp[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


def _bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample x: (N, C, H, W) at per-image source coordinates ys: (N, OH), xs: (N, OW)
    (pixel centres at integers; clamped to the border). Returns (N, C, OH, OW)."""
    n, c, h, w = x.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0).astype(x.dtype)[:, None, :, None]
    wx = (xs - x0).astype(x.dtype)[:, None, None, :]
    ni = np.arange(n)[:, None, None, None]
    ci = np.arange(c)[None, :, None, None]

    def at(yi, xi):
        return x[ni, ci, yi[:, None, :, None], xi[:, None, None, :]]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def resize(x, size) -> np.ndarray:
    """Bilinear resize of a batch x: (N, C, H, W) to (N, C, size_h, size_w)
    (half-pixel centres, as ``F.interpolate(mode="bilinear", align_corners=False)``)."""
    x = _check_batch(x)
    oh, ow = _pair(size, "size")
    n, _, h, w = x.shape
    ys = (np.arange(oh) + 0.5) * (h / oh) - 0.5
    xs = (np.arange(ow) + 0.5) * (w / ow) - 0.5
    return _bilinear(x, np.broadcast_to(ys, (n, oh)), np.broadcast_to(xs, (n, ow)))


class RandomResizedCrop(Transform):
    """Cut a random box covering ``scale`` of the area with aspect ratio in ``ratio``
    (log-uniform) from each image and resize it to ``size`` (random crop and scale)."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed: Optional[int] = None):
        super().__init__(seed)
        self.size = _pair(size, "size")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale: expected 0 < min <= max <= 1, got {scale}")

    def apply(self, x, rng):
        n, _, h, w = x.shape
        area = h * w * rng.uniform(*self.scale, size=n)
        aspect = np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]), size=n))
        bw = np.clip(np.sqrt(area * aspect), 1, w)
        bh = np.clip(np.sqrt(area / aspect), 1, h)
        top = rng.uniform(0, 1, size=n) * (h - bh)
        left = rng.uniform(0, 1, size=n) * (w - bw)
        oh, ow = self.size
        ys = top[:, None] + (np.arange(oh) + 0.5) * (bh[:, None] / oh) - 0.5
        xs = left[:, None] + (np.arange(ow) + 0.5) * (bw[:, None] / ow) - 0.5
        return _bilinear(x, ys, xs)


class ColorJitter(Transform):
    """Random brightness, contrast and saturation per image (torchvision's meaning:
    a factor drawn from [1 - b, 1 + b]); saturation acts on 3-channel images only.
    Results are clipped to ``value_range``."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 value_range=(0.0, 1.0), seed: Optional[int] = None):
        super().__init__(seed)
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name}: expected a value in [0, 1], got {v}")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.value_range = value_range

    def _factor(self, rng, strength, n, dtype):
        return rng.uniform(1 - strength, 1 + strength, size=n).astype(dtype)[:, None, None, None]

    def apply(self, x, rng):
        n = len(x)
        out = x
        if self.brightness:
            out = out * self._factor(rng, self.brightness, n, x.dtype)
        if self.contrast:
            mean = out.mean(axis=(1, 2, 3), keepdims=True)
            out = mean + (out - mean) * self._factor(rng, self.contrast, n, x.dtype)
        if self.saturation and x.shape[1] == 3:
            gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]).astype(x.dtype)
            out = gray + (out - gray) * self._factor(rng, self.saturation, n, x.dtype)
        if self.value_range is not None:
            out = np.clip(out, self.value_range[0], self.value_range[1])
        return np.ascontiguousarray(out, dtype=x.dtype)


class RandomBrightness(ColorJitter):
    """Multiply each image by a factor from [1 - strength, 1 + strength]."""

    def __init__(self, strength: float = 0.2, value_range=(0.0, 1.0), seed: Optional[int] = None):
        super().__init__(brightness=strength, value_range=value_range, seed=seed)


class RandomContrast(ColorJitter):
    """Scale each image's deviation from its mean by a factor from [1 - strength, 1 + strength]."""

    def __init__(self, strength: float = 0.2, value_range=(0.0, 1.0), seed: Optional[int] = None):
        super().__init__(contrast=strength, value_range=value_range, seed=seed)


class Cutout(Transform):
    """Set ``n_holes`` random ``size`` x ``size`` squares (centre anywhere in the image,
    clipped at the border) of each image to ``fill``, with probability ``p`` per image."""

    def __init__(self, size: int = 8, n_holes: int = 1, p: float = 1.0, fill: float = 0.0,
                 seed: Optional[int] = None):
        super().__init__(seed)
        if int(size) < 1 or int(n_holes) < 1:
            raise ValueError(f"Cutout: expected size >= 1 and n_holes >= 1, got size={size}, n_holes={n_holes}")
        self.size = int(size)
        self.n_holes = int(n_holes)
        self.p = float(p)
        self.fill = float(fill)

    def apply(self, x, rng):
        n, _, h, w = x.shape
        keep = np.ones((n, 1, h, w), dtype=bool)
        rows = np.arange(h)[None, :, None]
        cols = np.arange(w)[None, None, :]
        for _ in range(self.n_holes):
            cy = rng.integers(0, h, size=n)[:, None, None]
            cx = rng.integers(0, w, size=n)[:, None, None]
            on = (rng.random(n) < self.p)[:, None, None]
            top = cy - self.size // 2
            left = cx - self.size // 2
            hole = (rows >= top) & (rows < top + self.size) & (cols >= left) & (cols < left + self.size)
            keep[:, 0] &= ~(hole & on)
        return np.where(keep, x, np.asarray(self.fill, dtype=x.dtype))


AUGMENT_NAMES = {
    "hflip": "RandomHorizontalFlip(p=0.5); hflip:P",
    "vflip": "RandomVerticalFlip(p=0.5); vflip:P",
    "crop": "RandomCrop(image size, padding=4); crop:PADDING",
    "scale": "RandomResizedCrop(image size, scale=(0.6, 1)); scale:MIN_AREA",
    "jitter": "ColorJitter(0.2, 0.2, 0.2); jitter:STRENGTH",
    "brightness": "RandomBrightness(0.2); brightness:STRENGTH",
    "contrast": "RandomContrast(0.2); contrast:STRENGTH",
    "cutout": "Cutout(size=image/4); cutout:SIZE",
}


def parse_augment(spec, image_size) -> Optional[Compose]:
    """Build a ``Compose`` from a comma-separated list such as ``"crop:2,hflip,cutout:6"``.

    Names (``AUGMENT_NAMES``): hflip, vflip, crop, scale, jitter, brightness, contrast,
    cutout, each with an optional ``:VALUE``. ``image_size``: (H, W) of the data.
    Returns None for an empty spec or ``"none"``.
    """
    if spec is None:
        return None
    items = spec if isinstance(spec, (list, tuple)) else [s for part in str(spec).split(",") for s in [part.strip()] if s]
    if not items or list(items) == ["none"]:
        return None
    h, w = _pair(image_size, "image_size")
    out = []
    for item in items:
        name, _, arg = item.partition(":")
        name = name.strip().lower()
        try:
            val = float(arg) if arg else None
        except ValueError:
            raise ValueError(f"--augment: {item!r} has a value that is not a number") from None
        if name == "hflip":
            out.append(RandomHorizontalFlip(0.5 if val is None else val))
        elif name == "vflip":
            out.append(RandomVerticalFlip(0.5 if val is None else val))
        elif name == "crop":
            out.append(RandomCrop((h, w), padding=4 if val is None else int(val)))
        elif name == "scale":
            out.append(RandomResizedCrop((h, w), scale=(0.6 if val is None else val, 1.0)))
        elif name == "jitter":
            s = 0.2 if val is None else val
            out.append(ColorJitter(s, s, s))
        elif name == "brightness":
            out.append(RandomBrightness(0.2 if val is None else val))
        elif name == "contrast":
            out.append(RandomContrast(0.2 if val is None else val))
        elif name == "cutout":
            out.append(Cutout(max(1, min(h, w) // 4) if val is None else int(val)))
        else:
            known = ", ".join(AUGMENT_NAMES)
            raise ValueError(f"--augment: unknown transform {name!r}; choose from {known}")
    return Compose(out)
