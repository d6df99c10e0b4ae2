"""``DistributedSampler``: each rank's share of a dataset's indices for one epoch.

Epoch ``e`` permutes ``range(n)`` with a NumPy generator seeded by ``(seed, e)`` (the
same on every rank), pads it by repeating its start to a multiple of the world size (or,
``drop_last``, cuts the tail) and gives rank r every world-size-th index from r. The shards
of one epoch are therefore disjoint (apart from the padding repeats), together cover the
data, are all the same length (so every rank runs the same number of steps and the
collectives stay matched), and change with ``set_epoch``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices of rank ``rank``'s shard of a dataset of ``len(data)`` samples (``data``: a
    dataset or its length). Iterating yields ints; ``indices()`` gives the array."""

    def __init__(self, data, num_replicas: Optional[int] = None, rank: Optional[int] = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        n = int(data) if isinstance(data, (int, np.integer)) else len(data)
        if n < 0:
            raise ValueError(f"data: expected a dataset or a length >= 0, got {n}")
        if num_replicas is None or rank is None:
            from . import get_communicator
            comm = get_communicator()
            if num_replicas is not None and int(num_replicas) != comm.size:
                raise ValueError(f"num_replicas: {num_replicas} differs from the world size {comm.size} of this job")
            num_replicas = comm.size if num_replicas is None else num_replicas
            rank = comm.rank if rank is None else rank
        if int(num_replicas) < 1:
            raise ValueError(f"num_replicas: expected a positive count, got {num_replicas}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank: expected a rank in [0, {num_replicas}), got {rank}")
        self.n = n
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of epoch ``epoch`` (call before every epoch)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, shape (num_samples,)."""
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        if self.total_size > self.n and self.n > 0:
            order = np.concatenate([order, np.resize(order, self.total_size - self.n)])
        order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(int(i) for i in self.indices())

    def __len__(self) -> int:
        return self.num_samples
