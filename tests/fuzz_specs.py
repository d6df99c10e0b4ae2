"""Call builders for every cnnfast._C entry point, shared by the property-based tests
(test_fuzz_kernels.py) and the thread-safety test (test_thread_safety.py).

A builder takes hypothesis' `draw` and returns a valid Case: the keyword arguments
of one call on small random arrays (odd sizes, prime extents, SIMD tails, groups,
strides, asymmetric padding), plus what the call reads, writes and which argument
shapes are tied to others, so the fuzz test knows how to break it. Where a cheap
independent answer exists (NumPy, or PyTorch for convolution and pooling geometry),
the Case carries it as `ref`.
"""
import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

import cnnfast
import cnnfast._C as C
from fuzz_refs import REFS

F32, F64 = np.float32, np.float64


@dataclass
class Case:
    fn: str
    args: dict
    reads: tuple = ()  # array arguments the kernel only reads
    writes: tuple = ()  # array arguments written in place (out=, param, running stats)
    tied: tuple = ()  # array arguments whose shape is fixed by the others
    ints: tuple = ()  # int (or int-sequence) hyper-parameters
    floats: tuple = ()
    strs: tuple = ()
    out: Optional[str] = None  # name of an optional out= argument
    ref: Optional[Callable] = None  # args -> list of expected arrays (None entries skip)
    rtol: float = 2e-4
    atol: float = 2e-4
    notes: dict = field(default_factory=dict)


def call(case: Case, args: Optional[dict] = None):
    """Runs the call on private copies of the arrays; returns the observed values:
    the returned arrays (tuples flattened) followed by the arrays written in place."""
    args = copy.deepcopy(case.args if args is None else args)
    res = getattr(C, case.fn)(**args)
    return observed(case, res, args)


def observed(case: Case, res, args: dict) -> list:
    out = []
    for r in res if isinstance(res, tuple) else (res,):
        out.append(None if r is None else np.array(r, copy=True))
    out.extend(np.array(args[w], copy=True) for w in case.writes if args.get(w) is not None)
    return out


def tol(dt):
    return (2e-4, 2e-4) if dt == F32 else (1e-9, 1e-10)


# ---- drawing helpers ------------------------------------------------------------


def rng_of(draw):
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1)))


def dtype_of(draw):
    return draw(st.sampled_from([F32, F64]))


def any_shape(draw, min_rank=1, max_rank=4, last_max=19):
    r = draw(st.integers(min_rank, max_rank))
    dims = [draw(st.integers(1, 5)) for _ in range(r - 1)]
    return tuple(dims + [draw(st.integers(1, last_max))]) if r else ()


def normal(rng, shape, dt):
    return np.asarray(rng.standard_normal(shape), dtype=dt)


# ---- activations ----------------------------------------------------------------

_SIG = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
ACT_FWD = {
    "relu": lambda x, p: np.maximum(x, 0),
    "sigmoid": lambda x, p: _SIG(x),
    "tanh": lambda x, p: np.tanh(x),
    "silu": lambda x, p: x * _SIG(x),
    "leaky_relu": lambda x, p: np.where(x > 0, x, p * x),
    "elu": lambda x, p: np.where(x > 0, x, p * (np.exp(x) - 1)),
}
ACT_PARAM = {"leaky_relu": "negative_slope", "elu": "alpha"}
ACT_SAVED = {"sigmoid": "output", "tanh": "output"}


def act_bwd_ref(name, g, x, p):
    s = _SIG(x)
    d = {
        "relu": (x > 0).astype(x.dtype),
        "sigmoid": s * (1 - s),
        "tanh": 1 - np.tanh(x) ** 2,
        "silu": s + x * s * (1 - s),
        "leaky_relu": np.where(x > 0, 1.0, p),
        "elu": np.where(x > 0, 1.0, p * np.exp(x)),
    }[name]
    return g * d


def act_fwd(name):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = normal(rng, any_shape(draw, 0, 4), dt)
        args = {"x": x}
        p = 0.0
        if name in ACT_PARAM:
            p = draw(st.floats(-2, 2)) if name == "leaky_relu" else draw(st.floats(0.1, 2))
            args[ACT_PARAM[name]] = p
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)
        return Case(
            f"{name}_forward", args, reads=("x",), writes=(), tied=("out",), floats=(ACT_PARAM[name],) if name in ACT_PARAM else (),
            out="out", ref=lambda a: [ACT_FWD[name](a["x"].astype(F64), p)], rtol=tol(dt)[0] * 10, atol=tol(dt)[1] * 10,
        )

    return build


def act_bwd(name):
    saved = ACT_SAVED.get(name, "x")

    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        shape = any_shape(draw, 0, 4)
        x = normal(rng, shape, dt)
        p = 0.0
        args = {"grad_output": normal(rng, shape, dt)}
        args[saved] = np.asarray(ACT_FWD[name](x, 0), dtype=dt) if saved == "output" else x
        if name in ACT_PARAM:
            p = draw(st.floats(-2, 2)) if name == "leaky_relu" else draw(st.floats(0.1, 2))
            args[ACT_PARAM[name]] = p
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)

        def ref(a):
            if saved == "output":  # reconstruct x's derivative from y
                y = a["output"].astype(F64)
                d = y * (1 - y) if name == "sigmoid" else 1 - y**2
                return [a["grad_output"] * d]
            return [act_bwd_ref(name, a["grad_output"].astype(F64), a["x"].astype(F64), p)]

        return Case(
            f"{name}_backward", args, reads=("grad_output", saved), tied=(saved, "out"),
            floats=(ACT_PARAM[name],) if name in ACT_PARAM else (), out="out", ref=ref,
            rtol=tol(dt)[0] * 10, atol=tol(dt)[1] * 10,
        )

    return build


def _softmax(x, axis, log):
    m = x - x.max(axis=axis, keepdims=True)
    lse = np.log(np.exp(m).sum(axis=axis, keepdims=True))
    return m - lse if log else np.exp(m - lse)


def softmax_fwd(log):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = normal(rng, any_shape(draw, 1, 4), dt) * 3
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
        args = {"x": x, "axis": axis}
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)
        return Case(
            ("log_" if log else "") + "softmax_forward", args, reads=("x",), tied=("out",), ints=("axis",), out="out",
            ref=lambda a: [_softmax(a["x"].astype(F64), a["axis"], log)], rtol=tol(dt)[0] * 5, atol=tol(dt)[1] * 5,
        )

    return build


def softmax_bwd(log):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = normal(rng, any_shape(draw, 1, 4), dt)
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
        y = np.asarray(_softmax(x.astype(F64), axis, log), dtype=dt)
        args = {"grad_output": normal(rng, x.shape, dt), "output": y, "axis": axis}
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)

        def ref(a):
            g, yy = a["grad_output"].astype(F64), a["output"].astype(F64)
            if log:
                return [g - np.exp(yy) * g.sum(axis=axis, keepdims=True)]
            return [yy * (g - (g * yy).sum(axis=axis, keepdims=True))]

        return Case(
            ("log_" if log else "") + "softmax_backward", args, reads=("grad_output", "output"), tied=("output", "out"),
            ints=("axis",), out="out", ref=ref, rtol=tol(dt)[0] * 5, atol=tol(dt)[1] * 5,
        )

    return build


# ---- convolution ----------------------------------------------------------------


def _torch():
    import torch

    return torch


def conv_geometry(draw, transposed=False):
    rng, dt = rng_of(draw), dtype_of(draw)
    nd = draw(st.integers(1, 3))
    g = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3 if nd < 3 else 2)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    pad = [[draw(st.integers(0, 2)), draw(st.integers(0, 2))] for _ in range(nd)]
    maxin = 9 if nd < 3 else 5
    N = draw(st.integers(1, 3))
    if transposed:
        ins = [draw(st.integers(1, maxin)) for _ in range(nd)]
        opad = [draw(st.integers(0, max(stride[i], dil[i]) - 1)) for i in range(nd)]
        # keep the transposed output size positive
        for i in range(nd):
            full = (ins[i] - 1) * stride[i] + dil[i] * (k[i] - 1) + 1 + opad[i]
            while pad[i][0] + pad[i][1] >= full:
                pad[i] = [max(0, pad[i][0] - 1), max(0, pad[i][1] - 1)]
        x = normal(rng, (N, g * kg, *ins), dt)
        w = normal(rng, (g * kg, cg, *k), dt)
        return dt, rng, x, w, g, stride, pad, dil, opad
    ins = [max(draw(st.integers(1, maxin)), dil[i] * (k[i] - 1) + 1 - pad[i][0] - pad[i][1]) for i in range(nd)]
    x = normal(rng, (N, g * cg, *ins), dt)
    w = normal(rng, (g * kg, cg, *k), dt)
    return dt, rng, x, w, g, stride, pad, dil, None


