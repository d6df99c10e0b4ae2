"""ONNX file -> ``OnnxModule``, an ``nn.Module`` that runs the graph on cnnfast.

Reading never executes code: the file is parsed by the ``onnx`` package (protobuf),
checked with ``onnx.checker``, and its opset must lie in 13..20. External tensor data
is read only from files inside the model's own folder. Every node is converted at load
time (``_ops.py``), so an unsupported op or attribute fails at ``load`` naming the op
and the node, never later with a silently wrong result.

Initializers become state: float weights that a layer learns (Conv/Gemm/MatMul/norm
scales and biases, and the operands of Add/Sub/Mul/Div) are ``Parameter`` s, the rest
(batch-norm running statistics, resize scales, ...) buffers, all under their ONNX names
with every character outside [A-Za-z0-9_] replaced by ``_`` (``onnx_names`` maps back).
The forward runs the nodes in topological order on Tensors, so gradients flow to the
parameters and the model can be fine-tuned; batch norm and dropout follow
``train()``/``eval()`` (the model is returned in eval mode, ONNX's inference semantics).
"""
from __future__ import annotations

import os
import re
from collections import ChainMap

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..tensor import Tensor
from ._ops import CONVERTERS, NodeSpec, UnsupportedOnnxError, arr, supported_ops

MIN_OPSET, MAX_OPSET = 13, 20

# (op, input index) whose float initializers are learnable weights.
_TRAINABLE = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2),
    "LayerNormalization": (1, 2), "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0, 1),
}


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - the extra is listed in pyproject
        raise ImportError("cnnfast.onnx needs the 'onnx' package: pip install 'cnnfast[onnx]'") from exc
    return onnx


def _sanitize(name: str, taken: set) -> str:
    s = re.sub(r"\W", "_", name) or "t"
    if s[0].isdigit():
        s = "t_" + s
    base, i = s, 1
    while s in taken:
        s = f"{base}_{i}"
        i += 1
    taken.add(s)
    return s


def _attrs(node) -> dict:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out[a.name] = a.g
        elif a.ref_attr_name:
            raise UnsupportedOnnxError(f"ONNX op '{node.op_type}' at node '{node.name}': attribute references "
                                       "(functions) are not supported")
        else:
            out[a.name] = onnx.helper.get_attribute_value(a)
    return out


def _constant_value(node, attrs):
    onnx = _onnx()
    if "value" in attrs:
        return onnx.numpy_helper.to_array(attrs["value"]).copy()
    if "value_float" in attrs:
        return np.array(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], np.int64)
    raise UnsupportedOnnxError(f"ONNX op 'Constant' at node '{node.name}': only value, value_float(s) and "
                               f"value_int(s) are supported, got {sorted(attrs)}")


def _names_used(graph, into: set) -> set:
    """Every value name a graph (and its subgraphs) reads."""
    for node in graph.node:
        into.update(n for n in node.input if n)
        for a in node.attribute:
            if a.g.node:
                _names_used(a.g, into)
    into.update(o.name for o in graph.output)
    return into


def _topological(nodes, known: set, label: str) -> list:
    produced_by = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                produced_by[o] = i
    order, state = [], [0] * len(nodes)
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, False)]
        while stack:
            i, done = stack.pop()
            if done:
                state[i] = 2
                order.append(i)
                continue
            if state[i] == 2:
                continue
            if state[i] == 1:
                raise ValueError(f"{label}: the graph has a cycle through node '{nodes[i].name}'")
            state[i] = 1
            stack.append((i, True))
            deps = []
            for name in nodes[i].input:
                if name and name not in known and name in produced_by:
                    deps.append(produced_by[name])
            for n_attr in nodes[i].attribute:  # a subgraph may read values produced by earlier nodes
                if n_attr.g.node:
                    deps.extend(produced_by[x] for x in _names_used(n_attr.g, set()) if x in produced_by)
            for j in deps:
                if state[j] == 1 and j != i:
                    raise ValueError(f"{label}: the graph has a cycle through node '{nodes[j].name}'")
                if state[j] == 0:
                    stack.append((j, False))
    return [nodes[i] for i in order]


