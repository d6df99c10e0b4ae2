"""Data-parallel training across processes and machines, on MPI (mpi4py + the ``mpich``
wheel: ``pip install "cnnfast[dist]"``).

Start N copies of a script with ``mpiexec -n N python train.py`` (a host file spreads
them over machines); each one calls ``init()`` and wraps its model::

    import cnnfast.distributed as dist
    dist.init()                                     # world size 1 without mpiexec
    model = dist.convert_sync_batchnorm(model)      # optional: global BatchNorm statistics
    ddp = dist.DistributedDataParallel(model)       # rank 0's weights everywhere
    sampler = dist.DistributedSampler(len(dataset), seed=0)
    for epoch in ...:
        sampler.set_epoch(epoch)
        ... loss = F.cross_entropy(ddp(x[my indices]), y); loss.backward()  # gradients averaged
        optimizer.step()

``ZeroRedundancyOptimizer(ddp, optim.SGD, ...)`` in place of the optimizer gives each rank
1/N of the update work and state. On one machine the ranks exchange gradients (and, sharded,
share the weights) through shared memory instead of MPI transfers.

``all_reduce``/``broadcast``/``barrier`` work on NumPy arrays (or Tensors) in place.
A process that raises an uncaught exception after ``init()`` in a job of several
processes prints its rank and the error, then aborts the whole job (the others would
otherwise wait forever in their next collective).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from .launch import record_rank
from .comm import (Communicator, MPICommunicator, SelfCommunicator, Work, check_buffer, launched_by_mpi,
                   print_rank_error, wait_all)

__all__ = ["init", "is_initialized", "get_communicator", "rank", "world_size", "local_rank", "local_world_size",
           "barrier", "all_reduce", "broadcast", "all_gather_object", "default_threads", "Communicator",
           "MPICommunicator", "SelfCommunicator", "Work", "DistributedDataParallel", "DistributedSampler",
           "SyncBatchNorm", "convert_sync_batchnorm", "check_buffer", "wait_all",
           "ZeroRedundancyOptimizer"]

_state: dict = {"comm": None, "hook_installed": False}


def init(backend: Optional[str] = None, abort_on_exception: bool = True) -> Communicator:
    """Join the job this process belongs to and return its communicator (idempotent).

    ``backend``: "mpi" (needs mpi4py), "self" (one process), or None: MPI when an MPI
    launcher started the process (or mpi4py is already initialised), otherwise a world
    of one process, so the same script runs with and without ``mpiexec``.
    ``abort_on_exception``: in a job of several processes, an uncaught exception prints
    the rank and aborts the job instead of leaving the other ranks waiting."""
    if _state["comm"] is not None:
        if backend is not None and backend != _state["comm"].backend:
            raise ValueError(f"backend: already initialised with {_state['comm'].backend!r}, got {backend!r}")
        return _state["comm"]
    if backend not in (None, "mpi", "self"):
        raise ValueError(f"backend: expected 'mpi', 'self' or None, got {backend!r} (NCCL is not wired in yet)")
    use_mpi = backend == "mpi" or (backend is None and (launched_by_mpi() or "mpi4py.MPI" in sys.modules))
    if use_mpi:
        try:
            comm = MPICommunicator()
        except ImportError as exc:
            raise RuntimeError("cnnfast.distributed: this process was started by an MPI launcher but mpi4py is "
                               "not installed; pip install \"cnnfast[dist]\"") from exc
    else:
        comm = SelfCommunicator()
    _state["comm"] = comm
    record_rank(comm.rank, comm.size)
    if abort_on_exception and comm.size > 1 and not _state["hook_installed"]:
        _install_excepthook(comm)
    return comm


def _install_excepthook(comm: Communicator) -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        print_rank_error(comm, value)
        previous(kind, value, tb)
        sys.stderr.flush()
        _pause_for_output()
        comm.abort(1)

    sys.excepthook = hook
    _state["hook_installed"] = True


def _pause_for_output() -> None:
    """The launcher forwards a rank's stderr asynchronously; aborting at once can lose the
    message that says which rank failed and why."""
    import time
    time.sleep(float(os.environ.get("CNNFAST_DIST_ABORT_DELAY", "0.3")))


def abort_job(exc: BaseException, code: int = 1) -> None:
    """Print this rank's failure and stop every process of the job (never returns when
    the job has several processes)."""
    comm = get_communicator()
    print_rank_error(comm, exc)
    if comm.size > 1:
        _pause_for_output()
        comm.abort(code)


def is_initialized() -> bool:
    return _state["comm"] is not None


def get_communicator() -> Communicator:
    """The communicator of this process (``init()`` on first use)."""
    return _state["comm"] if _state["comm"] is not None else init()


def rank() -> int:
    return get_communicator().rank


def world_size() -> int:
    return get_communicator().size


def local_rank() -> int:
    return get_communicator().local_rank


def local_world_size() -> int:
    return get_communicator().local_size


def barrier() -> None:
    get_communicator().barrier()


def all_reduce(array, op: str = "sum"):
    """Reduce ``array`` (NumPy array or Tensor; C-contiguous, writeable) over every rank, in
    place: op "sum", "mean", "max" or "min". Returns the array. A bad buffer on any rank
    raises on every rank."""
    return get_communicator().allreduce(array, op)


def broadcast(array, root: int = 0):
    """Overwrite ``array`` on every rank with rank ``root``'s, in place; returns it."""
    return get_communicator().broadcast(array, root)


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (small, picklable), in rank order."""
    return get_communicator().allgather_object(obj)


def default_threads() -> int:
    """CPU threads per process: the cores this process may use divided by the processes
    of the job on this machine (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, get_communicator().local_size))


from .ddp import DistributedDataParallel  # noqa: E402
from .sampler import DistributedSampler  # noqa: E402
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm  # noqa: E402
from .zero import ZeroRedundancyOptimizer  # noqa: E402