def _algo(draw, x, w, stride, dil):
    ok_wino = x.ndim == 4 and w.shape[2:] == (3, 3) and stride == [1, 1] and dil == [1, 1]
    return draw(st.sampled_from(["auto", "gemm", "winograd"] if ok_wino else ["auto", "gemm"]))


def torch_conv(x, w, b, stride, pad, dil, g):
    torch = _torch()
    nd = x.ndim - 2
    fpad = [p for pair in reversed(pad) for p in pair]
    xt = torch.nn.functional.pad(x, fpad)
    f = [None, torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d][nd]
    return f(xt, w, b, stride=stride, dilation=dil, groups=g)


def torch_convt(x, w, b, stride, pad, opad, dil, g):
    torch = _torch()
    nd = x.ndim - 2
    f = [None, torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
         torch.nn.functional.conv_transpose3d][nd]
    full = f(x, w, None, stride=stride, dilation=dil, groups=g)
    fpad = [p for i in reversed(range(nd)) for p in (0, opad[i])]
    full = torch.nn.functional.pad(full, fpad)
    sl = [slice(None), slice(None)]
    for i in range(nd):
        L = full.shape[2 + i] - opad[i]
        sl.append(slice(pad[i][0], L - pad[i][1] + opad[i]))
    y = full[tuple(sl)]
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * nd))
    return y


def _t(a):
    torch = _torch()
    return None if a is None else torch.from_numpy(np.array(a, dtype=F64))


def conv_fwd_case(draw):
    dt, rng, x, w, g, stride, pad, dil, _ = conv_geometry(draw)
    b = normal(rng, (w.shape[0],), dt) if draw(st.booleans()) else None
    args = dict(x=x, weight=w, bias=b, stride=stride, padding=pad, dilation=dil, groups=g,
                algo=_algo(draw, x, w, stride, dil))

    def ref(a):
        return [torch_conv(_t(a["x"]), _t(a["weight"]), _t(a["bias"]), stride, pad, dil, g).numpy()]

    # weight's shape is not tied: another K or kernel size is another valid layer.
    return Case("conv_forward", args, reads=("x", "weight", "bias"), tied=("bias",),
                ints=("stride", "padding", "dilation", "groups"), strs=("algo",), ref=ref, rtol=1e-3, atol=1e-3)


def conv_bwd_case(draw):
    dt, rng, x, w, g, stride, pad, dil, _ = conv_geometry(draw)
    y = torch_conv(_t(x), _t(w), None, stride, pad, dil, g)
    gy = normal(rng, tuple(y.shape), dt)
    need = [draw(st.booleans()) for _ in range(3)]
    args = dict(grad_output=gy, x=x, weight=w, stride=stride, padding=pad, dilation=dil, groups=g,
                need_input=need[0], need_weight=need[1], need_bias=need[2], algo=_algo(draw, x, w, stride, dil))

    def ref(a):
        xt, wt = _t(a["x"]).requires_grad_(), _t(a["weight"]).requires_grad_()
        bt = _t(np.zeros(w.shape[0])).requires_grad_()
        torch_conv(xt, wt, bt, stride, pad, dil, g).backward(_t(a["grad_output"]))
        return [t.grad.numpy() if n else None for t, n in zip((xt, wt, bt), need)]

    return Case("conv_backward", args, reads=("grad_output", "x", "weight"), tied=("grad_output", "weight"),
                ints=("stride", "padding", "dilation", "groups"), strs=("algo",), ref=ref, rtol=1e-3, atol=1e-3)


def convt_fwd_case(draw):
    dt, rng, x, w, g, stride, pad, dil, opad = conv_geometry(draw, transposed=True)
    b = normal(rng, (w.shape[1] * g,), dt) if draw(st.booleans()) else None
    args = dict(x=x, weight=w, bias=b, stride=stride, padding=pad, output_padding=opad, dilation=dil, groups=g,
                algo=draw(st.sampled_from(["auto", "gemm"])))

    def ref(a):
        return [torch_convt(_t(a["x"]), _t(a["weight"]), _t(a["bias"]), stride, pad, opad, dil, g).numpy()]

    return Case("conv_transpose_forward", args, reads=("x", "weight", "bias"), tied=("bias",),
                ints=("stride", "padding", "output_padding", "dilation", "groups"), strs=("algo",), ref=ref,
                rtol=1e-3, atol=1e-3)


def convt_bwd_case(draw):
    dt, rng, x, w, g, stride, pad, dil, opad = conv_geometry(draw, transposed=True)
    y = torch_convt(_t(x), _t(w), None, stride, pad, opad, dil, g)
    gy = normal(rng, tuple(y.shape), dt)
    need = [draw(st.booleans()) for _ in range(3)]
    args = dict(grad_output=gy, x=x, weight=w, stride=stride, padding=pad, output_padding=opad, dilation=dil,
                groups=g, need_input=need[0], need_weight=need[1], need_bias=need[2], algo="auto")

    def ref(a):
        xt, wt = _t(a["x"]).requires_grad_(), _t(a["weight"]).requires_grad_()
        bt = _t(np.zeros(w.shape[1] * g)).requires_grad_()
        torch_convt(xt, wt, bt, stride, pad, opad, dil, g).backward(_t(a["grad_output"]))
        return [t.grad.numpy() if n else None for t, n in zip((xt, wt, bt), need)]

    return Case("conv_transpose_backward", args, reads=("grad_output", "x", "weight"), tied=("grad_output", "weight"),
                ints=("stride", "padding", "output_padding", "dilation", "groups"), strs=("algo",), ref=ref,
                rtol=1e-3, atol=1e-3)


def linear_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    M, I, O = draw(st.integers(1, 9)), draw(st.integers(1, 37)), draw(st.integers(1, 19))
    x, w = normal(rng, (M, I), dt), normal(rng, (O, I), dt)
    b = normal(rng, (O,), dt) if draw(st.booleans()) else None
    ref = lambda a: [a["x"].astype(F64) @ a["weight"].T.astype(F64) + (0 if a["bias"] is None else a["bias"])]  # noqa
    return Case("linear_forward", dict(x=x, weight=w, bias=b), reads=("x", "weight", "bias"), tied=("bias",),
                ref=ref, rtol=1e-3, atol=1e-3)


def linear_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    M, I, O = draw(st.integers(1, 9)), draw(st.integers(1, 37)), draw(st.integers(1, 19))
    x, w, gy = normal(rng, (M, I), dt), normal(rng, (O, I), dt), normal(rng, (M, O), dt)
    need = [draw(st.booleans()) for _ in range(3)]
    args = dict(grad_output=gy, x=x, weight=w, need_input=need[0], need_weight=need[1], need_bias=need[2])

    def ref(a):
        g, xx, ww = (a[k].astype(F64) for k in ("grad_output", "x", "weight"))
        return [r if n else None for r, n in zip((g @ ww, g.T @ xx, g.sum(0)), need)]

    return Case("linear_backward", args, reads=("grad_output", "x", "weight"), tied=("grad_output", "weight"),
                ref=ref, rtol=1e-3, atol=1e-3)


