"""``ZeroRedundancyOptimizer``: each rank updates only the parameters it owns (about 1/N
of them) and keeps optimizer state only for those, as torch's ZeroRedundancyOptimizer.

Every rank otherwise repeats the whole optimizer step (reading and writing every weight,
gradient and state array); on a machine whose cores all compute, that repeated work is
part of what two processes pay and two threads of one process do not. Sharded, the
gradients travel only to their owner and the updated weights back:

- ranks on one machine (``_SharedSharding``): the trainable parameters are moved into one
  shared-memory copy that every rank's model reads; during backward each rank's kernels
  write the gradients it does not own straight into its shared slots (the wrapper's gradient
  sink; a gradient produced elsewhere is copied in), and at its end each owner averages its
  parameters' gradients over the ranks in place in its own, scaling its own and adding the
  scaled first slot in one pass (``_C._scale_add``), with no buffer.
  ``step()`` updates the owned parameters in place in the shared copy and then waits for
  every rank, so the next forward of any rank sees all of them. No gradient travels to a rank that does not own
  it and no weight is copied back at all.
- ranks on several machines (``_BroadcastSharding``): the gradients are all-reduced as
  without sharding and every owner broadcasts its updated parameters after the step.

After ``backward()`` only the parameters this rank owns hold a gradient (the mean over
ranks); the others' ``.grad`` is None, so code that reads every gradient (clipping by the
global norm) must not be used with it.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..optim.optimizer import Optimizer
from ..tensor import Tensor
from .comm import pack_offsets, region_view as _view

__all__ = ["ZeroRedundancyOptimizer", "assign_owners"]


def assign_owners(sizes: list, n: int) -> list:
    """The owning rank of each parameter: largest first, each to the least loaded rank
    (the lowest rank on ties), so every rank computes the same assignment."""
    load = [0] * n
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(n), key=lambda k: (load[k], k))
        owner[i] = r
        load[r] += sizes[i]
    return owner



class _SharedSharding:
    """Ranks on one machine: one shared copy of the parameters, gradients summed by owners."""

    shared = True

    def __init__(self, comm, params: list, owner: list):
        self.comm, self.params, self.owner = comm, params, owner
        r, n = comm.rank, comm.size
        self.scale = 1.0 / n
        offsets, total = pack_offsets([p._array.nbytes for p in params])
        params_region = comm.shared_region(total if r == 0 else 0)
        self.weights = [_view(params_region.views[0], o, p._array) for o, p in zip(offsets, params)]
        if r == 0:
            for v, p in zip(self.weights, params):
                v[...] = p._array        # every rank holds rank 0's weights since the wrap
        params_region.barrier("moving the parameters into shared memory")
        for v, p in zip(self.weights, params):
            p._array = v
        self.region = params_region
        # Rank k's part of the gradient region: a slot for every parameter it does not own,
        # then one flag byte per parameter (1 where rank k had a gradient for it).
        layouts = []
        for k in range(n):
            offs, total = pack_offsets([p._array.nbytes if owner[i] != k else 0 for i, p in enumerate(params)])
            layouts.append((offs, total))
        grads = comm.shared_region(layouts[r][1] + len(params))
        self.grads = grads
        self.slots = [[None if owner[i] == k else _view(grads.views[k], layouts[k][0][i], p._array)
                       for i, p in enumerate(params)] for k in range(n)]
        self.flags = [grads.views[k][layouts[k][1]:layouts[k][1] + len(params)] for k in range(n)]
        self.mine = [i for i in range(len(params)) if owner[i] == r]
        self.arrived = np.zeros(len(params), bool)
        self.unpublished = False

    def reset(self) -> None:
        self.arrived[:] = False

    def destination(self, i: int):
        """Where backward may write parameter i's gradient: the shared slot when another
        rank owns it (None for an owned one, which stays where autograd puts it)."""
        return self.slots[self.comm.rank][i]

    def put(self, i: int, grad) -> None:
        """A finished gradient: another rank's goes into its slot (already there when the
        kernel wrote it through destination()); an owner keeps its own where autograd left it."""
        r = self.comm.rank
        self.arrived[i] = True
        if self.owner[i] == r:
            return
        slot = self.slots[r][i]
        if grad is None:
            self.flags[r][i] = 0
        else:
            if grad is not slot:
                np.copyto(slot, grad.reshape(slot.shape))
            self.flags[r][i] = 1

    def exchange(self) -> None:
        """End of backward: every owner averages its parameters' gradients over the ranks,
        in place in its own (scaling it and adding the first peer's slot in one pass)."""
        for i in np.flatnonzero(~self.arrived):
            g = self.params[i].grad
            self.put(int(i), None if g is None else g._array)
        r = self.comm.rank
        self.grads.barrier("the gradient exchange (another rank did not finish its backward)")
        for i in self.mine:
            p = self.params[i]
            parts = [self.slots[k][i] for k in range(self.comm.size) if k != r and self.flags[k][i]]
            g = None if p.grad is None else p.grad._array
            if g is not None and not (g.flags.writeable and g.flags.c_contiguous and g.dtype == p._array.dtype):
                g = p.grad._array = np.array(g, dtype=p._array.dtype)  # not ours to change: a copy
            if g is None:
                if not parts:
                    continue
                g = np.multiply(parts[0], self.scale)
                p.grad = Tensor._wrap(g)
                parts = parts[1:]
            elif parts:
                _C._scale_add(g, parts[0], self.scale, self.scale)
                parts = parts[1:]
            else:
                np.multiply(g, self.scale, out=g)
            for part in parts:
                _C._scale_add(g, part, 1.0, self.scale)
        for i, p in enumerate(self.params):
            if self.owner[i] != r:
                p.grad = None
        # Peers' slots stay in use until every owner has read them: publish() waits.
        self.unpublished = True

    def publish(self) -> None:
        """After the owners' updates: every rank's next forward sees every parameter."""
        for i, (v, p) in enumerate(zip(self.weights, self.params)):
            if p._array is not v:       # rebound since (a load_state_dict that replaced it)
                if self.owner[i] == self.comm.rank:
                    v[...] = p._array
                p._array = v
        self.region.barrier("the sharded optimizer step (another rank did not finish its step)")
        self.unpublished = False


class _BroadcastSharding:
    """Ranks on several machines: gradients all-reduced as usual, owners send their weights."""

    shared = False

    def __init__(self, comm, params: list, owner: list):
        self.comm, self.params, self.owner = comm, params, owner
        self.unpublished = False

    def drop_unowned(self) -> None:
        for i, p in enumerate(self.params):
            if self.owner[i] != self.comm.rank:
                p.grad = None

    def publish(self) -> None:
        if self.comm.size == 1:
            return
        for k in range(self.comm.size):
            group = [p for i, p in enumerate(self.params) if self.owner[i] == k]
            by_dtype: dict = {}
            for p in group:
                by_dtype.setdefault(p._array.dtype, []).append(p)
            for dtype, ps in sorted(by_dtype.items(), key=lambda kv: str(kv[0])):
                flat = (np.concatenate([p._array.reshape(-1) for p in ps]) if k == self.comm.rank
                        else np.empty(sum(p._array.size for p in ps), dtype))
                self.comm.broadcast(flat, root=k)
                if k != self.comm.rank:
                    at = 0
                    for p in ps:
                        p._array[...] = flat[at:at + p._array.size].reshape(p._array.shape)
                        at += p._array.size


class ZeroRedundancyOptimizer(Optimizer):
    """``optimizer_class(parameters, **defaults)`` over the trainable parameters of a
    ``DistributedDataParallel`` model, with each rank updating only its share.

    Unlike torch's, it takes the wrapper (it changes where the wrapper sends gradients).
    ``optimizer_class`` may also be an optimizer already built over the model's trainable
    parameters (state loaded, schedulers attached): it is then the plain optimizer inside.
    ``param_groups``, ``state``, ``zero_grad`` and learning-rate schedulers work as on the
    plain optimizer; ``state_dict()`` is collective (every rank must call it) and returns
    the whole optimizer's state, loadable by a plain optimizer or at another world size;
    ``load_state_dict`` keeps only this rank's share. Optimizers whose step is not one
    independent update per parameter (LBFGS) are refused.

        ddp = dist.DistributedDataParallel(model)
        opt = dist.ZeroRedundancyOptimizer(ddp, optim.SGD, lr=0.1, momentum=0.9)
    """

    def __init__(self, ddp, optimizer_class, **defaults):
        from .ddp import DistributedDataParallel

        if not isinstance(ddp, DistributedDataParallel):
            raise TypeError(f"ZeroRedundancyOptimizer: expected a DistributedDataParallel model, got "
                            f"{type(ddp).__name__}")
        params = [p for p in ddp.module.parameters() if p.requires_grad]
        built = isinstance(optimizer_class, Optimizer)
        cls = type(optimizer_class) if built else optimizer_class
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"optimizer_class: expected a cnnfast.optim.Optimizer subclass (or an optimizer over the "
                            f"model's parameters), got {optimizer_class!r}")
        if cls.step is not Optimizer.step:
            raise TypeError(f"ZeroRedundancyOptimizer: {cls.__name__}'s step needs every parameter at once and "
                            "cannot be sharded")
        if built:
            if defaults:
                raise TypeError("ZeroRedundancyOptimizer: hyper-parameters go to the optimizer, which is already built")
            theirs = {id(p) for g in optimizer_class.param_groups for p in g["params"]}
            if theirs != {id(p) for p in params}:
                raise ValueError("ZeroRedundancyOptimizer: the optimizer must hold exactly the model's trainable "
                                 "parameters")
        self.optimizer = optimizer_class if built else cls(params, **defaults)
        self.ddp = ddp
        self.comm = ddp.comm
        # Each rank applies its share with its own hyper-parameters: they must agree.
        mine = (cls.__name__, [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups])
        for r, theirs in enumerate(self.comm.allgather_object(mine)):
            if repr(theirs) != repr(mine):
                raise ValueError(f"ZeroRedundancyOptimizer: rank {r} has {theirs[0]} {theirs[1]}, rank "
                                 f"{self.comm.rank} has {mine[0]} {mine[1]}; every rank must build the same optimizer")
        self._sharding = ddp._shard(params)
        self._owned = {id(p) for i, p in enumerate(params) if self._sharding.owner[i] == self.comm.rank}
        self._drop_unowned_state()

    # The plain optimizer's attributes, so that schedulers and user code see one optimizer.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    @property
    def owned_parameters(self) -> list:
        """The parameters this rank updates (and holds gradients and state for)."""
        return [p for g in self.param_groups for p in g["params"] if id(p) in self._owned]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        # The plain step over this rank's share of each group (after a no_sync backward the
        # other parameters still hold local gradients, which only their owner may apply).
        groups = self.optimizer.param_groups
        full = [g["params"] for g in groups]
        try:
            for g in groups:
                g["params"] = [p for p in g["params"] if id(p) in self._owned]
            loss = self.optimizer.step(closure)
        finally:
            for g, ps in zip(groups, full):
                g["params"] = ps
        self._sharding.publish()
        return loss

    def state_dict(self) -> dict:
        local = self.optimizer.state_dict()
        merged = {}
        for part in self.comm.allgather_object(local["state"]):
            merged.update(part)
        return {"state": merged, "param_groups": local["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)
        self._drop_unowned_state()

    def _drop_unowned_state(self) -> None:
        for p in list(self.optimizer.state):
            if id(p) not in self._owned:
                del self.optimizer.state[p]

    def __repr__(self):
        return f"ZeroRedundancyOptimizer(rank {self.comm.rank} of {self.comm.size}, {self.optimizer!r})"
