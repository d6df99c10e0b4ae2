"""Communicators: the few collective operations data-parallel training needs, behind one
small interface so that a GPU backend (NCCL, its unique id broadcast over MPI) can slot in
beside MPI later.

``Communicator`` works on C-contiguous, writeable NumPy arrays *in place* (no copies):
``allreduce``/``iallreduce``/``broadcast``/``allgather``/``barrier``, plus
``bcast_object``/``allgather_object`` for small Python values (configuration, shape
signatures) and ``abort`` to stop every process of the job.

``MPICommunicator`` uses mpi4py's buffer (uppercase) calls: ``Allreduce(MPI.IN_PLACE, a)``
and ``Iallreduce`` return no Python copy of the data. ``SelfCommunicator`` is the world of
one process (no MPI needed): every collective is the identity.

Waiting on a non-blocking operation polls it (``Test``) with a deadline
(``CNNFAST_DIST_TIMEOUT`` seconds, default 600), so a rank that stops taking part turns
into a ``TimeoutError`` instead of a silent hang; polling is also what makes MPICH
progress an ``Iallreduce`` while Python computes the rest of the backward pass.
"""
from __future__ import annotations

import os
import socket
import sys
import time

import numpy as np

__all__ = ["Communicator", "SelfCommunicator", "MPICommunicator", "SharedRegion", "Work", "check_buffer", "OPS", "DTYPES"]

OPS = ("sum", "mean", "max", "min")
# Element types every backend must move; the code is what agree() compares across ranks.
DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.int64): 4,
          np.dtype(np.uint8): 5}


def timeout_s() -> float:
    return float(os.environ.get("CNNFAST_DIST_TIMEOUT", "600"))


def check_buffer(array, name: str = "array") -> np.ndarray:
    """The NumPy array behind ``array`` (a Tensor's ``.data``), after checking that a
    collective can work on it in place: C-contiguous, writeable and of a supported dtype."""
    a = getattr(array, "_array", None) if not isinstance(array, np.ndarray) else array
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array or a cnnfast Tensor, got {type(array).__name__}")
    if a.dtype not in DTYPES:
        raise TypeError(f"{name}: dtype {a.dtype} is not supported (expected one of "
                        f"{', '.join(str(d) for d in DTYPES)})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: the array must be C-contiguous to be communicated in place, got strides "
                         f"{a.strides} for shape {a.shape} (pass np.ascontiguousarray(...) and use the result)")
    if not a.flags.writeable:
        raise ValueError(f"{name}: the array is read-only; collectives write their result into it")
    return a


def _check_op(op: str) -> str:
    if op not in OPS:
        raise ValueError(f"op: expected one of {', '.join(OPS)}, got {op!r}")
    return op


class Work:
    """A started non-blocking operation; ``wait()`` finishes it (``test()`` polls)."""

    def test(self) -> bool:
        return True

    def wait(self) -> None:
        return None


class Communicator:
    """The interface every backend implements. ``rank``/``size`` are the process's place in
    the job; ``local_rank``/``local_size`` its place among the processes on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = "none"

    def allreduce(self, a: np.ndarray, op: str = "sum") -> np.ndarray:
        raise NotImplementedError

    def iallreduce(self, a: np.ndarray, op: str = "sum") -> Work:
        raise NotImplementedError

    def broadcast(self, a: np.ndarray, root: int = 0) -> np.ndarray:
        raise NotImplementedError

    def allgather(self, a: np.ndarray) -> np.ndarray:
        """(size, *a.shape): every rank's ``a``, in rank order."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def bcast_object(self, obj, root: int = 0):
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        os._exit(code)

    @property
    def shares_memory(self) -> bool:
        """Whether shared_region() gives memory (all ranks on one machine, several ranks)."""
        return False

    def shared_region(self, nbytes: int):
        """A ``SharedRegion`` with this rank's ``nbytes`` (each rank passes its own size) that
        every rank can read and write, or None where the ranks do not all share one machine's
        memory (a collective call)."""
        return None

    def agree(self, ok: bool, count: int, dtype, what: str) -> None:
        """Raise the same error on every rank unless every rank is ``ok`` and passes the
        same element count and dtype: a collective on mismatched buffers would otherwise
        hang the ranks that did call it, or mix unrelated data."""
        if self.size == 1:
            return
        code = DTYPES.get(np.dtype(dtype), 0) if dtype is not None else 0
        rows = self.allgather(np.array([int(bool(ok)), int(count), code], dtype=np.int64))
        bad = [r for r in range(self.size) if not rows[r, 0]]
        if bad:
            raise ValueError(f"{what}: rank(s) {', '.join(map(str, bad))} passed an unusable buffer (see the error "
                             f"on that rank); every rank stops")
        if (rows[:, 1] != rows[0, 1]).any() or (rows[:, 2] != rows[0, 2]).any():
            names = {v: str(k) for k, v in DTYPES.items()}
            detail = ", ".join(f"rank {r}: {rows[r, 1]} x {names.get(int(rows[r, 2]), '?')}" for r in range(self.size))
            raise ValueError(f"{what}: the ranks passed buffers of different sizes or dtypes ({detail})")