def squeeze_excite_case(draw):
    # Issue 16: x * act2(w2 @ act1(w1 @ mean(x) + b1) + b2) per image and channel; a few
    # images take the matrix-vector kernel, more the GEMM.
    rng, dt = rng_of(draw), dtype_of(draw)
    N, Cc, R = draw(st.integers(1, 6)), draw(st.integers(1, 19)), draw(st.integers(1, 7))
    sp = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)))
    x, w1, w2 = normal(rng, (N, Cc) + sp, dt), normal(rng, (R, Cc), dt), normal(rng, (Cc, R), dt)
    b1 = normal(rng, (R,), dt) if draw(st.booleans()) else None
    b2 = normal(rng, (Cc,), dt) if draw(st.booleans()) else None
    act1, act2 = draw(st.sampled_from(["relu", "silu", "none"])), draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
    args = dict(x=x, w1=w1, b1=b1, w2=w2, b2=b2, act1=act1, act2=act2, alpha2=1 / 6, beta2=0.5)
    acts = {"relu": lambda v: np.maximum(v, 0), "silu": lambda v: v / (1 + np.exp(-v)), "none": lambda v: v,
            "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "hardsigmoid": lambda v: np.clip(v / 6 + 0.5, 0, 1)}

    def ref(a):
        xx = a["x"].astype(F64)
        pooled = xx.reshape(N, Cc, -1).mean(axis=2)
        h = acts[act1](pooled @ a["w1"].T.astype(F64) + (0 if a["b1"] is None else a["b1"]))
        sc = acts[act2](h @ a["w2"].T.astype(F64) + (0 if a["b2"] is None else a["b2"]))
        return [xx * sc.reshape((N, Cc) + (1,) * len(sp))]

    return Case("squeeze_excite_forward", args, reads=("x", "w1", "b1", "w2", "b2"), tied=("w2", "b1", "b2"),
                strs=("act1", "act2"), floats=("alpha2", "beta2"), ref=ref, rtol=1e-3, atol=1e-3)


def gemm_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    M, K, N = draw(st.integers(1, 23)), draw(st.integers(1, 37)), draw(st.integers(1, 33))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    a = normal(rng, (K, M) if ta else (M, K), dt)
    b = normal(rng, (N, K) if tb else (K, N), dt)

    def ref(x):
        aa, bb = x["a"].astype(F64), x["b"].astype(F64)
        return [(aa.T if ta else aa) @ (bb.T if tb else bb)]

    return Case("gemm", dict(a=a, b=b, trans_a=ta, trans_b=tb), reads=("a", "b"), tied=("b",), ref=ref, rtol=1e-3,
                atol=1e-3)


def peak_case(draw):
    return Case("fma_peak_gflops", dict(threads=1), ints=("threads",), notes={"measurement": True})


# ---- pooling --------------------------------------------------------------------


def pool_geometry(draw, D, dilated=True, avg=False):
    rng, dt = rng_of(draw), dtype_of(draw)
    k = [draw(st.integers(1, 3)) for _ in range(D)]
    s = [draw(st.integers(1, 3)) for _ in range(D)]
    p = [draw(st.integers(0, ki // 2)) for ki in k]
    d = [draw(st.integers(1, 2)) if dilated else 1 for _ in range(D)]
    ceil = draw(st.booleans())
    maxin = 9 if D < 3 else 5
    ins = []
    for i in range(D):
        need = d[i] * (k[i] - 1) + 1 - 2 * p[i]
        if avg and D == 3:
            need = max(need, k[i])
        ins.append(max(draw(st.integers(1, maxin)), need, 1))
    x = normal(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *ins), dt)
    return rng, dt, x, k, s, p, d, ceil


def _torch_pool(kind, D):
    torch = _torch()
    return getattr(torch.nn.functional, f"{kind}{D}d")


def max_pool_fwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, d, ceil = pool_geometry(draw, D)
        ri = draw(st.booleans())
        args = dict(input=x, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil, return_indices=ri)

        def ref(a):
            y, i = _torch_pool("max_pool", D)(_t(a["input"]), k, s, p, d, ceil_mode=ceil, return_indices=True)
            return [y.numpy(), i.numpy() if ri else None]

        return Case(f"max_pool{D}d_forward", args, reads=("input",), ints=("kernel_size", "stride", "padding",
                    "dilation"), ref=ref, rtol=1e-6, atol=1e-6)

    return build


def _scatter_ref(gy, idx, in_shape):
    N, Cc = in_shape[:2]
    gx = np.zeros((N * Cc, int(np.prod(in_shape[2:]))))
    g2, i2 = gy.reshape(N * Cc, -1).astype(F64), idx.reshape(N * Cc, -1)
    for r in range(N * Cc):
        np.add.at(gx[r], i2[r], g2[r])
    return gx.reshape(in_shape)


def max_pool_bwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, d, ceil = pool_geometry(draw, D, dilated=False)
        y, idx = getattr(C, f"max_pool{D}d_forward")(x, k, s, p, [1] * D, ceil, True)
        args = dict(grad_output=normal(rng, y.shape, dt), indices=idx, input_size=list(x.shape))
        return Case(f"max_pool{D}d_backward", args, reads=("grad_output", "indices"), tied=("indices",),
                    ints=("input_size",), ref=lambda a: [_scatter_ref(a["grad_output"], a["indices"], x.shape)],
                    rtol=1e-5, atol=1e-5, notes={"indices": "indices"})

    return build


def avg_pool_fwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, _, ceil = pool_geometry(draw, D, dilated=False, avg=True)
        cip = draw(st.booleans())
        div = draw(st.sampled_from([None, 1, 3]))
        args = dict(input=x, kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip,
                    divisor_override=div)

        def ref(a):
            f = _torch_pool("avg_pool", D)
            kw = dict(ceil_mode=ceil, count_include_pad=cip)
            if D > 1:
                kw["divisor_override"] = div
            elif div is not None:
                return [None]
            return [f(_t(a["input"]), k, s, p, **kw).numpy()]

        return Case(f"avg_pool{D}d_forward", args, reads=("input",),
                    ints=("kernel_size", "stride", "padding", "divisor_override"), ref=ref, rtol=1e-4, atol=1e-5)

    return build


def avg_pool_bwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, _, ceil = pool_geometry(draw, D, dilated=False, avg=True)
        cip = draw(st.booleans())
        y = getattr(C, f"avg_pool{D}d_forward")(x, k, s, p, ceil, cip, None)
        args = dict(grad_output=normal(rng, y.shape, dt), input_size=list(x.shape), kernel_size=k, stride=s,
                    padding=p, ceil_mode=ceil, count_include_pad=cip, divisor_override=None)

        def ref(a):
            xt = _t(x).requires_grad_()
            _torch_pool("avg_pool", D)(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip).backward(
                _t(a["grad_output"]))
            return [xt.grad.numpy()]

        return Case(f"avg_pool{D}d_backward", args, reads=("grad_output",),
                    ints=("input_size", "kernel_size", "stride", "padding", "divisor_override"), ref=ref, rtol=1e-4,
                    atol=1e-5)

    return build


def adaptive_fwd_case(kind, D):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        ins = [draw(st.integers(1, 9 if D < 3 else 5)) for _ in range(D)]
        x = normal(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *ins), dt)
        os_ = [draw(st.integers(1, 6)) for _ in range(D)]

        def ref(a):
            f = _torch_pool(f"adaptive_{kind}_pool", D)
            if kind == "max":
                y, i = f(_t(a["input"]), os_, return_indices=True)
                return [y.numpy(), i.numpy()]
            return [f(_t(a["input"]), os_).numpy()]

        return Case(f"adaptive_{kind}_pool{D}d_forward", dict(input=x, output_size=os_), reads=("input",),
                    ints=("output_size",), ref=ref, rtol=1e-4, atol=1e-5)

    return build


def adaptive_avg_bwd_case(D):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        ins = [draw(st.integers(1, 9 if D < 3 else 5)) for _ in range(D)]
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *ins)
        os_ = [draw(st.integers(1, 6)) for _ in range(D)]
        gy = normal(rng, shape[:2] + tuple(os_), dt)

        def ref(a):
            xt = _t(np.zeros(shape)).requires_grad_()
            _torch_pool("adaptive_avg_pool", D)(xt, os_).backward(_t(a["grad_output"]))
            return [xt.grad.numpy()]

        return Case(f"adaptive_avg_pool{D}d_backward", dict(grad_output=gy, input_size=list(shape)),
                    reads=("grad_output",), ints=("input_size",), ref=ref, rtol=1e-4, atol=1e-5)

    return build


def adaptive_max_bwd_case(D):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        ins = [draw(st.integers(1, 9 if D < 3 else 5)) for _ in range(D)]
        x = normal(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *ins), dt)
        os_ = [draw(st.integers(1, 6)) for _ in range(D)]
        y, idx = getattr(C, f"adaptive_max_pool{D}d_forward")(x, os_)
        args = dict(grad_output=normal(rng, y.shape, dt), indices=idx, input_size=list(x.shape))
        return Case(f"adaptive_max_pool{D}d_backward", args, reads=("grad_output", "indices"), tied=("indices",),
                    ints=("input_size",), ref=lambda a: [_scatter_ref(a["grad_output"], a["indices"], x.shape)],
                    rtol=1e-5, atol=1e-5, notes={"indices": "indices"})

    return build


def unpool_fwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, _, ceil = pool_geometry(draw, D, dilated=False)
        y, idx = getattr(C, f"max_pool{D}d_forward")(x, k, s, p, [1] * D, False, True)
        os_ = list(x.shape[2:])

        def ref(a):
            out = np.zeros((y.shape[0] * y.shape[1], int(np.prod(os_))))
            i2, v2 = a["indices"].reshape(out.shape[0], -1), a["input"].reshape(out.shape[0], -1)
            for r in range(out.shape[0]):
                out[r, i2[r]] = v2[r]
            return [out.reshape(y.shape[:2] + tuple(os_))]

        return Case(f"max_unpool{D}d_forward", dict(input=y, indices=idx, output_size=os_), reads=("input", "indices"),
                    tied=("indices",), ints=("output_size",), ref=ref, rtol=0, atol=0, notes={"indices": "indices"})

    return build


