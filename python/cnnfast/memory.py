"""Where a training step's memory goes: ``profile_step`` runs one step and reports the
activations each op saved for backward, the kernels' workspaces, the gradients, the
optimizer state and the peak (issue 22).

    report = cnnfast.memory.profile_step(step, model=model, optimizer=opt)
    print(report)                      # a table, largest savers first
    report.peak_bytes, report.to_dict()

Accounting (the same as ``cnnfast.summary``'s training-memory estimate):
- saved activations: every array a recorded op keeps for its backward (``save_for_backward``
  and ctx attributes), counted once per storage however many ops share it (a ReLU's output
  that the next convolution also saves), attributed to the first op that saved it;
  parameters that ops save (a convolution's weight) are parameters, not activations.
- workspaces: the kernels' workspace pool (im2col column matrices, Winograd transforms,
  per-thread partial gradients) at its peak during the step, idle cached blocks
  included, plus the GEMM's per-thread packing buffers.
- the peak: what existed before the step (parameters, buffers, optimizer state, old
  gradients) + the largest amount of array memory the step held at once (NumPy reports
  its buffers to tracemalloc) + the workspace peak. ``peak_rss_bytes`` is the operating
  system's figure for the same step (Linux: VmHWM after resetting it), interpreter,
  libraries and allocator slack included.
"""
from __future__ import annotations

import gc
import resource
import tracemalloc
import weakref
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _C
from . import autograd as _autograd
from .autograd import Function

__all__ = ["MemoryReport", "profile_step", "peak_rss_bytes", "reset_peak_rss", "workspace_stats"]


def workspace_stats() -> dict:
    """The kernel workspace pool's counters (bytes): see ``cnnfast._C.workspace_stats``."""
    return dict(_C.workspace_stats())


