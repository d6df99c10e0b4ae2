"""Datasets with ``torch.utils.data``'s names: ``Dataset``, ``TensorDataset``,
``Subset``, ``random_split``.

A dataset maps an index to a sample ``(x, y)``. ``TensorDataset`` also accepts an
integer *array* of indices and returns whole batches at once, which is what lets
``DataLoader`` batch with a single NumPy gather instead of a Python loop.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split"]


def _array(a):
    """A NumPy view of a NumPy array or a cnnfast Tensor (shared, not copied)."""
    return a._array if hasattr(a, "grad_fn") and hasattr(a, "_array") else np.asarray(a)


class Dataset:
    """Base class: subclasses implement ``__getitem__(i) -> (x, y)`` and ``__len__``."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``TensorDataset(x, y)[i] == (x[i], y[i])``.

    ``x``: (N, ...) and ``y``: (N,) (any number of arrays, first dimension shared).
    Indexing with an integer array returns the gathered batch of every array.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: expected at least one array")
        self.arrays = tuple(_array(a) for a in arrays)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if a.ndim == 0 or len(a) != n:
                raise ValueError(f"TensorDataset: array {i} has {len(a) if a.ndim else 0} rows, expected {n} "
                                 "(every array must share the first dimension)")

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def random_split(dataset: Dataset, lengths: Sequence, seed: int = 0) -> list:
    """Split ``dataset`` into non-overlapping ``Subset``s of the given lengths (or fractions
    summing to 1), shuffled by a generator seeded with ``seed``."""
    n = len(dataset)
    lengths = list(lengths)
    if all(isinstance(f, float) for f in lengths) and abs(sum(lengths) - 1.0) < 1e-6:
        counts = [int(np.floor(f * n)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"lengths: expected lengths summing to the dataset size {n}, got {lengths}")
    order = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, order[start:start + length]))
        start += length
    return out
