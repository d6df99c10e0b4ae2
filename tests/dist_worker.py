"""Checks that run inside an MPI job (``mpiexec -n 2 python tests/dist_worker.py CASE...``),
started by tests/test_distributed.py.

Every rank runs every named case and compares its own result with a reference it computes
itself on one process (no communication), so a wrong result fails on the rank that has
it. Each case prints one line "CASE <name> rank <r> ok" or "CASE <name> rank <r> FAIL <why>";
the pytest side reads those lines.
"""
from __future__ import annotations

import os
import sys
import traceback

import numpy as np

import cnnfast
import cnnfast.distributed as dist
from cnnfast import functional as F
from cnnfast import nn, optim

comm = dist.init(abort_on_exception=False)
R, W = comm.rank, comm.size
B = 3          # samples per rank per step
STEPS = 4


def model_without_bn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 5)).double()


def model_with_bn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)).double()


def data(steps, per_rank):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((steps, per_rank * W, 2, 6, 6))
    y = rng.integers(0, 5, (steps, per_rank * W))
    return x, y


OPTIMIZERS = {"sgd": (optim.SGD, dict(lr=0.1, momentum=0.9)), "adam": (optim.Adam, dict(lr=0.01))}


def make_opt(kind, params):
    cls, kwargs = OPTIMIZERS[kind]
    return cls(params, **kwargs)


def arrays(model):
    return {k: np.array(v.data if hasattr(v, "data") else v, dtype=np.float64) for k, v in model.state_dict().items()}


def close(got: dict, want: dict, rtol=1e-5, what="") -> None:
    for k in want:
        g, w = got[k], want[k]
        err = np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)
        if not err <= rtol:
            raise AssertionError(f"{what}{k}: relative difference {err:.3g} > {rtol}")


