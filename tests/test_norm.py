"""Normalisation kernels and functional wrappers (batch_norm, instance_norm, group_norm,
layer_norm, local_response_norm) against PyTorch, float64 finite differences, each
other (scalar vs AVX2, 1 vs 2 threads), and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import TAIL_LENGTHS, assert_close, assert_nontrivial, at_level, numerical_grad


def run_both(fc, ft, x, params, gy, rtol=1e-4, atol=1e-5, what=""):
    """Runs fc on cnnfast tensors and ft on torch tensors (x and params all requiring grad)
    and compares outputs and every gradient."""
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    cp = [None if p is None else cnnfast.tensor(p.copy(), requires_grad=True) for p in params]
    y = fc(cx, *cp)
    y.backward(gy)
    tx = torch.tensor(x, requires_grad=True)
    tp = [None if p is None else torch.tensor(p, requires_grad=True) for p in params]
    ty = ft(tx, *tp)
    ty.backward(torch.tensor(gy))
    assert_close(y._array, ty.detach().numpy(), rtol, atol, f"{what} output")
    assert_close(cx.grad._array, tx.grad.numpy(), rtol, atol, f"{what} grad input")
    for i, (a, b) in enumerate(zip(cp, tp)):
        if a is not None:
            assert_close(a.grad._array, b.grad.numpy(), rtol, atol, f"{what} grad param {i}")


def affine_params(rng, shape, affine, dtype=np.float32):
    if not affine:
        return [None, None]
    return [rng.uniform(0.5, 1.5, shape).astype(dtype), rng.standard_normal(shape).astype(dtype)]


# ---- batch_norm --------------------------------------------------------------------

# Training batch norm gathers each channel into one row when a plane has <= 64 values and
# works plane by plane above: both sides of that boundary are here.
BN_SHAPES = [(5, 3), (300, 70), (4, 3, 7), (2, 5, 3, 3), (2, 3, 2, 3, 5), (1, 3, 5, 7), (3, 17, 13), (2, 4, 8, 8),
             (3, 2, 5, 13), (2, 3, 9, 11)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(shape, affine, training, simd, rng):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    rm0 = rng.standard_normal(C).astype(np.float32)
    rv0 = rng.uniform(0.5, 2, C).astype(np.float32)
    rm, rv = cnnfast.tensor(rm0.copy()), cnnfast.tensor(rv0.copy())
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    run_both(lambda a, w, b: F.batch_norm(a, rm, rv, w, b, training=training, momentum=0.3),
             lambda a, w, b: TF.batch_norm(a, trm, trv, w, b, training=training, momentum=0.3),
             x, affine_params(rng, C, affine), gy, what=f"batch_norm {shape}")
    assert_close(rm._array, trm.numpy(), 1e-5, 1e-6, "running_mean")
    assert_close(rv._array, trv.numpy(), 1e-5, 1e-6, "running_var")


def test_batch_norm_running_stats_over_steps_then_eval(rng):
    shape, C = (6, 4, 5, 3), 4
    rm, rv = cnnfast.tensor(np.zeros(C, np.float32)), cnnfast.tensor(np.ones(C, np.float32))
    trm, trv = torch.zeros(C), torch.ones(C)
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        y = F.batch_norm(cnnfast.tensor(x), rm, rv, training=True, momentum=0.1)
        ty = TF.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.1)
        assert_close(y._array, ty.numpy(), 1e-4, 1e-5, f"step {step}")
    # The unbiased variance goes into running_var: a biased one would differ by M/(M-1) = 90/89.
    assert_close(rm._array, trm.numpy(), 1e-5, 1e-6, "running_mean")
    assert_close(rv._array, trv.numpy(), 1e-5, 1e-6, "running_var")
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close(F.batch_norm(cnnfast.tensor(x), rm, rv)._array, TF.batch_norm(torch.tensor(x), trm, trv).numpy(),
                 1e-5, 1e-5, "eval with running statistics")


@pytest.mark.parametrize("op", ["batch", "group", "layer", "instance"])
def test_large_mean_small_spread(op, simd, rng):
    # Two-pass statistics around a pivot: a mean of 1e4 beside a spread of 1e-2 still
    # normalises to float64 accuracy (one-pass E[x^2] - E[x]^2 in float32 returns noise).
    x = (1e4 + 1e-2 * rng.standard_normal((8, 4, 700))).astype(np.float32)
    if op == "batch":  # also the gathered path of small planes
        xs = (1e4 + 1e-2 * rng.standard_normal((64, 4, 9))).astype(np.float32)
        ref = TF.batch_norm(torch.tensor(xs, dtype=torch.float64), None, None, training=True).numpy()
        assert_close(F.batch_norm(cnnfast.tensor(xs), None, None, training=True)._array, ref, 1e-3, 1e-3,
                     "batch norm, large mean, small planes")
    fns = {"batch": lambda m, a: m.batch_norm(a, None, None, training=True),
           "group": lambda m, a: m.group_norm(a, 2),
           "layer": lambda m, a: m.layer_norm(a, (4, 700)),
           "instance": lambda m, a: m.instance_norm(a)}
    ref = fns[op](TF, torch.tensor(x, dtype=torch.float64)).numpy()
    y = fns[op](F, cnnfast.tensor(x))._array
    assert_close(y, ref, 1e-3, 1e-3, f"{op} norm, large mean")


def test_batch_norm_float64(rng):
    x64 = rng.standard_normal((3, 4, 5))
    gy = rng.standard_normal(x64.shape)
    run_both(lambda a, w, b: F.batch_norm(a, None, None, w, b, training=True),
             lambda a, w, b: TF.batch_norm(a, None, None, w, b, training=True),
             x64, affine_params(rng, 4, True, np.float64), gy, 1e-10, 1e-12, "float64")


def test_batch_norm_batch_one_training_is_error():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(cnnfast.tensor(np.ones((1, 4), np.float32)), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(cnnfast.tensor(np.ones((1, 4, 1, 1), np.float32)), None, None, training=True)
    # One sample with spatial extent is fine, as in torch.
    F.batch_norm(cnnfast.tensor(np.arange(8, dtype=np.float32).reshape(1, 4, 2)), None, None, training=True)


def test_batch_norm_eval_needs_running_stats():
    with pytest.raises(ValueError, match="running_mean: must be defined in evaluation mode"):
        F.batch_norm(cnnfast.tensor(np.ones((2, 4), np.float32)), None, None, training=False)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 4), (2, 2, 67)])
def test_batch_norm_finite_differences(training, shape, rng):
    x = rng.standard_normal(shape)
    w, b = rng.uniform(0.5, 1.5, 2), rng.standard_normal(2)
    rm, rv = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    gy = rng.standard_normal(x.shape)

    def f(x, w, b):
        return _C.batch_norm_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5)[0]

    _, m, r = _C.batch_norm_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5)
    gx, gw, gb = _C.batch_norm_backward(gy, x, w, m, r, training)
    num = numerical_grad(f, [x.copy(), w.copy(), b.copy()], gy)
    assert_nontrivial(*num)
    for a, n_, name in zip((gx, gw, gb), num, ("x", "weight", "bias")):
        assert_close(a, n_, 1e-5, 1e-7, f"batch_norm d{name}")


# ---- group_norm / instance_norm --------------------------------------------------------

@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((3, 4, 2, 3), 2), ((4, 6), 3), ((1, 6, 7), 1),
                                          ((2, 6, 4), 6),
                                          ((2, 12, 3, 2, 2), 4), ((2, 64, 17), 32)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(shape, groups, affine, simd, rng):
    x = (rng.standard_normal(shape) * 3 - 2).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    run_both(lambda a, w, b: F.group_norm(a, groups, w, b), lambda a, w, b: TF.group_norm(a, groups, w, b),
             x, affine_params(rng, shape[1], affine), gy, what=f"group_norm {shape} G={groups}")


def test_group_norm_groups_must_divide_channels():
    x = cnnfast.tensor(np.ones((2, 6, 3), np.float32))
    with pytest.raises(ValueError, match="num_groups.*divisible.*num_groups=4"):
        F.group_norm(x, 4)
    with pytest.raises(ValueError, match="num_groups"):
        F.group_norm(x, 0)
    with pytest.raises(ValueError, match="num_groups: expected a positive divisor of the number of channels 6, got 4"):
        _C.group_norm_forward(x._array, 4)


def test_group_norm_finite_differences(rng):
    x = rng.standard_normal((2, 4, 3))
    w, b = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    gy = rng.standard_normal(x.shape)
    _, m, r = _C.group_norm_forward(x, 2, w, b)
    got = _C.group_norm_backward(gy, x, 2, w, m, r)
    num = numerical_grad(lambda x, w, b: _C.group_norm_forward(x, 2, w, b)[0], [x.copy(), w.copy(), b.copy()], gy)
    assert_nontrivial(*num)
    for a, n_ in zip(got, num):
        assert_close(a, n_, 1e-5, 1e-7, "group_norm vs finite differences")


def test_instance_norm_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4))
    w, b = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    gy = rng.standard_normal(x.shape)
    _, m, r = _C.instance_norm_forward(x, w, b)
    got = _C.instance_norm_backward(gy, x, w, m, r)
    num = numerical_grad(lambda x, w, b: _C.instance_norm_forward(x, w, b)[0], [x.copy(), w.copy(), b.copy()], gy)
    assert_nontrivial(*num)
    for a, n_ in zip(got, num):
        assert_close(a, n_, 1e-5, 1e-7, "instance_norm vs finite differences")


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 3, 3), (3, 2, 2, 2, 3), (2, 5, 70)])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_matches_torch(shape, affine, simd, rng):
    C = shape[1]
    x = (rng.standard_normal(shape) + 2).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    rm, rv = cnnfast.tensor(np.zeros(C, np.float32)), cnnfast.tensor(np.ones(C, np.float32))
    trm, trv = torch.zeros(C), torch.ones(C)
    run_both(lambda a, w, b: F.instance_norm(a, rm, rv, w, b, momentum=0.2),
             lambda a, w, b: TF.instance_norm(a, trm, trv, w, b, momentum=0.2),
             x, affine_params(rng, C, affine), gy, what=f"instance_norm {shape}")
    assert_close(rm._array, trm.numpy(), 1e-5, 1e-6, "running_mean")
    assert_close(rv._array, trv.numpy(), 1e-5, 1e-6, "running_var")
    # Evaluation form: the running statistics normalise the input.
    run_both(lambda a, w, b: F.instance_norm(a, rm, rv, w, b, use_input_stats=False),
             lambda a, w, b: TF.instance_norm(a, trm, trv, w, b, use_input_stats=False),
             x, affine_params(rng, C, affine), gy, what=f"instance_norm eval {shape}")


def test_instance_norm_needs_spatial_extent():
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        F.instance_norm(cnnfast.tensor(np.ones((2, 3, 1), np.float32)))


# ---- layer_norm ----------------------------------------------------------------------

@pytest.mark.parametrize("shape,nshape", [((4, 13), (13,)), ((2, 3, 7, 9), (7, 9)), ((5, 3, 4), (5, 3, 4)),
                                          ((1, 1030), (1030,)), ((3, 2, 17), (17,)), ((600, 19), (19,)),
                                          ((2, 2100), (2100,))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(shape, nshape, affine, simd, rng):
    x = (rng.standard_normal(shape) * 2 + 5).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    run_both(lambda a, w, b: F.layer_norm(a, nshape, w, b), lambda a, w, b: TF.layer_norm(a, nshape, w, b),
             x, affine_params(rng, nshape, affine), gy, what=f"layer_norm {shape}")


def test_layer_norm_weight_only(rng):
    x = rng.standard_normal((3, 10)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 10).astype(np.float32)
    run_both(lambda a, w: F.layer_norm(a, 10, w), lambda a, w: TF.layer_norm(a, (10,), w), x, [w], gy,
             what="layer_norm weight only")


def test_layer_norm_finite_differences(rng):
    x = rng.standard_normal((3, 5))
    w, b = rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)
    gy = rng.standard_normal(x.shape)
    _, m, r = _C.layer_norm_forward(x, 1, w, b)
    got = _C.layer_norm_backward(gy, x, 1, w, m, r)
    num = numerical_grad(lambda x, w, b: _C.layer_norm_forward(x, 1, w, b)[0], [x.copy(), w.copy(), b.copy()], gy)
    assert_nontrivial(*num)
    for a, n_ in zip(got, num):
        assert_close(a, n_, 1e-5, 1e-7, "layer_norm vs finite differences")


def test_layer_norm_bad_normalized_shape():
    x = cnnfast.tensor(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="normalized_shape: expected the trailing dims"):
        F.layer_norm(x, (3,))
    with pytest.raises(ValueError, match="weight: expected shape"):
        F.layer_norm(x, (4,), cnnfast.tensor(np.ones(3, np.float32)))


# ---- local_response_norm ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 7, 5), (1, 9, 3, 4), (2, 3, 2, 2, 3), (2, 64, 23)])
@pytest.mark.parametrize("size,beta", [(5, 0.75), (2, 0.75), (1, 0.5), (4, 0.6), (3, 1.0), (11, 0.75)])
def test_local_response_norm_matches_torch(shape, size, beta, simd, rng):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    # A large alpha makes the window sum matter (AlexNet's 1e-4 barely moves y).
    run_both(lambda a: F.local_response_norm(a, size, 0.5, beta, 2.0),
             lambda a: TF.local_response_norm(a, size, 0.5, beta, 2.0),
             x, [], gy, what=f"lrn {shape} size={size} beta={beta}")


def test_local_response_norm_alexnet_defaults(rng):
    x = (rng.standard_normal((2, 96, 5, 5)) * 30).astype(np.float32)
    ref = TF.local_response_norm(torch.tensor(x), 5, 1e-4, 0.75, 2.0).numpy()
    assert_close(F.local_response_norm(cnnfast.tensor(x), 5, 1e-4, 0.75, 2.0)._array, ref, 1e-5, 1e-6, "alexnet lrn")


@pytest.mark.parametrize("size,beta", [(3, 0.75), (2, 0.6)])
def test_local_response_norm_finite_differences(size, beta, rng):
    x = rng.standard_normal((2, 5, 3)) * 2
    gy = rng.standard_normal(x.shape)
    y, den = _C.local_response_norm_forward(x, size, 0.7, beta, 1.5)
    gx = _C.local_response_norm_backward(gy, x, y, den, size, 0.7, beta)
    (num,) = numerical_grad(lambda a: _C.local_response_norm_forward(a, size, 0.7, beta, 1.5)[0], [x.copy()], gy)
    assert_close(gx, num, 1e-5, 1e-7, "lrn vs finite differences")


def test_local_response_norm_needs_rank_3():
    with pytest.raises(ValueError, match="3D or higher"):
        F.local_response_norm(cnnfast.tensor(np.ones((2, 3), np.float32)), 2)


# ---- paths, threads, bad input ------------------------------------------------------------

def _all_kernels(x, gy):
    C = x.shape[1]
    w = np.linspace(0.5, 1.5, C).astype(x.dtype)
    b = np.linspace(-1, 1, C).astype(x.dtype)
    out = []
    y, m, r = _C.batch_norm_forward(x, w, b, None, None, True)
    out += [y, *_C.batch_norm_backward(gy, x, w, m, r, True)]
    y, m, r = _C.batch_norm_forward(x, w, b, b.copy(), w.copy(), False)
    out += [y, *_C.batch_norm_backward(gy, x, w, m, r, False)]
    y, m, r = _C.group_norm_forward(x, 4, w, b)
    out += [y, *_C.group_norm_backward(gy, x, 4, w, m, r)]
    L = x[0].size
    wl = np.linspace(0.5, 1.5, L).astype(x.dtype)
    y, m, r = _C.layer_norm_forward(x, x.ndim - 1, wl, wl)
    out += [y, *_C.layer_norm_backward(gy, x, x.ndim - 1, wl, m, r)]
    # Many short rows: the parameter gradients reduce over several row groups.
    wc = w[: x.shape[-1]] if x.shape[-1] <= C else np.linspace(0.5, 1.5, x.shape[-1]).astype(x.dtype)
    y, m, r = _C.layer_norm_forward(x, 1, wc, wc)
    out += [y, *_C.layer_norm_backward(gy, x, 1, wc, m, r)]
    y, d = _C.local_response_norm_forward(x, 5, 0.1, 0.75, 2.0)
    out += [y, _C.local_response_norm_backward(gy, x, y, d, 5, 0.1, 0.75)]
    return out


def _levels_agree(level, x, gy):
    if level not in cnnfast.simd_levels():
        pytest.skip(f"no {level} on this CPU")
    ref = at_level("scalar", _all_kernels, x, gy)
    got = at_level(level, _all_kernels, x, gy)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert_close(a, b, 2e-5, 2e-5, f"kernel output {i}")


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_every_level_agrees_with_scalar(level, rng):
    x = (rng.standard_normal((3, 8, 37, 11)) + 1).astype(np.float32)
    _levels_agree(level, x, rng.standard_normal(x.shape).astype(np.float32))


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("n", TAIL_LENGTHS)
def test_every_level_agrees_with_scalar_on_every_tail(level, n, rng):
    # n is the row length of every primitive (spatial size, layer-norm row):
    # each vector tail after the 8- and 16-lane bodies.
    x = (rng.standard_normal((2, 8, 1, n)) * 2 + 1).astype(np.float32)
    _levels_agree(level, x, rng.standard_normal(x.shape).astype(np.float32))


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_every_level_agrees_with_scalar_on_streamed_outputs(level, rng):
    # Outputs from 16 MB on are written with non-temporal stores; an odd spatial
    # size puts every (n, c) block at a different alignment.
    x = (rng.standard_normal((2, 8, 515, 511)) + 1).astype(np.float32)
    assert x.nbytes >= 16 << 20
    _levels_agree(level, x, rng.standard_normal(x.shape).astype(np.float32))


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((4, 8, 33, 35)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(1)
        one = _all_kernels(x, gy)
        cnnfast.set_num_threads(2)
        two = _all_kernels(x, gy)
    finally:
        cnnfast.set_num_threads(before)
    for i, (a, b) in enumerate(zip(one, two)):
        assert np.array_equal(a, b), f"kernel output {i} differs between 1 and 2 threads"


def test_float64_matches_float32(rng):
    x = rng.standard_normal((2, 8, 5, 3))
    gy = rng.standard_normal(x.shape)
    for a, b in zip(_all_kernels(x, gy), _all_kernels(x.astype(np.float32), gy.astype(np.float32))):
        assert a.dtype == np.float64 and b.dtype == np.float32
        assert_close(b, a, 1e-4, 1e-4, "float32 vs float64")


def test_bad_input():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="weight: expected dtype float32"):
        _C.batch_norm_forward(x, np.ones(3), None, None, None, True)
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\), got \(4,\)"):
        _C.batch_norm_forward(x, np.ones(4, np.float32), None, None, None, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.batch_norm_forward(np.ones((3, 4, 2), np.float32).transpose(1, 0, 2), None, None, None, None, True)
    rm = np.zeros(3, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean: expected a writeable array"):
        _C.batch_norm_forward(x, None, None, rm, np.ones(3, np.float32), True)
    with pytest.raises(TypeError, match="input: expected a float32 or float64 array"):
        _C.layer_norm_forward(np.ones((2, 3), np.int32), 1)
    with pytest.raises(ValueError, match="normalized_ndim"):
        _C.layer_norm_forward(x, 4)
    with pytest.raises(ValueError, match="input: expected 2 to 32 dimensions"):
        _C.group_norm_forward(np.ones(3, np.float32), 1)
    with pytest.raises(ValueError, match="size: expected a window of at least 1"):
        _C.local_response_norm_forward(x, 0)
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        _C.group_norm_backward(np.ones((2, 3, 5), np.float32), x, 3, None, np.ones((2, 3), np.float32),
                               np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        _C.batch_norm_forward(np.ones((0, 3), np.float32), None, None, None, None, True)


def test_functional_names_exported():
    for name in ["batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm"]:
        assert callable(getattr(F, name))
