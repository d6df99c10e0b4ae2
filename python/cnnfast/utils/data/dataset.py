"""Datasets with torch's semantics: samples are Tensors (``TensorDataset(x, y)[i]`` is
``(x[i], y[i])``), ``Subset``/``random_split`` pick by index, ``ConcatDataset`` chains."""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from ...data.dataset import Dataset
from ...random import Generator, draw_seed
from ...tensor import Tensor, as_tensor

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "ConcatDataset", "Subset", "random_split"]


class IterableDataset(Dataset):
    """A stream: subclasses implement ``__iter__``; the loader batches what it yields."""

    def __iter__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise TypeError("an IterableDataset is iterated, not indexed")


class TensorDataset(Dataset):
    """Rows of tensors that share their first dimension: ``self[i] == tuple(t[i] for t in tensors)``."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        self.tensors = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
        n = self.tensors[0].shape[0] if self.tensors[0].ndim else None
        for i, t in enumerate(self.tensors):
            if t.ndim == 0 or t.shape[0] != n:
                raise ValueError(f"TensorDataset: tensor {i} has {t.shape[0] if t.ndim else 0} rows, expected {n} "
                                 "(Size mismatch between tensors)")

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class ConcatDataset(Dataset):
    """The samples of several datasets, one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("datasets: expected a non-empty iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def __getitem__(self, index):
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} samples")
        d = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[d - 1] if d else 0
        return self.datasets[d][index - start]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[int(index)]]

    def __len__(self) -> int:
        return len(self.indices)


def random_split(dataset: Dataset, lengths: Sequence, generator: Generator | None = None) -> list:
    """Non-overlapping random ``Subset``s of the given lengths, or of fractions summing to 1
    (the remainder goes round-robin to the first subsets, as torch). The permutation comes
    from ``generator``, or from the global generator (``cnnfast.manual_seed``)."""
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1 and not all(isinstance(f, int) for f in lengths):
        for f in lengths:
            if not 0 <= f <= 1:
                raise ValueError(f"lengths: fraction {f} is not between 0 and 1")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"lengths: sum of input lengths ({sum(lengths)}) does not equal the length of the input "
                         f"dataset ({n})")
    order = np.random.default_rng(draw_seed(generator)).permutation(n).tolist()
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, order[start:start + length]))
        start += length
    return out
