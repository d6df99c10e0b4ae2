"""Property-based tests over every cnnfast.functional op (issue 10).

cnnfast.functional mirrors torch.nn.functional's names and arguments, so the
oracle is PyTorch itself: for each op hypothesis draws a valid call on small odd
shapes, and the forward values and the gradients of sum(y * g) with respect to
every float input must match torch's. Then the first input is broken the way a
careless caller would (non-contiguous, misaligned, read-only, byte-swapped,
integer, zero-size, wrong rank, a plain list): the op must give torch's answer on
the same values, or raise ValueError/TypeError/MemoryError; nothing may crash.

Budget: CNNFAST_FUZZ_EXAMPLES examples per op (default 12, derandomized).
"""
import inspect
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnfast
import cnnfast.functional as F
from helpers import assert_close

EXAMPLES = int(os.environ.get("CNNFAST_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
ERRORS = (ValueError, TypeError, MemoryError)
# Helpers exported beside the ops that are not ops themselves.
NOT_OPS = {"conv_output_size", "conv_transpose_output_size", "resolve_padding", "dropout_mask"}


def functional_ops():
    return sorted(n for n in dir(F) if not n.startswith("_") and callable(getattr(F, n))
                  and not inspect.isclass(getattr(F, n)) and not inspect.ismodule(getattr(F, n))
                  and n not in NOT_OPS and getattr(getattr(F, n), "__module__", "").startswith("cnnfast.functional"))


class Call:
    """positional: list of (value, differentiable) pairs (np arrays become tensors)."""

    def __init__(self, positional, kwargs=None, torch_name=None, torch_kwargs=None, tol=(1e-4, 1e-5), grad=True,
                 compare=True, torch_fn=None):
        self.torch_fn = torch_fn  # the torch reference when torch.nn.functional has no op of that name
        self.positional, self.kwargs = positional, kwargs or {}
        self.torch_name, self.torch_kwargs = torch_name, torch_kwargs
        self.tol, self.grad, self.compare = tol, grad, compare


def rng_dt(draw):
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1))), draw(st.sampled_from([np.float32, np.float64]))


def arr(rng, shape, dt, low=None):
    a = np.asarray(rng.standard_normal(shape), dtype=dt)
    return np.abs(a) + low if low is not None else a


def dims(draw, n, lo=1, hi=6):
    return [draw(st.integers(lo, hi)) for _ in range(n)]


# ---- builders ---------------------------------------------------------------------


