"""``DistributedDataParallel``: the same model on every rank, each rank a different part of
the batch, gradients averaged across ranks during ``backward()``.

Gradient contract: after ``loss.backward()`` returns, every trainable parameter's
``.grad`` on every rank is the mean over ranks of the per-rank gradients (a rank where
the parameter received no gradient contributes zeros; a parameter that received none on
any rank keeps ``.grad`` None). Rank r's loss being the mean over its B samples, the
result equals the gradient of the mean loss over all N*B samples.
The ``.grad`` arrays are the wrapper's own memory (bucket slices, or shared slots on one
machine), reused every step as torch's ``gradient_as_bucket_view``: an array kept from one
step's ``.grad`` is overwritten by the next synchronised backward (copy it to keep it).

How: the trainable parameters are grouped, in reverse registration order (roughly the
order backward produces their gradients), into buckets of at most ``bucket_mb`` MB, one
flat buffer each. Convolution kernels write a weight's gradient straight into its bucket
slice (the parameter's gradient sink, autograd._grad_destinations); a post-accumulate-grad
hook divides each finished gradient by the world size there (copying in the ones produced
elsewhere); a full bucket starts a non-blocking all-reduce at once (buckets start strictly in
index order, so every rank issues the collectives in the same order whatever order its
gradients arrive in), and communication overlaps the rest of the backward pass. A callback
at the end of the backward pass fills what never arrived, waits for every bucket and
points each ``.grad`` at its slice of the summed bucket (no copy back).
Each bucket carries one flag per parameter (1 where that rank had a gradient) so that a
parameter no rank used is told apart from one whose gradient is zero.

When every rank runs on one machine the buckets are not used: each parameter has a slot
per rank in shared memory and the last rank to finish a parameter's gradient averages it
into every rank's slot at once (``exchange.py``); MPI's all-reduce through its own shared
cells costs about three times the CPU (benchmarks/RESULTS.md). ``CNNFAST_DIST_SHM=0`` keeps
MPI transfers.
"""
from __future__ import annotations

import contextlib
import time
import weakref

import numpy as np

from ..autograd import is_grad_enabled, queue_callback
from ..nn.modules.module import Module
from ..tensor import Tensor
from .comm import wait_all
from .exchange import SharedGradientExchange

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Parameters whose gradients travel together; ``buf`` = [flat gradients | one flag each]."""

    def __init__(self, params: list, dtype, scale: float):
        self.params = params
        self.scale = scale              # 1 / world size: the sum over ranks becomes the mean
        sizes = [int(p._array.size) for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.numel = int(self.offsets[-1])
        self.buf = np.zeros(self.numel + len(params), dtype)
        self.flags = self.buf[self.numel:]
        # Each parameter's slice, shaped like it: where its kernel may write its gradient
        # (the gradient sink) and what its .grad becomes after the all-reduce.
        self.views = [self.buf[lo:hi].reshape(p._array.shape)
                      for lo, hi, p in zip(self.offsets[:-1], self.offsets[1:], params)]
        self.arrived = np.zeros(len(params), bool)
        self.count = 0
        self.work = None

    def reset(self) -> None:
        self.arrived[:] = False
        self.count = 0
        self.work = None

    def put(self, i: int, grad) -> None:
        """Copy parameter i's gradient / world size (zeros when None) into the buffer;
        scaling during the copy saves a pass over the summed buffer. A gradient the kernel
        wrote into the buffer already is scaled where it is, still in cache."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        if grad is None:
            self.buf[lo:hi] = 0
            self.flags[i] = 0
        elif grad is self.views[i]:
            np.multiply(grad, self.scale, out=grad)
            self.flags[i] = 1
        else:
            np.multiply(grad.reshape(-1), self.scale, out=self.buf[lo:hi])
            self.flags[i] = 1
        if not self.arrived[i]:
            self.arrived[i] = True
            self.count += 1

    @property
    def full(self) -> bool:
        return self.count == len(self.params)


def _signature(module: Module) -> list:
    return [(name, tuple(p.shape), str(p.dtype), bool(p.requires_grad)) for name, p in module.named_parameters()]


def _check_same_model(comm, module: Module) -> None:
    """Raise on every rank when the ranks' models do not have the same parameters."""
    sigs = comm.allgather_object(_signature(module))
    ref = sigs[0]
    for r, sig in enumerate(sigs[1:], 1):
        if sig == ref:
            continue
        if len(sig) != len(ref):
            raise ValueError(f"DistributedDataParallel: rank {r} has {len(sig)} parameters, rank 0 has {len(ref)}; "
                             "every rank must wrap the same model")
        for a, b in zip(ref, sig):
            if a != b:
                raise ValueError(f"DistributedDataParallel: parameter shapes differ across ranks: rank 0 has "
                                 f"{a[0]} {a[1]} {a[2]}{'' if a[3] else ' (frozen)'}, rank {r} has {b[0]} {b[1]} "
                                 f"{b[2]}{'' if b[3] else ' (frozen)'}; every rank must wrap the same model")


