"""``DataLoader`` with torch's arguments and semantics: a sampler (or ``shuffle``) picks
the indices, a batch sampler groups them, ``collate_fn`` builds every batch, and
``num_workers`` threads load batches ahead of the training loop.

Workers are threads, not processes: a dataset needs no pickling and starts instantly,
and loading overlaps training wherever one side releases the GIL (NumPy, the C++
kernels). Pure-Python ``__getitem__`` work does not run in parallel with other Python.
"""
from __future__ import annotations

import collections
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, Optional

import numpy as np

from ...random import Generator, draw_seed
from ...tensor import Tensor, as_tensor, stack, tensor
from .dataset import IterableDataset, TensorDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler

__all__ = ["DataLoader", "default_collate", "default_convert", "get_worker_info"]


def default_convert(data):
    """Without batching: NumPy arrays become Tensors, containers are converted inside."""
    if isinstance(data, np.ndarray) and data.dtype.kind not in "USO":
        return as_tensor(data)
    if isinstance(data, dict):
        return {k: default_convert(v) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, (list, tuple)):
        return [default_convert(d) for d in data]
    return data


def default_collate(batch: list):
    """Stack a list of samples into a batch, as torch's default_collate: Tensors and NumPy
    arrays are stacked into a Tensor; Python ints become an int64 Tensor, floats a float64
    Tensor; strings stay a list; dicts, named tuples and sequences are collated per field
    (a tuple or list of fields comes back as a list)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch, 0)
    if isinstance(elem, np.ndarray) and elem.dtype.kind not in "USO":
        return as_tensor(np.stack(batch))
    if isinstance(elem, np.generic):
        return as_tensor(np.asarray(batch))
    if isinstance(elem, bool):
        return tensor(batch)
    if isinstance(elem, int):
        return tensor(batch, dtype=np.int64)
    if isinstance(elem, float):
        return tensor(batch, dtype=np.float64)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, dict):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, (list, tuple)):
        if any(len(s) != len(elem) for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                    f"found {type(elem).__name__}")


class WorkerInfo(NamedTuple):
    id: int
    num_workers: int
    seed: int
    dataset: object


_worker = threading.local()


def get_worker_info() -> Optional[WorkerInfo]:
    """In a loader's worker thread: its id, the worker count, its seed and the dataset; else None."""
    return getattr(_worker, "info", None)