def unpool_bwd_case(D):
    def build(draw):
        rng, dt, x, k, s, p, _, ceil = pool_geometry(draw, D, dilated=False)
        y, idx = getattr(C, f"max_pool{D}d_forward")(x, k, s, p, [1] * D, False, True)
        gy = normal(rng, x.shape, dt)

        def ref(a):
            g2 = a["grad_output"].reshape(y.shape[0] * y.shape[1], -1)
            i2 = a["indices"].reshape(g2.shape[0], -1)
            return [np.take_along_axis(g2, i2, axis=1).reshape(y.shape)]

        # Only the indices' (N, C) are tied to grad_output: their spatial size is the result's.
        return Case(f"max_unpool{D}d_backward", dict(grad_output=gy, indices=idx), reads=("grad_output", "indices"),
                    tied=("indices",), ref=ref, rtol=0, atol=0, notes={"indices": "indices", "tied_dims": 2})

    return build


# ---- normalisation ----------------------------------------------------------------


def nc_input(draw, rng, dt, min_rank=2, max_rank=5):
    r = draw(st.integers(min_rank, max_rank))
    shape = [draw(st.integers(1, 3)), draw(st.integers(1, 6))] + [draw(st.integers(1, 6)) for _ in range(r - 2)]
    return normal(rng, tuple(shape), dt)


def maybe(draw, make):
    return make() if draw(st.booleans()) else None


def batch_norm_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt)
    training = draw(st.booleans())
    if training and x.size // x.shape[1] < 2:
        x = np.concatenate([x, x + 1], axis=0)
    Cc = x.shape[1]
    rm = normal(rng, (Cc,), dt) if (not training or draw(st.booleans())) else None
    rv = (np.abs(normal(rng, (Cc,), dt)) + 0.5) if rm is not None else None
    args = dict(input=x, weight=maybe(draw, lambda: normal(rng, (Cc,), dt)),
                bias=maybe(draw, lambda: normal(rng, (Cc,), dt)), running_mean=rm, running_var=rv, training=training,
                momentum=draw(st.floats(0, 1)), eps=1e-5)
    # Inference only reads the running statistics (read-only arrays are accepted there).
    stats = ("running_mean", "running_var")
    return Case("batch_norm_forward", args, reads=("input", "weight", "bias") + (() if training else stats),
                writes=stats if training else (), tied=("weight", "bias", "running_mean", "running_var"),
                floats=("momentum", "eps"), rtol=1e-3, atol=1e-3)


def batch_norm_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt)
    if x.size // x.shape[1] < 2:
        x = np.concatenate([x, x + 1], axis=0)
    Cc = x.shape[1]
    training = draw(st.booleans())
    w = maybe(draw, lambda: normal(rng, (Cc,), dt))
    _, sm, sr = C.batch_norm_forward(x, w, None, None, None, True, 0.1, 1e-5)
    args = dict(grad_output=normal(rng, x.shape, dt), input=x, weight=w, save_mean=sm, save_rstd=sr,
                training=training)
    return Case("batch_norm_backward", args, reads=("grad_output", "input", "weight", "save_mean", "save_rstd"),
                tied=("grad_output", "weight", "save_mean", "save_rstd"), rtol=1e-3, atol=1e-3)


def group_norm_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt)
    Cc = x.shape[1]
    G = draw(st.sampled_from([g for g in range(1, Cc + 1) if Cc % g == 0]))
    args = dict(input=x, num_groups=G, weight=maybe(draw, lambda: normal(rng, (Cc,), dt)),
                bias=maybe(draw, lambda: normal(rng, (Cc,), dt)), eps=1e-5)
    return Case("group_norm_forward", args, reads=("input", "weight", "bias"), tied=("weight", "bias"),
                ints=("num_groups",), floats=("eps",), rtol=1e-3, atol=1e-3)


def group_norm_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt)
    Cc = x.shape[1]
    G = draw(st.sampled_from([g for g in range(1, Cc + 1) if Cc % g == 0]))
    w = maybe(draw, lambda: normal(rng, (Cc,), dt))
    _, m, r = C.group_norm_forward(x, G, w, None, 1e-5)
    args = dict(grad_output=normal(rng, x.shape, dt), input=x, num_groups=G, weight=w, mean=m, rstd=r)
    return Case("group_norm_backward", args, reads=("grad_output", "input", "weight", "mean", "rstd"),
                tied=("grad_output", "weight", "mean", "rstd"), ints=("num_groups",), rtol=1e-3, atol=1e-3)


def instance_norm_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt, 3)
    if x.size // (x.shape[0] * x.shape[1]) < 2:
        x = np.concatenate([x, x + 1], axis=2)
    Cc = x.shape[1]
    rm = maybe(draw, lambda: normal(rng, (Cc,), dt))
    args = dict(input=x, weight=maybe(draw, lambda: normal(rng, (Cc,), dt)),
                bias=maybe(draw, lambda: normal(rng, (Cc,), dt)), running_mean=rm,
                running_var=None if rm is None else np.abs(normal(rng, (Cc,), dt)) + 0.5,
                momentum=draw(st.floats(0, 1)), eps=1e-5)
    return Case("instance_norm_forward", args, reads=("input", "weight", "bias"),
                writes=("running_mean", "running_var"), tied=("weight", "bias", "running_mean", "running_var"),
                floats=("momentum", "eps"), rtol=1e-3, atol=1e-3)


def instance_norm_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt, 3)
    if x.size // (x.shape[0] * x.shape[1]) < 2:
        x = np.concatenate([x, x + 1], axis=2)
    Cc = x.shape[1]
    w = maybe(draw, lambda: normal(rng, (Cc,), dt))
    _, m, r = C.instance_norm_forward(x, w, None, None, None, 0.1, 1e-5)
    args = dict(grad_output=normal(rng, x.shape, dt), input=x, weight=w, mean=m, rstd=r)
    return Case("instance_norm_backward", args, reads=("grad_output", "input", "weight", "mean", "rstd"),
                tied=("grad_output", "weight", "mean", "rstd"), rtol=1e-3, atol=1e-3)


def layer_norm_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = normal(rng, any_shape(draw, 1, 4), dt)
    nd = draw(st.integers(1, x.ndim))
    L = int(np.prod(x.shape[x.ndim - nd:]))
    args = dict(input=x, normalized_ndim=nd, weight=maybe(draw, lambda: normal(rng, (L,), dt)),
                bias=maybe(draw, lambda: normal(rng, (L,), dt)), eps=1e-5)

    def ref(a):
        xx = a["input"].astype(F64).reshape(-1, L)
        m, v = xx.mean(1, keepdims=True), xx.var(1, keepdims=True)
        y = (xx - m) / np.sqrt(v + 1e-5)
        if a["weight"] is not None:
            y = y * a["weight"]
        if a["bias"] is not None:
            y = y + a["bias"]
        return [y.reshape(x.shape), None, None]

    return Case("layer_norm_forward", args, reads=("input", "weight", "bias"), tied=("weight", "bias"),
                ints=("normalized_ndim",), floats=("eps",), ref=ref, rtol=2e-3, atol=2e-3)


def layer_norm_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = normal(rng, any_shape(draw, 1, 4), dt)
    nd = draw(st.integers(1, x.ndim))
    L = int(np.prod(x.shape[x.ndim - nd:]))
    w = maybe(draw, lambda: normal(rng, (L,), dt))
    _, m, r = C.layer_norm_forward(x, nd, w, None, 1e-5)
    args = dict(grad_output=normal(rng, x.shape, dt), input=x, normalized_ndim=nd, weight=w, mean=m, rstd=r,
                need_param_grads=draw(st.booleans()))
    return Case("layer_norm_backward", args, reads=("grad_output", "input", "weight", "mean", "rstd"),
                tied=("grad_output", "weight", "mean", "rstd"), ints=("normalized_ndim",), rtol=2e-3, atol=2e-3)


def lrn_fwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt, 3)
    args = dict(input=x, size=draw(st.integers(1, 7)), alpha=1e-2, beta=0.75, k=1.0)
    return Case("local_response_norm_forward", args, reads=("input",), ints=("size",),
                floats=("alpha", "beta", "k"), rtol=1e-3, atol=1e-4)


def lrn_bwd_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    x = nc_input(draw, rng, dt, 3)
    size = draw(st.integers(1, 7))
    y, den = C.local_response_norm_forward(x, size, 1e-2, 0.75, 1.0)
    args = dict(grad_output=normal(rng, x.shape, dt), input=x, output=y, denom=den, size=size, alpha=1e-2, beta=0.75)
    return Case("local_response_norm_backward", args, reads=("grad_output", "input", "output", "denom"),
                tied=("grad_output", "output", "denom"), ints=("size",), floats=("alpha", "beta"), rtol=1e-3,
                atol=1e-4)


