"""A frozen graph replayed for one input signature: straight-line calls into the kernels.

The general executor (onnx/_importer.py, ``_Program.execute``) looks every value up by
name, wraps each array in a Tensor, hands freed convolution outputs to a pool and takes
them back; at batch 1 that Python cost ~12 us a step, 0.7 ms of MobileNet-V2's ~4 ms on
2 threads, and more after a layer whose weights had flushed the caches. Once a signature
(the inputs' shapes and dtypes) has run, a Plan replays the same steps with:

- values in a list indexed by slot instead of a dict of names;
- the converters' ``lean`` entry points (arrays in, arrays out: FusedConv, FusedGemm,
  SqueezeExcite, GlobalAveragePool, Flatten); any other step runs its general ``run`` on
  Tensor-wrapped arrays;
- every convolution output that is not a graph output written into a buffer chosen ahead
  by liveness (the smallest block, of any earlier shape, that no later step reads);
- each run of consecutive float32 convolutions and squeeze-excite blocks in one
  ``_C.FrozenConvChain`` call, which checked every layer once when the plan was made.

A value an unknown step produces, and a Flatten output, may be a view of its inputs; such
values keep their inputs' buffers alive, and a buffer anything of which reaches a graph
output is never reused (those are allocated on each call, so callers own what they get).
"""
from __future__ import annotations

import threading

import numpy as np

from .. import _C
from ..tensor import Tensor

# Steps whose outputs are new arrays; any other (Flatten too) may return views of its inputs.
_FRESH_OUTPUT_KINDS = ("FusedConv", "FusedGemm", "SqueezeExcite", "GlobalAveragePool")


def _empty_aligned(shape, dtype, alignment=64):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + alignment, np.uint8)
    skip = -raw.__array_interface__["data"][0] % alignment
    return raw[skip:skip + n].view(dtype).reshape(shape)


def _array(v):
    return v._array if isinstance(v, Tensor) else v


class ShapeRecord(list):
    """The record a planning call keeps (``_Ctx.record``): each step's output shapes and
    dtypes, not the values, so that the call frees and recycles them as any other."""

    def append(self, item):
        st, values = item
        described = []
        for v in values:
            a = _array(v)
            described.append((a.shape, a.dtype) if isinstance(a, np.ndarray) else None)
        super().append((st, described))


