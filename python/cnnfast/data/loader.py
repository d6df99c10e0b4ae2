"""``DataLoader``: shuffled, batched, optionally augmented iteration over a dataset,
with the next batches prepared on a background thread.

Reproducibility: the order and the augmentation of epoch ``e`` come from a NumPy
generator seeded with ``(seed, e)``, so an epoch is the same whether it runs after
epoch ``e - 1`` in the same process or after resuming from a checkpoint.
Call ``set_epoch(e)`` before iterating (as with torch's DistributedSampler); without
it each new iteration advances the epoch by one.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import numpy as np

from .dataset import Dataset

__all__ = ["DataLoader", "default_collate"]


def default_collate(samples: list) -> tuple:
    """Stack a list of ``(x, y, ...)`` samples into ``(X, Y, ...)`` arrays."""
    return tuple(np.stack([np.asarray(s[i]) for s in samples]) for i in range(len(samples[0])))


class _Stop:
    """Marks the end of the stream (or carries the producer's exception)."""

    def __init__(self, error: Optional[BaseException] = None):
        self.error = error


class DataLoader:
    """Iterate over ``dataset`` in batches of ``(x, y)`` NumPy arrays.

    Args:
        dataset: a ``Dataset``; one that accepts an index array (``TensorDataset``,
            ``Subset`` of one) is gathered in one step per batch.
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch.
        drop_last: leave out the last batch when it is smaller than ``batch_size``.
        transform: ``transform(x, rng) -> x`` applied to each whole batch ``x`` (N, C, H, W),
            e.g. a ``cnnfast.data.transforms.Compose``; ``rng`` is the epoch's generator.
        seed: seeds shuffling and augmentation (combined with the epoch number).
        prefetch: how many batches a background thread prepares ahead (0: none, all
            work happens in the consuming thread).
    Yields: ``(x, y)`` with x: (B, ...) and y: (B,).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 transform: Optional[Callable] = None, seed: int = 0, prefetch: int = 2,
                 collate_fn: Callable = default_collate):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if int(prefetch) < 0:
            raise ValueError(f"prefetch: expected >= 0, got {prefetch}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self.collate_fn = collate_fn
        self.epoch = 0
        self._epoch_set = False

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def _batches(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self._gather(idx)
            if self.transform is not None:
                batch = (self.transform(batch[0], rng),) + tuple(batch[1:])
            yield batch

    def _gather(self, idx: np.ndarray) -> tuple:
        try:
            batch = self.dataset[idx]
            if isinstance(batch, tuple) and all(isinstance(b, np.ndarray) and len(b) == len(idx) for b in batch):
                return batch
        except (TypeError, IndexError, KeyError, ValueError):
            pass
        return self.collate_fn([self.dataset[int(i)] for i in idx])

    def __iter__(self):
        epoch = self.epoch
        if self._epoch_set:
            self._epoch_set = False
        else:
            self.epoch += 1
        if self.prefetch == 0:
            yield from self._batches(epoch)
            return
        yield from self._prefetched(epoch)

    def _prefetched(self, epoch: int):
        buf: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            try:
                for batch in self._batches(epoch):
                    while not stop.is_set():
                        try:
                            buf.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                buf.put(_Stop())
            except BaseException as exc:  # handed to the consumer, which re-raises it
                buf.put(_Stop(exc))

        worker = threading.Thread(target=produce, name="cnnfast-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = buf.get()
                if isinstance(item, _Stop):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            # An abandoned iteration (break, exception) must not leave the producer blocked.
            stop.set()
            while worker.is_alive():
                try:
                    buf.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()