def equivalence(builder, kind, sync_bn, zero=False):
    """2 ranks x batch B == 1 process x batch 2B after STEPS steps; rank 1 starts from other weights.
    zero: a ZeroRedundancyOptimizer, whose gathered state must equal the plain optimizer's."""
    x, y = data(STEPS, B)
    cnnfast.manual_seed(0)
    ref = builder()
    cnnfast.manual_seed(100 + R)          # rank 1 starts from different weights
    mine = builder()
    if R == 0:
        mine.load_state_dict(ref.state_dict())
    if sync_bn:
        mine = dist.convert_sync_batchnorm(mine)
    ddp = dist.DistributedDataParallel(mine, bucket_mb=0.0005)   # several buckets for this small model
    opt_ref = make_opt(kind, ref.parameters())
    opt = dist.ZeroRedundancyOptimizer(ddp, OPTIMIZERS[kind][0], **OPTIMIZERS[kind][1]) if zero else make_opt(kind, mine.parameters())
    if zero:
        sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)   # schedulers see the plain groups
        sched_ref = optim.lr_scheduler.StepLR(opt_ref, step_size=2, gamma=0.5)
    for s in range(STEPS):
        loss = F.cross_entropy(ref(cnnfast.tensor(x[s])), cnnfast.tensor(y[s]))
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()
        part = slice(R * B, (R + 1) * B)
        loss = F.cross_entropy(ddp(cnnfast.tensor(x[s, part])), cnnfast.tensor(y[s, part]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if zero:
            sched.step()
            sched_ref.step()
    close(arrays(mine), arrays(ref), what=f"{kind}: ")
    if zero:
        check_zero_state(ddp, opt, opt_ref, kind)
    assert len(ddp._buckets) > 1, "the test model should span several buckets"
    # The job runs on one machine: shared memory carries the gradients unless switched off
    # (with a sharded optimizer, not through the per-parameter slots, whose memory is released).
    shared = os.environ.get("CNNFAST_DIST_SHM") != "0"
    assert (ddp._exchange is not None) == (shared and not zero), f"shared-memory slots expected {shared}"
    if not shared:   # MPI moves the buckets: they start while backward still runs
        assert ddp.stats["buckets_started_in_backward"] > 0, "no bucket started before the end of backward"


def check_zero_state(ddp, opt, opt_ref, kind):
    """Each rank holds state for its share only; the gathered state is the plain optimizer's."""
    owned = opt.owned_parameters
    total = len([p for p in ddp.module.parameters() if p.requires_grad])
    shares = comm.allgather(np.array([len(owned)]))
    assert 0 < len(owned) < total and shares.sum() == total, f"ownership {shares.ravel()} of {total}"
    assert set(map(id, opt.state)) == set(map(id, owned)), "state kept for parameters this rank does not own"
    full, want = opt.state_dict(), opt_ref.state_dict()
    assert sorted(full["state"]) == sorted(want["state"]), (sorted(full["state"]), sorted(want["state"]))
    for idx, st in want["state"].items():
        close({k: np.asarray(v, np.float64) for k, v in full["state"][idx].items()},
              {k: np.asarray(v, np.float64) for k, v in st.items()}, what=f"{kind} state[{idx}] ")
    assert full["param_groups"][0]["lr"] == want["param_groups"][0]["lr"]
    plain = make_opt(kind, ddp.module.parameters())      # the gathered state loads into a plain optimizer
    plain.load_state_dict(full)
    opt.load_state_dict(full)
    assert set(map(id, opt.state)) == set(map(id, owned))
    shared = os.environ.get("CNNFAST_DIST_SHM") != "0"
    assert opt._sharding.shared == shared, f"shared-memory sharding expected {shared}"


def case_sgd():
    equivalence(model_without_bn, "sgd", False)


def case_adam():
    equivalence(model_without_bn, "adam", False)


def case_sgd_syncbn():
    equivalence(model_with_bn, "sgd", True)


def case_adam_syncbn():
    equivalence(model_with_bn, "adam", True)


def case_zero_sgd():
    equivalence(model_without_bn, "sgd", False, zero=True)


def case_zero_adam_syncbn():
    equivalence(model_with_bn, "adam", True, zero=True)


def accumulate_twice(zero: bool):
    """A model on every rank (and a single-process twin) after two micro-batches per rank,
    the first under no_sync; checks that the first one stayed local."""
    x, y = data(2, B)
    cnnfast.manual_seed(0)
    ref = model_without_bn()
    mine = model_without_bn()
    mine.load_state_dict(ref.state_dict())
    ddp = dist.DistributedDataParallel(mine)
    if zero:
        ddp.test_zero = dist.ZeroRedundancyOptimizer(ddp, optim.SGD, lr=0.1)
    part = slice(R * B, (R + 1) * B)
    with ddp.no_sync():
        F.cross_entropy(ddp(cnnfast.tensor(x[0, part])), cnnfast.tensor(y[0, part])).backward()
    others = comm.allgather(mine[0].weight.grad.numpy().copy())
    assert not np.allclose(others[0], others[1]), "gradients were exchanged inside no_sync"
    F.cross_entropy(ddp(cnnfast.tensor(x[1, part])), cnnfast.tensor(y[1, part])).backward()
    return x, y, ref, mine, ddp


def case_zero_no_sync_and_bad_use():
    """Accumulation under no_sync then a synchronised step equals one big batch's step; an
    optimizer that cannot be sharded is refused on every rank."""
    x, y, ref, mine, ddp = accumulate_twice(zero=True)
    opt = ddp.test_zero
    owned = {id(p) for p in opt.owned_parameters}
    assert all((p.grad is not None) == (id(p) in owned) for p in mine.parameters()), "gradients kept off-shard"
    opt.step()
    opt_ref = optim.SGD(ref.parameters(), lr=0.1)
    big_x, big_y = x.reshape(-1, 2, 6, 6), y.reshape(-1)
    (F.cross_entropy(ref(cnnfast.tensor(big_x)), cnnfast.tensor(big_y)) * 2.0).backward()
    opt_ref.step()
    close(arrays(mine), arrays(ref), rtol=1e-10, what="zero no_sync: ")
    for bad, words in ((optim.LBFGS, "cannot be sharded"), ("sgd", "Optimizer subclass")):
        try:
            dist.ZeroRedundancyOptimizer(ddp, bad, lr=0.1)
        except TypeError as exc:
            assert words in str(exc), exc
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        dist.ZeroRedundancyOptimizer(ddp, optim.SGD, lr=0.1 * (R + 1))
    except ValueError as exc:
        assert "every rank must build the same optimizer" in str(exc), exc
    else:
        raise AssertionError("ranks with different learning rates were accepted")
    try:
        dist.ZeroRedundancyOptimizer(mine, optim.SGD, lr=0.1)
    except TypeError as exc:
        assert "DistributedDataParallel" in str(exc)
    else:
        raise AssertionError("a bare module was accepted")


def case_no_sync():
    """Two micro-batches per rank, the first under no_sync: the averaged gradient equals the
    gradient of 2 x the mean loss over all 2 x W x B samples, and the first backward stayed local."""
    x, y, ref, mine, ddp = accumulate_twice(zero=False)
    big_x, big_y = x.reshape(-1, 2, 6, 6), y.reshape(-1)
    (F.cross_entropy(ref(cnnfast.tensor(big_x)), cnnfast.tensor(big_y)) * 2.0).backward()
    close({n: p.grad.data for n, p in mine.named_parameters()}, {n: p.grad.data for n, p in ref.named_parameters()},
          rtol=1e-10, what="no_sync: ")


class PartlyUsedNet(nn.Module):
    """Layer ``only_rank1`` is used on rank 1 only, ``never`` and ``handed`` (whose gradient
    a test sets by hand) by no rank."""

    def __init__(self, handed=False):
        super().__init__()
        self.a = nn.Linear(4, 3).double()
        self.only_rank1 = nn.Linear(3, 3).double()
        self.never = nn.Linear(3, 3).double()
        if handed:
            self.handed = nn.Linear(3, 3).double()

    def forward(self, x):
        h = self.a(x)
        return self.only_rank1(h) if R == 1 else h


def case_unused_parameters():
    """A layer no rank uses keeps grad None; a layer only rank 1 uses gets rank 1's gradient / W."""
    cnnfast.manual_seed(0)
    net = PartlyUsedNet()
    ddp = dist.DistributedDataParallel(net, bucket_mb=1e-5)
    x = cnnfast.tensor(np.random.default_rng(R).standard_normal((2, 4)))
    ddp(x).sum().backward()
    mine = net.only_rank1.weight.grad
    got = comm.allgather(np.zeros((3, 3)) if mine is None else mine.numpy().copy())
    assert net.never.weight.grad is None, "a parameter no rank used got a gradient"
    assert mine is not None and np.allclose(got[0], got[1]), "ranks disagree on a parameter only rank 1 used"
    ref = PartlyUsedNet()
    ref.load_state_dict(net.state_dict())
    if R == 1:
        ref(x).sum().backward()
        assert np.allclose(mine.data, ref.only_rank1.weight.grad.data / W)


def case_zero_unused_and_foreign_grads():
    """ZeroRedundancyOptimizer: each owner ends with the mean over ranks of every gradient (a
    rank without one adds zeros; a layer no rank uses keeps None), including a read-only
    gradient set by hand on a layer the forward skips, which is scaled into a copy, not in place."""
    from cnnfast.tensor import Tensor

    cnnfast.manual_seed(0)
    net, ref = PartlyUsedNet(handed=True), PartlyUsedNet(handed=True)
    ref.load_state_dict(net.state_dict())
    ddp = dist.DistributedDataParallel(net, bucket_mb=1e-5)
    opt = dist.ZeroRedundancyOptimizer(ddp, optim.SGD, lr=0.1)
    x = cnnfast.tensor(np.random.default_rng(R).standard_normal((2, 4)))
    out = ddp(x)
    handed = np.full((3, 3), float(R + 1))
    handed.flags.writeable = False
    net.handed.weight.grad = Tensor._wrap(handed)
    out.sum().backward()
    ref(x).sum().backward()
    ref.handed.weight.grad = Tensor._wrap(handed.copy())
    local = {n: None if p.grad is None else p.grad.numpy().copy() for n, p in ref.named_parameters()}
    every = comm.allgather_object(local)
    owned = {id(p) for p in opt.owned_parameters}
    assert np.all(handed == R + 1), "a read-only gradient was changed in place"
    for n, p in net.named_parameters():
        if id(p) not in owned:
            assert p.grad is None, f"{n}: a gradient kept off-shard"
            continue
        parts = [g[n] for g in every if g[n] is not None]
        if not parts:
            assert p.grad is None, f"{n}: a parameter no rank used got a gradient"
            continue
        want = sum(parts) / W
        assert p.grad is not None and np.allclose(p.grad.numpy(), want, rtol=1e-12), f"{n}: {p.grad} != {want}"
    assert any(id(p) in owned for p in net.parameters())


class TwiceConv(nn.Module):
    """``once`` is used once per forward, ``twice`` twice (its gradient has two parts)."""

    def __init__(self):
        super().__init__()
        self.once = nn.Conv2d(2, 3, 3, padding=1).double()
        self.twice = nn.Conv2d(3, 3, 3, padding=1, bias=False).double()
        self.head = nn.Linear(3 * 36, 4).double()

    def forward(self, x):
        h = self.twice(self.twice(self.once(x)).relu())
        return self.head(h.flatten(1))


def case_gradients_written_into_slots():
    """A weight used once gets its gradient written by the kernel straight into this rank's
    shared slot on one machine, or its bucket slice for MPI transfers (no copy); a weight used twice, or a backward onto an
    existing .grad (accumulation without zero_grad), takes the copying path. Every rank ends
    with the same bits, the mean of the per-rank gradients (summed over the two backwards)."""
    cnnfast.manual_seed(0)
    net = TwiceConv()
    ref = TwiceConv()
    ref.load_state_dict(net.state_dict())
    arrived = []        # what each backward left in .grad, seen before the wrapper's hook
    net.once.weight.register_post_accumulate_grad_hook(lambda p: arrived.append(p.grad._array))
    ddp = dist.DistributedDataParallel(net)
    rng = np.random.default_rng(10 + R)
    xs = [rng.standard_normal((2, 2, 6, 6)) for _ in range(2)]
    for x in xs:
        ddp(cnnfast.tensor(x)).sum().backward()
        ref(cnnfast.tensor(x)).sum().backward()       # the local gradient, accumulated over both
    if ddp._exchange is not None:       # one machine: the shared slot
        slot = ddp._exchange.slots[R][list(net.parameters()).index(net.once.weight)]
    else:                               # MPI transfers: the weight's slice of its bucket
        bucket, i = ddp._where[id(net.once.weight)]
        slot = bucket.views[i]
    assert arrived[0] is slot, "the once-used weight's gradient was written elsewhere and copied"
    assert arrived[1] is not slot, "an accumulating backward was handed the slot"
    every = comm.allgather_object({n: p.grad.numpy().copy() for n, p in ref.named_parameters()})
    for n, p in net.named_parameters():
        want = sum(e[n] for e in every) / W
        assert np.allclose(p.grad.numpy(), want, rtol=1e-12, atol=1e-14), f"{n}: wrong mean"
        bits = comm.allgather(p.grad.numpy().copy())
        assert all(np.array_equal(bits[0], b) for b in bits[1:]), f"{n}: ranks hold different bits"


def case_collectives():
    a = np.arange(5, dtype=np.float32) * (R + 1)
    assert dist.all_reduce(a) is a and np.allclose(a, np.arange(5) * 3)
    b = np.full(3, float(R))
    dist.all_reduce(b, "mean")
    assert np.allclose(b, 0.5)
    c = np.array([R, -R], dtype=np.int64)
    dist.all_reduce(c, "max")
    assert c.tolist() == [1, 0]
    t = cnnfast.tensor(np.full((2, 2), float(R + 5), np.float32))
    dist.broadcast(t, root=1)
    assert np.all(t.numpy() == 6)
    dist.barrier()


def case_bad_use():
    """Each misuse raises ValueError on every rank (the other rank never hangs)."""
    base = np.zeros((4, 6))
    buf = base[:, ::2] if R == 1 else np.zeros((4, 3))       # non-contiguous on rank 1 only
    try:
        dist.all_reduce(buf)
    except ValueError as exc:
        assert ("rank(s) 1" in str(exc)) if R == 0 else ("C-contiguous" in str(exc)), str(exc)
    else:
        raise AssertionError("a non-contiguous buffer on rank 1 was accepted")
    try:
        dist.all_reduce(np.zeros(3 + R))
    except ValueError as exc:
        assert "different sizes" in str(exc), str(exc)
    else:
        raise AssertionError("buffers of different sizes were accepted")
    try:
        dist.DistributedDataParallel(nn.Linear(3, 4 + R))
    except ValueError as exc:
        assert "rank 1" in str(exc) and "differ" in str(exc), str(exc)
    else:
        raise AssertionError("models of different shapes were accepted")
    try:
        dist.DistributedSampler(10, num_replicas=W + 1)
    except ValueError as exc:
        assert "world size" in str(exc), str(exc)
    else:
        raise AssertionError("a sampler for the wrong world size was accepted")


def case_sampler():
    for n, drop in ((12, False), (13, False), (13, True)):
        s = dist.DistributedSampler(n, seed=3, drop_last=drop)
        seen = []
        for epoch in (0, 1):
            s.set_epoch(epoch)
            seen.append(comm.allgather_object(s.indices().tolist()))
        shards = seen[0]
        assert len({len(p) for p in shards}) == 1, "shards of different lengths"
        flat = [i for p in shards for i in p]
        if drop:
            assert len(set(flat)) == len(flat) == n - n % W
        else:
            assert set(flat) == set(range(n)), "the shards do not cover the data"
            assert len(flat) - len(set(flat)) == (-n) % W, "shards overlap beyond the padding"
        assert seen[0] != seen[1], "set_epoch did not change the order"


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    cnnfast.set_num_threads(1)
    for name in sys.argv[1:] or list(CASES):
        try:
            CASES[name]()
        except Exception as exc:  # noqa: BLE001 - reported, then the job stops
            traceback.print_exc()
            print(f"CASE {name} rank {R} FAIL {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
            # The other rank may be inside a collective this rank will never join: stop the job.
            dist.abort_job(exc)
            sys.exit(1)
        print(f"CASE {name} rank {R} ok", flush=True)
        comm.barrier()