class Plan:
    def __init__(self, program, consts: dict, inputs: dict, record: list, ctx_factory):
        """program: the frozen _Program; consts: name -> array; inputs: the recorded call's
        inputs by name; record: that call's ShapeRecord."""
        self._ctx_factory = ctx_factory
        slot_of: dict[str, int] = {}
        init: list = []

        def slot(name):
            if name not in slot_of:
                slot_of[name] = len(init)
                init.append(None)
            return slot_of[name]

        for name in inputs:
            slot(name)
        for name, value in consts.items():
            init[slot(name)] = _array(value)
        self._input_slots = [slot_of[n] for n in inputs]
        steps = program.steps
        shapes = {}
        for st, values in record:
            for name, v in zip([o for o in st.outputs if o], values):
                shapes[name] = v
        outputs = list(program.outputs)

        # Values that may share memory (a step's output a view of its inputs) form one
        # group, whose buffer lives until the group's last reader and escapes when any member
        # is a graph output.
        parent = {}

        def find(n):
            while parent.get(n, n) != n:
                n = parent[n]
            return n

        last_use = {}
        for i, st in enumerate(steps):
            for n in st.reads:
                if n:
                    last_use[n] = i
            if st.op_type not in _FRESH_OUTPUT_KINDS:
                for o in (o for o in st.outputs if o):
                    for n in st.inputs:
                        if n and n not in consts and find(n) != find(o):
                            parent[find(n)] = find(o)
        for o in outputs:
            last_use[o] = len(steps)
        group_last = {}
        for n, i in last_use.items():
            r = find(n)
            group_last[r] = max(group_last.get(r, -1), i)
        escapes = {find(o) for o in outputs}

        # Buffers for convolution outputs, reused by liveness whatever their shape: each
        # output takes the smallest free block that holds it. Blocks keyed by exact shape
        # left MobileNet-V2 at batch 1 with 18.9 MB of buffers, written to and read from
        # cold lines; reusing any freed block needs 9.8 MB and ran 8% faster on one thread,
        # 13% on two (2.81 -> 2.45 ms), EfficientNet-B0 batch 1 6% (benchmarks/RESULTS.md).
        free: list = []
        release_at: dict[int, list] = {}
        self._steps = []
        for i, st in enumerate(steps):
            free.extend(release_at.pop(i, []))
            outs = [o for o in st.outputs if o]
            lean = getattr(st.run, "lean", None)
            buffer = None
            if st.op_type in ("FusedConv", "SqueezeExcite") and lean is not None and len(outs) == 1:
                o = outs[0]
                r = find(o)
                info = shapes.get(o)
                if r not in escapes and info is not None:
                    shape, dtype = info
                    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    fits = [j for j, block in enumerate(free) if block.nbytes >= need]
                    block = free.pop(min(fits, key=lambda j: free[j].nbytes)) if fits \
                        else _empty_aligned((need,), np.uint8)
                    buffer = block[:need].view(dtype).reshape(shape)
                    # Free after the last step that reads the value or any view of it.
                    release_at.setdefault(group_last.get(r, i) + 1, []).append(block)
            self._steps.append((st, lean, [slot_of.get(n) if n else None for n in st.inputs],
                                [slot(o) for o in outs], buffer,
                                tuple(slot_of[n] for n in st.free if n in slot_of and n not in outputs)))

        # Runs of float32 convolutions and squeeze-excite blocks go to one FrozenConvChain
        # each: a step of the loop in run() and conv_forward's checks cost ~5 us each on the
        # caches a layer left cold (MobileNet-V2 batch 1, 52 convolutions in one chain: 2.43
        # -> 2.21 ms on two threads, 4.26 -> 4.04 on one).
        def x_shape(name):
            if name in shapes and shapes[name] is not None:
                return shapes[name][0]
            value = inputs.get(name)
            return getattr(_array(value), "shape", None)

        def one_float32_output(st):
            outs = [o for o in st.outputs if o]
            return len(outs) == 1 and shapes.get(outs[0]) is not None and shapes[outs[0]][1] == np.float32

        self._program = []
        chain, chain_frees, chain_outs = None, [], []

        def close_chain():
            # Outputs freed inside the chain are read by nothing after it: the chain may
            # leave those in its own (channel-blocked) layout.
            freed = set(chain_frees)
            chain.keep([s for s in chain_outs if s not in freed])
            self._program.append((None, chain, tuple(chain_frees)))
        for entry, st in zip(self._steps, steps):
            _, lean, in_slots, out_slots, buffer, frees = entry
            native = getattr(st.run, "native", None) if lean is not None else None
            native_se = getattr(st.run, "native_se", None) if lean is not None else None
            xs = x_shape(st.inputs[0]) if st.inputs and st.inputs[0] else None
            chained = xs is not None and in_slots[0] is not None and one_float32_output(st)
            # A residual input (FusedConv's fourth) must be a value the plan holds.
            residual_ok = len(in_slots) < 4 or in_slots[3] is not None or not st.inputs[3]
            kind = ("se" if native_se is not None else "conv" if native is not None and residual_ok
                    else None) if chained else None
            if kind is None:
                if chain is not None:
                    close_chain()
                    chain, chain_frees, chain_outs = None, [], []
                self._program.append(entry)
                continue
            if chain is None:
                chain = _C.FrozenConvChain()
            if kind == "se":
                chain.add_squeeze_excite(in_slots[0], out_slots[0], list(xs), *native_se, buffer)
            else:
                res = in_slots[3] if len(in_slots) > 3 and in_slots[3] is not None else -1
                chain.add(in_slots[0], res, out_slots[0], list(xs), *native(xs), buffer)
            chain_frees.extend(frees)
            chain_outs.append(out_slots[0])
        if chain is not None:
            close_chain()
        self._init = init
        self._output_slots = [slot_of[o] for o in outputs]
        # The planned buffers are this plan's: a second thread calling the module meanwhile
        # takes the general executor instead (FrozenModule.__call__).
        self.lock = threading.Lock()

    def run(self, arrays: list):
        vals = list(self._init)
        for s, a in zip(self._input_slots, arrays):
            vals[s] = a
        ctx = None
        for entry in self._program:
            if entry[0] is None:
                _, chain, frees = entry
                chain.run(vals)
                for s in frees:
                    vals[s] = None
                continue
            st, lean, in_slots, out_slots, buffer, frees = entry
            xs = [vals[s] if s is not None else None for s in in_slots]
            while xs and xs[-1] is None:
                xs.pop()
            if lean is not None:
                outs = lean(xs, buffer)
            else:
                if ctx is None:
                    ctx = self._ctx_factory()
                outs = [_array(v) for v in st.run([Tensor._wrap(a) if isinstance(a, np.ndarray) else a for a in xs],
                                                  ctx)]
            for s, v in zip(out_slots, outs):
                vals[s] = v
            for s in frees:
                vals[s] = None
        return [vals[s] for s in self._output_slots]