# ---- dropout --------------------------------------------------------------------


def dropout_case(feature, backward):
    name = ("feature_" if feature else "") + "dropout_" + ("backward" if backward else "forward")
    xname = "grad_output" if backward else "input"

    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = normal(rng, any_shape(draw, 2 if feature else 0, 4), dt)
        p = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
        seed, offset = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**40))
        args = {xname: x, "p": p, "seed": seed, "offset": offset}
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)

        def ref(a):
            xx = a[xname].astype(F64)
            planes = xx.shape[0] * xx.shape[1] if feature else xx.size
            m = C.dropout_mask(planes, p, seed, offset).astype(F64)
            if feature:
                m = m.reshape(xx.shape[:2] + (1,) * (xx.ndim - 2))
            else:
                m = m.reshape(xx.shape)
            return [xx * m / (1 - p) if p < 1 else xx * 0]

        return Case(name, args, reads=(xname,), tied=("out",), floats=("p",), ints=("seed", "offset"), out="out",
                    ref=ref, rtol=1e-6, atol=1e-6)

    return build


def dropout_mask_case(draw):
    args = dict(n=draw(st.integers(1, 100)), p=draw(st.sampled_from([0.0, 0.3, 1.0])),
                seed=draw(st.integers(0, 2**64 - 1)), offset=draw(st.integers(0, 2**40)))
    return Case("dropout_mask", args, ints=("n", "seed", "offset"), floats=("p",))


# ---- losses ---------------------------------------------------------------------

RED = ["none", "mean", "sum"]


def _reduce(e, red):
    return e if red == "none" else (e.mean() if red == "mean" else e.sum())


def pointwise_loss(name, backward):
    pname = {"huber_loss": "delta", "smooth_l1_loss": "beta"}.get(name, "param")
    fwd_ref = {
        "l1_loss": lambda d, q: np.abs(d),
        "mse_loss": lambda d, q: d * d,
        "huber_loss": lambda d, q: np.where(np.abs(d) < q, 0.5 * d * d, q * (np.abs(d) - 0.5 * q)),
        "smooth_l1_loss": lambda d, q: np.where(np.abs(d) < q, 0.5 * d * d / max(q, 1e-300), np.abs(d) - 0.5 * q),
    }[name]

    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        shape = any_shape(draw, 0, 4)
        x, t = normal(rng, shape, dt), normal(rng, shape, dt)
        red = draw(st.sampled_from(RED))
        q = draw(st.floats(0.1, 2.0))
        args = dict(input=x, target=t, reduction=red)
        args[pname] = q
        if not backward:
            ref = lambda a: [np.asarray(_reduce(fwd_ref(a["input"].astype(F64) - a["target"], q), red))]  # noqa
            if name == "smooth_l1_loss" and q == 0:
                ref = None
            return Case(name + "_forward", args, reads=("input", "target"), tied=("target",), floats=(pname,),
                        strs=("reduction",), ref=ref, rtol=1e-3, atol=1e-4)
        gy = normal(rng, shape if red == "none" else (), dt)
        args = dict(grad_output=gy, **args)
        return Case(name + "_backward", args, reads=("grad_output", "input", "target"), tied=("target", "grad_output"),
                    floats=(pname,), strs=("reduction",), rtol=1e-3, atol=1e-4)

    return build


def class_input(draw, rng, dt, max_rank=4):
    r = draw(st.integers(2, max_rank))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 11))) + tuple(draw(st.integers(1, 4)) for _ in range(r - 2))
    return normal(rng, shape, dt)


def index_target(draw, rng, x, ignore):
    t = rng.integers(0, x.shape[1], size=(x.shape[0],) + x.shape[2:]).astype(np.int64)
    if draw(st.booleans()):
        t.reshape(-1)[0] = ignore
    return t


def ce_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = class_input(draw, rng, dt)
        ignore = draw(st.sampled_from([-100, 0]))
        prob = draw(st.booleans())
        if prob:
            t = _softmax(normal(rng, x.shape, F64), 1, False).astype(dt)
        else:
            t = index_target(draw, rng, x, ignore)
        red, ls = draw(st.sampled_from(RED)), draw(st.sampled_from([0.0, 0.1]))
        w = maybe(draw, lambda: np.abs(normal(rng, (x.shape[1],), dt)) + 0.1)
        args = dict(input=x, target=t, weight=w, ignore_index=ignore, reduction=red, label_smoothing=ls)
        if not backward:
            return Case("cross_entropy_forward", args, reads=("input", "target", "weight"), tied=("target", "weight"),
                        ints=("ignore_index",), floats=("label_smoothing",), strs=("reduction",), rtol=1e-3, atol=1e-4,
                        notes={"indices": None if prob else "target"})
        loss, lse = C.cross_entropy_forward(**args)
        gy = normal(rng, loss.shape, dt)
        args = dict(grad_output=gy, input=x, target=t, lse=lse, weight=w, ignore_index=ignore, reduction=red,
                    label_smoothing=ls)
        return Case("cross_entropy_backward", args, reads=("grad_output", "input", "target", "lse", "weight"),
                    tied=("grad_output", "target", "lse", "weight"), ints=("ignore_index",),
                    floats=("label_smoothing",), strs=("reduction",), rtol=1e-3, atol=1e-4,
                    notes={"indices": None if prob else "target"})

    return build


def nll_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        x = _softmax(class_input(draw, rng, F64), 1, True).astype(dt)
        ignore = draw(st.sampled_from([-100, 1]))
        t = index_target(draw, rng, x, ignore)
        red = draw(st.sampled_from(RED))
        w = maybe(draw, lambda: np.abs(normal(rng, (x.shape[1],), dt)) + 0.1)
        args = dict(input=x, target=t, weight=w, ignore_index=ignore, reduction=red)
        if not backward:
            return Case("nll_loss_forward", args, reads=("input", "target", "weight"), tied=("target", "weight"),
                        ints=("ignore_index",), strs=("reduction",), rtol=1e-3, atol=1e-4,
                        notes={"indices": "target"})
        loss = C.nll_loss_forward(**args)
        args = dict(grad_output=normal(rng, loss.shape, dt), **args)
        return Case("nll_loss_backward", args, reads=("grad_output", "input", "target", "weight"),
                    tied=("grad_output", "target", "weight"), ints=("ignore_index",), strs=("reduction",), rtol=1e-3,
                    atol=1e-4, notes={"indices": "target"})

    return build