class DataLoader:
    """Iterate over ``dataset`` in batches (see the module docstring).

    Args (torch's): batch_size (None: no batching), shuffle, sampler, batch_sampler,
    num_workers, collate_fn, pin_memory (accepted, no effect), drop_last, timeout (seconds
    to wait for a worker's batch), worker_init_fn(worker_id), generator (seeds shuffling;
    default: the global generator), prefetch_factor (batches loaded ahead per worker),
    persistent_workers (keep the worker threads between epochs).
    """

    def __init__(self, dataset, batch_size: Optional[int] = 1, shuffle: Optional[bool] = None, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn: Optional[Callable] = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Optional[Callable] = None, multiprocessing_context=None,
                 generator: Optional[Generator] = None, *, prefetch_factor: Optional[int] = None,
                 persistent_workers: bool = False, pin_memory_device: str = "", in_order: bool = True):
        if isinstance(num_workers, bool) or int(num_workers) < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                             "multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing. "
                             "let num_workers > 0 to enable multiprocessing.")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if prefetch_factor is not None and int(prefetch_factor) < 1:
            raise ValueError(f"prefetch_factor: expected a positive integer, got {prefetch_factor}")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self.prefetch_factor = 2 if prefetch_factor is None and num_workers > 0 else prefetch_factor
        self.pin_memory = bool(pin_memory)
        self.timeout = float(timeout)
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.persistent_workers = bool(persistent_workers)
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            if shuffle:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, "
                                 f"but got shuffle={shuffle}")
            if sampler is not None or batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler and batch_sampler")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                             "drop_last")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if sampler is None and not self._iterable:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self._auto_collation = batch_size is not None or batch_sampler is not None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._pool = None

    # ---- what one batch is ----------------------------------------------------------
    def _index_source(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def _fetch(self, index):
        if not self._auto_collation:
            return self.collate_fn(self.dataset[index])
        if self.collate_fn is default_collate and type(self.dataset) is TensorDataset:
            # The same batch default_collate would stack from the rows, gathered at once.
            idx = np.asarray(index, dtype=np.int64)
            return [Tensor._wrap(t._array[idx]) for t in self.dataset.tensors]
        return self.collate_fn([self.dataset[i] for i in index])

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)
            return n if self.batch_size is None else (n // self.batch_size if self.drop_last
                                                      else -(-n // self.batch_size))
        return len(self._index_source())

    # ---- iteration ---------------------------------------------------------------------
    def __iter__(self):
        # Drawn whatever num_workers is (as torch's base seed), so the shuffled order
        # depends on the seed only, not on the number of workers.
        base_seed = draw_seed(self.generator)
        if self._iterable:
            return self._iter_stream() if self.num_workers == 0 else self._iter_stream_workers(base_seed)
        if self.num_workers == 0:
            return (self._fetch(index) for index in self._index_source())
        return self._iter_workers(base_seed)

    def _start_pool(self, base_seed: int) -> ThreadPoolExecutor:
        if self._pool is not None:
            return self._pool
        counter = iter(range(self.num_workers))
        lock = threading.Lock()

        def init():
            with lock:
                wid = next(counter)
            _worker.info = WorkerInfo(wid, self.num_workers, base_seed + wid, self.dataset)
            if self.worker_init_fn is not None:
                self.worker_init_fn(wid)

        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="cnnfast-loader", initializer=init)
        if self.persistent_workers:
            self._pool = pool
        return pool

    def _iter_workers(self, base_seed: int):
        pool = self._start_pool(base_seed)
        ahead = self.num_workers * self.prefetch_factor
        pending: collections.deque = collections.deque()
        indices = iter(self._index_source())
        try:
            for index in indices:
                pending.append(pool.submit(self._fetch, index))
                if len(pending) >= ahead:
                    yield pending.popleft().result(timeout=self.timeout or None)
            while pending:
                yield pending.popleft().result(timeout=self.timeout or None)
        finally:
            for f in pending:
                f.cancel()
            if pool is not self._pool:
                pool.shutdown(wait=True, cancel_futures=True)

    def _batches_of(self, stream):
        if self.batch_size is None:
            for sample in stream:
                yield self.collate_fn(sample)
            return
        batch = []
        for sample in stream:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)

    def _iter_stream(self):
        yield from self._batches_of(iter(self.dataset))

    def _iter_stream_workers(self, base_seed: int):
        # As torch: every worker iterates its own copy of the stream (a dataset shards
        # itself with get_worker_info()), and batches are taken from the workers in turn.
        stop = threading.Event()
        queues = [queue.Queue(maxsize=self.prefetch_factor) for _ in range(self.num_workers)]

        def put(q, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def run(wid: int):
            q = queues[wid]
            try:
                _worker.info = WorkerInfo(wid, self.num_workers, base_seed + wid, self.dataset)
                if self.worker_init_fn is not None:
                    self.worker_init_fn(wid)
                for batch in self._batches_of(iter(self.dataset)):
                    if not put(q, (True, batch)):
                        return
                put(q, (False, None))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(q, (False, exc))

        threads = [threading.Thread(target=run, args=(w,), daemon=True, name=f"cnnfast-loader-{w}")
                   for w in range(self.num_workers)]
        for t in threads:
            t.start()
        try:
            live = list(range(self.num_workers))
            while live:
                for w in list(live):
                    more, item = queues[w].get(timeout=self.timeout or None)
                    if more:
                        yield item
                    else:
                        live.remove(w)
                        if item is not None:
                            raise item
        finally:
            stop.set()
            for t in threads:
                t.join()

    def __del__(self):
        # getattr: a constructor that refused its arguments never set _pool.
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