class SelfCommunicator(Communicator):
    """A job of one process: every collective leaves the data as it is."""

    backend = "self"

    def allreduce(self, a, op="sum"):
        _check_op(op)
        return check_buffer(a)

    def iallreduce(self, a, op="sum"):
        self.allreduce(a, op)
        return Work()

    def broadcast(self, a, root=0):
        if root != 0:
            raise ValueError(f"root: expected a rank in [0, 1), got {root}")
        return check_buffer(a)

    def allgather(self, a):
        return np.asarray(a)[None].copy()

    def barrier(self):
        return None

    def bcast_object(self, obj, root=0):
        return obj

    def allgather_object(self, obj):
        return [obj]


class _MPIWork(Work):
    def __init__(self, request, after=None):
        self.request = request
        self.after = after

    def test(self) -> bool:
        return bool(self.request.Test())

    def wait(self) -> None:
        wait_all([self])


def region_view(region: np.ndarray, offset: int, like: np.ndarray) -> np.ndarray:
    """An array shaped and typed like ``like`` at byte ``offset`` of a SharedRegion view."""
    return region[offset:offset + like.nbytes].view(like.dtype).reshape(like.shape)


def pack_offsets(nbytes: list) -> tuple:
    """Cache-line aligned byte offsets of consecutive arrays in a SharedRegion, and the total."""
    offsets, at = [], 0
    for nb in nbytes:
        at = -(-at // 64) * 64
        offsets.append(at)
        at += nb
    return offsets, at


class SharedRegion:
    """``nbytes`` of memory per rank, mapped into every rank of a job whose ranks all run on
    one machine (an MPI-3 shared-memory window): ``views[k]`` is rank k's part, as uint8.
    Reads of another rank's part are ordered with its writes only through ``barrier()``."""

    def __init__(self, win, comm, views: list):
        self.win, self.comm, self.views = win, comm, views

    def free(self) -> None:
        """Release the memory (collective); no view of it may be used afterwards."""
        self.views = []
        self.win.Unlock_all()
        self.win.Free()

    def barrier(self, what: str) -> None:
        """Every rank's writes so far are visible to every rank once this returns; it waits
        with the CNNFAST_DIST_TIMEOUT deadline, like every other wait here."""
        self.win.Sync()
        wait_all([_MPIWork(self.comm.Ibarrier())], what)
        self.win.Sync()


def wait_until(ready, what: str, spin_s: float = 2e-3, yield_cpu: bool = False) -> None:
    """Poll ``ready()`` until it is true, with the CNNFAST_DIST_TIMEOUT deadline: the first
    ``spin_s`` seconds spin (most waits end there; ``yield_cpu`` lets another process have
    the core meanwhile, for ranks that outnumber the cores), then the poll backs off to at
    most 0.5 ms so that a waiting rank leaves the CPU to others."""
    start = time.perf_counter()
    deadline = start + timeout_s()
    pause = 0.0
    while not ready():
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"{what} did not complete within {timeout_s():g} s (CNNFAST_DIST_TIMEOUT): another "
                               f"rank stopped taking part")
        if now - start < spin_s:
            if yield_cpu:
                os.sched_yield()
        else:
            pause = min(max(pause * 2, 2e-5), 5e-4)
            time.sleep(pause)


def wait_all(works: list, what: str = "a collective operation") -> None:
    """Finish ``works``, polling with the CNNFAST_DIST_TIMEOUT deadline (``wait_until``).
    Each poll lets MPI progress the transfers."""
    pending = [w for w in works if isinstance(w, _MPIWork)]
    if not pending:
        return
    from mpi4py import MPI

    requests = [w.request for w in pending]
    wait_until(lambda: MPI.Request.Testall(requests), what)
    for w in pending:
        if w.after is not None:
            w.after()
            w.after = None


