"""Activation checkpointing, as ``torch.utils.checkpoint``: run part of a model without
keeping its intermediate activations, and recompute them during backward.

    from cnnfast.utils.checkpoint import checkpoint
    y = checkpoint(block, x)          # block(x), but only x is kept for backward

The forward runs ``function(*args)`` without recording; the graph gets one node that
keeps the Tensor arguments (not copies: they are alive anyway when a caller passes its
own activations, as DenseNet's memory-efficient layers pass the block's feature list).
Its backward re-runs ``function`` with recording on, with the random-number state of
the first run (dropout draws the same mask), backpropagates the incoming gradient
through that graph, which writes the parameters' ``.grad``, and hands the arguments'
gradients on. The cost is one more forward of ``function`` per backward.

Differences from torch, on purpose: when no Tensor argument requires grad the function
simply runs recorded (torch's reentrant variant would leave the parameters without
gradients). Batch-norm layers inside ``function`` update their running statistics in
both runs, as in torch.
"""
from __future__ import annotations

from .. import random as _random
from ..autograd import Function, backward as _backward, enable_grad, is_grad_enabled, no_grad
from ..tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


def _outputs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


class _Checkpoint(Function):
    @staticmethod
    def forward(ctx, run, is_tensor, rng_state, *args):
        ctx.run, ctx.is_tensor, ctx.rng_state = run, is_tensor, rng_state
        ctx.save_for_backward(*(a for a, t in zip(args, is_tensor) if t))
        ctx.others = tuple(None if t else a for a, t in zip(args, is_tensor))
        with no_grad():
            out = run(*_rewrap(args, is_tensor, ()))
        outs = _outputs(out)
        for o in outs:
            if not isinstance(o, Tensor):
                raise TypeError(f"checkpoint: the function must return Tensors, got {type(o).__name__}")
        ctx.multi = isinstance(out, tuple)
        arrays = tuple(o._array for o in outs)
        return arrays if ctx.multi else arrays[0]

    @staticmethod
    def backward(ctx, *grads):
        saved = iter(ctx.saved_tensors)
        args = tuple(next(saved) if t else o for t, o in zip(ctx.is_tensor, ctx.others))
        needs = ctx.needs_input_grad[3:]
        inputs = _rewrap(args, ctx.is_tensor, needs)
        current = _random.get_rng_state() if ctx.rng_state is not None else None
        if current is not None:
            _random.set_rng_state(ctx.rng_state)
        try:
            with enable_grad():
                outs = _outputs(ctx.run(*inputs))
        finally:
            if current is not None:
                _random.set_rng_state(current)
        live = [(o, g) for o, g in zip(outs, grads) if o.requires_grad and g is not None]
        for i, (o, g) in enumerate(live):
            _backward(o, g, retain_graph=i < len(live) - 1)
        del outs, live
        result = [None, None, None]
        for x, need in zip(inputs, needs):
            result.append(x.grad._array if need and isinstance(x, Tensor) and x.grad is not None else None)
        return tuple(result)


def _rewrap(args, is_tensor, needs) -> list:
    """Fresh leaf Tensors over the argument arrays (requiring grad where the original did),
    so the recomputed graph ends at them and their ``.grad`` is the gradient to pass on."""
    out = []
    for i, (a, t) in enumerate(zip(args, is_tensor)):
        if t:
            leaf = Tensor._wrap(a)
            if i < len(needs) and needs[i]:
                leaf.requires_grad = True
            a = leaf
        out.append(a)
    return out


def checkpoint(function, *args, use_reentrant: bool | None = None, preserve_rng_state: bool = True,
               **kwargs):
    """``function(*args, **kwargs)`` with its intermediate activations recomputed in
    backward instead of kept (see the module docstring). ``use_reentrant`` is accepted for
    torch compatibility; both of torch's variants give the same result here."""
    is_tensor = tuple(isinstance(a, Tensor) for a in args)
    if not is_grad_enabled() or not any(a.requires_grad for a in args if isinstance(a, Tensor)):
        return function(*args, **kwargs)
    run = (lambda *a: function(*a, **kwargs)) if kwargs else function
    state = _random.get_rng_state() if preserve_rng_state else None
    return _Checkpoint.apply(run, is_tensor, state, *args)


def checkpoint_sequential(functions, segments: int, input, use_reentrant: bool | None = None, **kwargs):
    """Run a Sequential (or list of modules) in ``segments`` checkpointed chunks, the last
    chunk recorded normally, as ``torch.utils.checkpoint.checkpoint_sequential``."""
    fns = list(functions.children()) if hasattr(functions, "children") else list(functions)
    if segments < 1:
        raise ValueError(f"segments: expected a positive number, got {segments}")
    size = max(1, len(fns) // segments)
    end = 0
    for start in range(0, len(fns) - size, size):
        end = start + size
        chunk = fns[start:end]

        def run(x, chunk=chunk):
            for f in chunk:
                x = f(x)
            return x

        input = checkpoint(run, input, **kwargs)
    for f in fns[end:]:
        input = f(input)
    return input