class _Step:
    __slots__ = ("name", "op_type", "inputs", "outputs", "run", "reads", "free")

    def __init__(self, name, op_type, inputs, outputs, run, reads):
        self.name, self.op_type, self.inputs, self.outputs, self.run = name, op_type, inputs, outputs, run
        self.reads = reads  # inputs plus outer values its subgraphs read
        self.free = ()


class _Ctx:
    """What a node's run function sees: train/eval mode and the values in scope."""

    def __init__(self, training, env, record=None):
        self.training, self.env, self.record = training, env, record
        # Frozen graphs (cnnfast.inference) set these: a pool of freed output buffers that
        # fused convolutions write into, and the function that offers each dropped value to it.
        self.pool = None
        self.release = None


class _Program:
    """A graph compiled to a list of steps (nodes in topological order)."""

    def __init__(self, graph, opset, consts, used, label, outer=frozenset(), top=False, types=None,
                 converters=None):
        onnx = _onnx()
        types = {} if types is None else types
        converters = CONVERTERS if converters is None else converters
        self.label = label
        self.local_consts = {}
        for init in graph.initializer if not top else ():
            self.local_consts[init.name] = onnx.numpy_helper.to_array(init).copy()
        consts = ChainMap(self.local_consts, consts)
        known = set(outer) | {i.name for i in graph.input} | set(consts)
        if top:
            known |= {i.name for i in graph.initializer}
        self.steps = []
        for node in _topological(list(graph.node), known, label):
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOnnxError(
                    f"unsupported ONNX op '{node.domain}.{node.op_type}' at node '{node.name}' (only the default "
                    f"ai.onnx domain is supported)")
            attrs = _attrs(node)
            if node.op_type == "Constant":
                consts.maps[0][node.output[0]] = _constant_value(node, attrs)
                continue
            conv = converters.get(node.op_type)
            if conv is None:
                raise UnsupportedOnnxError(
                    f"unsupported ONNX op '{node.op_type}' at node '{node.name}' "
                    f"(supported: {', '.join(supported_ops())})")
            def compile_graph(g, _n=len(self.steps), _node=node):
                # A subgraph sees the outer graph's inputs, constants and earlier nodes' outputs.
                seen = known | {o for st in self.steps[:_n] for o in st.outputs}
                return _Program(g, opset, consts, used, f"{label}/{_node.name}", outer=seen, types=types,
                                converters=converters)

            spec = NodeSpec(node, attrs, opset, consts, used, compile_graph)
            spec.types = types
            reads = set(node.input)
            for a in node.attribute:
                if a.g.node:
                    _names_used(a.g, reads)
            self.steps.append(_Step(spec.name, node.op_type, list(node.input), list(node.output), conv(spec), reads))
        self.consts = consts
        self.outputs = [o.name for o in graph.output]

    def plan_frees(self, keep: set):
        """After each step, drop the values no later step needs (keeps peak memory near torch's)."""
        last = {}
        for i, st in enumerate(self.steps):
            for n in st.reads:
                last[n] = i
            for o in st.outputs:
                last.setdefault(o, i)
        for i, st in enumerate(self.steps):
            st.free = tuple(n for n in st.reads | set(st.outputs) if n and last.get(n) == i and n not in keep)

    def execute(self, ctx):
        env = ctx.env
        for st in self.steps:
            ins = []
            for n in st.inputs:
                if not n:
                    ins.append(None)
                    continue
                try:
                    ins.append(env[n])
                except KeyError:
                    raise ValueError(f"{self.label}: node '{st.name}' ({st.op_type}) reads '{n}', which no earlier "
                                     "node produces") from None
            while ins and ins[-1] is None:
                ins.pop()
            try:
                outs = st.run(ins, ctx)
            except UnsupportedOnnxError:
                raise
            except (ValueError, TypeError, IndexError, RuntimeError) as exc:
                raise type(exc)(f"ONNX node '{st.name}' ({st.op_type}): {exc}") from exc
            for name, v in zip(st.outputs, outs):
                if name:
                    env[name] = v
            if ctx.record is not None:
                ctx.record.append((st, [env.get(o) for o in st.outputs if o]))
            release = ctx.release
            ins = outs = None  # so a dropped value's only references are env's (release counts them)
            for n in st.free:
                v = env.pop(n, None)
                if release is not None and v is not None:
                    release(v)
                del v
        return [env[o] for o in self.outputs]

    def run_subgraph(self, ctx):
        child = _Ctx(ctx.training, ChainMap({}, self.local_consts, ctx.env), ctx.record)
        return self.execute(child)