def bce_case(logits, backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        shape = any_shape(draw, 1, 4)
        x = normal(rng, shape, dt) if logits else (_SIG(normal(rng, shape, F64)).astype(dt))
        t = rng.uniform(0, 1, shape).astype(dt)
        red = draw(st.sampled_from(RED))
        tail = shape[len(shape) - draw(st.integers(0, len(shape))):]
        args = dict(input=x, target=t, weight=maybe(draw, lambda: np.asarray(np.abs(normal(rng, tail, dt)) + 0.1)))
        if logits:
            args["pos_weight"] = maybe(draw, lambda: np.asarray(np.abs(normal(rng, shape[-1:], dt)) + 0.1))
        args["reduction"] = red
        name = "binary_cross_entropy" + ("_with_logits" if logits else "")
        reads = ("input", "target", "weight") + (("pos_weight",) if logits else ())
        if not backward:
            return Case(name + "_forward", args, reads=reads, tied=("target",), strs=("reduction",), rtol=1e-3,
                        atol=1e-4)
        loss = getattr(C, name + "_forward")(**args)
        args = dict(grad_output=normal(rng, loss.shape, dt), **args)
        return Case(name + "_backward", args, reads=("grad_output",) + reads, tied=("grad_output", "target"),
                    strs=("reduction",), rtol=1e-3, atol=1e-4)

    return build


def multi_margin_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        N, Cc = draw(st.integers(1, 5)), draw(st.integers(1, 11))
        x = normal(rng, (N, Cc), dt)
        t = rng.integers(0, Cc, size=N).astype(np.int64)
        args = dict(input=x, target=t, p=draw(st.sampled_from([1, 2])), margin=draw(st.floats(0, 2)),
                    weight=maybe(draw, lambda: np.abs(normal(rng, (Cc,), dt))), reduction=draw(st.sampled_from(RED)))
        if not backward:
            return Case("multi_margin_loss_forward", args, reads=("input", "target", "weight"),
                        tied=("target", "weight"), ints=("p",), floats=("margin",), strs=("reduction",), rtol=1e-3,
                        atol=1e-4, notes={"indices": "target"})
        loss = C.multi_margin_loss_forward(**args)
        args = dict(grad_output=normal(rng, loss.shape, dt), **args)
        return Case("multi_margin_loss_backward", args, reads=("grad_output", "input", "target", "weight"),
                    tied=("grad_output", "target", "weight"), ints=("p",), floats=("margin",), strs=("reduction",),
                    rtol=1e-3, atol=1e-4, notes={"indices": "target"})

    return build


def triplet_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        N, D = draw(st.integers(1, 5)), draw(st.integers(1, 19))
        a, p, n = (normal(rng, (N, D), dt) for _ in range(3))
        args = dict(anchor=a, positive=p, negative=n, margin=draw(st.floats(0, 2)),
                    p=draw(st.sampled_from([1.0, 2.0, 3.0])), eps=1e-6, swap=draw(st.booleans()),
                    reduction=draw(st.sampled_from(RED)))
        if not backward:
            return Case("triplet_margin_loss_forward", args, reads=("anchor", "positive", "negative"),
                        tied=("positive", "negative"), floats=("margin", "p", "eps"), strs=("reduction",), rtol=1e-3,
                        atol=1e-4)
        loss = C.triplet_margin_loss_forward(**args)
        args = dict(grad_output=normal(rng, loss.shape, dt), **args)
        return Case("triplet_margin_loss_backward", args, reads=("grad_output", "anchor", "positive", "negative"),
                    tied=("grad_output", "positive", "negative"), floats=("margin", "p", "eps"), strs=("reduction",),
                    rtol=1e-3, atol=1e-4)

    return build


# ---- optimizers -----------------------------------------------------------------


def optim_case(name):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        shape = any_shape(draw, 1, 3, last_max=37)
        p, g = normal(rng, shape, dt), normal(rng, shape, dt)
        buf = lambda: np.abs(normal(rng, shape, dt))  # noqa: E731
        if name == "sgd_step":
            mom = draw(st.sampled_from([0.0, 0.9]))
            args = dict(param=p, grad=g, momentum_buffer=buf() if mom else maybe(draw, buf), lr=0.1, momentum=mom,
                        dampening=0.0, weight_decay=draw(st.sampled_from([0.0, 0.01])),
                        nesterov=bool(mom) and draw(st.booleans()), maximize=draw(st.booleans()),
                        first_step=draw(st.booleans()))
            writes, floats = ("param", "momentum_buffer"), ("lr", "momentum", "dampening", "weight_decay")
        elif name == "adam_step":
            ams = draw(st.booleans())
            args = dict(param=p, grad=g, exp_avg=normal(rng, shape, dt), exp_avg_sq=buf(),
                        max_exp_avg_sq=buf() if ams else None, step=draw(st.integers(1, 10)), lr=1e-2, beta1=0.9,
                        beta2=0.999, eps=1e-8, weight_decay=draw(st.sampled_from([0.0, 0.01])), amsgrad=ams,
                        maximize=draw(st.booleans()), decoupled_weight_decay=draw(st.booleans()))
            writes, floats = ("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), ("lr", "beta1", "beta2", "eps")
        elif name == "adagrad_step":
            args = dict(param=p, grad=g, state_sum=buf(), step=draw(st.integers(1, 10)), lr=1e-2, lr_decay=0.0,
                        weight_decay=0.0, eps=1e-10, maximize=draw(st.booleans()))
            writes, floats = ("param", "state_sum"), ("lr", "lr_decay", "weight_decay", "eps")
        elif name == "adadelta_step":
            args = dict(param=p, grad=g, square_avg=buf(), acc_delta=buf(), lr=1.0, rho=0.9, eps=1e-6,
                        weight_decay=0.0, maximize=draw(st.booleans()))
            writes, floats = ("param", "square_avg", "acc_delta"), ("lr", "rho", "eps", "weight_decay")
        else:
            cen, mom = draw(st.booleans()), draw(st.sampled_from([0.0, 0.9]))
            args = dict(param=p, grad=g, square_avg=buf(), grad_avg=normal(rng, shape, dt) if cen else None,
                        momentum_buffer=buf() if mom else None, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                        momentum=mom, centered=cen, maximize=draw(st.booleans()))
            writes, floats = ("param", "square_avg", "grad_avg", "momentum_buffer"), ("lr", "alpha", "eps", "momentum")
        ints = ("step",) if "step" in args else ()
        return Case(name, args, reads=("grad",), writes=writes, tied=("grad",) + writes[1:], ints=ints, floats=floats,
                    rtol=1e-4, atol=1e-5)

    return build


# ---- boxes (detection) ----------------------------------------------------------


def random_boxes(rng, n, dt):
    """(n, 4) corner boxes with x1 <= x2, y1 <= y2, some degenerate (zero width or height)."""
    xy = rng.uniform(0, 10, (n, 2))
    wh = rng.uniform(0, 5, (n, 2)) * (rng.random((n, 2)) > 0.1)
    return np.concatenate([xy, xy + wh], axis=1).astype(dt)


def iou_ref(a, b, kind):
    """Plain NumPy IoU / GIoU of (N, 4) x (M, 4) corner boxes; None for kinds it does not cover."""
    if kind not in ("iou", "giou"):
        return None
    a, b = a.astype(F64)[:, None, :], b.astype(F64)[None, :, :]
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter, union = iw * ih, area(a) + area(b) - iw * ih
    iou = np.divide(inter, union, out=np.zeros_like(union), where=union > 0)
    if kind == "iou":
        return iou
    hull = ((np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0]))
            * (np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])))
    return iou - np.divide(hull - union, hull, out=np.zeros_like(hull), where=hull > 0)


def box_iou_case(draw):
    rng, dt = rng_of(draw), dtype_of(draw)
    kind = draw(st.sampled_from(["iou", "giou", "diou", "ciou"]))
    a = random_boxes(rng, draw(st.integers(1, 13)), dt)
    b = random_boxes(rng, draw(st.integers(1, 11)), dt)
    ref = None if kind not in ("iou", "giou") else (lambda x: [iou_ref(x["boxes1"], x["boxes2"], kind)])
    return Case("box_iou_forward", dict(boxes1=a, boxes2=b, kind=kind), reads=("boxes1", "boxes2"), strs=("kind",),
                ref=ref, rtol=1e-4, atol=1e-5)


def box_pairs_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        kind = draw(st.sampled_from(["iou", "giou", "diou", "ciou"]))
        n = draw(st.integers(1, 13))
        a, b = random_boxes(rng, n, dt), random_boxes(rng, n, dt)
        if not backward:
            ref = None if kind not in ("iou", "giou") else (
                lambda x: [np.diagonal(iou_ref(x["boxes1"], x["boxes2"], kind))])
            return Case("box_iou_pairs_forward", dict(boxes1=a, boxes2=b, kind=kind), reads=("boxes1", "boxes2"),
                        tied=("boxes2",), strs=("kind",), ref=ref, rtol=1e-4, atol=1e-5)
        g = normal(rng, (n,), dt)
        return Case("box_iou_pairs_backward", dict(grad_output=g, boxes1=a, boxes2=b, kind=kind),
                    reads=("grad_output", "boxes1", "boxes2"), tied=("grad_output", "boxes2"), strs=("kind",),
                    rtol=1e-4, atol=1e-5)

    return build


def nms_ref(boxes, scores, iou_threshold, score_threshold, labels):
    """Greedy NMS written out: stable descending order, suppress IoU >= threshold within a label."""
    order = [i for i in np.argsort(-scores.astype(F64), kind="stable") if scores[i] >= score_threshold]
    iou = iou_ref(boxes, boxes, "iou")
    keep, dead = [], set()
    for i in order:
        if i in dead:
            continue
        keep.append(i)
        dead.update(j for j in order if iou[i, j] >= iou_threshold and (labels is None or labels[i] == labels[j]))
    return np.array(keep, np.int64)


def nms_case(soft):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        n = draw(st.integers(1, 17))
        boxes = random_boxes(rng, n, dt)
        # Rounded scores make ties, which the kernels break towards the lower index.
        scores = np.round(rng.random(n), 1).astype(dt)
        # Labels are class ids, not indices: any int64 (negative too) is a valid label.
        labels = rng.integers(-2, 3, n).astype(np.int64) if draw(st.booleans()) else None
        if soft:
            args = dict(boxes=boxes, scores=scores, method=draw(st.sampled_from(["linear", "gaussian"])),
                        sigma=0.5, iou_threshold=0.3, score_threshold=0.001, labels=labels)
            return Case("soft_nms_forward", args, reads=("boxes", "scores", "labels"), tied=("scores", "labels"),
                        floats=("sigma", "iou_threshold", "score_threshold"), strs=("method",))
        thr, sthr = draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])), draw(st.sampled_from([-np.inf, 0.0, 0.35]))
        args = dict(boxes=boxes, scores=scores, iou_threshold=thr, score_threshold=sthr, labels=labels)
        ref = lambda x: [nms_ref(x["boxes"], x["scores"], thr, sthr, x["labels"])]  # noqa: E731
        return Case("nms_forward", args, reads=("boxes", "scores", "labels"), tied=("scores", "labels"),
                    floats=("iou_threshold", "score_threshold"), ref=ref)

    return build


