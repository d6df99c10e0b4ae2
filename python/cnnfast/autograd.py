"""The autograd engine: ``Function`` (a differentiable op), its ``Context``, and the
iterative backward pass.

A Function works on NumPy arrays, never on Tensors, exactly like
``torch.autograd.Function``::

    class Square(Function):
        @staticmethod
        def forward(ctx, x):                 # x: np.ndarray
            ctx.save_for_backward(x)
            return x * x                     # np.ndarray (or a tuple of them)

        @staticmethod
        def backward(ctx, grad_out):         # one gradient per output
            (x,) = ctx.saved_tensors
            return 2 * x * grad_out          # one gradient (or None) per forward input

    y = Square.apply(t)                      # t: Tensor -> y: Tensor with y.grad_fn set

``apply`` unwraps Tensor arguments to arrays, runs ``forward`` without recording,
and links the outputs into the graph when grad mode is on and an input requires
grad. ``backward`` walks the graph in topological order with an explicit stack
(no recursion, so a 1,000-layer chain is fine), checks every gradient's shape,
accumulates into leaf ``.grad`` (``+=``, as torch) and frees saved arrays unless
``retain_graph=True``.

Anomaly mode (``detect_anomaly()`` / ``set_detect_anomaly(True)``, as torch.autograd):
after every Function's forward and every backward, the floating outputs are checked
for NaN and infinity, and the first non-finite one raises ``FloatingPointError`` naming
the op, the pass (forward or backward), the output, whether its inputs were already
non-finite, and (for backward) where the forward op was called. It costs a pass over
every output, so it is off by default; the mode is process-wide, as in torch.
"""
from __future__ import annotations

import os
import sys
import threading
import weakref

import numpy as np

from . import _device

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


def _set_grad_enabled(flag: bool) -> None:
    _state.grad_enabled = flag


