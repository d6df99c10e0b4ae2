"""Where training data comes from: the handwritten digits bundled with scikit-learn,
an ``.npz`` file with arrays ``x`` and ``y``, or an image folder with one sub-folder
per class. Each loader returns a ``LabeledImages`` with x: (N, C, H, W) float32 in
[0, 1] (integer pixels are divided by their maximum) and y: (N,) int64 in
[0, num_classes).

Bad data raises ``DataError`` (a ``ValueError``) saying which file and what is wrong:
a missing file, labels out of range, images of mixed sizes without ``image_size``,
empty folders, NaN or infinite values.

Loading never runs code: ``.npz`` files are read with ``allow_pickle=False`` (object
arrays are refused, never unpickled), and each member's declared shape is checked
against its stored size before NumPy allocates anything; images are decoded only by
Pillow's plugins for the formats of IMAGE_EXTENSIONS (a file named ``.png`` that holds
e.g. EPS, whose decoder runs Ghostscript, is refused), and decompression bombs
(images over Pillow's pixel limit) are refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .transforms import resize

__all__ = ["DataError", "LabeledImages", "load_digits", "load_npz", "load_image_folder", "load_data",
           "split_indices", "channel_stats", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "open_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# The Pillow decoders those extensions need; Image.open tries only these, whatever the file holds.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class DataError(ValueError):
    """The training data cannot be used as it is; the message says why and where."""


@dataclass
class LabeledImages:
    """x: (N, C, H, W) float32, y: (N,) int64, class names, and where it came from."""
    x: np.ndarray
    y: np.ndarray
    classes: list = field(default_factory=list)
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)


def _check(x: np.ndarray, y: np.ndarray, classes: Sequence, source: str) -> LabeledImages:
    if len(x) == 0:
        raise DataError(f"{source}: no samples")
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise DataError(f"{source}: inputs contain NaN or infinite values ({int(bad.sum())} values; first in sample {first})")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{source}: labels must be integers class indices, got non-integer values")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    k = len(classes)
    if y.min() < 0 or y.max() >= k:
        wrong = y[(y < 0) | (y >= k)]
        raise DataError(f"{source}: labels out of range: expected 0..{k - 1} ({k} classes), "
                        f"found {sorted(set(wrong.tolist()))[:5]}")
    return LabeledImages(np.ascontiguousarray(x, dtype=np.float32), y, list(classes), source)


def load_digits(image_size: int = 32) -> LabeledImages:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0..16), scaled to [0, 1],
    enlarged bilinearly to 28/32 of ``image_size`` and zero-padded to ``image_size``
    (LeNet-5's 32x32 input holds a 28x28 digit with a 2-pixel margin). x: (1797, 1, S, S)."""
    image_size = int(image_size)
    if image_size not in _DIGITS_CACHE:
        images, target = _read_digits()
        x = (images.astype(np.float32) / 16.0)[:, None]
        inner = max(1, int(round(image_size * 28 / 32)))
        x = resize(x, inner).astype(np.float32)
        lo = (image_size - inner) // 2
        x = np.pad(x, ((0, 0), (0, 0), (lo, image_size - inner - lo), (lo, image_size - inner - lo)))
        _DIGITS_CACHE[image_size] = (x, target)
    x, y = _DIGITS_CACHE[image_size]
    # Copies, so that a caller modifying its arrays never changes the next caller's data.
    return _check(x.copy(), y.copy(), [str(i) for i in range(10)], "digits")


_DIGITS_CACHE: dict = {}


