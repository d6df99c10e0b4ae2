"""CUDA losses (l1, mse, huber, smooth_l1, cross_entropy with class indices, weights,
ignore_index and label smoothing, nll, binary cross-entropy with and without logits)
against the CPU kernels: every reduction, both dtypes, odd shapes; out-of-range targets
and probabilities raise. Marked gpu: skipped without a device."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

pytestmark = pytest.mark.gpu

cu = _C.cuda
REDUCTIONS = ["none", "mean", "sum"]


def dev(a):
    return cnnfast.cuda.to_device(np.ascontiguousarray(a))


def tols(dtype):
    return (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-13)


def upstream(ref, rng, dtype):
    return rng.standard_normal(np.shape(ref)).astype(dtype) if np.ndim(ref) else np.asarray(1.7, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,kw", [("l1_loss", {}), ("mse_loss", {}), ("huber_loss", {"delta": 0.7}),
                                     ("smooth_l1_loss", {"beta": 0.5}), ("smooth_l1_loss", {"beta": 0.0})])
def test_pointwise_losses_match_cpu(name, kw, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    x = rng.standard_normal((3, 5, 7)).astype(dtype)
    t = rng.standard_normal((3, 5, 7)).astype(dtype)
    ref = getattr(_C, f"{name}_forward")(x, t, reduction, **kw)
    got = getattr(cu, f"{name}_forward")(dev(x), dev(t), reduction, **kw)
    assert_close(got.numpy(), ref, rtol=rtol, atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(getattr(cu, f"{name}_backward")(dev(gy), dev(x), dev(t), reduction, **kw).numpy(),
                 getattr(_C, f"{name}_backward")(gy, x, t, reduction, **kw), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,weighted,ls", [((7, 5), False, 0.0), ((4, 11), True, 0.1), ((2, 3, 5, 3), True, 0.0),
                                               ((1, 1000), False, 0.2), ((3, 4, 7), False, 0.0)])
def test_cross_entropy_and_nll_match_cpu(shape, weighted, ls, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    C = shape[1]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    sample = (shape[0],) + shape[2:]
    t = rng.integers(0, C, sample).astype(np.int64)
    t.flat[::3] = -100  # ignored
    w = rng.random(C).astype(dtype) + 0.5 if weighted else None
    wd = dev(w) if weighted else None
    ref, lse = _C.cross_entropy_forward(x, t, w, -100, reduction, ls)
    got, lse_g = cu.cross_entropy_forward(dev(x), dev(t), wd, -100, reduction, ls)
    assert_close(got.numpy(), ref, rtol=rtol * 10, atol=atol)
    assert_close(lse_g.numpy(), lse, rtol=rtol, atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(cu.cross_entropy_backward(dev(gy), dev(x), dev(t), lse_g, wd, -100, reduction, ls).numpy(),
                 _C.cross_entropy_backward(gy, x, t, lse, w, -100, reduction, ls), rtol=rtol * 10, atol=atol)
    logp = _C.log_softmax_forward(x, 1)
    ref = _C.nll_loss_forward(logp, t, w, -100, reduction)
    assert_close(cu.nll_loss_forward(dev(logp), dev(t), wd, -100, reduction).numpy(), ref, rtol=rtol * 10, atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(cu.nll_loss_backward(dev(gy), dev(logp), dev(t), wd, -100, reduction).numpy(),
                 _C.nll_loss_backward(gy, logp, t, w, -100, reduction), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logits", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_cpu(logits, weighted, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    shape = (5, 3, 7)
    x = rng.standard_normal(shape).astype(dtype) * 3
    if not logits:
        x = 1 / (1 + np.exp(-x))
        x.flat[0], x.flat[1] = 0.0, 1.0  # the -100 log clamp
    t = rng.random(shape).astype(dtype)
    w = (rng.random((3, 7)) + 0.5).astype(dtype) if weighted else None
    pw = (rng.random(7) + 0.5).astype(dtype) if weighted and logits else None
    name = "binary_cross_entropy_with_logits" if logits else "binary_cross_entropy"
    extra_cpu = (w, pw) if logits else (w,)
    extra_gpu = tuple(None if a is None else dev(a) for a in extra_cpu)
    ref = getattr(_C, f"{name}_forward")(x, t, *extra_cpu, reduction)
    assert_close(getattr(cu, f"{name}_forward")(dev(x), dev(t), *extra_gpu, reduction).numpy(), ref, rtol=rtol * 10,
                 atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(getattr(cu, f"{name}_backward")(dev(gy), dev(x), dev(t), *extra_gpu, reduction).numpy(),
                 getattr(_C, f"{name}_backward")(gy, x, t, *extra_cpu, reduction), rtol=rtol * 10, atol=atol)


def test_loss_bad_input():
    x = dev(np.zeros((4, 3), np.float32))
    bad = dev(np.array([0, 1, 3, 2], np.int64))
    with pytest.raises(ValueError, match="target: expected class indices"):
        cu.cross_entropy_forward(x, bad)
    with pytest.raises(ValueError, match="target: expected class indices"):
        cu.nll_loss_backward(dev(np.ones(4, np.float32)), x, bad, None, -100, "none")
    with pytest.raises(TypeError, match="target: expected int64"):
        cu.cross_entropy_forward(x, dev(np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match="reduction"):
        cu.mse_loss_forward(x, x, "avg")
    with pytest.raises(ValueError, match="target"):
        cu.mse_loss_forward(x, dev(np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        cu.binary_cross_entropy_forward(dev(np.full((2, 2), 1.5, np.float32)), dev(np.zeros((2, 2), np.float32)))
    with pytest.raises(ValueError, match="grad_output: expected one value"):
        cu.mse_loss_backward(dev(np.ones(2, np.float32)), x, x, "mean")
    with pytest.raises(ValueError, match="delta"):
        cu.huber_loss_forward(x, x, "mean", 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p,weighted", [(1, False), (2, True)])
def test_multi_margin_matches_cpu(p, weighted, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    x = rng.standard_normal((7, 5)).astype(dtype)
    t = rng.integers(0, 5, 7).astype(np.int64)
    w = (rng.random(5) + 0.5).astype(dtype) if weighted else None
    wd = dev(w) if weighted else None
    ref = _C.multi_margin_loss_forward(x, t, p, 0.8, w, reduction)
    assert_close(cu.multi_margin_loss_forward(dev(x), dev(t), p, 0.8, wd, reduction).numpy(), ref, rtol=rtol * 10,
                 atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(cu.multi_margin_loss_backward(dev(gy), dev(x), dev(t), p, 0.8, wd, reduction).numpy(),
                 _C.multi_margin_loss_backward(gy, x, t, p, 0.8, w, reduction), rtol=rtol * 10, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p,swap", [(2.0, False), (1.0, True), (3.0, False)])
def test_triplet_margin_matches_cpu(p, swap, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    a, pos, neg = (rng.standard_normal((6, 11)).astype(dtype) for _ in range(3))
    ref = _C.triplet_margin_loss_forward(a, pos, neg, 0.5, p, 1e-6, swap, reduction)
    assert_close(cu.triplet_margin_loss_forward(dev(a), dev(pos), dev(neg), 0.5, p, 1e-6, swap, reduction).numpy(), ref,
                 rtol=rtol * 10, atol=atol)
    gy = upstream(ref, rng, dtype)
    got = cu.triplet_margin_loss_backward(dev(gy), dev(a), dev(pos), dev(neg), 0.5, p, 1e-6, swap, reduction)
    for g, r in zip(got, _C.triplet_margin_loss_backward(gy, a, pos, neg, 0.5, p, 1e-6, swap, reduction)):
        assert_close(g.numpy(), r, rtol=rtol * 10, atol=atol)


def test_margin_losses_bad_input():
    x = dev(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 3\), got 3"):
        cu.multi_margin_loss_forward(x, dev(np.array([0, 3], np.int64)))
    with pytest.raises(ValueError, match="p: only p == 1 and p == 2"):
        cu.multi_margin_loss_forward(x, dev(np.array([0, 1], np.int64)), 3)
    with pytest.raises(ValueError, match="positive"):
        cu.triplet_margin_loss_forward(x, dev(np.zeros((2, 4), np.float32)), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,weighted,ls", [((5, 7), False, 0.0), ((3, 4, 5), True, 0.15)])
def test_cross_entropy_probability_targets_match_cpu(shape, weighted, ls, reduction, dtype, rng):
    rtol, atol = tols(dtype)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    q = rng.random(shape).astype(dtype)
    q /= q.sum(axis=1, keepdims=True)
    w = (rng.random(shape[1]) + 0.5).astype(dtype) if weighted else None
    wd = dev(w) if weighted else None
    ref, lse = _C.cross_entropy_forward(x, q, w, -100, reduction, ls)
    got, lse_g = cu.cross_entropy_forward(dev(x), dev(q), wd, -100, reduction, ls)
    assert_close(got.numpy(), ref, rtol=rtol * 10, atol=atol)
    gy = upstream(ref, rng, dtype)
    assert_close(cu.cross_entropy_backward(dev(gy), dev(x), dev(q), lse_g, wd, -100, reduction, ls).numpy(),
                 _C.cross_entropy_backward(gy, x, q, lse, w, -100, reduction, ls), rtol=rtol * 10, atol=atol)
