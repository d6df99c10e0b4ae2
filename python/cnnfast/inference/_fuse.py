"""Graph rewrites of a frozen inference graph (ONNX nodes in, fused nodes out).

Patterns, each a chain whose intermediate values have no other reader:

    Conv -> BatchNormalization            BN folded into the weights and bias
    Gemm(transB=1) -> BatchNormalization  (same, for a BatchNorm1d after a Linear)
    Conv/Gemm [-> BN] -> Add(other)        the add becomes the convolution's residual
    ... -> activation                      ReLU, LeakyReLU, Clip (ReLU6), HardSigmoid,
                                           HardSwish, Sigmoid, and SiLU as x * Sigmoid(x)

A fused chain becomes one ``FusedConv`` / ``FusedGemm`` node that runs the kernel with
the epilogue of csrc/cpu/epilogue.h (bias, residual, activation in the output pass).
Then squeeze-and-excitation blocks,

    Mul(x, FusedConv1x1(FusedConv1x1(GlobalAveragePool(x))))

become one ``SqueezeExcite`` node (csrc/cpu/squeeze_excite.h).
A node that matches no pattern stays as it is and runs through the ONNX converters.
"""
from __future__ import annotations

import numpy as np

_ACTIVATIONS = {"Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid"}


class Node:
    """A mutable copy of an ONNX node: op type, inputs, outputs, attributes (Python values)."""

    __slots__ = ("op_type", "name", "inputs", "outputs", "attrs")

    def __init__(self, op_type, name, inputs, outputs, attrs):
        self.op_type, self.name = op_type, name
        self.inputs, self.outputs, self.attrs = list(inputs), list(outputs), dict(attrs)


class FuseStats:
    def __init__(self):
        self.bn_folded = self.residuals = self.activations = 0
        self.fused_convs = self.fused_gemms = 0
        self.squeeze_excite = 0

    def as_dict(self) -> dict:
        return dict(fused_convs=self.fused_convs, fused_gemms=self.fused_gemms, bn_folded=self.bn_folded,
                    residuals_fused=self.residuals, activations_fused=self.activations,
                    squeeze_excite_fused=self.squeeze_excite)


def _readers(nodes, graph_outputs):
    readers = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                readers[i] = readers.get(i, 0) + 1
    for o in graph_outputs:
        readers[o] = readers.get(o, 0) + 1  # a graph output must stay a value of its own
    return readers


def _const_of(consts, name):
    return consts.get(name) if name else None


def _activation(node, consts, nodes_by_input, readers):
    """(epilogue name, alpha, beta) when `node` is an activation the epilogue runs, else None."""
    op = node.op_type
    if op == "Relu":
        return "relu", 0.0, 0.0
    if op == "LeakyRelu":
        return "leaky_relu", float(node.attrs.get("alpha", 0.01)), 0.0
    if op == "HardSigmoid":
        return "hardsigmoid", float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if op == "HardSwish":
        return "hardswish", 0.0, 0.0
    if op == "Sigmoid":
        return "sigmoid", 0.0, 0.0
    if op == "Clip":
        lo = _const_of(consts, node.inputs[1] if len(node.inputs) > 1 else "")
        hi = _const_of(consts, node.inputs[2] if len(node.inputs) > 2 else "")
        if (len(node.inputs) > 1 and node.inputs[1] and lo is None) or \
           (len(node.inputs) > 2 and node.inputs[2] and hi is None):
            return None  # bounds computed at run time: leave the Clip alone
        lo = -np.inf if lo is None else float(np.asarray(lo).reshape(-1)[0])
        hi = np.inf if hi is None else float(np.asarray(hi).reshape(-1)[0])
        return "clip", lo, hi
    return None