class MPICommunicator(Communicator):
    """Collectives over an mpi4py communicator (MPI.COMM_WORLD by default)."""

    backend = "mpi"

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        # Whether every rank shares this machine's memory (and none switched that off with
        # CNNFAST_DIST_SHM=0): the same answer on every rank, so that shared_region() is
        # collective on all of them or on none.
        mine = self.local_size == self.size and os.environ.get("CNNFAST_DIST_SHM", "1") != "0"
        self._can_share = bool(self.comm.allreduce(int(mine), op=MPI.MIN))
        self._ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def _checked(self, a, op: str, what: str) -> np.ndarray:
        """Local checks, then agreement across ranks, so a bad buffer on one rank raises
        on all of them instead of leaving the others inside the collective."""
        try:
            _check_op(op)
            arr = check_buffer(a)
        except (TypeError, ValueError) as own:
            try:
                self.agree(False, 0, None, what)
            except ValueError:
                pass  # this rank's own error says more than "a rank passed a bad buffer"
            raise own
        self.agree(True, arr.size, arr.dtype, what)
        return arr

    def allreduce(self, a, op="sum"):
        arr = self._checked(a, op, "all_reduce")
        self.comm.Allreduce(self.MPI.IN_PLACE, arr, op=self._ops[op])
        if op == "mean":
            _divide(arr, self.size)
        return arr

    def iallreduce(self, a, op="sum"):
        """Started at once; no agreement round (the caller owns matching buffers on every
        rank, as DistributedDataParallel's buckets do), so it costs one message."""
        _check_op(op)
        arr = check_buffer(a)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, arr, op=self._ops[op])
        return _MPIWork(request, (lambda: _divide(arr, self.size)) if op == "mean" else None)

    def broadcast(self, a, root=0):
        if not 0 <= int(root) < self.size:
            raise ValueError(f"root: expected a rank in [0, {self.size}), got {root}")
        arr = self._checked(a, "sum", "broadcast")
        self.comm.Bcast(arr, root=int(root))
        return arr

    def allgather(self, a):
        arr = np.ascontiguousarray(a)
        out = np.empty((self.size,) + arr.shape, arr.dtype)
        self.comm.Allgather(arr, out)
        return out

    def barrier(self):
        self.comm.Barrier()

    def bcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    @property
    def shares_memory(self) -> bool:
        return self._can_share and self.size > 1

    def shared_region(self, nbytes: int):
        if not self.shares_memory:
            return None
        MPI = self.MPI
        # Each rank's part rounded up to whole cache lines: the parts lie back to back, so
        # rank k's would otherwise start wherever rank k-1's odd size ended (the gradient
        # slots after a flag byte per parameter), misaligning every array viewed in it.
        win = MPI.Win.Allocate_shared(-(-max(int(nbytes), 0) // 64) * 64, 1, comm=self.comm)
        views = []
        for k in range(self.size):
            buf, _ = win.Shared_query(k)
            views.append(np.frombuffer(buf, np.uint8) if len(buf) else np.zeros(0, np.uint8))
        # One passive epoch for the window's whole life: Sync() then orders the loads and
        # stores of the ranks around each barrier (MPI's unified memory model).
        win.Lock_all(MPI.MODE_NOCHECK)
        return SharedRegion(win, self.comm, views)

    def abort(self, code: int = 1) -> None:
        # MPI_Abort asks the process manager to kill the job and may return before it has;
        # the process must not run on into the next collective meanwhile.
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)


def _divide(arr: np.ndarray, n: int) -> None:
    if arr.dtype.kind == "f":
        arr /= n
    else:
        arr //= n


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (MPICH/Hydra, Open MPI, PMIx, Slurm)."""
    keys = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")
    return any(k in os.environ for k in keys)


def describe(comm: Communicator) -> str:
    return f"rank {comm.rank} of {comm.size} (pid {os.getpid()} on {socket.gethostname()})"


def print_rank_error(comm: Communicator, exc: BaseException, prefix: str = "cnnfast") -> None:
    print(f"{prefix}: {describe(comm)} failed: {type(exc).__name__}: {exc}; stopping every rank of the job",
          file=sys.stderr, flush=True)