def b_act(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        x = arr(rng, tuple(dims(draw, draw(st.integers(1, 4)), 1, 9)), dt)
        kw = {}
        if name == "leaky_relu":
            kw["negative_slope"] = draw(st.floats(-1, 1))
        if name == "elu":
            kw["alpha"] = draw(st.floats(0.1, 2))
        if name in ("softmax", "log_softmax"):
            kw["dim"] = draw(st.integers(-x.ndim, x.ndim - 1))
        return Call([(x, True)], kw, torch_name="silu" if name == "swish" else name)

    return build


def b_conv(nd, transposed):
    def build(draw):
        rng, dt = rng_dt(draw)
        g, cg, kg = dims(draw, 3, 1, 3)
        k = dims(draw, nd, 1, 3 if nd < 3 else 2)
        s, d = dims(draw, nd, 1, 3), dims(draw, nd, 1, 2)
        p = [draw(st.integers(0, 1)) for _ in range(nd)]
        N = draw(st.integers(1, 2))
        if transposed:
            ins = dims(draw, nd, 1, 5)
            op = [draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(nd)]
            p = [min(p[i], ((ins[i] - 1) * s[i] + d[i] * (k[i] - 1) + op[i]) // 2) for i in range(nd)]
            x, w = arr(rng, (N, g * kg, *ins), dt), arr(rng, (g * kg, cg, *k), dt)
            b = arr(rng, (g * cg,), dt) if draw(st.booleans()) else None
            kw = dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)
        else:
            ins = [max(draw(st.integers(1, 7 if nd < 3 else 5)), d[i] * (k[i] - 1) + 1 - 2 * p[i]) for i in range(nd)]
            x, w = arr(rng, (N, g * cg, *ins), dt), arr(rng, (g * kg, cg, *k), dt)
            b = arr(rng, (g * kg,), dt) if draw(st.booleans()) else None
            kw = dict(stride=s, padding=p, dilation=d, groups=g)
        return Call([(x, True), (w, True), (b, b is not None)], kw, tol=(1e-3, 1e-3))

    return build


def b_linear(draw):
    rng, dt = rng_dt(draw)
    M, I, O = dims(draw, 3, 1, 13)
    b = arr(rng, (O,), dt) if draw(st.booleans()) else None
    return Call([(arr(rng, (M, I), dt), True), (arr(rng, (O, I), dt), True), (b, b is not None)], tol=(1e-3, 1e-3))


def pool_common(draw, D, dilated=False):
    rng, dt = rng_dt(draw)
    k = dims(draw, D, 1, 3)
    s = dims(draw, D, 1, 3)
    p = [draw(st.integers(0, ki // 2)) for ki in k]
    d = dims(draw, D, 1, 2) if dilated else [1] * D
    ins = [max(draw(st.integers(1, 7 if D < 3 else 5)), d[i] * (k[i] - 1) + 1 - 2 * p[i], k[i]) for i in range(D)]
    x = arr(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *ins), dt)
    return x, k, s, p, d


def b_max_pool(D):
    def build(draw):
        x, k, s, p, d = pool_common(draw, D, dilated=True)
        return Call([(x, True)], dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=draw(st.booleans())))

    return build


def b_avg_pool(D):
    def build(draw):
        x, k, s, p, _ = pool_common(draw, D)
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=draw(st.booleans()),
                  count_include_pad=draw(st.booleans()))
        if D > 1:
            kw["divisor_override"] = draw(st.sampled_from([None, 2]))
        return Call([(x, True)], kw)

    return build


def b_adaptive(kind, D):
    def build(draw):
        rng, dt = rng_dt(draw)
        x = arr(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *dims(draw, D, 1, 7)), dt)
        return Call([(x, True)], dict(output_size=dims(draw, D, 1, 5)))

    return build


def b_unpool(D):
    def build(draw):
        x, k, s, p, _ = pool_common(draw, D)
        y, idx = getattr(TF, f"max_pool{D}d")(torch.from_numpy(x), k, s, p, return_indices=True)
        ours_idx = idx.numpy()
        return Call([(y.numpy(), True), (ours_idx, False)], dict(kernel_size=k, stride=s, padding=p,
                                                                   output_size=list(x.shape[2:])))

    return build


def b_batch_norm(draw):
    rng, dt = rng_dt(draw)
    x = arr(rng, (draw(st.integers(2, 3)), *dims(draw, draw(st.integers(1, 3)), 1, 5)), dt)
    Cc = x.shape[1]
    training = draw(st.booleans())
    rm, rv = arr(rng, (Cc,), dt), arr(rng, (Cc,), dt, low=0.5)
    w = arr(rng, (Cc,), dt) if draw(st.booleans()) else None
    b = arr(rng, (Cc,), dt) if draw(st.booleans()) else None
    return Call([(x, True), (rm, False), (rv, False), (w, w is not None), (b, b is not None)],
                dict(training=training, momentum=0.1, eps=1e-5), tol=(1e-3, 1e-3))


def b_group_norm(draw):
    rng, dt = rng_dt(draw)
    x = arr(rng, (draw(st.integers(1, 3)), *dims(draw, draw(st.integers(1, 3)), 1, 6)), dt)
    Cc = x.shape[1]
    G = draw(st.sampled_from([g for g in range(1, Cc + 1) if Cc % g == 0]))
    if x.size // (x.shape[0] * G) < 2:  # torch refuses a single value per group
        x = np.concatenate([x, x[:, :, ...] * 2 + 1], axis=-1) if x.ndim > 2 else np.repeat(x, 2, axis=1)
        G = G if x.shape[1] % G == 0 else 1
    Cc = x.shape[1]
    w = arr(rng, (Cc,), dt) if draw(st.booleans()) else None
    return Call([(x, True), (G, False), (w, w is not None)], dict(eps=1e-5), tol=(1e-3, 1e-3))


def b_instance_norm(draw):
    rng, dt = rng_dt(draw)
    x = arr(rng, (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *dims(draw, draw(st.integers(1, 2)), 2, 6)), dt)
    w = arr(rng, (x.shape[1],), dt) if draw(st.booleans()) else None
    # weight goes in positionally (after running_mean, running_var) so both libraries get a tensor.
    return Call([(x, True), (None, False), (None, False), (w, w is not None)], dict(eps=1e-5), tol=(1e-3, 1e-3))


def b_layer_norm(draw):
    rng, dt = rng_dt(draw)
    x = arr(rng, tuple(dims(draw, draw(st.integers(1, 4)), 1, 7)), dt)
    ns = list(x.shape[x.ndim - draw(st.integers(1, x.ndim)):])
    w = arr(rng, ns, dt) if draw(st.booleans()) else None
    return Call([(x, True), (ns, False), (w, w is not None)], dict(eps=1e-5), tol=(1e-3, 1e-3))


def b_lrn(draw):
    rng, dt = rng_dt(draw)
    x = arr(rng, (draw(st.integers(1, 2)), *dims(draw, draw(st.integers(2, 3)), 1, 6)), dt)
    return Call([(x, True), (draw(st.integers(1, 5)), False)], dict(alpha=1e-2, beta=0.75, k=1.0), tol=(1e-3, 1e-4))


def b_dropout(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        lo = {"dropout": 1, "dropout1d": 3, "dropout2d": 4, "dropout3d": 5}[name]
        x = arr(rng, tuple(dims(draw, lo if name != "dropout" else draw(st.integers(1, 4)), 1, 6)), dt)
        p = draw(st.sampled_from([0.0, 0.3, 1.0]))
        # Masks differ from torch's generator: compare only what is fixed (p = 0, p = 1).
        return Call([(x, True)], dict(p=p, training=True, seed=draw(st.integers(0, 2**32))),
                    torch_kwargs=dict(p=p, training=True), compare=p in (0.0, 1.0))

    return build


def b_loss(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        red = draw(st.sampled_from(["none", "mean", "sum"]))
        if name in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"):
            shape = tuple(dims(draw, draw(st.integers(1, 3)), 1, 7))
            return Call([(arr(rng, shape, dt), True), (arr(rng, shape, dt), True)], dict(reduction=red),
                        tol=(1e-3, 1e-4))
        if name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
            shape = tuple(dims(draw, draw(st.integers(1, 3)), 1, 7))
            x = arr(rng, shape, dt)
            if name == "binary_cross_entropy":
                x = (1 / (1 + np.exp(-x))).astype(dt)
            return Call([(x, True), (rng.uniform(0, 1, shape).astype(dt), False)], dict(reduction=red),
                        tol=(1e-3, 1e-4))
        if name in ("cross_entropy", "nll_loss"):
            x = arr(rng, (draw(st.integers(1, 4)), draw(st.integers(1, 7)), *dims(draw, draw(st.integers(0, 2)), 1, 3)),
                    dt)
            if name == "nll_loss":
                x = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(dt)
            t = rng.integers(0, x.shape[1], (x.shape[0],) + x.shape[2:]).astype(np.int64)
            return Call([(x, True), (t, False)], dict(reduction=red), tol=(1e-3, 1e-4))
        if name == "multi_margin_loss":
            N, Cc = dims(draw, 2, 1, 7)
            return Call([(arr(rng, (N, Cc), dt), True), (rng.integers(0, Cc, N).astype(np.int64), False)],
                        dict(p=draw(st.sampled_from([1, 2])), reduction=red), tol=(1e-3, 1e-4))
        N, D = dims(draw, 2, 1, 9)
        return Call([(arr(rng, (N, D), dt), True) for _ in range(3)], dict(swap=draw(st.booleans()), reduction=red),
                    tol=(1e-3, 1e-4))

    return build


BUILDERS = {}
for _n in ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "swish", "softmax", "log_softmax"):
    BUILDERS[_n] = b_act(_n)
for _d in (1, 2, 3):
    BUILDERS[f"conv{_d}d"] = b_conv(_d, False)
    BUILDERS[f"conv_transpose{_d}d"] = b_conv(_d, True)
    BUILDERS[f"max_pool{_d}d"] = b_max_pool(_d)
    BUILDERS[f"avg_pool{_d}d"] = b_avg_pool(_d)
    BUILDERS[f"adaptive_avg_pool{_d}d"] = b_adaptive("avg", _d)
    BUILDERS[f"adaptive_max_pool{_d}d"] = b_adaptive("max", _d)
    BUILDERS[f"max_unpool{_d}d"] = b_unpool(_d)
BUILDERS.update(linear=b_linear, batch_norm=b_batch_norm, group_norm=b_group_norm, instance_norm=b_instance_norm,
                layer_norm=b_layer_norm, local_response_norm=b_lrn)
for _n in ("dropout", "dropout1d", "dropout2d", "dropout3d"):
    BUILDERS[_n] = b_dropout(_n)
for _n in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "multi_margin_loss", "triplet_margin_loss"):
    BUILDERS[_n] = b_loss(_n)


# ---- today's CNN ops (issue 20) ---------------------------------------------------------


def b_act_extra(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        x = arr(rng, tuple(dims(draw, draw(st.integers(1, 4)), 1, 9)), dt) * 3
        kw = {}
        if name == "gelu":
            kw["approximate"] = draw(st.sampled_from(["none", "tanh"]))
        if name == "softplus":
            kw.update(beta=draw(st.floats(0.5, 2)), threshold=draw(st.floats(1, 20)))
        return Call([(x, True)], kw, torch_fn=torch.erf if name == "erf" else None)
    return build


def b_interpolate(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        modes = {"upsample_nearest": ["nearest"], "upsample_bilinear": ["bilinear"]}.get(
            name, ["nearest", "nearest-exact", "linear", "bilinear", "trilinear", "bicubic"])
        mode = draw(st.sampled_from(modes))
        nsp = {"linear": 1, "bilinear": 2, "trilinear": 3, "bicubic": 2}.get(mode, draw(st.integers(1, 3)))
        x = arr(rng, tuple(dims(draw, 2, 1, 3) + dims(draw, nsp, 1, 7)), dt)
        kw = {}
        if draw(st.booleans()):
            kw["size"] = dims(draw, nsp, 1, 9)
        else:
            kw["scale_factor"] = draw(st.sampled_from([2.0, 3.0, 1.5]))
        if name in ("interpolate", "upsample"):
            kw["mode"] = mode
            if mode not in ("nearest", "nearest-exact"):
                kw["align_corners"] = draw(st.booleans())
        return Call([(x, True)], kw, tol=(1e-4, 1e-4))
    return build


def b_shuffle(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        r = draw(st.integers(1, 3))
        n, c, h, w = dims(draw, 4, 1, 4)
        if name == "pixel_shuffle":
            return Call([(arr(rng, (n, c * r * r, h, w), dt), True), (r, False)])
        if name == "pixel_unshuffle":
            return Call([(arr(rng, (n, c, h * r, w * r), dt), True), (r, False)])
        return Call([(arr(rng, (n, c * r, h, w), dt), True), (r, False)])
    return build


def b_layer_norm2d(draw):
    rng, dt = rng_dt(draw)
    n, c, h, w = dims(draw, 4, 1, 5)
    x, wt, b = arr(rng, (n, c, h, w), dt), arr(rng, (c,), dt), arr(rng, (c,), dt)

    def ref(x, weight, bias):
        return TF.layer_norm(x.permute(0, 2, 3, 1), (c,), weight, bias, 1e-6).permute(0, 3, 1, 2)
    return Call([(x, True), (wt, True), (b, True)], torch_fn=ref, tol=(1e-4, 1e-4))


def b_stochastic_depth(name):
    def build(draw):
        rng, dt = rng_dt(draw)
        x = arr(rng, tuple(dims(draw, draw(st.integers(1, 4)), 1, 6)), dt)
        training = draw(st.booleans())
        if name == "drop_path":
            kw = dict(drop_prob=draw(st.floats(0, 0.9)), training=training)
        else:
            kw = dict(p=draw(st.floats(0, 0.9)), mode=draw(st.sampled_from(["row", "batch"])), training=training)
        # Random when training: only the shape is compared; identity otherwise.
        return Call([(x, True)], kw, torch_fn=lambda x, **k: x * 1, compare=not training)
    return build


def b_resample(draw):
    rng, dt = rng_dt(draw)
    nsp = draw(st.integers(1, 3))
    ins, outs = dims(draw, nsp, 1, 5), dims(draw, nsp, 1, 7)
    x = arr(rng, tuple(dims(draw, 2, 1, 3) + ins), dt)
    tables, mats = [], []
    for i, o in zip(ins, outs):
        taps = draw(st.sampled_from([1, 2, 4]))
        idx, w = rng.integers(0, i, (o, taps)), arr(rng, (o, taps), dt)
        m = np.zeros((o, i), np.float64)
        np.add.at(m, (np.repeat(np.arange(o), taps), idx.reshape(-1)), w.reshape(-1).astype(np.float64))
        tables.append((idx, w))
        mats.append(torch.tensor(m, dtype=torch.float32 if dt == np.float32 else torch.float64))

    def ref(x, tables):
        for k, m in enumerate(mats):
            x = torch.movedim(torch.tensordot(m, torch.movedim(x, 2 + k, 0), dims=1), 0, 2 + k)
        return x
    return Call([(x, True), (tables, False)], torch_fn=ref, tol=(1e-4, 1e-4))


for _n in ("gelu", "hardswish", "hardsigmoid", "relu6", "mish", "softplus", "erf"):
    BUILDERS[_n] = b_act_extra(_n)
for _n in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"):
    BUILDERS[_n] = b_interpolate(_n)
for _n in ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle"):
    BUILDERS[_n] = b_shuffle(_n)
BUILDERS.update(layer_norm2d=b_layer_norm2d, stochastic_depth=b_stochastic_depth("stochastic_depth"),
                drop_path=b_stochastic_depth("drop_path"), resample=b_resample)


def test_every_functional_op_has_a_fuzz_strategy():
    missing = [n for n in functional_ops() if n not in BUILDERS]
    assert not missing, f"cnnfast.functional ops without a fuzz strategy in {__file__}: {missing}"


# ---- running both libraries ---------------------------------------------------------


def run_ours(name, call, first=None):
    tensors, args = [], []
    for i, (v, diff) in enumerate(call.positional):
        v = first if (i == 0 and first is not None) else v
        if isinstance(v, np.ndarray):
            t = cnnfast.from_numpy(v)
            if diff and v.dtype.kind == "f" and v.dtype.isnative:
                t.requires_grad_(True)
            tensors.append(t)
            args.append(t)
        else:
            tensors.append(None)
            args.append(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = getattr(F, name)(*args, **call.kwargs)
    y = y[0] if isinstance(y, tuple) else y
    return y, tensors


def run_torch(name, call):
    tensors, args = [], []
    for v, diff in call.positional:
        if isinstance(v, np.ndarray):
            t = torch.from_numpy(np.array(v, dtype=v.dtype.newbyteorder("=")))
            if diff and v.dtype.kind == "f":
                t.requires_grad_(True)
            tensors.append(t)
            args.append(t)
        else:
            tensors.append(None)
            args.append(v)
    kw = call.torch_kwargs if call.torch_kwargs is not None else dict(call.kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = (call.torch_fn or getattr(TF, call.torch_name or name))(*args, **kw)
    y = y[0] if isinstance(y, tuple) else y
    return y, tensors


def check_against_torch(name, call, first=None):
    y, ts = run_ours(name, call, first)
    yt, tts = run_torch(name, call)
    if not call.compare:
        assert tuple(y.shape) == tuple(yt.shape)
        return
    rtol, atol = call.tol
    assert_close(y.data, yt.detach().numpy(), rtol=rtol, atol=atol, what=f"{name} forward")
    if not call.grad or not yt.requires_grad or not getattr(y, "requires_grad", False):
        return
    g = np.random.default_rng(0).standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(g).to(yt.dtype))
    y.backward(cnnfast.tensor(g.astype(y.data.dtype)))
    for i, (t, tt) in enumerate(zip(ts, tts)):
        if t is not None and tt is not None and tt.grad is not None and t.requires_grad:
            assert t.grad is not None, f"{name}: no gradient for argument {i}"
            assert_close(t.grad.data, tt.grad.numpy(), rtol=rtol * 10, atol=atol * 10, what=f"{name} grad {i}")


def broken(draw, a):
    kind = draw(st.sampled_from(["none", "noncontig", "misaligned", "readonly", "byteswap", "int", "zero_size",
                                 "extra_dim", "fortran"]))
    if kind == "noncontig" and a.ndim and a.shape[-1] > 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return kind, big[..., ::2]
    if kind == "fortran":
        return kind, np.asfortranarray(a)
    if kind == "misaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        buf[1:] = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8)
        return kind, np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return kind, b
    if kind == "byteswap":
        return kind, a.astype(a.dtype.newbyteorder(">"))
    if kind == "int":
        return kind, a.astype(np.int32)
    if kind == "zero_size":
        shape = list(a.shape)
        shape[draw(st.integers(0, len(shape) - 1))] = 0
        return kind, np.zeros(shape, a.dtype)
    if kind == "extra_dim":
        return kind, a[None, None]
    return "none", a


@pytest.mark.parametrize("name", sorted(BUILDERS))
@FUZZ
@given(data=st.data())
def test_fuzz_functional(name, data):
    call = BUILDERS[name](data.draw)
    first = call.positional[0][0]
    kind, bad = broken(data.draw, first) if isinstance(first, np.ndarray) else ("none", first)
    if kind == "none":
        check_against_torch(name, call)
        return
    try:
        if kind in ("noncontig", "fortran", "misaligned", "readonly", "byteswap"):
            # The same values in another layout: torch's answer on them, or a named refusal.
            check_against_torch(name, call, first=bad)
        else:
            run_ours(name, call, first=bad)
    except ERRORS as err:
        assert str(err), f"{name} [{kind}]: {type(err).__name__} without a message"