class no_grad:
    """Context manager (and decorator) that stops graph recording, as ``torch.no_grad``."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        _set_grad_enabled(self._prev)
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper


class enable_grad(no_grad):
    def __enter__(self):
        self._prev = is_grad_enabled()
        _set_grad_enabled(True)
        return self


class set_grad_enabled:
    """``set_grad_enabled(mode)``: switches recording on or off, now and as a context manager."""

    def __init__(self, mode: bool):
        self._prev = is_grad_enabled()
        _set_grad_enabled(bool(mode))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set_grad_enabled(self._prev)
        return False


# ---- anomaly detection ------------------------------------------------------------------

_anomaly = {"enabled": False, "check_nan": True}


def is_anomaly_enabled() -> bool:
    return _anomaly["enabled"]


def is_anomaly_check_nan_enabled() -> bool:
    return _anomaly["enabled"] and _anomaly["check_nan"]


class set_detect_anomaly:
    """``set_detect_anomaly(mode, check_nan=True)``: switches anomaly detection on or off
    now, and back to the previous setting when used as a context manager (torch's name)."""

    def __init__(self, mode: bool, check_nan: bool = True):
        self._prev = dict(_anomaly)
        _anomaly.update(enabled=bool(mode), check_nan=bool(check_nan))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _anomaly.update(self._prev)
        return False


class detect_anomaly:
    """Context manager (and decorator) that turns anomaly detection on inside its block::

        with cnnfast.autograd.detect_anomaly():
            loss = model(x).sum(); loss.backward()   # FloatingPointError at the first NaN/Inf
    """

    def __init__(self, check_nan: bool = True):
        self.check_nan = bool(check_nan)

    def __enter__(self):
        self._prev = dict(_anomaly)
        _anomaly.update(enabled=True, check_nan=self.check_nan)
        return self

    def __exit__(self, *exc):
        _anomaly.update(self._prev)
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper


def _nonfinite(a) -> str:
    """"" when ``a`` is not a floating array or holds only finite values, else what it holds
    ("nan", "inf" or "nan and inf")."""
    if isinstance(a, _device.DeviceArray):  # counted on the device: one number comes back
        return "" if a.all_finite() else "nan or inf"
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fc":
        return ""
    if np.isfinite(a).all():
        return ""
    kinds = [k for k, test in (("nan", np.isnan), ("inf", np.isinf)) if test(a).any()]
    return " and ".join(kinds)


def _ordinal(i: int) -> str:
    return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def _inputs_note(arrays, what: str) -> str:
    """``what``: the singular noun ("input", "incoming gradient")."""
    bad = [i for i, a in enumerate(arrays) if _nonfinite(a)]
    if not bad:
        return f"; its {what}s were all finite, so this op produced the first non-finite value"
    which = f"{what} {bad[0]} already held" if len(bad) == 1 else f"{what}s {', '.join(map(str, bad))} already held"
    return f"; its {which} non-finite values, so they came from earlier (a leaf, the data, or outside autograd)"


_HERE = os.path.dirname(os.path.abspath(__file__))
_INTERNAL = (os.path.join(_HERE, "autograd.py"), os.path.join(_HERE, "tensor.py"),
             os.path.join(_HERE, "functional", ""))
_internal_files: dict = {}  # co_filename -> whether it is one of _INTERNAL (abspath is slow per frame)


def _is_internal(filename: str) -> bool:
    known = _internal_files.get(filename)
    if known is None:
        known = _internal_files[filename] = os.path.abspath(filename).startswith(_INTERNAL)
    return known


def _call_site() -> str:
    """The innermost caller outside the autograd machinery and the functional wrappers
    (typically a layer's forward), as "file:line in function"."""
    frame = sys._getframe(1)
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _check_forward(cls, outs, raw) -> None:
    for i, o in enumerate(outs):
        kind = _nonfinite(o)
        if kind:
            site = _call_site()
            raise FloatingPointError(
                f"Function '{cls.__name__.lstrip('_')}' returned {kind} values in its {_ordinal(i)} output during "
                f"forward" + _inputs_note(raw, "input") + (f" (called from {site})" if site else ""))


def _check_backward(node, in_grads, grad_outputs) -> None:
    for i, g in enumerate(in_grads):
        if g is None or i >= len(node.inputs) or node.inputs[i] is None:
            continue
        kind = _nonfinite(_device.asarray(g))
        if kind:
            raise FloatingPointError(
                f"Function '{node.name()}' returned {kind} values in its {_ordinal(i)} output (the gradient of "
                f"forward input {i}) during backward" + _inputs_note(grad_outputs, "incoming gradient")
                + (f"; the forward op was called from {node.site}" if node.site else ""))


class Context:
    """What a Function's forward leaves for its backward. ``grad_into`` (set by the engine
    just before backward, usually None): {input index: array} where a leaf input's gradient
    may be written instead of a new array (see ``_grad_destinations``)."""

    grad_into = None

    def __init__(self):
        self.saved_tensors: tuple = ()
        self.needs_input_grad: tuple = ()

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class Edge:
    """Where a non-leaf input's gradient goes: its producer node and output index, with the
    shape and dtype that backward checks. A Node keeps Edges, not the input Tensors, so an
    input's array is freed as soon as nothing else holds it; what backward needs survives
    only through ``save_for_backward`` (a ReLU that saves its output lets the batch-norm
    output before it go at once, as in torch)."""

    __slots__ = ("grad_fn", "_output_index", "shape", "dtype")
    _post_accumulate_grad_hooks = ()  # duck-types with a leaf Tensor in the backward loop

    def __init__(self, t):
        a = t._array
        self.grad_fn, self._output_index, self.shape, self.dtype = t.grad_fn, t._output_index, a.shape, a.dtype


class Node:
    """A recorded call: the Function, its context, and where its inputs came from."""

    __slots__ = ("fn", "ctx", "inputs", "n_outputs", "out_meta", "released", "site", "watch", "__weakref__")

    def __init__(self, fn, ctx, inputs, n_outputs, out_meta, site: str = ""):
        self.fn = fn
        self.ctx = ctx
        # Per forward argument: None (no gradient needed), a leaf Tensor, or an Edge.
        self.inputs = inputs
        self.n_outputs = n_outputs
        self.out_meta = out_meta  # (shape, dtype) of each output, for zero-filling unused ones
        self.released = False
        self.site = site  # where the forward op was called (anomaly mode only)
        # output index -> weak reference to the output Tensor with hooks or retain_grad
        # (registered by the Tensor), so its complete gradient is shown to it once.
        self.watch = None

    def _watch(self, t) -> None:
        if self.watch is None:
            self.watch = {}
        self.watch[t._output_index] = weakref.ref(t)

    def name(self) -> str:
        return f"{self.fn.__name__.lstrip('_')}Backward"

    def __repr__(self):
        return f"<{self.name()}>"


class Function:
    """Base class of differentiable operations; see the module docstring."""

    # Callables (cls, args, outputs) told of every apply; cnnfast.onnx.export traces with one.
    _observers: list = []
    # Callables (node, args) told of every recorded node, after its forward (the memory
    # profiler reads what the node saved); unlike _observers they change no op's behaviour.
    _node_hooks: list = []
    # The name under which cnnfast.onnx.export finds this op's ONNX emitter (its table is
    # keyed by these names); None: the op cannot be exported.
    onnx_op = None

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        Tensor = _tensor_class()
        ctx = Context()
        # One pass over the arguments: a training step makes ~100 of these calls, and the
        # per-call Python work is what a small model's step is made of.
        raw, needs, any_needs = [], [], False
        for a in args:
            if isinstance(a, Tensor):
                raw.append(a._array)
                n = a.requires_grad
                any_needs = any_needs or n
                needs.append(n)
            else:
                raw.append(a)
                needs.append(False)
        needs = tuple(needs)
        ctx.needs_input_grad = needs
        prev = getattr(_state, "grad_enabled", True)
        _state.grad_enabled = False
        try:
            out = cls.forward(ctx, *raw, **kwargs)
        finally:
            _state.grad_enabled = prev
        multi = out.__class__ is tuple or isinstance(out, tuple)
        outs = out if multi else (out,)
        # NumPy turns 0-d results into scalars; keep everything an ndarray.
        if not all(o.__class__ is np.ndarray for o in outs):
            outs = tuple(np.asarray(o) if isinstance(o, np.generic) else o for o in outs)
        anomaly = _anomaly["enabled"]
        if anomaly and _anomaly["check_nan"]:
            _check_forward(cls, outs, raw)
        record = prev and any_needs
        node = None
        if record:
            meta = [(o.shape, o.dtype) if o.__class__ is np.ndarray else (np.shape(o), getattr(o, "dtype", None))
                    for o in outs]
            # Every input that needs a gradient is a Tensor with requires_grad: a leaf is
            # referenced itself (its .grad is written), any other through an Edge.
            node = Node(cls, ctx, [(a if a.grad_fn is None else Edge(a)) if n else None for a, n in zip(args, needs)],
                        len(outs), meta, _call_site() if anomaly else "")
        wrapped = []
        for i, o in enumerate(outs):
            differentiable = record and (o.dtype.kind == "f" if o.__class__ is np.ndarray else _device.is_float_array(o))
            t = Tensor._wrap(o, requires_grad=differentiable)
            if differentiable:
                t.grad_fn = node
                t._output_index = i
            wrapped.append(t)
        if record:
            ctx._saved_versions = _saved_versions(ctx, args, wrapped)
            for hook in Function._node_hooks:
                hook(node, args)
        for observe in Function._observers:
            observe(cls, args, tuple(wrapped))
        return tuple(wrapped) if multi else wrapped[0]


_tensor_cls = []


def _tensor_class():
    """cnnfast.tensor.Tensor, imported on first use (tensor.py imports this module)."""
    if not _tensor_cls:
        from .tensor import Tensor

        _tensor_cls.append(Tensor)
    return _tensor_cls[0]


def _owner(a):
    return a if a.base is None else a.base


def _saved_versions(ctx, args, outputs) -> tuple:
    """(version counter, its value now, which tensor) for every input or output whose
    storage the forward saved (in ``saved_tensors`` or as a ctx attribute), so that
    backward can refuse to run on values changed in place since (torch's version check)."""
    # The storages the forward kept, in the order it kept them (``saved_tensors`` is the
    # first entry of ctx.__dict__).
    kept = []
    for k, v in ctx.__dict__.items():
        if k == "needs_input_grad":
            continue
        if isinstance(v, np.ndarray):
            kept.append(id(_owner(v)))
        elif isinstance(v, (tuple, list)):
            for s in v:
                if isinstance(s, np.ndarray):
                    kept.append(id(_owner(s)))
    if not kept:
        return ()
    # Inputs first: an in-place op returns its input's storage, and the input's counter
    # (not the discarded output wrapper's) is the one later writes bump.
    Tensor = _tensor_class()
    owners = {}
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            owners.setdefault(id(_owner(a._array)), (a, "input", i))
    for i, t in enumerate(outputs):
        owners.setdefault(id(_owner(t._array)), (t, "output", i))
    found = {}
    for key in kept:
        hit = owners.get(key)
        if hit is not None and id(hit[0]._vc) not in found:
            t, what, i = hit
            found[id(t._vc)] = (t._vc, t._vc[0], f"{what} {i}", t.shape, t.dtype)
    return tuple(found.values())


def _check_versions(node) -> None:
    for counter, saved, what, shape, dtype in getattr(node.ctx, "_saved_versions", ()):
        if counter[0] != saved:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"[{dtype} {list(shape)}], which is {what} of {node.name()}, is at version {counter[0]}; expected "
                f"version {saved} instead")