# ---- settings -------------------------------------------------------------------


def core_case(name):
    def build(draw):
        if name == "set_num_threads":
            return Case(name, dict(n=draw(st.integers(1, 3))), ints=("n",), notes={"setting": True})
        if name == "set_simd_level":
            return Case(name, dict(level=draw(st.sampled_from(cnnfast.simd_levels()))), strs=("level",),
                        notes={"setting": True})
        if name == "tune_host_allocator":
            # Process-wide (glibc mallopt): tested in a subprocess by test_activation.py.
            return Case(name, {}, notes={"setting": True, "process_wide": True})
        return Case(name, {}, notes={"setting": True})

    return build


# ---- the registry ---------------------------------------------------------------

SPECS: dict = {}
for _n in ACT_FWD:
    SPECS[f"{_n}_forward"] = act_fwd(_n)
    SPECS[f"{_n}_backward"] = act_bwd(_n)
for _log in (False, True):
    SPECS[("log_" if _log else "") + "softmax_forward"] = softmax_fwd(_log)
    SPECS[("log_" if _log else "") + "softmax_backward"] = softmax_bwd(_log)
SPECS.update(conv_forward=conv_fwd_case, conv_backward=conv_bwd_case, conv_transpose_forward=convt_fwd_case,
             conv_transpose_backward=convt_bwd_case, linear_forward=linear_fwd_case, linear_backward=linear_bwd_case,
             squeeze_excite_forward=squeeze_excite_case,
             gemm=gemm_case, fma_peak_gflops=peak_case)
for _D in (1, 2, 3):
    SPECS[f"max_pool{_D}d_forward"] = max_pool_fwd_case(_D)
    SPECS[f"max_pool{_D}d_backward"] = max_pool_bwd_case(_D)
    SPECS[f"avg_pool{_D}d_forward"] = avg_pool_fwd_case(_D)
    SPECS[f"avg_pool{_D}d_backward"] = avg_pool_bwd_case(_D)
    SPECS[f"adaptive_avg_pool{_D}d_forward"] = adaptive_fwd_case("avg", _D)
    SPECS[f"adaptive_avg_pool{_D}d_backward"] = adaptive_avg_bwd_case(_D)
    SPECS[f"adaptive_max_pool{_D}d_forward"] = adaptive_fwd_case("max", _D)
    SPECS[f"adaptive_max_pool{_D}d_backward"] = adaptive_max_bwd_case(_D)
    SPECS[f"max_unpool{_D}d_forward"] = unpool_fwd_case(_D)
    SPECS[f"max_unpool{_D}d_backward"] = unpool_bwd_case(_D)
SPECS.update(batch_norm_forward=batch_norm_fwd_case, batch_norm_backward=batch_norm_bwd_case,
             group_norm_forward=group_norm_fwd_case, group_norm_backward=group_norm_bwd_case,
             instance_norm_forward=instance_norm_fwd_case, instance_norm_backward=instance_norm_bwd_case,
             layer_norm_forward=layer_norm_fwd_case, layer_norm_backward=layer_norm_bwd_case,
             local_response_norm_forward=lrn_fwd_case, local_response_norm_backward=lrn_bwd_case)
for _f in (False, True):
    for _b in (False, True):
        SPECS[("feature_" if _f else "") + "dropout_" + ("backward" if _b else "forward")] = dropout_case(_f, _b)
SPECS["dropout_mask"] = dropout_mask_case
for _n in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"):
    SPECS[f"{_n}_forward"] = pointwise_loss(_n, False)
    SPECS[f"{_n}_backward"] = pointwise_loss(_n, True)
for _b in (False, True):
    _s = "backward" if _b else "forward"
    SPECS[f"cross_entropy_{_s}"] = ce_case(_b)
    SPECS[f"nll_loss_{_s}"] = nll_case(_b)
    SPECS[f"binary_cross_entropy_with_logits_{_s}"] = bce_case(True, _b)
    SPECS[f"binary_cross_entropy_{_s}"] = bce_case(False, _b)
    SPECS[f"multi_margin_loss_{_s}"] = multi_margin_case(_b)
    SPECS[f"triplet_margin_loss_{_s}"] = triplet_case(_b)
for _n in ("sgd_step", "adam_step", "adagrad_step", "rmsprop_step", "adadelta_step"):
    SPECS[_n] = optim_case(_n)
SPECS.update(box_iou_forward=box_iou_case, box_iou_pairs_forward=box_pairs_case(False),
             box_iou_pairs_backward=box_pairs_case(True), nms_forward=nms_case(False), soft_nms_forward=nms_case(True))
for _n in ("get_num_threads", "set_num_threads", "simd_level", "set_simd_level", "cpu_supports_avx2",
           "cpu_supports_avx512", "best_simd_level", "cpu_features", "cpu_model", "tune_host_allocator",
           "host_allocator_tuned", "avx512_full_rate"):
    SPECS[_n] = core_case(_n)


# ---- kernel workspace pool (issue 22) ----------------------------------------------------


def workspace_case(name):
    def build(draw):
        if name == "set_workspace_cache_limit":
            # Any limit is valid (0: no caching); a negative one is a ValueError.
            return Case(name, dict(bytes=draw(st.integers(0, 256 << 20))), ints=("bytes",), notes={"setting": True})
        return Case(name, {}, notes={"setting": True})

    return build


for _n in ("workspace_stats", "workspace_reset_peak", "workspace_trim", "set_workspace_cache_limit"):
    SPECS[_n] = workspace_case(_n)


# ---- today's CNN activations and separable resampling (issue 20) --------------------------


def _erfc(v):
    import math
    return np.vectorize(math.erfc)(v)


def _softplus_ref(x, b, th):
    z = b * x
    return np.where(z > th, x, (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / b)


def _extra_fwd_ref(name, x, b=1.0, th=20.0):
    c = 0.7978845608028654 * (x + 0.044715 * x**3)
    return {
        "gelu": lambda: x * 0.5 * _erfc(-x / np.sqrt(2)),
        "gelu_tanh": lambda: 0.5 * x * (1 + np.tanh(c)),
        "hardswish": lambda: x * np.clip(x + 3, 0, 6) / 6,
        "hardsigmoid": lambda: np.clip(x + 3, 0, 6) / 6,
        "relu6": lambda: np.clip(x, 0, 6),
        "mish": lambda: x * np.tanh(_softplus_ref(x, 1.0, 20.0)),
        "softplus": lambda: _softplus_ref(x, b, th),
        "erf": lambda: 1 - _erfc(x),
    }[name]()


def _extra_der_ref(name, x, b=1.0, th=20.0):
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = 0.7978845608028654 * (x + 0.044715 * x**3)
    dc = 0.7978845608028654 * (1 + 3 * 0.044715 * x**2)
    t = np.tanh(_softplus_ref(x, 1.0, 20.0))
    return {
        "gelu": lambda: 0.5 * _erfc(-x / np.sqrt(2)) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
        "gelu_tanh": lambda: 0.5 * (1 + np.tanh(c)) + 0.5 * x * (1 - np.tanh(c) ** 2) * dc,
        "hardswish": lambda: np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)),
        "hardsigmoid": lambda: np.where((x > -3) & (x < 3), 1 / 6, 0),
        "relu6": lambda: np.where((x <= 0) | (x >= 6), 0, 1.0),
        "mish": lambda: t + x * (1 - t * t) * sig(x),
        "softplus": lambda: np.where(b * x > th, 1.0, sig(b * x)),
        "erf": lambda: 2 / np.sqrt(np.pi) * np.exp(-x * x),
    }[name]()


EXTRA_ACTS = ("gelu", "gelu_tanh", "hardswish", "hardsigmoid", "relu6", "mish", "softplus", "erf")