def peak_rss_bytes() -> int:
    """The process's peak resident set size: VmHWM (since the last ``reset_peak_rss``)
    where /proc has it, else getrusage's lifetime maximum."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_rss() -> bool:
    """Restart the peak RSS at the current RSS (Linux: /proc/self/clear_refs); False where
    the system cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _arrays_of(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays_of(o)


def _tensor_bytes(t) -> int:
    a = getattr(t, "_array", t)
    return int(a.nbytes) if isinstance(a, np.ndarray) else 0


def _state_bytes(optimizer) -> int:
    """Arrays (or Tensors) held in an optimizer's per-parameter state."""
    total, seen = 0, set()
    state = getattr(optimizer, "state", {}) or {}
    for st in state.values():
        vals = st.values() if isinstance(st, dict) else (st if isinstance(st, (list, tuple)) else [st])
        for v in vals:
            a = getattr(v, "_array", v)
            if isinstance(a, np.ndarray) and id(_owner(a)) not in seen:
                seen.add(id(_owner(a)))
                total += int(_owner(a).nbytes)
    return total


@dataclass
class OpSaved:
    op: str
    calls: int = 0
    saved_bytes: int = 0


@dataclass
class MemoryReport:
    saved_by_op: list = field(default_factory=list)   # OpSaved, largest first
    saved_activation_bytes: int = 0
    workspace_peak_bytes: int = 0                     # pool peak (in use + idle) during the step
    scratch_bytes: int = 0                            # GEMM packing buffers
    gradient_bytes: int = 0                           # parameter .grad after the step
    optimizer_state_bytes: int = 0
    param_bytes: int = 0
    buffer_bytes: int = 0
    before_bytes: int = 0                             # arrays alive before the step (see module doc)
    step_peak_bytes: int = 0                          # tracemalloc peak over the step
    peak_bytes: int = 0
    peak_rss_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self, top: int = 12) -> str:
        mib = 1 << 20
        lines = ["memory of one training step (MiB)",
                 f"  {'op':<28}{'calls':>6}{'saved for backward':>20}"]
        for o in self.saved_by_op[:top]:
            lines.append(f"  {o.op:<28}{o.calls:>6}{o.saved_bytes / mib:>20.1f}")
        rest = self.saved_by_op[top:]
        if rest:
            lines.append(f"  {'(' + str(len(rest)) + ' more op types)':<28}{sum(o.calls for o in rest):>6}"
                         f"{sum(o.saved_bytes for o in rest) / mib:>20.1f}")
        for name, v in (("saved activations", self.saved_activation_bytes),
                        ("workspaces (peak)", self.workspace_peak_bytes),
                        ("GEMM packing buffers", self.scratch_bytes),
                        ("gradients", self.gradient_bytes),
                        ("optimizer state", self.optimizer_state_bytes),
                        ("parameters + buffers", self.param_bytes + self.buffer_bytes),
                        ("peak (tracked)", self.peak_bytes),
                        ("peak RSS of the step", self.peak_rss_bytes)):
            lines.append(f"  {name:<34}{v / mib:>20.1f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _SavedRecorder:
    def __init__(self):
        self.by_op: dict[str, OpSaved] = {}
        # id -> weak reference: holding the arrays would keep them past their backward
        # and raise the very peak being measured; the reference tells a reused id apart.
        self.seen: dict = {}

    def __call__(self, node, args):
        if _autograd._in_backward():
            return  # recomputed in backward (checkpointing): transient, not kept from the forward
        params = {id(_owner(a._array)) for a in args
                  if hasattr(a, "_array") and a.grad_fn is None and a.requires_grad}
        entry = self.by_op.setdefault(node.fn.__name__.lstrip("_"), OpSaved(node.fn.__name__.lstrip("_")))
        entry.calls += 1
        ctx = node.ctx
        for v in (ctx.saved_tensors, *(x for k, x in ctx.__dict__.items() if k != "saved_tensors")):
            for a in _arrays_of(v):
                o = _owner(a)
                ref = self.seen.get(id(o))
                if (ref is not None and ref() is o) or id(o) in params:
                    continue
                self.seen[id(o)] = weakref.ref(o)
                entry.saved_bytes += int(o.nbytes)


def profile_step(step, model=None, optimizer=None) -> MemoryReport:
    """Run ``step()`` (forward, backward and optimizer step of one batch) once and report
    where its memory went. ``model`` and ``optimizer``, when given, let the report count
    parameters, buffers, gradients and optimizer state; the peak counts what was alive
    before the step only through them. The step runs as it would otherwise (the recorder
    only reads what each op saved), so run it on a warm model (after one step) to see
    the steady state with the optimizer state in place."""
    params = list(model.parameters()) if model is not None else []
    param_bytes = sum(_tensor_bytes(p) for p in params)
    buffer_bytes = sum(_tensor_bytes(b) for b in model.buffers()) if model is not None else 0
    # Old gradients count only if they outlive the step's zero_grad (set_to_none frees them
    # at its start, before any peak); weak references tell which.
    old_grads = [weakref.ref(p.grad._array) for p in params if p.grad is not None]
    state_before = _state_bytes(optimizer) if optimizer is not None else 0
    rec = _SavedRecorder()
    gc.collect()
    # Idle blocks left by other models or batch sizes would count in the peak although a
    # few steps of this one free them (core/workspace.h): start from an empty cache.
    _C.workspace_trim()
    _C.workspace_reset_peak()
    reset_peak_rss()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    Function._node_hooks.append(rec)
    try:
        step()
    finally:
        Function._node_hooks.remove(rec)
        peak = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
    ws = _C.workspace_stats()
    r = MemoryReport()
    r.saved_by_op = sorted(rec.by_op.values(), key=lambda o: -o.saved_bytes)
    r.saved_activation_bytes = sum(o.saved_bytes for o in r.saved_by_op)
    r.workspace_peak_bytes = int(ws["peak_total"])
    r.scratch_bytes = int(ws["scratch"])
    r.gradient_bytes = sum(_tensor_bytes(p.grad) for p in params if p.grad is not None)
    r.optimizer_state_bytes = _state_bytes(optimizer) if optimizer is not None else 0
    r.param_bytes, r.buffer_bytes = param_bytes, buffer_bytes
    grads_before = sum(a.nbytes for a in (ref() for ref in old_grads) if a is not None)
    r.before_bytes = param_bytes + buffer_bytes + grads_before + state_before
    r.step_peak_bytes = max(0, peak - start)
    r.peak_bytes = r.before_bytes + r.step_peak_bytes + r.workspace_peak_bytes + r.scratch_bytes
    r.peak_rss_bytes = peak_rss_bytes()
    return r