def broadcast_tensors(comm, tensors: list, root: int = 0) -> None:
    """Overwrite every tensor with rank ``root``'s values: one broadcast per dtype of a
    packed buffer instead of one per tensor."""
    if comm.size == 1 or not tensors:
        return
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t._array.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        flat = np.concatenate([t._array.reshape(-1) for t in group]).astype(dtype, copy=False)
        comm.broadcast(flat, root)
        at = 0
        for t in group:
            n = t._array.size
            if t._array.flags.writeable:
                t._array[...] = flat[at:at + n].reshape(t._array.shape)
            else:
                t._array = flat[at:at + n].reshape(t._array.shape).copy()
            at += n


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training; call it like the module.

    Args:
        module: the model (identical architecture on every rank).
        bucket_mb: gradient bucket size in MB; smaller buckets start communicating sooner,
            larger ones pay the per-message latency less often.
        comm: the communicator (default: ``cnnfast.distributed.init()``).
        broadcast_buffers: overwrite the buffers (BatchNorm running statistics) with rank
            0's before every forward in training mode, as torch does.

    At wrap time rank 0's parameters and buffers are broadcast, after checking that every
    rank has the same parameter names, shapes and dtypes (a ValueError on every rank if not).
    ``stats`` counts steps, bytes reduced, the buckets started while backward was still
    computing, and the seconds ``backward()`` spent waiting for communication at its end
    (the part not hidden behind computation).
    """

    def __init__(self, module: Module, bucket_mb: float = 25.0, comm=None, broadcast_buffers: bool = True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a cnnfast.nn.Module, got {type(module).__name__}")
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb: expected a positive size, got {bucket_mb}")
        from . import get_communicator

        self.module = module
        self.comm = comm if comm is not None else get_communicator()
        self.bucket_mb = float(bucket_mb)
        self.broadcast_buffers = bool(broadcast_buffers)
        _check_same_model(self.comm, module)
        for p in module.parameters():
            if not p._array.flags.c_contiguous or not p._array.flags.writeable:
                p._array = np.ascontiguousarray(p._array).copy()
        broadcast_tensors(self.comm, list(module.parameters()) + [b for b in module.buffers() if b is not None])
        self._sync = True
        self._armed = False
        self._finish_queued = False
        self._next = 0
        self.stats = {"steps": 0, "bytes": 0, "wait_s": 0.0, "buckets_started_in_backward": 0}
        trainable = [p for p in module.parameters() if p.requires_grad]
        self._buckets = self._build_buckets(trainable)
        self._exchange = None           # on one machine: the shared-memory slots
        if self.comm.size > 1 and self.comm.shares_memory and trainable:
            exchange = SharedGradientExchange(self.comm, trainable)
            if exchange.region is not None:
                self._exchange = exchange
                self._slot_of = {id(p): i for i, p in enumerate(trainable)}
        self._sharding = None           # set by a ZeroRedundancyOptimizer
        self._where = {}
        me = weakref.ref(self)
        for b in self._buckets:
            for i, p in enumerate(b.params):
                self._where[id(p)] = (b, i)
                p.register_post_accumulate_grad_hook(_hook_for(me))
        if self.comm.size > 1:
            for p in trainable:
                p._grad_sink = _sink_for(me)

    def _build_buckets(self, params: list) -> list:
        cap = self.bucket_mb * 2 ** 20
        buckets, current, size, dtype = [], [], 0, None
        for p in reversed(params):
            nbytes = p._array.nbytes
            if current and (p._array.dtype != dtype or size + nbytes > cap):
                buckets.append(_Bucket(current, dtype, 1.0 / self.comm.size))
                current, size = [], 0
            current.append(p)
            size += nbytes
            dtype = p._array.dtype
        if current:
            buckets.append(_Bucket(current, dtype, 1.0 / self.comm.size))
        return buckets

    def _shard(self, params: list):
        """Hand each trainable parameter to one owning rank (ZeroRedundancyOptimizer)."""
        from .zero import _BroadcastSharding, _SharedSharding, assign_owners

        if self._sharding is not None:
            raise RuntimeError("this DistributedDataParallel already has a ZeroRedundancyOptimizer")
        owner = assign_owners([int(p._array.size) for p in params], self.comm.size)
        if not self.comm.shares_memory:
            self._sharding = _BroadcastSharding(self.comm, params, owner)
        else:
            self._sharding = _SharedSharding(self.comm, params, owner)
            self._index = {id(p): i for i, p in enumerate(params)}
            if self._exchange is not None:
                # The gradients no longer pass through the slots: give their memory back.
                self._exchange.free()
                self._exchange = None
        return self._sharding

    @property
    def bucket_sizes(self) -> list:
        """Bytes of gradient in each bucket, in launch order."""
        return [b.numel * b.buf.itemsize for b in self._buckets]

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally without communicating; the
        first backward after the block averages the accumulated gradients."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def forward(self, *args, **kwargs):
        if self._armed:
            self._drain()  # a forward without a backward (or a failed one) since the last arming
        if self._sharding is not None and self._sharding.unpublished:
            self._sharding.publish()  # an exchange without an optimizer step: the slots are free once all passed
        if self.broadcast_buffers and self.module.training:
            broadcast_tensors(self.comm, [b for b in self.module.buffers() if b is not None])
        self._armed = self._sync and is_grad_enabled() and self.comm.size > 1
        if self._armed:
            for b in self._buckets:
                b.reset()
            self._next = 0
            if self._shared_sharding:
                self._sharding.reset()
        return self.module(*args, **kwargs)

    # ---- during backward ----------------------------------------------------------------

    def _on_grad(self, p: Tensor) -> None:
        if not self._armed:
            return
        if not self._finish_queued:
            queue_callback(self._finish)
            self._finish_queued = True
            if self._exchange is not None:
                self._exchange.begin()
        if self._exchange is not None:
            self._exchange.put(self._slot_of[id(p)], p.grad._array)
            return
        if self._shared_sharding:
            self._sharding.put(self._index[id(p)], p.grad._array)
            return
        bucket, i = self._where[id(p)]
        bucket.put(i, p.grad._array)
        if bucket.full:
            self.stats["buckets_started_in_backward"] += self._launch_ready()
        else:
            self._progress()

    def _launch_ready(self) -> int:
        """Start every full bucket whose predecessors have started; returns how many."""
        started = 0
        while self._next < len(self._buckets) and self._buckets[self._next].full:
            b = self._buckets[self._next]
            b.work = self.comm.iallreduce(b.buf, "sum")
            self._next += 1
            started += 1
        return started

    def _progress(self) -> None:
        """Let MPI move the started transfers while Python runs the next backward node."""
        for b in self._buckets[:self._next]:
            if b.work is not None and b.work.test():
                b.work.wait()

    def _finish(self) -> None:
        """End of the backward pass: start what did not fill, wait, average, hand out."""
        self._finish_queued = False
        if self._shared_sharding:
            t0 = time.perf_counter()
            self._sharding.exchange()
            self.stats["wait_s"] += time.perf_counter() - t0
            self.stats["steps"] += 1
            self._armed = False
            return
        if self._exchange is not None:
            t0 = time.perf_counter()
            self.stats["bytes"] += self._exchange.finish()
            self.stats["wait_s"] += time.perf_counter() - t0
            self.stats["steps"] += 1
            self._armed = False
            return
        for b in self._buckets[self._next:]:
            for i, p in enumerate(b.params):
                if not b.arrived[i]:
                    b.put(i, None if p.grad is None else p.grad._array)
        self._launch_ready()
        t0 = time.perf_counter()
        wait_all([b.work for b in self._buckets if b.work is not None], "the gradient all-reduce")
        self.stats["wait_s"] += time.perf_counter() - t0
        for b in self._buckets:
            for i, p in enumerate(b.params):
                if b.flags[i] == 0:
                    continue
                view = b.views[i]
                if p.grad is None:
                    p.grad = Tensor._wrap(view)
                else:
                    p.grad._array = view
            self.stats["bytes"] += b.buf.nbytes
        if self._sharding is not None:
            self._sharding.drop_unowned()
        self.stats["steps"] += 1
        self._armed = False

    @property
    def _shared_sharding(self) -> bool:
        return self._sharding is not None and self._sharding.shared

    def _drain(self) -> None:
        """Finish communication a failed or skipped backward left in flight, so that every
        rank stays at the same collective count; the gradients it carried are dropped."""
        if self._shared_sharding or self._exchange is not None:
            if self._finish_queued:
                self._sharding.exchange() if self._shared_sharding else self._exchange.finish(assign=False)
            self._armed = False
            self._finish_queued = False
            return
        started = [b.work for b in self._buckets if b.work is not None]
        if started:
            wait_all(started, "the gradient all-reduce of an unfinished backward")
        self._armed = False
        self._finish_queued = False

    def extra_repr(self) -> str:
        return f"world_size={self.comm.size}, buckets={len(self._buckets)}, bucket_mb={self.bucket_mb:g}"


def _sink_for(ddp_ref):
    """A parameter's gradient sink (autograd._grad_destinations): while a synchronised
    backward runs, where the exchange reads its gradient (the shared slot on one machine,
    else its slice of the bucket), so that the kernel writes it there (as torch's
    gradient_as_bucket_view)."""
    def sink(p):
        ddp = ddp_ref()
        if ddp is None or not ddp._armed or type(p._array) is not np.ndarray:
            return None
        if ddp._exchange is not None:
            return ddp._exchange.destination(ddp._slot_of[id(p)])
        if ddp._shared_sharding:
            return ddp._sharding.destination(ddp._index[id(p)])
        bucket, i = ddp._where[id(p)]
        return bucket.views[i]
    return sink


def _hook_for(ddp_ref):
    """The parameter hook; it holds the wrapper weakly so that a discarded wrapper (its
    hooks stay on the parameters) neither stays alive nor acts."""
    def hook(p):
        ddp = ddp_ref()
        if ddp is not None:
            ddp._on_grad(p)
    return hook