def fuse(nodes, consts, graph_outputs, shapes, stats: FuseStats):
    """Rewrite `nodes` (a topologically ordered list of Node) in place of a new list.

    consts: name -> ndarray of values known at freeze time (weights, BN statistics);
    folded weights are added to it. shapes: name -> shape seen on the example input,
    used to accept a residual only when it has exactly the output's shape.
    """
    readers = _readers(nodes, graph_outputs)
    by_input = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                by_input.setdefault(i, []).append(n)
    removed = set()

    def only_reader(value):
        if readers.get(value, 0) != 1:
            return None
        cands = [n for n in by_input.get(value, []) if id(n) not in removed]
        return cands[0] if len(cands) == 1 else None

    # A fused node takes the place of the last node of its chain: a residual may be
    # produced after the convolution in the original order, and everything between
    # reads nothing the chain makes (its intermediate values have one reader each).
    placed = {}
    heads = set()
    for node in nodes:
        if id(node) in removed:
            continue
        kind = _fusable_kind(node, consts)
        if kind is None:
            continue
        last = node
        weight, bias = _weight_bias(node, consts, kind)
        value = node.outputs[0]
        fused_names = [node.name]
        # BatchNormalization folded into the weights.
        nxt = only_reader(value)
        if nxt is not None and nxt.op_type == "BatchNormalization" and nxt.inputs[0] == value and \
                all(_const_of(consts, nxt.inputs[i]) is not None for i in range(1, 5)) and \
                not int(nxt.attrs.get("training_mode", 0)) and len([o for o in nxt.outputs if o]) == 1:
            scale, shift, mean, var = (np.asarray(consts[nxt.inputs[i]], np.float64) for i in range(1, 5))
            eps = float(nxt.attrs.get("epsilon", 1e-5))
            if scale.shape == (weight.shape[0],):
                factor = scale / np.sqrt(var + eps)
                w64 = weight.astype(np.float64) * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
                b0 = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
                b64 = (b0 - mean) * factor + shift
                weight, bias = w64.astype(weight.dtype), b64.astype(weight.dtype)
                removed.add(id(nxt))
                last = nxt
                value = nxt.outputs[0]
                fused_names.append(nxt.name)
                stats.bn_folded += 1
        # A residual add of a tensor of exactly the output's shape.
        residual = None
        nxt = only_reader(value)
        if nxt is not None and nxt.op_type == "Add" and len(nxt.inputs) == 2:
            other = nxt.inputs[1] if nxt.inputs[0] == value else nxt.inputs[0]
            if other != value and other not in consts and shapes.get(other) is not None and \
                    shapes.get(other) == shapes.get(value):
                residual = other
                removed.add(id(nxt))
                last = nxt
                value = nxt.outputs[0]
                fused_names.append(nxt.name)
                stats.residuals += 1
        # An activation, or SiLU written as x * Sigmoid(x).
        act, alpha, beta = "none", 0.0, 0.0
        cands = [n for n in by_input.get(value, []) if id(n) not in removed]
        if readers.get(value, 0) == 1 and len(cands) == 1:
            found = _activation(cands[0], consts, by_input, readers)
            if found is not None and cands[0].inputs[0] == value:
                act, alpha, beta = found
                removed.add(id(cands[0]))
                last = cands[0]
                value = cands[0].outputs[0]
                fused_names.append(cands[0].name)
                stats.activations += 1
        elif readers.get(value, 0) == 2 and len(cands) == 2:
            sig = next((n for n in cands if n.op_type == "Sigmoid"), None)
            mul = next((n for n in cands if n.op_type == "Mul"), None)
            if sig is not None and mul is not None and readers.get(sig.outputs[0], 0) == 1 and \
                    sorted(mul.inputs) == sorted([value, sig.outputs[0]]) and only_reader(sig.outputs[0]) is mul:
                act = "silu"
                removed.update({id(sig), id(mul)})
                last = mul if nodes.index(mul) > nodes.index(sig) else sig
                value = mul.outputs[0]
                fused_names += [sig.name, mul.name]
                stats.activations += 1
        # A plain Linear is rewritten too: FusedGemm calls the kernel directly, where the
        # converter went through the autograd Function (ResNet-50's classifier, batch 1:
        # ~0.1 ms of Python after the last layer had flushed the caches).
        tag = "_".join(fused_names[:1]) or value
        w_name, b_name = f"{tag}::weight", f"{tag}::bias"
        consts[w_name] = np.ascontiguousarray(weight)
        inputs = [node.inputs[0], w_name, ""]
        if bias is not None:
            consts[b_name] = np.ascontiguousarray(bias)
            inputs[2] = b_name
        if residual is not None:
            inputs.append(residual)
        attrs = {k: v for k, v in node.attrs.items() if k not in ("alpha", "beta", "transA", "transB")}
        attrs.update(activation=act, act_alpha=alpha, act_beta=beta, fused=" + ".join(fused_names))
        op = "FusedConv" if kind == "conv" else "FusedGemm"
        placed[id(last)] = Node(op, node.name or value, inputs, [value], attrs)
        heads.add(id(node))
        if kind == "conv":
            stats.fused_convs += 1
        else:
            stats.fused_gemms += 1
    out = []
    for node in nodes:
        if id(node) in placed:
            out.append(placed[id(node)])
        elif id(node) not in removed and id(node) not in heads:
            out.append(node)
    return out