def _read_digits() -> tuple:
    """(images (1797, 8, 8), labels (1797,)) from the CSV inside the scikit-learn package.

    The file is read directly when it can be found, because importing sklearn.datasets
    costs seconds (it loads SciPy), a large part of a default `cnnfast train`; otherwise
    scikit-learn's own loader is used."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DataError("the digits data ships with scikit-learn: pip install 'cnnfast[train]'")
    for root in spec.submodule_search_locations or []:
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        if os.path.exists(path):
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as _sk_digits
    d = _sk_digits()
    return d.images, d.target


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return np.moveaxis(x, -1, 1)
        return x
    raise DataError(f"{source}: x must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")


def _scale(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iub":
        top = 255.0 if x.dtype == np.uint8 or x.max(initial=0) <= 255 else float(x.max())
        return x.astype(np.float32) / top
    return x.astype(np.float32)


def _check_npz_members(path: str) -> None:
    """Refuses, before NumPy reads any array, an ``.npz`` that is not a zip archive of
    ``.npy`` members, a member holding Python objects (loading it would mean unpickling),
    and a member whose header declares more (or fewer) bytes than it stores: NumPy would
    otherwise allocate whatever the header claims before finding out."""
    import zipfile

    fmt = np.lib.format
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        with open(path, "rb") as f:
            start = f.read(2)
        what = "a pickle, which is never loaded" if start[:1] == b"\x80" else f"not a zip archive ({exc})"
        raise DataError(f"{path}: not a readable .npz file: {what}") from None
    with archive:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            try:
                with archive.open(info) as f:
                    if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
                        continue  # not an array (NumPy hands such members over as bytes)
                    version = (f.read(1)[0], f.read(1)[0])
                    if version == (1, 0):
                        shape, _, dtype = fmt.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = fmt.read_array_header_2_0(f)
                    else:
                        shape, _, dtype = fmt._read_array_header(f, version)
                    header_len = f.tell()
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"{path}: array {name!r} has an unreadable header ({exc})") from None
            if dtype.hasobject:
                raise DataError(f"{path}: array {name!r} holds Python objects (dtype {dtype}); object arrays are "
                                "refused because loading them would unpickle")
            declared = header_len + int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared != info.file_size:
                raise DataError(f"{path}: array {name!r} declares shape {tuple(shape)} of {dtype} "
                                f"({declared - header_len:,} bytes) but stores {info.file_size - header_len:,}")


def load_npz(path: str, image_size: Optional[int] = None) -> LabeledImages:
    """An ``.npz`` file with ``x`` (N, H, W) / (N, H, W, C) / (N, C, H, W) and integer
    labels ``y`` (N,); an optional ``classes`` array names the classes (otherwise
    ``max(y) + 1`` classes named by number). uint8 pixels are divided by 255."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    _check_npz_members(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = {"x", "y"} - keys
            if missing:
                raise DataError(f"{path}: expected arrays 'x' and 'y', missing {sorted(missing)} (has {sorted(keys)})")
            x, y = f["x"], f["y"]
            classes = [str(c) for c in f["classes"]] if "classes" in keys else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and 1 in np.shape(y) else np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D class indices, got shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: no samples")
    x = _to_nchw(np.asarray(x), path)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        return _check(x, y, [], path)  # reports the NaN before anything else
    x = _scale(x)
    if image_size is not None and x.shape[2:] != (image_size, image_size):
        x = resize(x, image_size).astype(np.float32)
    if classes is None:
        if y.dtype.kind in "iu" and y.min() < 0:
            return _check(x, y, [str(i) for i in range(int(y.max()) + 1)], path)
        k = int(np.max(y)) + 1 if y.dtype.kind in "iuf" and np.all(np.isfinite(y)) else 0
        classes = [str(i) for i in range(k)]
    return _check(x, y, classes, path)


def load_image_folder(root: str, image_size: Optional[int] = None) -> LabeledImages:
    """Images in ``root/<class name>/*.png|jpg|...``; classes sorted by name. Read with
    Pillow; kept grayscale when every image is, otherwise RGB. Images of different
    sizes need ``image_size`` (each is then resized to image_size x image_size)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DataError("reading image folders needs Pillow: pip install 'cnnfast[train]'") from exc
    if not os.path.isdir(root):
        raise DataError(f"{root}: folder not found")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image files>)")
    files, labels = [], []
    for k, name in enumerate(classes):
        folder = os.path.join(root, name)
        found = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise DataError(f"{folder}: empty class folder (no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS[:4])} images)")
        files += [os.path.join(folder, f) for f in found]
        labels += [k] * len(found)
    images = [open_image(path) for path in files]
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
    mode = "L" if gray else "RGB"
    arrays = []
    for path, im in zip(files, images):
        im = im.convert(mode)
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    sizes = {}
    for path, a in zip(files, arrays):
        sizes.setdefault(a.shape[:2], path)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DataError(f"{root}: images have different sizes ({s1[1]}x{s1[0]} in {f1}, {s2[1]}x{s2[0]} in {f2}); "
                        "pass --image-size N to resize them all to N x N")
    x = np.stack(arrays)
    x = x[:, None] if gray else np.moveaxis(x, -1, 1)
    return _check(x, np.asarray(labels, dtype=np.int64), classes, root)


def open_image(path: str):
    """The decoded Pillow image in ``path``; only the IMAGE_FORMATS decoders are tried, and
    an image above Pillow's decompression-bomb pixel limit is refused. Raises DataError."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                im.load()
                return im.copy()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: refused: {exc}") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read the image as {'/'.join(IMAGE_FORMATS)} ({exc})") from exc


def load_data(spec: str = "digits", image_size: Optional[int] = None) -> LabeledImages:
    """``"digits"`` (the default data), a path ending in ``.npz``, or an image folder."""
    if spec in (None, "", "digits"):
        return load_digits(32 if image_size is None else int(image_size))
    if str(spec).endswith(".npz"):
        return load_npz(spec, image_size)
    if os.path.isdir(spec):
        return load_image_folder(spec, image_size)
    if not os.path.exists(spec):
        raise DataError(f"{spec}: no such file or folder (--data takes 'digits', a .npz file or an image folder)")
    raise DataError(f"{spec}: unsupported data file (--data takes 'digits', a .npz file or an image folder)")


def split_indices(y: np.ndarray, val: float = 0.15, test: float = 0.15, seed: int = 0) -> tuple:
    """Stratified train/validation/test indices: each class is shuffled with a generator
    seeded by ``seed`` and cut in the given fractions, so every split sees every class
    in proportion. Returns three sorted int64 arrays."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val, test: expected fractions with val + test < 1, got val={val}, test={test}")
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = int(round(test * len(idx)))
        n_val = int(round(val * len(idx)))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def channel_stats(x: np.ndarray) -> tuple:
    """Per-channel mean and standard deviation of x: (N, C, H, W) -> ((C,), (C,)) float64;
    a zero deviation becomes 1 so normalisation never divides by zero."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    std[std < 1e-12] = 1.0
    return mean, std