def _topological_order(root: Node) -> list:
    """Nodes reachable from root, each before every node that produces one of its inputs
    (a reverse post-order of an explicit-stack depth-first search). A node is marked when
    it is expanded, not when it is pushed: marking on push can finish a shared producer
    before one of its consumers, which would run its backward on a partial gradient."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for t in node.inputs:
            parent = None if t is None else t.grad_fn
            if parent is not None and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def _run_hooks(t, g: np.ndarray) -> np.ndarray:
    for hook in t._hooks:
        replaced = hook(g)
        if replaced is not None:
            g = _device.asarray(getattr(replaced, "_array", replaced))
    return g


_callbacks = threading.local()


def queue_callback(fn) -> None:
    """Run ``fn()`` once when the backward pass that is running now ends (after every
    leaf's ``.grad`` is written), as torch's ``Variable._execution_engine.queue_callback``;
    data-parallel training finishes its gradient communication there."""
    queue = getattr(_callbacks, "queue", None)
    if queue is None:
        raise RuntimeError("queue_callback: no backward pass is running")
    queue.append(fn)


def _in_backward() -> bool:
    """Whether a backward pass is running on this thread."""
    return getattr(_callbacks, "queue", None) is not None


def _run_callbacks(outer) -> None:
    queue, _callbacks.queue = _callbacks.queue, outer
    for fn in queue:
        fn()


def _flush_leaf(leaf_grads: dict, key: int) -> None:
    """Accumulate a leaf's summed gradient into its ``.grad``, then run its
    post-accumulate-grad hooks (which see the complete ``.grad``)."""
    t, g = leaf_grads.pop(key)
    g = _run_hooks(t, g)
    # .grad may take over g instead of copying it (25 MB activations paid a full
    # copy per backward) only when nothing else can see g: its references are
    # this local and getrefcount's argument, so it is not the caller's gradient,
    # a saved array, another leaf's gradient or a view's base. The array the leaf's
    # own gradient sink handed out is the leaf's by construction.
    delivered, t._grad_delivered = t._grad_delivered, None
    exclusive = (sys.getrefcount(g) <= 2 and g.base is None) or g is delivered  # before g is pushed as an argument
    t._accumulate(g, exclusive)
    for hook in t._post_accumulate_grad_hooks:
        hook(t)


def _grad_destinations(node, pending: dict, leaf_grads: dict):
    """{input index: array} for the leaf inputs of ``node`` whose gradient sink offers the
    array their gradient should be written into (``ctx.grad_into``; an op may use it or not),
    or None. Offered only where that write is the leaf's whole gradient of this pass: the
    leaf holds no ``.grad``, this node is its one consumer (no earlier contribution, none
    pending, one use here), so the array will become ``.grad`` as it is, without a copy."""
    into = None
    for i, t in enumerate(node.inputs):
        sink = getattr(t, "_grad_sink", None)
        if (sink is None or t.grad is not None or pending.get(id(t), 1) != 0 or id(t) in leaf_grads
                or sum(u is t for u in node.inputs) != 1):
            continue
        dest = sink(t)
        if dest is not None:
            into = into if into is not None else {}
            into[i] = dest
            t._grad_delivered = dest
    return into


def _flush_complete(pending: dict, leaf_grads: dict, inputs: list) -> None:
    """Flush the hooked leaves among ``inputs`` whose last consumer has now run."""
    for t in inputs:
        if t is not None and pending.get(id(t)) == 0:
            del pending[id(t)]
            if id(t) in leaf_grads:
                _flush_leaf(leaf_grads, id(t))


def _pending_uses(order: list) -> tuple:
    """For leaves with post-accumulate-grad hooks: how many graph inputs still have to run
    before their gradient is complete (a leaf used twice by one node counts twice); and the
    ids of the nodes with such a leaf that has a gradient sink (the only ones to ask)."""
    pending: dict[int, int] = {}
    sink_nodes = set()
    for node in order:
        for t in node.inputs:
            if t is not None and t._post_accumulate_grad_hooks and t.grad_fn is None:
                pending[id(t)] = pending.get(id(t), 0) + 1
                if t._grad_sink is not None:
                    sink_nodes.add(id(node))
    return pending, sink_nodes


def backward(tensor, gradient=None, retain_graph: bool = False) -> None:
    """Accumulate d(tensor)/d(leaf) * gradient into every leaf's ``.grad``."""
    outer = getattr(_callbacks, "queue", None)
    _callbacks.queue = []
    try:
        _backward_pass(tensor, gradient, retain_graph)
    except BaseException:
        _callbacks.queue = outer
        raise
    _run_callbacks(outer)


def _backward_pass(tensor, gradient, retain_graph: bool) -> None:
    if not tensor.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    if gradient is None:
        if tensor._array.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs, got shape {tensor.shape}")
        gradient = np.ones_like(tensor._array)
    else:
        gradient = _device.asarray(getattr(gradient, "_array", gradient), dtype=tensor._array.dtype)
        if gradient.shape != tensor.shape:
            raise ValueError(f"gradient: expected shape {tensor.shape}, got {gradient.shape}")
    if tensor.grad_fn is None:  # a leaf that requires grad
        _flush_leaf({0: [tensor, gradient]}, 0)
        return
    root = tensor.grad_fn
    # grads[node id] = list of per-output gradients, summed over every consumer
    grads: dict[int, list] = {id(root): [None] * root.n_outputs}
    grads[id(root)][tensor._output_index] = gradient
    # Leaf gradients are summed here and accumulated into .grad once, after the pass.
    leaf_grads: dict[int, list] = {}
    order = _topological_order(root)
    # Leaves with post-accumulate-grad hooks (data-parallel gradient buckets) get their .grad
    # as soon as their last consumer has run, so a hook can start communicating it while
    # the rest of the pass computes; the other leaves are accumulated after the pass.
    pending, sink_nodes = _pending_uses(order)
    with no_grad():
        for node in order:
            if node.released:
                raise RuntimeError(
                    "Trying to backward through the graph a second time; pass retain_graph=True "
                    "to the first backward() to keep it")
            if pending:
                for t in node.inputs:
                    if t is not None and id(t) in pending:
                        pending[id(t)] -= 1
            outs = grads.pop(id(node), None)
            if outs is None:
                _flush_complete(pending, leaf_grads, node.inputs)
                continue
            if node.watch:
                # Non-leaf tensors with hooks or retain_grad see their complete gradient
                # once, when their node runs, as in torch.
                for i, ref in node.watch.items():
                    t = ref()
                    if t is not None and outs[i] is not None:
                        outs[i] = _run_hooks(t, outs[i])
                        if t._retains_grad:
                            t._accumulate(outs[i])
            if any(g is None for g in outs):
                like = next((g for g in outs if g is not None), None)  # unused outputs get zeros on its device
                outs = [g if g is not None else _device.zeros(shape, dtype, like)
                        if dtype is not None and dtype.kind == "f" else None
                        for g, (shape, dtype) in zip(outs, node.out_meta)]
            if node.ctx.__dict__.get("_saved_versions"):
                _check_versions(node)
            if id(node) in sink_nodes:
                node.ctx.grad_into = _grad_destinations(node, pending, leaf_grads)
            in_grads = node.fn.backward(node.ctx, *outs)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if _anomaly["enabled"] and _anomaly["check_nan"]:
                _check_backward(node, in_grads, outs)
            if len(in_grads) < len(node.inputs):
                raise RuntimeError(f"{node.name()} returned {len(in_grads)} gradients for {len(node.inputs)} inputs")
            for t, g in zip(node.inputs, in_grads):
                if t is None or g is None:
                    continue
                if g.__class__ is not np.ndarray:
                    g = _device.asarray(g)
                if g.shape != t.shape:
                    raise RuntimeError(f"{node.name()} returned a gradient of shape {g.shape} for an input of "
                                       f"shape {t.shape}")
                if g.dtype != t.dtype:
                    g = g.astype(t.dtype)
                if t.grad_fn is None:
                    entry = leaf_grads.get(id(t))
                    if entry is None:
                        leaf_grads[id(t)] = [t, g]
                    else:
                        entry[1] = entry[1] + g
                else:
                    slot = grads.setdefault(id(t.grad_fn), [None] * t.grad_fn.n_outputs)
                    i = t._output_index
                    slot[i] = g if slot[i] is None else slot[i] + g
            if pending:
                _flush_complete(pending, leaf_grads, node.inputs)
            # Drop this node's gradients now: the ones passed on live in grads/leaf_grads
            # until their consumer runs, and these names would otherwise keep them (and
            # the incoming gradient) alive through the next node's backward.
            in_grads = outs = g = t = None
            if not retain_graph:
                node.released = True
                node.ctx.saved_tensors = ()
                node.ctx.__dict__ = {"saved_tensors": (), "needs_input_grad": node.ctx.needs_input_grad}
                node.inputs = [None] * len(node.inputs)
        # The last node's gradients (in_grads, and the loop's g) would otherwise stay referenced
        # here, and _flush_leaf would copy a leaf's first gradient instead of keeping it.
        in_grads = outs = g = None
        for key in list(leaf_grads):
            _flush_leaf(leaf_grads, key)