def extra_act_case(name, backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        shape = any_shape(draw, 0, 4)
        x = np.asarray(rng.standard_normal(shape) * 4, dtype=dt)
        args = {"grad_output": normal(rng, shape, dt), "x": x} if backward else {"x": x}
        b, th, floats = 1.0, 20.0, ()
        if name == "softplus":
            b, th = draw(st.floats(0.25, 3)), draw(st.floats(0.5, 20))
            args.update(beta=b, threshold=th)
            floats = ("beta", "threshold")
        if draw(st.booleans()):
            args["out"] = np.empty_like(x)
        if backward:
            ref = lambda a: [a["grad_output"].astype(F64) * _extra_der_ref(name, a["x"].astype(F64), b, th)]  # noqa
            reads, tied = ("grad_output", "x"), ("x", "out")
        else:
            ref = lambda a: [_extra_fwd_ref(name, a["x"].astype(F64), b, th)]  # noqa: E731
            reads, tied = ("x",), ("out",)
        # Values sitting on a kink (+-3, 0, 6, beta*x == threshold) are avoided by the
        # continuous draw; tolerances as the other activations'.
        return Case(f"{name}_{'backward' if backward else 'forward'}", args, reads=reads, tied=tied, floats=floats,
                    out="out", ref=ref, rtol=tol(dt)[0] * 10, atol=tol(dt)[1] * 10)
    return build


def _dense_axis(idx, w, n_in):
    m = np.zeros((idx.shape[0], n_in))
    np.add.at(m, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.reshape(-1)), w.reshape(-1).astype(F64))
    return m


def resample_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        nsp = draw(st.integers(1, 3))
        n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        ins = [draw(st.integers(1, 9)) for _ in range(nsp)]
        outs = [draw(st.integers(1, 19)) for _ in range(nsp)]
        args, mats = {}, []
        for name, i, o in zip("dhw"[3 - nsp:], ins, outs):
            taps = draw(st.sampled_from([1, 2, 4]))
            idx = rng.integers(0, i, (o, taps)).astype(np.int64)
            w = np.asarray(rng.standard_normal((o, taps)), dt)
            args[f"index_{name}"], args[f"weight_{name}"] = idx, w
            mats.append(_dense_axis(idx, w, i))
        tables = tuple(k for k in args)
        letters = "abc"[:nsp]

        def apply(v, ms, transpose):
            for k, m in enumerate(ms):
                v = np.moveaxis(np.tensordot(m.T if transpose else m, np.moveaxis(v, 2 + k, 0), axes=1), 0, 2 + k)
            return v
        del letters
        if backward:
            gy = normal(rng, (n, c, *outs), dt)
            full = {"grad_output": gy, "input_shape": [n, c, *ins]}
            full.update(args)
            return Case("resample_backward", full, reads=("grad_output",) + tables, tied=tables, ints=("input_shape",),
                        ref=lambda a: [apply(a["grad_output"].astype(F64), mats, True)],
                        rtol=tol(dt)[0] * 10, atol=tol(dt)[1] * 10, notes={"indices": f"index_{'dhw'[3 - nsp:][-1]}"})
        x = normal(rng, (n, c, *ins), dt)
        full = {"x": x}
        full.update(args)
        return Case("resample_forward", full, reads=("x",) + tables, tied=tables,
                    ref=lambda a: [apply(a["x"].astype(F64), mats, False)],
                    rtol=tol(dt)[0] * 10, atol=tol(dt)[1] * 10, notes={"indices": f"index_{'dhw'[3 - nsp:][-1]}"})
    return build


for _n in EXTRA_ACTS:
    SPECS[f"{_n}_forward"] = extra_act_case(_n, False)
    SPECS[f"{_n}_backward"] = extra_act_case(_n, True)
SPECS["resample_forward"] = resample_case(False)
SPECS["resample_backward"] = resample_case(True)


def channel_shuffle_case(backward):
    def build(draw):
        rng, dt = rng_of(draw), dtype_of(draw)
        g, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        n = draw(st.integers(1, 3))
        spatial = [draw(st.integers(1, 7)) for _ in range(draw(st.integers(1, 3)))]
        x = normal(rng, (n, g * k, *spatial), dt)
        name = "grad_output" if backward else "x"
        # forward: channel i*k + j -> j*g + i; backward: the inverse.
        a, b = (k, g) if backward else (g, k)
        ref = lambda v: [v[name].reshape(n, a, b, -1).transpose(0, 2, 1, 3).reshape(v[name].shape)]
        return Case(f"channel_shuffle_{'backward' if backward else 'forward'}", {name: x, "groups": g},
                    reads=(name,), ints=("groups",), ref=ref, rtol=0, atol=0)
    return build


SPECS["channel_shuffle_forward"] = channel_shuffle_case(False)
SPECS["channel_shuffle_backward"] = channel_shuffle_case(True)

def _with_ref(build, ref):
    def with_ref(draw):
        case = build(draw)
        if case.ref is None:
            case.ref = ref
        return case
    return with_ref


# References kept apart (fuzz_refs.py) for the builders written without one.
for _n, _ref in REFS.items():
    SPECS[_n] = _with_ref(SPECS[_n], _ref)


def entry_points() -> list:
    """Every function cnnfast._C exports at the top level (the cuda submodule and
    the exception classes are not kernels)."""
    return sorted(n for n in dir(C) if not n.startswith("_") and callable(getattr(C, n))
                  and not isinstance(getattr(C, n), type))


# ---- bfloat16 kernels (float32 inputs, rounded to bf16 while packed) -------------


def _bf16_variant(build, fn, skip_ref=()):
    """The float32 case of `build` for the bf16 entry point `fn`: its reference rounds the
    multiplied inputs to bfloat16 first (products are exact, accumulation is float32);
    outputs listed in skip_ref (bias gradients: summed from unrounded float32) are not compared."""
    def b(draw):
        case = build(draw)
        args = {k: (v.astype(F32) if isinstance(v, np.ndarray) and v.dtype == F64 else v)
                for k, v in case.args.items() if k != "algo"}

        def ref(a):
            import ml_dtypes
            r = {k: (v.astype(ml_dtypes.bfloat16).astype(F64) if isinstance(v, np.ndarray) and k != "bias" else v)
                 for k, v in a.items()}
            if "algo" in case.args:
                r["algo"] = case.args["algo"]
            out = case.ref(r)
            return [None if i in skip_ref else o for i, o in enumerate(out)]
        return Case(fn, args, reads=case.reads, tied=case.tied, ints=case.ints,
                    strs=tuple(s for s in case.strs if s != "algo"), ref=ref, rtol=3e-3, atol=3e-3)
    return b


def _with_output_pass(build):
    """A bf16 forward case plus, half the time, the inference output pass: a float32
    residual of y's shape and/or a ReLU (conv_forward_bf16 / linear_forward_bf16)."""
    def b(draw):
        case = build(draw)
        act = draw(st.sampled_from(["none", "relu"]))
        y = case.ref(case.args)[0]
        res = normal(rng_of(draw), y.shape, F32) if draw(st.booleans()) else None
        if act == "none" and res is None:
            return case
        args = dict(case.args, residual=res, activation=act)
        inner = case.ref

        def ref(a):
            out = inner({k: v for k, v in a.items() if k not in ("residual", "activation")})[0]
            if a["residual"] is not None:
                out = out + a["residual"].astype(F64)
            return [np.maximum(out, 0) if a["activation"] == "relu" else out]
        return Case(case.fn, args, reads=case.reads + (("residual",) if res is not None else ()),
                    tied=case.tied + (("residual",) if res is not None else ()), ints=case.ints,
                    strs=case.strs + ("activation",), ref=ref, rtol=case.rtol, atol=case.atol)
    return b


def _bf16_setting(name):
    def build(draw):
        if name == "set_bf16_path":
            # 'auto' is valid at every SIMD level the fuzz test switches to, and it is the default.
            return Case(name, dict(path="auto"), strs=("path",),
                        notes={"setting": True})
        return Case(name, {}, notes={"setting": True})
    return build


def to_bf16_case(draw):
    rng = rng_of(draw)
    x = normal(rng, tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))), F32)

    def ref(a):
        import ml_dtypes
        return [a["a"].astype(ml_dtypes.bfloat16)]
    return Case("to_bfloat16", dict(a=x), reads=("a",), ref=ref, rtol=0, atol=0)


SPECS.update(conv_forward_bf16=_with_output_pass(_bf16_variant(conv_fwd_case, "conv_forward_bf16")),
             conv_backward_bf16=_bf16_variant(conv_bwd_case, "conv_backward_bf16", skip_ref=(2,)),
             linear_forward_bf16=_with_output_pass(_bf16_variant(linear_fwd_case, "linear_forward_bf16")),
             linear_backward_bf16=_bf16_variant(linear_bwd_case, "linear_backward_bf16", skip_ref=(2,)),
             gemm_bf16=_bf16_variant(gemm_case, "gemm_bf16"), to_bfloat16=to_bf16_case,
             amx_peak_gflops=lambda draw: Case("amx_peak_gflops", dict(threads=1), ints=("threads",),
                                               notes={"measurement": True}),
             dpbf16_peak_gflops=lambda draw: Case("dpbf16_peak_gflops", dict(threads=1), ints=("threads",),
                                                  notes={"measurement": True}))
for _n in ("bf16_path", "set_bf16_path", "bf16_paths", "amx_permission"):
    SPECS[_n] = _bf16_setting(_n)