def _value_info(vi):
    t = vi.type.tensor_type
    dims = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    dtype = None
    if t.elem_type:
        dtype = np.dtype(_onnx().helper.tensor_dtype_to_np_dtype(t.elem_type))
    return dims, dtype


class OnnxModule(nn.Module):
    """An ONNX graph as a cnnfast module: ``model(x)`` runs it, gradients reach its parameters.

    Inputs: positional in the graph's input order, or by name as keywords; NumPy arrays or
    Tensors of the declared dtype and rank. Output: one Tensor, or a tuple for several outputs.
    """

    def __init__(self, model_proto, label: str = "<model>"):
        super().__init__()
        onnx = _onnx()
        graph = model_proto.graph
        self.opset = _opset(model_proto, label)
        self._proto = model_proto  # cnnfast.inference.freeze compiles the same graph
        self.producer = f"{model_proto.producer_name} {model_proto.producer_version}".strip()
        self.source = label
        if len(graph.sparse_initializer):
            raise UnsupportedOnnxError(f"{label}: sparse initializers are not supported")
        used = _names_used(graph, set())
        trainable = set()
        for node in graph.node:
            for i in _TRAINABLE.get(node.op_type, ()):
                if i < len(node.input) and node.input[i]:
                    trainable.add(node.input[i])
        taken = set()
        self.onnx_names = {}
        self._state_names = {}
        consts = {}
        for init in graph.initializer:
            a = np.array(onnx.numpy_helper.to_array(init), copy=True)
            if a.dtype.kind == "f" and a.size > 0:
                key = _sanitize(init.name, taken)
                self.onnx_names[key] = init.name
                self._state_names[init.name] = key
                if init.name in trainable:
                    self.register_parameter(key, nn.Parameter(a))
                else:
                    self.register_buffer(key, Tensor(a))
            else:
                consts[init.name] = a
        init_names = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in init_names]
        self.input_info = {i.name: _value_info(i) for i in graph.input if i.name not in init_names}
        self.output_names = [o.name for o in graph.output]
        self.output_info = {o.name: _value_info(o) for o in graph.output}
        # Float initializers read at load time (e.g. Resize scales) are still known to converters.
        load_consts = dict(consts)
        for name, key in self._state_names.items():
            load_consts[name] = getattr(self, key)._array
        self._program = _Program(graph, self.opset, load_consts, used, label, top=True,
                                 types=_declared_types(model_proto))
        # Constants produced by Constant nodes join the runtime scope.
        self._consts = {k: v for k, v in self._program.consts.maps[0].items() if k not in self._state_names}
        self._consts.update(consts)
        self._program.plan_frees(set(self.output_names))
        self.eval()

    # ---- running --------------------------------------------------------------------------
    def _bind_inputs(self, args, kwargs) -> dict:
        if len(args) > len(self.input_names):
            raise TypeError(f"expected at most {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(args)}")
        bound = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise TypeError(f"unexpected input {k!r}; the model's inputs are {', '.join(self.input_names)}")
            if k in bound:
                raise TypeError(f"input {k!r} given twice")
            bound[k] = v
        missing = [n for n in self.input_names if n not in bound]
        if missing:
            raise TypeError(f"missing input(s): {', '.join(missing)}")
        env = {}
        for name, v in bound.items():
            dims, dtype = self.input_info[name]
            t = v if isinstance(v, Tensor) else Tensor(np.asarray(v))
            if dtype is not None and t.dtype != dtype:
                raise TypeError(f"input {name!r}: expected dtype {dtype}, got {t.dtype}")
            if dims and t.ndim != len(dims):
                raise ValueError(f"input {name!r}: expected {len(dims)} dimensions {dims}, got shape {t.shape}")
            for i, (d, n) in enumerate(zip(dims, t.shape)):
                if isinstance(d, int) and d > 0 and d != n:
                    raise ValueError(f"input {name!r}: expected size {d} at dimension {i} ({dims}), got shape "
                                     f"{t.shape}")
            env[name] = t if t.dtype.kind == "f" else t._array
        return env

    def _run(self, args, kwargs, record=None):
        env = dict(self._consts)
        for onnx_name, key in self._state_names.items():
            env[onnx_name] = getattr(self, key)
        env.update(self._bind_inputs(args, kwargs))
        outs = self._program.execute(_Ctx(self.training, env, record))
        outs = [o if isinstance(o, Tensor) else Tensor(np.asarray(o)) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def forward(self, *args, **kwargs):
        return self._run(args, kwargs)

    # ---- description ------------------------------------------------------------------------
    def op_counts(self) -> dict:
        counts = {}
        for st in self._program.steps:
            counts[st.op_type] = counts.get(st.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def trace_shapes(self, *inputs) -> list:
        """Run once (no grad) and return [(node name, op type, [output shapes])] in execution order."""
        record = []
        with no_grad():
            self._run(inputs, {}, record)
        return [(st.name, st.op_type, [tuple(arr(v).shape) for v in vals if v is not None]) for st, vals in record]

    def summary(self, *inputs) -> str:
        """A text description: file, opset, inputs/outputs, parameter count, op counts and, given
        example inputs, one line per node with its output shapes."""
        n_params = sum(p.numel() for p in self.parameters())
        lines = [f"ONNX model: {self.source}", f"  producer: {self.producer or '?'}   opset: {self.opset}   "
                 f"nodes: {len(self._program.steps)}   parameters: {n_params:,}"]
        for name in self.input_names:
            dims, dtype = self.input_info[name]
            lines.append(f"  input  {name}: {dtype} {dims}")
        for name in self.output_names:
            dims, dtype = self.output_info[name]
            lines.append(f"  output {name}: {dtype} {dims}")
        lines.append("  ops: " + ", ".join(f"{k} x{v}" for k, v in self.op_counts().items()))
        if inputs:
            rows = self.trace_shapes(*inputs)
            w = max([len(r[0]) for r in rows] + [4])
            lines.append("")
            lines.append(f"  {'#':>4}  {'node':<{w}}  {'op':<22} output shape")
            for i, (name, op_type, shapes) in enumerate(rows):
                shape_txt = ", ".join("x".join(str(d) for d in s) or "scalar" for s in shapes)
                lines.append(f"  {i:>4}  {name:<{w}}  {op_type:<22} {shape_txt}")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, opset={self.opset}, nodes={len(self._program.steps)}"


def _declared_types(model) -> dict:
    """Element dtype of every value whose type the graph declares or ONNX shape inference
    derives, so converters can refuse a dtype at load rather than at run time."""
    onnx = _onnx()
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference is a help here, never a reason to refuse a model
        graph = model.graph
    types = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        dtype = _value_info(vi)[1]
        if dtype is not None:
            types[vi.name] = dtype
    for init in graph.initializer:
        types[init.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    return types


def _opset(model, label) -> int:
    version = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            version = int(imp.version)
    if version is None:
        raise ValueError(f"{label}: the model imports no default-domain (ai.onnx) opset")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ValueError(f"{label}: opset {version} is not supported (cnnfast reads opsets {MIN_OPSET} to "
                         f"{MAX_OPSET}); convert it with onnx.version_converter.convert_version(model, 17)")
    return version


def _load_external(model, base_dir, label):
    onnx = _onnx()
    from onnx import external_data_helper as ext

    for tensor in ext._get_all_tensors(model):
        if not ext.uses_external_data(tensor):
            continue
        info = ext.ExternalDataInfo(tensor)
        if base_dir is None:
            raise ValueError(f"{label}: tensor '{tensor.name}' keeps its data in an external file; load the model "
                             "from its path so the file can be found beside it")
        root = os.path.realpath(base_dir)
        target = os.path.realpath(os.path.join(root, info.location))
        if os.path.isabs(info.location) or os.path.commonpath([root, target]) != root:
            raise ValueError(f"{label}: external data '{info.location}' of tensor '{tensor.name}' lies outside the "
                             "model's folder; refusing to read it")
        if not os.path.isfile(target):
            raise ValueError(f"{label}: external data file '{info.location}' of tensor '{tensor.name}' not found")
        try:
            ext.load_external_data_for_tensor(tensor, root)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{label}: cannot read external data of tensor '{tensor.name}': {exc}") from exc
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def read_model(source):
    """(ModelProto, label): parsed, external data resolved, checked. ValueError for anything malformed."""
    onnx = _onnx()
    base_dir = None
    if isinstance(source, onnx.ModelProto):
        model, label = source, "<ModelProto>"
    elif isinstance(source, (bytes, bytearray)):
        label = "<bytes>"
        model = _parse(bytes(source), label)
    else:
        path = os.fspath(source)
        label = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        with open(path, "rb") as f:
            data = f.read()
        model = _parse(data, label)
        base_dir = os.path.dirname(os.path.abspath(path))
    _load_external(model, base_dir, label)
    _check(model, label)
    return model, label


def _check(model, label):
    """onnx.checker, except that an op the installed onnx marks deprecated at the model's opset
    (GroupNormalization-18, which opset 21 replaced) is still a valid model of that opset: such
    nodes are checked as Identity stand-ins so the rest of the graph is still checked."""
    onnx = _onnx()
    probe = model
    for _ in range(8):
        try:
            onnx.checker.check_model(probe)
            return
        except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError and others
            msg = str(exc).strip()
            m = re.search(r"Op registered for (\w+) is deprecated", msg)
            if m is None:
                raise ValueError(f"{label}: malformed ONNX model: {msg.splitlines()[0]}") from exc
            if probe is model:
                probe = onnx.ModelProto()
                probe.CopyFrom(model)
            for node in probe.graph.node:
                if node.op_type == m.group(1) and node.domain in ("", "ai.onnx"):
                    node.op_type = "Identity"
                    del node.input[1:]
                    del node.output[1:]
                    del node.attribute[:]
    raise ValueError(f"{label}: malformed ONNX model: too many deprecated ops")


def _parse(data: bytes, label: str):
    onnx = _onnx()
    if not data:
        raise ValueError(f"{label}: malformed ONNX model: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError
        raise ValueError(f"{label}: malformed ONNX model: not an ONNX protobuf ({exc})") from exc
    return model


def load(source) -> OnnxModule:
    """Read an ONNX model (a path, the file's bytes, or an ``onnx.ModelProto``) as an ``OnnxModule``
    in eval mode. Raises FileNotFoundError for a missing path, ValueError for a malformed file or an
    opset outside 13..20, and ``UnsupportedOnnxError`` (a NotImplementedError) naming the op and node
    for anything cnnfast cannot run exactly."""
    model, label = read_model(source)
    return OnnxModule(model, label)
