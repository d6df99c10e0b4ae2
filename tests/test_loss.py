"""Loss kernels and functional wrappers against PyTorch, float64 finite differences,
each other (scalar vs AVX2, 1 vs 2 threads), non-finite logits, and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import TAIL_LENGTHS, assert_close, assert_nontrivial, at_level, numerical_grad

REDUCTIONS = ["mean", "sum", "none"]


def compare(fc, ft, inputs, grad_idx=(0,), rtol=1e-5, atol=1e-6, what="", rng=None):
    """Runs fc on cnnfast tensors and ft on torch tensors built from `inputs`, then
    backward with one random upstream gradient; compares loss and the gradients of
    the inputs listed in grad_idx."""
    cx = [cnnfast.tensor(a.copy(), requires_grad=i in grad_idx) for i, a in enumerate(inputs)]
    tx = [torch.tensor(a.copy(), requires_grad=i in grad_idx) for i, a in enumerate(inputs)]
    y, ty = fc(*cx), ft(*tx)
    assert_close(y.data, ty.detach().numpy(), rtol, atol, f"{what} loss")
    g = (rng or np.random.default_rng(0)).standard_normal(ty.shape).astype(inputs[0].dtype)
    y.backward(g)
    ty.backward(torch.tensor(g))
    for i in grad_idx:
        assert_close(cx[i].grad.data, tx[i].grad.numpy(), rtol, atol, f"{what} grad {i}")


# ---- regression losses ---------------------------------------------------------------

REGRESSION = {
    "l1_loss": {}, "mse_loss": {}, "huber_loss": {"delta": 0.7}, "smooth_l1_loss": {"beta": 0.6},
}
SHAPES = [(1,), (7,), (3, 17), (2, 3, 5, 7), (40001,)]  # 40001 spans several reduction blocks


@pytest.mark.parametrize("name", REGRESSION)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_torch(name, shape, reduction, simd, rng):
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    t = rng.standard_normal(shape).astype(np.float32)
    kw = dict(REGRESSION[name], reduction=reduction)
    rtol = 1e-4 if np.prod(shape) > 10000 and reduction != "none" else 1e-5
    compare(lambda a, b: getattr(F, name)(a, b, **kw), lambda a, b: getattr(TF, name)(a, b, **kw),
            [x, t], grad_idx=(0, 1), rtol=rtol, what=name, rng=rng)


def test_smooth_l1_beta_zero_is_l1_and_huber_delta(simd, rng):
    x, t = rng.standard_normal(29).astype(np.float32), rng.standard_normal(29).astype(np.float32)
    compare(lambda a, b: F.smooth_l1_loss(a, b, beta=0.0), lambda a, b: TF.smooth_l1_loss(a, b, beta=0.0),
            [x, t], grad_idx=(0, 1), what="smooth_l1 beta=0")
    compare(lambda a, b: F.huber_loss(a, b, delta=2.5), lambda a, b: TF.huber_loss(a, b, delta=2.5),
            [x * 3, t], grad_idx=(0, 1), what="huber delta=2.5")


@pytest.mark.filterwarnings("ignore:size_average and reduce args")
def test_regression_broadcast_weight_and_legacy_flags(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    t = rng.standard_normal((5,)).astype(np.float32)
    with pytest.warns(UserWarning):  # torch warns about the broadcast target
        compare(lambda a, b: F.mse_loss(a, b), lambda a, b: TF.mse_loss(a, b), [x, t], (0, 1), what="broadcast")
    w = rng.uniform(0.5, 2, (4, 5)).astype(np.float32)
    t2 = t * np.ones((4, 1), np.float32)
    for name in ("l1_loss", "mse_loss", "huber_loss"):
        for red in REDUCTIONS:
            compare(lambda a: getattr(F, name)(a, t2, reduction=red, weight=cnnfast.tensor(w)),
                    lambda a: getattr(TF, name)(a, torch.tensor(t2), reduction=red, weight=torch.tensor(w)),
                    [x], what=f"weighted {name} {red}")
    compare(lambda a: F.mse_loss(a, x[::-1].copy(), size_average=False),
            lambda a: TF.mse_loss(a, torch.tensor(x[::-1].copy()), size_average=False), [x], what="legacy")


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_finite_differences(name, rng):
    x, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    x[np.abs(x - t) < 0.05] += 0.3  # away from the kinks
    param = {"huber_loss": 0.7, "smooth_l1_loss": 0.6}.get(name, 0.0)
    fwd, bwd = getattr(_C, f"{name}_forward"), getattr(_C, f"{name}_backward")
    for red in REDUCTIONS:
        g = np.array(1.3) if red != "none" else rng.standard_normal(x.shape)
        got = bwd(g, x, t, red, param)
        (num,) = numerical_grad(lambda a: fwd(a, t, red, param), [x.copy()], g)
        assert_nontrivial(num)
        assert_close(got, num, 1e-6, 1e-8, f"{name} {red}")


def test_l1_nan_gradient_as_torch():
    # torch.sign(NaN) is 0, so the L1 gradient at a NaN input is 0 while the loss is NaN.
    x = np.array([1.0, np.nan, -2.0], np.float32)
    t = np.zeros(3, np.float32)
    compare(lambda a: F.l1_loss(a, t, reduction="none"), lambda a: TF.l1_loss(a, torch.tensor(t), reduction="none"),
            [x], what="l1 nan")


# ---- cross-entropy -------------------------------------------------------------------

def ce_case(rng, shape, dtype=np.float32, ignore=True):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[1]
    t = rng.integers(0, C, (shape[0],) + shape[2:])
    if ignore:
        t.reshape(-1)[::4] = -100
    return x, t


@pytest.mark.parametrize("shape", [(6, 1000), (1, 5), (7, 13), (3, 7, 4, 5), (2, 3, 17)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch(shape, reduction, weighted, smoothing, simd, rng):
    x, t = ce_case(rng, shape, ignore=shape[0] > 1)
    w = rng.uniform(0.3, 2, shape[1]).astype(np.float32) if weighted else None
    compare(lambda a: F.cross_entropy(a, t, weight=w, reduction=reduction, label_smoothing=smoothing),
            lambda a: TF.cross_entropy(a, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                                       reduction=reduction, label_smoothing=smoothing),
            [x], rtol=1e-4, atol=1e-6, what=f"ce {shape}", rng=rng)


def test_cross_entropy_ignore_index_and_unbatched(rng):
    x, t = ce_case(rng, (5, 4), ignore=False)
    t[1] = 2
    compare(lambda a: F.cross_entropy(a, t, ignore_index=2),
            lambda a: TF.cross_entropy(a, torch.tensor(t), ignore_index=2),
            [x], what="ignore_index=2")
    x1 = x[0].copy()
    for red in REDUCTIONS:
        compare(lambda a: F.cross_entropy(a, np.int64(3), reduction=red),
                lambda a: TF.cross_entropy(a, torch.tensor(3), reduction=red), [x1], what=f"unbatched {red}")


def test_cross_entropy_all_ignored_mean_is_nan(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = np.full(3, -100)
    ours = F.cross_entropy(cnnfast.tensor(x), t).item()
    ref = TF.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    assert np.isnan(ours) and np.isnan(ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets(reduction, simd, rng):
    x = (rng.standard_normal((4, 6, 3)) * 2).astype(np.float32)
    q = rng.uniform(0, 1, x.shape).astype(np.float32)
    q /= q.sum(1, keepdims=True)
    w = rng.uniform(0.3, 2, 6).astype(np.float32)
    compare(lambda a: F.cross_entropy(a, q, weight=w, reduction=reduction, label_smoothing=0.1),
            lambda a: TF.cross_entropy(a, torch.tensor(q), weight=torch.tensor(w), reduction=reduction,
                                       label_smoothing=0.1), [x], rtol=1e-4, what="ce probabilities")


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_finite_differences(smoothing, rng):
    x, t = ce_case(rng, (4, 5, 2), np.float64)
    w = rng.uniform(0.3, 2, 5)
    for red in REDUCTIONS:
        loss, lse = _C.cross_entropy_forward(x, t, w, -100, red, smoothing)
        g = np.array(0.7) if red != "none" else rng.standard_normal(loss.shape)
        got = _C.cross_entropy_backward(g, x, t, lse, w, -100, red, smoothing)
        (num,) = numerical_grad(lambda a: _C.cross_entropy_forward(a, t, w, -100, red, smoothing)[0], [x.copy()], g)
        assert_nontrivial(num)
        assert_close(got, num, 1e-6, 1e-8, f"ce {red}")
    q = rng.uniform(0, 1, x.shape)
    loss, lse = _C.cross_entropy_forward(x, q, w, -100, "sum", smoothing)
    got = _C.cross_entropy_backward(np.array(1.0), x, q, lse, w, -100, "sum", smoothing)
    (num,) = numerical_grad(lambda a: _C.cross_entropy_forward(a, q, w, -100, "sum", smoothing)[0], [x.copy()],
                            np.array(1.0))
    assert_close(got, num, 1e-6, 1e-8, "ce probabilities")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_non_finite_logits_as_torch(smoothing, simd):
    # Row 0: a -inf logit for a non-target class (finite loss and gradient; +inf loss with smoothing).
    # Row 1: NaN (loss and gradient NaN). Row 2: the target logit is -inf (infinite loss).
    # 19 classes put the special values in the AVX2 loop body (index 11) and tail (index 17).
    base = np.linspace(-2, 2, 19).astype(np.float32)
    x = np.stack([base] * 3)
    x[0, 11] = x[0, 17] = -np.inf
    x[1, 11] = np.nan
    x[2, 0] = -np.inf
    t = np.array([0, 0, 0])
    for row in range(3):
        xr, tr = x[row:row + 1], t[row:row + 1]
        cx = cnnfast.tensor(xr.copy(), requires_grad=True)
        loss = F.cross_entropy(cx, tr, label_smoothing=smoothing)
        loss.backward()
        tx = torch.tensor(xr, requires_grad=True)
        tl = TF.cross_entropy(tx, torch.tensor(tr), label_smoothing=smoothing)
        tl.backward()
        assert_close(loss.data, tl.detach().numpy(), 1e-5, 1e-6, f"row {row} loss")
        assert_close(cx.grad.data, tx.grad.numpy(), 1e-5, 1e-6, f"row {row} grad")
    assert np.isfinite(F.cross_entropy(cnnfast.tensor(x[:1]), t[:1]).item())
    assert np.isnan(F.cross_entropy(cnnfast.tensor(x[1:2]), t[:1]).item())


def test_cross_entropy_target_out_of_range():
    x = cnnfast.tensor(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 5\) or ignore_index=-100, got 5"):
        F.cross_entropy(x, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"target: .*got -1"):
        F.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"target: expected shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(TypeError, match="target: expected integer class indices"):
        F.nll_loss(x, np.array([0.0, 1.0, 1.0], np.float32))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.array([0, 1, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction: expected 'none', 'mean' or 'sum', got 'avg'"):
        F.cross_entropy(x, np.array([0, 1, 1]), reduction="avg")


# ---- nll --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 10), (3, 4, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(shape, reduction, rng):
    x, t = ce_case(rng, shape)
    x = np.log(np.abs(x) + 0.1).astype(np.float32)
    w = rng.uniform(0.3, 2, shape[1]).astype(np.float32)
    compare(lambda a: F.nll_loss(a, t, weight=w, reduction=reduction),
            lambda a: TF.nll_loss(a, torch.tensor(t), weight=torch.tensor(w), reduction=reduction), [x], what="nll")
    t = np.where(t == -100, 0, t)
    compare(lambda a: F.nll_loss(a, t, ignore_index=1, reduction=reduction),
            lambda a: TF.nll_loss(a, torch.tensor(t), ignore_index=1, reduction=reduction), [x],
            what="nll ignore_index=1")


def test_nll_finite_differences(rng):
    x, t = ce_case(rng, (4, 3, 2), np.float64)
    w = rng.uniform(0.3, 2, 3)
    for red in REDUCTIONS:
        g = np.array(0.9) if red != "none" else rng.standard_normal(t.shape)
        got = _C.nll_loss_backward(g, x, t, w, -100, red)
        (num,) = numerical_grad(lambda a: _C.nll_loss_forward(a, t, w, -100, red), [x.copy()], g)
        assert_nontrivial(num)
        assert_close(got, num, 1e-6, 1e-8, f"nll {red}")


def test_nll_composes_with_log_softmax(rng):
    x, t = ce_case(rng, (5, 7))
    compare(lambda a: F.nll_loss(F.log_softmax(a, dim=1), t), lambda a: TF.cross_entropy(a, torch.tensor(t)), [x],
            what="nll(log_softmax) == cross_entropy")


# ---- binary cross-entropy ------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape,pwshape", [(None, None), ((5,), (5,)), ((3, 1), (5,)), ((2, 3, 5), (1, 5))])
def test_bce_with_logits_matches_torch(reduction, wshape, pwshape, rng):
    x = (rng.standard_normal((2, 3, 5)) * 4).astype(np.float32)
    x[0, 0, :2] = [80.0, -80.0]  # far out: the softplus form must not overflow
    t = rng.uniform(0, 1, x.shape).astype(np.float32)
    w = None if wshape is None else rng.uniform(0.5, 2, wshape).astype(np.float32)
    pw = None if pwshape is None else rng.uniform(0.5, 3, pwshape).astype(np.float32)
    tt = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    compare(lambda a: F.binary_cross_entropy_with_logits(a, t, weight=w, pos_weight=pw, reduction=reduction),
            lambda a: TF.binary_cross_entropy_with_logits(a, torch.tensor(t), weight=tt(w), pos_weight=tt(pw),
                                                          reduction=reduction), [x], rtol=1e-5, what="bce logits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_torch(reduction, rng):
    x = rng.uniform(0.01, 0.99, (4, 7)).astype(np.float32)
    x[0, :3] = [0.0, 1.0, 1e-30]  # the logs clamp at -100 as torch
    t = rng.uniform(0, 1, x.shape).astype(np.float32)
    t[0, :3] = [1.0, 0.0, 1.0]
    w = rng.uniform(0.5, 2, (7,)).astype(np.float32)
    compare(lambda a: F.binary_cross_entropy(a, t, weight=w, reduction=reduction),
            lambda a: TF.binary_cross_entropy(a, torch.tensor(t), weight=torch.tensor(w), reduction=reduction),
            [x], rtol=1e-5, what="bce")


def test_bce_finite_differences(rng):
    x, t = rng.standard_normal((3, 4)), rng.uniform(0, 1, (3, 4))
    w, pw = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    got = _C.binary_cross_entropy_with_logits_backward(np.array(1.0), x, t, w, pw, "mean")
    (num,) = numerical_grad(lambda a: _C.binary_cross_entropy_with_logits_forward(a, t, w, pw, "mean"), [x.copy()],
                            np.array(1.0))
    assert_close(got, num, 1e-6, 1e-9, "bce with logits")
    p = rng.uniform(0.1, 0.9, (3, 4))
    got = _C.binary_cross_entropy_backward(np.array(1.0), p, t, w, "sum")
    (num,) = numerical_grad(lambda a: _C.binary_cross_entropy_forward(a, t, w, "sum"), [p.copy()], np.array(1.0))
    assert_close(got, num, 1e-6, 1e-9, "bce")


def test_bce_input_out_of_range():
    with pytest.raises(ValueError, match="input: all elements of input should be between 0 and 1, got 1.5"):
        F.binary_cross_entropy(cnnfast.tensor(np.array([0.5, 1.5], np.float32)), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="pos_weight: expected a shape equal to trailing dims"):
        _C.binary_cross_entropy_with_logits_forward(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), None,
                                                    np.ones(2, np.float32))


# ---- multi-margin and triplet -----------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_matches_torch(p, reduction, rng):
    x = rng.standard_normal((6, 11)).astype(np.float32)
    t = rng.integers(0, 11, 6)
    w = rng.uniform(0.5, 2, 11).astype(np.float32)
    for weight in (None, w):
        compare(lambda a: F.multi_margin_loss(a, t, p=p, margin=0.8, weight=weight, reduction=reduction),
                lambda a: TF.multi_margin_loss(a, torch.tensor(t), p=p, margin=0.8,
                                               weight=None if weight is None else torch.tensor(weight),
                                               reduction=reduction), [x], what=f"multi_margin p={p}")
    compare(lambda a: F.multi_margin_loss(a, np.int64(2), p=p, reduction=reduction),
            lambda a: TF.multi_margin_loss(a, torch.tensor(2), p=p, reduction=reduction), [x[0].copy()],
            what="multi_margin unbatched")


def test_multi_margin_finite_differences_and_errors(rng):
    x, t = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    for p in (1, 2):
        got = _C.multi_margin_loss_backward(np.array(1.0), x, t, p, 1.0, None, "sum")
        (num,) = numerical_grad(lambda a: _C.multi_margin_loss_forward(a, t, p, 1.0, None, "sum"), [x.copy()],
                                np.array(1.0))
        assert_nontrivial(num)
        assert_close(got, num, 1e-6, 1e-8, f"multi_margin p={p}")
    with pytest.raises(ValueError, match="p: only p == 1 and p == 2 supported, got 3"):
        F.multi_margin_loss(cnnfast.tensor(x), t, p=3)
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 5\), got 7"):
        F.multi_margin_loss(cnnfast.tensor(x), np.array([0, 7, 1, 1]))


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triplet_margin_matches_torch(p, swap, reduction, rng):
    a, pos, neg = (rng.standard_normal((7, 9)).astype(np.float32) for _ in range(3))
    compare(lambda *z: F.triplet_margin_loss(*z, margin=2.0, p=p, swap=swap, reduction=reduction),
            lambda *z: TF.triplet_margin_loss(*z, margin=2.0, p=p, swap=swap, reduction=reduction),
            [a, pos, neg], grad_idx=(0, 1, 2), rtol=1e-4, atol=1e-6, what=f"triplet p={p} swap={swap}")


def test_triplet_unbatched_and_finite_differences(rng):
    a, pos, neg = (rng.standard_normal(6).astype(np.float32) for _ in range(3))
    compare(lambda *z: F.triplet_margin_loss(*z, margin=3.0, reduction="none"),
            lambda *z: TF.triplet_margin_loss(*z, margin=3.0, reduction="none"), [a, pos, neg], (0, 1, 2),
            rtol=1e-4, what="triplet unbatched")
    a, pos, neg = (rng.standard_normal((3, 4)) for _ in range(3))
    for p, swap in ((2.0, True), (3.0, False)):
        got = _C.triplet_margin_loss_backward(np.array(1.0), a, pos, neg, 3.0, p, 1e-6, swap, "sum")
        num = numerical_grad(lambda x, y, z: _C.triplet_margin_loss_forward(x, y, z, 3.0, p, 1e-6, swap, "sum"),
                             [a.copy(), pos.copy(), neg.copy()], np.array(1.0))
        assert_nontrivial(*num)
        for g, n_ in zip(got, num):
            assert_close(g, n_, 1e-6, 1e-8, f"triplet p={p} swap={swap}")


# ---- paths, threads, bad input -------------------------------------------------------------

def _all_losses(x, t, xi, ti):
    out = []
    for name, param in (("l1_loss", 0.0), ("mse_loss", 0.0), ("huber_loss", 0.5), ("smooth_l1_loss", 0.5)):
        out += [getattr(_C, f"{name}_forward")(x, t, "sum", param),
                getattr(_C, f"{name}_backward")(np.array(1.0, x.dtype), x, t, "mean", param)]
    for ls in (0.0, 0.2):
        loss, lse = _C.cross_entropy_forward(xi, ti, None, -100, "sum", ls)
        out += [loss, lse, _C.cross_entropy_backward(np.array(1.0, x.dtype), xi, ti, lse, None, -100, "mean", ls)]
    return out


def _all_losses_weighted(xi, ti, w):
    loss, lse = _C.cross_entropy_forward(xi, ti, w, -100, "mean", 0.1)
    return [loss, lse, _C.cross_entropy_backward(np.array(1.0, xi.dtype), xi, ti, lse, w, -100, "mean", 0.1)]


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("n", [50003] + TAIL_LENGTHS)
def test_every_level_agrees_with_scalar(level, n, rng):
    # n elements for the pointwise losses and n classes for cross-entropy: every
    # vector tail after the 8- and 16-lane bodies.
    if level not in cnnfast.simd_levels():
        pytest.skip(f"no {level} on this CPU")
    x, t = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    xi, ti = ce_case(rng, (37 if n > 1000 else 5, min(n, 1001)))
    w = rng.uniform(0.5, 2.0, xi.shape[1]).astype(np.float32)
    ref = at_level("scalar", _all_losses, x, t, xi, ti) + at_level("scalar", _all_losses_weighted, xi, ti, w)
    got = at_level(level, _all_losses, x, t, xi, ti) + at_level(level, _all_losses_weighted, xi, ti, w)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert_close(a, b, 1e-4, 1e-6, f"loss output {i}")


def test_results_do_not_depend_on_thread_count(rng):
    x, t = rng.standard_normal(200001).astype(np.float32), rng.standard_normal(200001).astype(np.float32)
    xi, ti = ce_case(rng, (300, 1000))
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(1)
        one = _all_losses(x, t, xi, ti)
        cnnfast.set_num_threads(2)
        two = _all_losses(x, t, xi, ti)
    finally:
        cnnfast.set_num_threads(before)
    for i, (a, b) in enumerate(zip(one, two)):
        assert np.array_equal(a, b), f"loss output {i} differs between 1 and 2 threads"


def test_float64_inputs_give_float64(rng):
    x, t = ce_case(rng, (4, 6), np.float64)
    loss = F.cross_entropy(cnnfast.tensor(x), t)
    assert loss.dtype == np.float64 and loss.shape == ()
    assert_close(loss.data, TF.cross_entropy(torch.tensor(x), torch.tensor(t)).numpy(), 1e-12, 1e-12, "float64 ce")


def test_bad_input():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="target: expected dtype float32"):
        _C.mse_loss_forward(x, np.ones((3, 4)), "mean")
    with pytest.raises(ValueError, match=r"target: expected shape \(3, 4\)"):
        _C.mse_loss_forward(x, np.ones((4, 3), np.float32), "mean")
    with pytest.raises(ValueError, match="grad_output: expected one value for reduction 'mean'"):
        _C.mse_loss_backward(np.ones(2, np.float32), x, x, "mean")
    with pytest.raises(ValueError, match="delta: expected a value > 0"):
        _C.huber_loss_forward(x, x, "mean", 0.0)
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\)"):
        _C.cross_entropy_forward(x, np.zeros(3, np.int64), np.ones(5, np.float32))
    with pytest.raises(TypeError, match="target: expected dtype int64"):
        _C.cross_entropy_forward(x, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.cross_entropy_forward(np.ones((4, 3), np.float32).T, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"positive: expected shape \(3, 4\)"):
        _C.triplet_margin_loss_forward(x, np.ones((3, 5), np.float32), x)


def test_functional_names_exported():
    for name in ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "cross_entropy", "nll_loss",
                 "binary_cross_entropy_with_logits", "binary_cross_entropy", "multi_margin_loss",
                 "triplet_margin_loss"]:
        assert callable(getattr(F, name))