def _fusable_kind(node, consts):
    if node.op_type == "Conv" and _const_of(consts, node.inputs[1]) is not None and \
            (len(node.inputs) < 3 or not node.inputs[2] or _const_of(consts, node.inputs[2]) is not None):
        return "conv"
    if node.op_type == "Gemm" and int(node.attrs.get("transB", 0)) == 1 and not int(node.attrs.get("transA", 0)) and \
            float(node.attrs.get("alpha", 1.0)) == 1.0 and float(node.attrs.get("beta", 1.0)) == 1.0 and \
            _const_of(consts, node.inputs[1]) is not None and \
            (len(node.inputs) < 3 or not node.inputs[2] or
             (_const_of(consts, node.inputs[2]) is not None and np.ndim(consts[node.inputs[2]]) == 1)):
        return "gemm"
    return None


def _weight_bias(node, consts, kind):
    w = np.asarray(consts[node.inputs[1]])
    b = consts.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if b is not None:
        b = np.asarray(b).reshape(-1)
        if kind == "gemm" and b.shape[0] != w.shape[0]:
            b = np.broadcast_to(b, (w.shape[0],)).copy()
    return w, b


def _pointwise_conv(node, consts):
    """Whether a FusedConv node is a plain 1x1 convolution (no residual, stride 1, no padding, one group)."""
    if node is None or node.op_type != "FusedConv" or len(node.inputs) != 3:
        return False
    w = consts.get(node.inputs[1])
    a = node.attrs
    return w is not None and w.ndim >= 3 and all(k == 1 for k in w.shape[2:]) and int(a.get("group", 1)) == 1 and \
        not any(int(p) for p in a.get("pads", [])) and all(int(v) == 1 for v in a.get("strides", [])) and \
        a.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET", "VALID", b"VALID")


def fuse_squeeze_excite(nodes, consts, graph_outputs, stats: FuseStats):
    """Mul(x, conv2(conv1(GlobalAveragePool(x)))) -> SqueezeExcite(x, w1, b1, w2, b2), where the pool,
    conv1 and conv2 outputs have no other reader (fused 1x1 convolutions, see `fuse`)."""
    readers = _readers(nodes, graph_outputs)
    producer = {o: n for n in nodes for o in n.outputs if o}
    drop, placed = set(), {}
    for mul in nodes:
        if mul.op_type != "Mul" or len(mul.inputs) != 2:
            continue
        for x, s in (mul.inputs, mul.inputs[::-1]):
            c2 = producer.get(s)
            c1 = producer.get(c2.inputs[0]) if _pointwise_conv(c2, consts) else None
            pool = producer.get(c1.inputs[0]) if _pointwise_conv(c1, consts) else None
            if pool is None or pool.op_type != "GlobalAveragePool" or pool.inputs[0] != x or \
                    any(readers.get(v, 0) != 1 for v in (s, c2.inputs[0], c1.inputs[0])):
                continue
            w1, w2 = consts[c1.inputs[1]], consts[c2.inputs[1]]
            if w2.shape[0] != w1.shape[1] or w2.shape[1] != w1.shape[0]:
                continue
            drop.update({id(pool), id(c1), id(c2)})
            a1, a2 = c1.attrs, c2.attrs
            placed[id(mul)] = Node("SqueezeExcite", mul.name, [x, c1.inputs[1], c1.inputs[2], c2.inputs[1],
                                                              c2.inputs[2]], mul.outputs,
                                   dict(act1=a1["activation"], alpha1=a1["act_alpha"], beta1=a1["act_beta"],
                                        act2=a2["activation"], alpha2=a2["act_alpha"], beta2=a2["act_beta"]))
            stats.squeeze_excite += 1
            break
    return [placed.get(id(n), n) for n in nodes if id(n) not in drop]
