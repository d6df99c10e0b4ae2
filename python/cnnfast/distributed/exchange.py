"""Gradient averaging between the ranks of one machine, through shared memory, one
parameter at a time, by whichever rank hands its gradient over last.

Each rank has a slot per trainable parameter in memory every rank maps. During a
synchronised backward the convolution kernels write a weight's gradient straight into the
rank's slot (the parameter's gradient sink, autograd._grad_destinations, as torch's
gradient_as_bucket_view); any other gradient is copied in. When a rank's gradient for
parameter i is finished (DistributedDataParallel's hook), it looks at i's arrival counter:
  - some rank has not arrived yet: count the arrival (copying into the slot if needed);
  - every other rank has arrived (the counter says so, before or after counting): average
    now, in one pass over the slots (and a gradient not yet copied, read where it is),
    writing the mean into every rank's slot (``_C._mean_into_slots``), then mark i done.
At the end of backward each rank hands over what never arrived, waits until every
parameter is done and points each ``.grad`` at its own slot: no copy back.

Why this shape (benchmarks/RESULTS.md; ResNet-18 at batch 16 per rank, 42.7 MB of
gradients, one core per rank, where every pass over them costs ~3 ms): the previous scheme
copied every gradient into a bucket, then after a barrier each rank summed its share and
copied it to its peers, ~14 ms of a 72 ms step. Here the kernels' own writes are the
hand-over, each parameter is averaged once, by one rank, as soon as it is complete
everywhere, and no rank waits at a barrier for the slowest to start summing: 1-3 ms.
The counters only grow (step g's arrivals bring i's to g * N), so nothing is reset.

The sum runs in rank order and is scaled once at the end, so the result does not depend on
which rank averaged, and every rank holds the same bits.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..tensor import Tensor
from .comm import pack_offsets, region_view as _view, wait_until

__all__ = ["SharedGradientExchange"]


class SharedGradientExchange:
    """Shared slots and counters for ``params`` (the trainable parameters, in the same order
    on every rank). ``region`` is None when the ranks do not share memory (then the
    exchange cannot be used)."""

    def __init__(self, comm, params: list):
        self.comm, self.params = comm, params
        self.rank, self.size = comm.rank, comm.size
        self.scale = 1.0 / self.size
        count = len(params)
        # Every rank's part: a slot per parameter, then one int64 per parameter saying
        # whether that rank had a gradient for it. Rank 0's part also holds the three
        # control arrays (arrivals, done, whether any rank had a gradient).
        offsets, total = pack_offsets([p._array.nbytes for p in params] + [8 * count] * 4)
        self.region = comm.shared_region(total if self.rank == 0 else offsets[count + 1])
        if self.region is None:
            return
        views = self.region.views
        self.slots = [[_view(views[k], o, p._array) for o, p in zip(offsets, params)] for k in range(self.size)]
        self.had = [views[k][offsets[count]:offsets[count] + 8 * count].view(np.int64) for k in range(self.size)]
        control = [views[0][o:o + 8 * count].view(np.int64) for o in offsets[count + 1:]]
        self.arrivals, self.done, self.had_any = control
        if self.rank == 0:
            for a in control:
                a[:] = 0
        self.region.barrier("setting up the shared gradient slots")
        self.step = 0
        self.arrived = np.zeros(count, bool)

    def free(self) -> None:
        """Release the shared memory (collective)."""
        if self.region is not None:
            self.region.free()
            self.region = None

    def begin(self) -> None:
        """A new exchange: the first gradient of an armed backward pass is about to arrive."""
        self.step += 1
        self.arrived[:] = False

    def destination(self, i: int) -> np.ndarray:
        """Where backward may write parameter i's gradient: this rank's slot (the gradient
        is then handed over without a copy)."""
        return self.slots[self.rank][i]

    def put(self, i: int, grad) -> None:
        """Hand over parameter i's gradient (None: this rank had none); averages i when this
        is the last rank to hand it over."""
        self.arrived[i] = True
        r, slot = self.rank, self.slots[self.rank][i]
        own = None
        if grad is not None and grad is not slot:
            own = grad.reshape(slot.shape) if grad.size == slot.size else grad
            if own.dtype != slot.dtype or not own.flags.c_contiguous or own.shape != slot.shape:
                own = np.ascontiguousarray(own, slot.dtype).reshape(slot.shape)
        target = self.step * self.size
        if own is not None and _C._shm_load(self.arrivals, i) == target - 1:
            _C._shm_fetch_add(self.arrivals, i, 1)
            self._average(i, own)       # straight from the gradient: no copy into the slot first
            return
        if own is not None:
            np.copyto(slot, own)
        self.had[r][i] = grad is not None
        if _C._shm_fetch_add(self.arrivals, i, 1) == target - 1:
            self._average(i, None)

    def _average(self, i: int, own) -> None:
        r = self.rank
        include = [bool(self.had[k][i]) for k in range(self.size)]
        if own is not None:
            include[r] = False          # the kernel takes this rank's term from own
        if own is not None or any(include):
            _C._mean_into_slots([s[i] for s in self.slots], include, own, r, self.scale)
            self.had_any[i] = 1
        else:
            self.had_any[i] = 0
        _C._shm_store(self.done, i, self.step)

    def finish(self, assign: bool = True) -> int:
        """End of backward: hand over what did not arrive, wait for every average, and (with
        ``assign``) point every parameter's ``.grad`` at its slot. Returns the bytes averaged."""
        for i in np.flatnonzero(~self.arrived):
            g = self.params[i].grad
            self.put(int(i), None if g is None else g._array)
        self._wait_done()
        if not assign:
            return 0
        moved = 0
        for i, p in enumerate(self.params):
            if not self.had_any[i]:
                continue
            view = self.slots[self.rank][i]
            if p.grad is None:
                p.grad = Tensor._wrap(view)
            else:
                p.grad._array = view
            moved += view.nbytes
        return moved

    def _wait_done(self) -> None:
        """Until every parameter is averaged. The rank that averages is computing on its own
        core, so the wait spins for 20 ms (yielding, in case the ranks outnumber the cores)
        before it backs off to sleeping."""
        pending = [i for i in range(len(self.params)) if _C._shm_load(self.done, i) != self.step]

        def averaged() -> bool:
            pending[:] = [i for i in pending if _C._shm_load(self.done, i) != self.step]
            return not pending
        wait_until(averaged, "the gradient exchange", spin_s=0.02, yield_cpu=True)
