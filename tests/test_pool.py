"""Pooling (cnnfast.functional + cnnfast._C) against PyTorch, float64 finite
differences and each other (scalar vs AVX2): max/avg/adaptive pooling and
max-unpooling in 1-D/2-D/3-D, values, indices and gradients, plus bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import assert_close, assert_nontrivial, at_level, numerical_grad


def run_ours(fn, x, gy=None, **kw):
    """(output, indices or None, grad_input) through cnnfast's autograd."""
    t = cnnfast.tensor(x, requires_grad=True)
    out = fn(t, **kw)
    y, idx = out if isinstance(out, tuple) else (out, None)
    if gy is None:
        gy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    return y.detach().numpy(), None if idx is None else idx.numpy(), t.grad.numpy(), gy


def run_torch(fn, x, gy, **kw):
    t = torch.tensor(x, requires_grad=True)
    out = fn(t, **kw)
    y, idx = out if isinstance(out, tuple) else (out, None)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), None if idx is None else idx.numpy(), t.grad.numpy()


def compare(name, x, ours_kw, torch_kw=None, rtol=1e-6, atol=1e-6):
    torch_kw = ours_kw if torch_kw is None else torch_kw
    y, idx, gx, gy = run_ours(getattr(F, name), x, **ours_kw)
    ty, tidx, tgx = run_torch(getattr(TF, name), x, gy, **torch_kw)
    assert_close(y, ty, rtol=rtol, atol=atol, what=f"{name} forward")
    if tidx is not None:
        np.testing.assert_array_equal(idx, tidx, err_msg=f"{name} indices")
    assert_nontrivial(tgx)
    assert_close(gx, tgx, rtol=rtol, atol=atol, what=f"{name} backward")
    return y, idx, gx


# (dims, input shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (1, (2, 3, 17), 3, 2, 1, 1, False),
    (1, (2, 3, 17), 3, 2, 1, 1, True),
    (1, (1, 2, 29), 2, 3, 1, 2, True),
    (2, (2, 3, 13, 29), 3, 2, 1, 1, False),
    (2, (2, 3, 13, 29), 3, 2, 1, 1, True),  # windows hanging over the edge
    (2, (1, 2, 17, 40), 2, 2, 0, 1, False),  # VGG 2x2/2, stride-2 deinterleave path
    (2, (1, 2, 55, 55), 3, 2, 0, 1, False),  # AlexNet: overlapping 3x3/2
    (2, (1, 2, 27, 27), 3, 2, 0, 1, True),
    (2, (1, 3, 11, 23), 3, 3, 1, 2, True),  # stride 3, dilation 2
    (2, (1, 2, 19, 37), 3, 1, 1, 1, False),  # stride-1 contiguous-load path
    (2, (2, 2, 7, 31), (2, 3), (1, 2), (1, 0), (2, 1), True),
    (3, (1, 2, 5, 7, 19), 3, 2, 1, 1, True),
    (3, (2, 1, 4, 6, 11), (2, 3, 2), (1, 2, 3), (1, 1, 0), (1, 2, 1), False),
]


# Rows with fewer than 8 interior windows but at least 8 outputs take the scratch-row
# path (padding as -inf columns): ResNet's 3x3/2 pool of a 16x16 map, odd and dilated
# variants, ceil mode, stride 1 and 3, 1-D and 3-D.
NARROW_CASES = [
    (2, (2, 3, 16, 16), 3, 2, 1, 1, False),
    (2, (1, 2, 9, 17), 3, 2, 1, 1, True),
    (2, (1, 2, 5, 9), 3, 1, 1, 1, False),
    (2, (1, 2, 6, 11), 5, 1, 2, 1, True),
    (2, (1, 2, 7, 19), 5, 2, 2, 2, False),
    (2, (1, 1, 4, 23), 3, 3, 1, 1, True),
    (1, (2, 3, 15), 3, 2, 1, 1, False),
    (3, (1, 2, 3, 4, 16), 3, 2, 1, 1, True),
]


@pytest.mark.parametrize("case", MAX_CASES + NARROW_CASES, ids=lambda c: f"{c[0]}d-{c[1]}-k{c[2]}s{c[3]}p{c[4]}d{c[5]}c{int(c[6])}")
def test_max_pool_matches_torch(case, simd, rng):
    D, shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(np.float32)
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil, return_indices=True)
    compare(f"max_pool{D}d", x, kw)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_max_pool_ties_send_gradient_to_first_max_as_torch(D, simd, rng):
    # Values from {0, 1, 2}: most windows have several equal maxima.
    shape = (2, 3) + (9, 10, 21)[3 - D:]
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    compare(f"max_pool{D}d", x, kw)
    # With a gradient of ones, each output credits exactly one input element.
    t = cnnfast.tensor(x, requires_grad=True)
    y = getattr(F, f"max_pool{D}d")(t, 3, 2, 1, ceil_mode=True)
    y.backward(np.ones(y.shape, np.float32))
    assert t.grad.numpy().sum() == y.detach().numpy().size


def test_max_pool_all_equal_window_picks_first_element(simd):
    x = np.zeros((1, 1, 4, 20), np.float32)
    _, idx = _C.max_pool2d_forward(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    expected = np.array([[r * 2 * 20 + c * 2 for c in range(10)] for r in range(2)])
    np.testing.assert_array_equal(idx[0, 0], expected)


def test_max_pool_nan_and_inf_as_torch(simd, rng):
    x = rng.standard_normal((1, 2, 9, 33)).astype(np.float32)
    x[0, 0, 2, 5] = np.nan
    x[0, 0, 2, 6] = np.nan
    x[0, 1, :, :] = -np.inf
    x[0, 1, 4, 20] = np.inf
    y, idx = _C.max_pool2d_forward(x, [3, 3], [2, 2], [1, 1], [1, 1], False)
    ty, tidx = TF.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    assert_close(y, ty.numpy(), what="nan/inf values")
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("case", NARROW_CASES, ids=lambda c: f"{c[0]}d-{c[1]}-k{c[2]}s{c[3]}p{c[4]}d{c[5]}c{int(c[6])}")
def test_max_pool_narrow_rows_ties_nan_inf_as_torch(case, simd, rng):
    # (Random values: these cases are in test_max_pool_matches_torch.) Ties, NaN and all
    # -inf windows, whose index is the window's first in-bounds element.
    D, shape, k, s, p, d, ceil = case
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil, return_indices=True)
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    x.reshape(-1)[::7] = np.nan
    x.reshape(x.shape[0], x.shape[1], -1)[:, -1] = -np.inf
    y, idx = getattr(F, f"max_pool{D}d")(cnnfast.tensor(x), **kw)
    ty, tidx = getattr(TF, f"max_pool{D}d")(torch.tensor(x), **kw)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


AVG_CASES = [
    (1, (2, 3, 17), 3, 2, 1, False, True, None),
    (1, (2, 3, 17), 4, 3, 2, True, False, None),
    (2, (2, 3, 13, 29), 3, 2, 1, True, True, None),
    (2, (2, 3, 13, 29), 3, 2, 1, True, False, None),
    (2, (1, 2, 17, 40), 2, 2, 0, False, True, None),
    (2, (1, 2, 19, 37), 3, 1, 1, False, False, None),
    (2, (1, 3, 11, 23), (3, 2), (3, 1), (1, 1), True, True, 5),
    (3, (1, 2, 5, 7, 19), 3, 2, 1, True, False, None),
    (3, (2, 1, 4, 6, 11), (2, 3, 2), (1, 2, 3), (1, 1, 0), False, True, 7),
]


@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: f"{c[0]}d-{c[1]}-k{c[2]}s{c[3]}p{c[4]}-{c[5]}{c[6]}{c[7]}")
def test_avg_pool_matches_torch(case, simd, rng):
    D, shape, k, s, p, ceil, cip, div = case
    x = rng.standard_normal(shape).astype(np.float32)
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
    if D > 1:
        kw["divisor_override"] = div
    compare(f"avg_pool{D}d", x, kw, rtol=1e-5)


ADAPTIVE_CASES = [
    (1, (2, 3, 13), 5),
    (1, (1, 2, 7), 11),  # more outputs than inputs
    (2, (2, 3, 13, 17), (5, 4)),
    (2, (1, 2, 3, 7), (7, 3)),
    (2, (2, 3, 9, 40), 1),  # global pooling, long rows (AVX2 row reductions)
    (2, (3, 5, 7, 7), 1),  # global pooling of small planes, eight at a time plus a remainder
    (2, (2, 9, 1, 3), 1),
    (2, (1, 2, 11, 37), (2, None)),
    (3, (1, 2, 5, 7, 9), (3, 4, 2)),
    (3, (1, 1, 4, 3, 33), 1),
]


@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=str)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool_matches_torch(case, kind, simd, rng):
    D, shape, out = case
    x = rng.standard_normal(shape).astype(np.float32)
    kw = dict(output_size=out)
    if kind == "max":
        kw["return_indices"] = True
    compare(f"adaptive_{kind}_pool{D}d", x, kw, rtol=1e-5)


def test_adaptive_max_pool_ties_and_nan_as_torch(simd, rng):
    x = rng.integers(0, 2, size=(2, 3, 6, 41)).astype(np.float32)
    x[1, 2, 3, 30] = np.nan
    x[1, 2, 4, 3] = np.nan
    y, idx = _C.adaptive_max_pool2d_forward(x, [2, 1])
    ty, tidx = TF.adaptive_max_pool2d(torch.tensor(x), (2, 1), return_indices=True)
    assert_close(y, ty.numpy(), what="values")
    np.testing.assert_array_equal(idx, tidx.numpy())


# float32 adaptive pooling with at least 8 planes takes the AVX2 path that pools 8
# planes at once (one per lane): plane counts with and without a remainder,
# planes whose size is not a multiple of 8, more outputs than inputs, 1-D to 3-D.
ADAPTIVE_BLOCK_CASES = [
    (1, (3, 7, 13), 5),  # 21 planes: two blocks and 5 left over
    (2, (2, 4, 13, 13), 6),  # AlexNet's 13 -> 6 on exactly one block
    (2, (3, 5, 11, 9), (4, 7)),  # 15 planes
    (2, (1, 9, 5, 3), (7, 3)),  # more outputs than inputs
    (2, (2, 8, 1, 17), (1, 8)),
    (2, (1, 16, 3, 3), (3, 3)),  # one tap per window
    (3, (2, 5, 3, 4, 5), (2, 3, 2)),
]


@pytest.mark.parametrize("case", ADAPTIVE_BLOCK_CASES, ids=str)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool_eight_planes_at_once_matches_torch(case, kind, simd, rng):
    D, shape, out = case
    x = rng.standard_normal(shape).astype(np.float32)
    kw = dict(output_size=out)
    if kind == "max":
        kw["return_indices"] = True
    compare(f"adaptive_{kind}_pool{D}d", x, kw, rtol=1e-5)


def test_adaptive_max_pool_eight_planes_ties_nan_inf_as_torch(simd, rng):
    # Ties everywhere, NaNs in some lanes only, a plane of -inf (its first element wins).
    x = rng.integers(0, 2, size=(2, 9, 13, 11)).astype(np.float32)
    x[0, 2, 4, 5] = np.nan
    x[0, 2, 4, 6] = np.nan
    x[1, 7, 0, 0] = np.nan
    x[0, 5] = -np.inf
    x[1, 3, 6, 6] = np.inf
    y, idx = _C.adaptive_max_pool2d_forward(x, [6, 5])
    ty, tidx = TF.adaptive_max_pool2d(torch.tensor(x), (6, 5), return_indices=True)
    assert_close(y, ty.numpy(), what="values")
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.skipif(not cnnfast._C.cpu_supports_avx2(), reason="CPU without AVX2")
@pytest.mark.parametrize("out", [(6, 6), (4, 7), (17, 2)])
def test_adaptive_pool_eight_planes_bit_identical_to_scalar(out, rng):
    x = rng.standard_normal((3, 7, 13, 11)).astype(np.float32)
    x[1, 2, 3, :] = 0.5  # ties
    gy = rng.standard_normal((3, 7) + out).astype(np.float32)
    def run():
        return (_C.adaptive_avg_pool2d_forward(x, list(out)), _C.adaptive_avg_pool2d_backward(gy, list(x.shape)),
                *_C.adaptive_max_pool2d_forward(x, list(out)))
    ref = at_level("scalar", run)
    for lvl in cnnfast.simd_levels()[1:]:
        for a, b in zip(ref, at_level(lvl, run)):
            np.testing.assert_array_equal(a, b, err_msg=lvl)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool_eight_planes_gradient_finite_differences(kind, simd):
    # The 8-plane path is float32 only, so the differences are taken in float32,
    # with values and steps on a binary grid: the max is exact (the step is under
    # the spacing of the values, so no window changes its winner) and the average
    # is linear, so a large step leaves only the division by the window size to
    # round.
    rng = np.random.default_rng(5)
    shape = (1, 10, 5, 7)
    x = (rng.permutation(np.prod(shape)).reshape(shape) * 0.125 + 0.0625).astype(np.float64)
    fn = getattr(F, f"adaptive_{kind}_pool2d")

    def f(a):
        return fn(cnnfast.tensor(a.astype(np.float32)), (3, 4)).numpy().astype(np.float64)

    gy = rng.standard_normal(f(x).shape)
    t = cnnfast.tensor(x.astype(np.float32), requires_grad=True)
    fn(t, (3, 4)).backward(gy.astype(np.float32))
    (num,) = numerical_grad(f, [x.copy()], gy, eps=1.0 if kind == "avg" else 2.0 ** -5)
    assert_nontrivial(num)
    # Gradients are ~0.1; a wrong window would be off by ~1e-2, rounding leaves ~3e-6.
    assert_close(t.grad.numpy(), num, rtol=1e-5, atol=1e-5, what=f"adaptive_{kind}_pool2d grad vs finite differences")


UNPOOL_CASES = [
    (1, (2, 3, 17), 3, 2, 1, None),
    (2, (2, 3, 13, 29), 2, 2, 0, (13, 29)),  # odd sizes need output_size to hold every index
    (2, (1, 2, 13, 29), 3, 2, 1, None),
    (2, (1, 2, 11, 11), 3, 3, 0, (1, 2, 10, 11)),
    (3, (1, 2, 5, 7, 9), 2, 2, 0, (5, 7, 9)),
]


@pytest.mark.parametrize("case", UNPOOL_CASES, ids=str)
def test_max_unpool_matches_torch(case, rng):
    D, shape, k, s, p, out_size = case
    x = rng.standard_normal(shape).astype(np.float32)
    pooled, idx = getattr(TF, f"max_pool{D}d")(torch.tensor(x), k, s, p, return_indices=True)
    v = pooled.numpy().copy()
    kw = dict(kernel_size=k, stride=s, padding=p, output_size=out_size)
    t = cnnfast.tensor(v, requires_grad=True)
    y = getattr(F, f"max_unpool{D}d")(t, cnnfast.tensor(idx.numpy()), **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    tt = torch.tensor(v, requires_grad=True)
    ty = getattr(TF, f"max_unpool{D}d")(tt, idx, **kw)
    ty.backward(torch.tensor(gy))
    assert_close(y.detach().numpy(), ty.detach().numpy(), what="unpool forward")
    assert_nontrivial(tt.grad.numpy())
    assert_close(t.grad.numpy(), tt.grad.numpy(), what="unpool backward")


def test_pool_unpool_round_trip_keeps_maxima(rng):
    x = rng.standard_normal((2, 3, 12, 18)).astype(np.float32)
    y, idx = F.max_pool2d(cnnfast.tensor(x), 2, return_indices=True)
    up = F.max_unpool2d(y, idx, 2).numpy()
    kept = up != 0
    np.testing.assert_array_equal(up[kept], x[kept])
    assert kept.sum() == y.detach().numpy().size


def test_unbatched_input_as_torch(rng):
    x = rng.standard_normal((3, 11, 14)).astype(np.float32)
    compare("max_pool2d", x, dict(kernel_size=3, stride=2, padding=1, return_indices=True))
    compare("avg_pool2d", x, dict(kernel_size=2, ceil_mode=True), rtol=1e-5)
    compare("adaptive_avg_pool2d", x, dict(output_size=(4, 5)), rtol=1e-5)
    compare("adaptive_max_pool1d", x[0], dict(output_size=4, return_indices=True))
    compare("max_pool3d", rng.standard_normal((2, 4, 5, 6)).astype(np.float32), dict(kernel_size=2))
    y, idx = F.max_pool2d(cnnfast.tensor(x), 2, return_indices=True)
    up = F.max_unpool2d(y, idx, 2)
    ty, tidx = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    assert_close(up.numpy(), TF.max_unpool2d(ty, tidx, 2).numpy(), what="unbatched unpool")


def test_non_contiguous_input_is_copied_by_the_functional_layer(rng):
    x = rng.standard_normal((2, 3, 14, 30)).astype(np.float32)[:, :, :, ::2]
    assert not x.flags.c_contiguous
    compare("max_pool2d", x, dict(kernel_size=3, stride=2, return_indices=True))


# ---- float64 finite differences (tiny shapes) ----------------------------------

def distinct(shape, rng):
    """Values spaced >= 0.1 apart, so a 1e-6 step never changes which one is the max."""
    return rng.permutation(np.arange(np.prod(shape))).reshape(shape) * 0.1 + 0.05


FD_CASES = [
    ("max_pool1d", (1, 2, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("max_pool2d", (1, 2, 5, 7), dict(kernel_size=3, stride=2, padding=1, dilation=(1, 2))),
    ("max_pool3d", (1, 1, 3, 4, 5), dict(kernel_size=2, stride=(1, 2, 3), ceil_mode=True)),
    ("avg_pool1d", (1, 2, 9), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False)),
    ("avg_pool2d", (1, 2, 5, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg_pool3d", (1, 1, 3, 4, 5), dict(kernel_size=2, stride=(1, 2, 3), padding=1, divisor_override=3)),
    ("adaptive_avg_pool1d", (1, 2, 7), dict(output_size=3)),
    ("adaptive_avg_pool2d", (1, 2, 5, 7), dict(output_size=(3, 4))),
    ("adaptive_avg_pool3d", (1, 1, 3, 4, 5), dict(output_size=(2, 3, 2))),
    ("adaptive_max_pool1d", (1, 2, 7), dict(output_size=3)),
    ("adaptive_max_pool2d", (1, 2, 5, 7), dict(output_size=(3, 4))),
    ("adaptive_max_pool3d", (1, 1, 3, 4, 5), dict(output_size=(2, 3, 2))),
]


@pytest.mark.parametrize("name,shape,kw", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_gradient_finite_differences(name, shape, kw, rng):
    fn = getattr(F, name)
    x = distinct(shape, rng)

    def f(a):
        return fn(cnnfast.tensor(a), **kw).numpy()

    gy = rng.standard_normal(f(x).shape)
    _, _, gx, _ = run_ours(fn, x, gy, **kw)
    (num,) = numerical_grad(f, [x.copy()], gy)
    assert_nontrivial(num)
    assert_close(gx, num, rtol=1e-6, atol=1e-8, what=f"{name} grad vs finite differences")


def test_max_unpool_gradient_finite_differences(rng):
    x = distinct((1, 2, 4, 6), rng)
    _, idx = F.max_pool2d(cnnfast.tensor(x), 2, return_indices=True)
    v = rng.standard_normal(idx.shape)

    def f(a):
        return F.max_unpool2d(cnnfast.tensor(a), idx, 2).numpy()

    gy = rng.standard_normal(f(v).shape)
    t = cnnfast.tensor(v.copy(), requires_grad=True)
    F.max_unpool2d(t, idx, 2).backward(gy)
    (num,) = numerical_grad(f, [v.copy()], gy)
    assert_nontrivial(num)
    assert_close(t.grad.numpy(), num, rtol=1e-6, atol=1e-8, what="unpool grad vs finite differences")


def test_float64_matches_torch(rng):
    x = rng.standard_normal((2, 3, 13, 17))
    compare("max_pool2d", x, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True),
            rtol=1e-12, atol=1e-12)
    compare("avg_pool2d", x, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), rtol=1e-12,
            atol=1e-12)
    compare("adaptive_avg_pool2d", x, dict(output_size=(4, 5)), rtol=1e-12, atol=1e-12)


# ---- scalar vs every vector level -----------------------------------------------

@pytest.mark.skipif(not cnnfast._C.cpu_supports_avx2(), reason="CPU without AVX2")
@pytest.mark.parametrize("s", [1, 2, 3])
def test_scalar_and_avx2_agree_exactly(s, rng):
    # Same scan and summation order on both paths, so results are bit-identical.
    x = rng.standard_normal((3, 5, 23, 71)).astype(np.float32)
    x[0, 0, 3, 10:20] = 1.0  # ties
    def run():
        return (_C.max_pool2d_forward(x, [3, 3], [s, s], [1, 1], [1, 1], True)
                + (_C.avg_pool2d_forward(x, [3, 3], [s, s], [1, 1], True, False, None),
                   _C.adaptive_avg_pool2d_forward(x, [1, 1]))
                + _C.adaptive_max_pool2d_forward(x, [2, 3]))
    a = at_level("scalar", run)
    for lvl in cnnfast.simd_levels()[1:]:
        b = at_level(lvl, run)
        for i in (0, 1, 2, 4, 5):
            np.testing.assert_array_equal(a[i], b[i], err_msg=lvl)
        assert_close(a[3], b[3], rtol=1e-6, what=f"global average, {lvl}")


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((4, 8, 33, 35)).astype(np.float32)
    res = []
    for n in (1, 2):
        before = cnnfast.get_num_threads()
        cnnfast.set_num_threads(n)
        try:
            y, idx = _C.max_pool2d_forward(x, [3, 3], [2, 2], [1, 1], [1, 1], False)
            gx = _C.max_pool2d_backward(y, idx, list(x.shape))
            res.append((y, idx, gx, _C.avg_pool2d_backward(y, list(x.shape), [3, 3], [2, 2], [1, 1])))
        finally:
            cnnfast.set_num_threads(before)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


# ---- bad input ------------------------------------------------------------------

def test_wrong_rank_is_value_error(rng):
    with pytest.raises(ValueError, match="max_pool2d expects a 3-D .* or 4-D"):
        F.max_pool2d(cnnfast.tensor(rng.standard_normal((4, 4)).astype(np.float32)), 2)
    with pytest.raises(ValueError, match="input: expected 4 dimensions"):
        _C.max_pool2d_forward(np.zeros((1, 4, 4), np.float32), [2, 2])
    with pytest.raises(ValueError, match="kernel_size: expected 2 values"):
        _C.max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), [2])


@pytest.mark.parametrize("bad,match", [
    (dict(kernel_size=0), "kernel_size: expected values >= 1"),
    (dict(kernel_size=2, stride=0), "stride: expected values >= 1"),
    (dict(kernel_size=2, padding=-1), "padding: expected values >= 0"),
    (dict(kernel_size=3, padding=2), "padding: expected at most half"),
    (dict(kernel_size=2, padding=2, dilation=3), "padding: expected at most half"),  # torch ignores dilation here
    (dict(kernel_size=3, dilation=0), "dilation: expected values >= 1"),
    (dict(kernel_size=7), "too small"),
])
def test_bad_window_is_value_error(bad, match):
    x = cnnfast.tensor(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=match):
        F.max_pool2d(x, **bad)


def test_avg_pool_bad_arguments():
    x = cnnfast.tensor(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="padding: expected at most half of kernel_size"):
        F.avg_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="divisor_override"):
        _C.avg_pool2d_forward(x.numpy(), [2, 2], [2, 2], [0, 0], False, True, 0)


def test_zero_sizes_are_value_error():
    with pytest.raises(ValueError, match="non-empty"):
        F.max_pool2d(cnnfast.tensor(np.zeros((1, 0, 5, 5), np.float32)), 2)
    with pytest.raises(ValueError, match="non-empty"):
        F.adaptive_avg_pool1d(cnnfast.tensor(np.zeros((2, 3, 0), np.float32)), 1)
    with pytest.raises(ValueError, match="output_size: expected values >= 1"):
        F.adaptive_max_pool2d(cnnfast.tensor(np.zeros((1, 1, 5, 5), np.float32)), (0, 2))


def test_dtype_errors():
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.max_pool2d_forward(np.zeros((1, 1, 4, 4), np.int32), [2, 2])
    with pytest.raises(TypeError, match="float32 or float64"):
        F.avg_pool1d(cnnfast.tensor(np.zeros((1, 1, 4), np.float16)), 2)
    x = np.zeros((1, 1, 4, 4), np.float32)
    y, idx = _C.max_pool2d_forward(x, [2, 2])
    with pytest.raises(TypeError, match="indices: expected dtype int64"):
        _C.max_pool2d_backward(y, idx.astype(np.int32), [1, 1, 4, 4])


def test_non_contiguous_kernel_argument_is_value_error():
    x = np.zeros((1, 1, 4, 8), np.float32)[..., ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.avg_pool2d_forward(x, [2, 2])


def test_out_of_range_indices_are_value_error():
    x = np.ones((1, 2, 3, 3), np.float32)
    idx = np.zeros((1, 2, 3, 3), np.int64)
    idx[0, 1, 2, 2] = 36
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, 36\).*got 36"):
        _C.max_unpool2d_forward(x, idx, [6, 6])
    idx[0, 1, 2, 2] = -1
    with pytest.raises(ValueError, match="got -1"):
        F.max_unpool2d(cnnfast.tensor(x), cnnfast.tensor(idx), 2)
    with pytest.raises(ValueError, match="got -1"):
        _C.max_unpool2d_backward(np.ones((1, 2, 6, 6), np.float32), idx)
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, 4\)"):
        _C.max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), np.array([[[[4]]]]), [1, 1, 2, 2])


def test_shape_mismatches_are_value_error():
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        _C.avg_pool2d_backward(np.ones((1, 1, 3, 3), np.float32), [1, 1, 4, 4], [2, 2])
    with pytest.raises(ValueError, match="indices: expected shape"):
        _C.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 3), np.int64), [1, 1, 4, 4])
    with pytest.raises(ValueError, match="output_size"):
        F.max_unpool2d(cnnfast.tensor(np.ones((1, 1, 2, 2), np.float32)),
                       cnnfast.tensor(np.zeros((1, 1, 2, 2), np.int64)), 2, output_size=(9, 4))


def test_dilated_window_that_misses_the_input_as_torch():
    # dilation 3 over 2 inputs: the only window (-1, 2) covers neither; torch gives
    # -inf with index 2 and sends its gradient nowhere.
    x = np.array([[[1.0, 2.0]]], np.float32)
    compare_kw = dict(kernel_size=2, stride=1, padding=1, dilation=3, return_indices=True)
    t = cnnfast.tensor(x, requires_grad=True)
    y, idx = F.max_pool1d(t, **compare_kw)
    y.backward(np.ones(y.shape, np.float32))
    tt = torch.tensor(x, requires_grad=True)
    ty, tidx = TF.max_pool1d(tt, **compare_kw)
    ty.backward(torch.ones_like(ty))
    assert_close(y.detach().numpy(), ty.detach().numpy(), what="values")
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())


def test_random_geometries_match_torch(simd):
    # Random kernel/stride/padding/dilation/ceil_mode/sizes in 1-D to 3-D, values
    # from a small integer set so ties are common; torch decides what is legal.
    rng = np.random.default_rng(2026)
    checked = 0
    for _ in range(60):
        D = int(rng.integers(1, 4))
        k = tuple(int(v) for v in rng.integers(1, 5, D))
        s = tuple(int(v) for v in rng.integers(1, 4, D))
        d = tuple(int(v) for v in rng.integers(1, 3, D))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        ceil = bool(rng.integers(0, 2))
        spatial = tuple(int(v) for v in rng.integers(1, 20 if D < 3 else 8, D))
        x = rng.integers(-2, 3, (2, 2) + spatial).astype(np.float32)
        try:
            ty, ti = getattr(TF, f"max_pool{D}d")(torch.tensor(x), k, s, p, d, ceil, True)
        except RuntimeError:
            with pytest.raises(ValueError):
                getattr(F, f"max_pool{D}d")(cnnfast.tensor(x), k, s, p, d, ceil, True)
            continue
        y, i = getattr(F, f"max_pool{D}d")(cnnfast.tensor(x), k, s, p, d, ceil, True)
        np.testing.assert_array_equal(y.numpy(), ty.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
        cip = bool(rng.integers(0, 2))
        try:
            ta = getattr(TF, f"avg_pool{D}d")(torch.tensor(x), k, s, p, ceil, cip)
        except RuntimeError:
            with pytest.raises(ValueError):
                getattr(F, f"avg_pool{D}d")(cnnfast.tensor(x), k, s, p, ceil, cip)
            continue
        assert_close(getattr(F, f"avg_pool{D}d")(cnnfast.tensor(x), k, s, p, ceil, cip).numpy(), ta.numpy(),
                     rtol=1e-6, what=f"avg_pool{D}d {k} {s} {p} {ceil} {cip}")
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("case", MAX_CASES[3:8], ids=lambda c: f"{c[1]}-k{c[2]}s{c[3]}")
def test_max_pool_without_indices_matches_torch(case, simd, rng):
    # No graph and no return_indices: the kernel skips the indices entirely.
    D, shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(np.float32)
    with cnnfast.no_grad():
        y = getattr(F, f"max_pool{D}d")(cnnfast.tensor(x, requires_grad=True), k, s, p, d, ceil)
    assert y.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), getattr(TF, f"max_pool{D}d")(torch.tensor(x), k, s, p, d, ceil).numpy())
    values, none = _C.max_pool2d_forward(x, [k, k], [s, s], [p, p], [d, d], ceil, return_indices=False)
    assert none is None
    np.testing.assert_array_equal(values, y.numpy())


# ---- max pooling without indices: the AVX-512 separable path ---------------------

# (kernel, stride, padding, dilation, ceil_mode) per dimension pair (H, W). The first
# five are the geometries with unrolled W taps (3x3/2 p1, 2x2/2, 3x3/2 ceil, 3x3/1 p1,
# 5x5/1 p2); the rest take the per-tap loads (other widths, dilation, rectangles) or,
# W stride 3, the older row kernel.
SEPARABLE_CASES = [
    (3, 2, 1, 1, False),
    (2, 2, 0, 1, False),
    (3, 2, 0, 1, True),
    (3, 1, 1, 1, False),
    (5, 1, 2, 1, True),
    (3, 1, 0, 1, False),
    (4, 2, 2, 1, True),
    (3, 2, 1, 2, False),
    (2, 1, 1, 2, True),
    (1, 2, 0, 1, False),
    ((3, 2), (2, 1), (1, 0), (1, 2), True),
    (3, 3, 1, 1, True),
]


def special_values(shape, rng):
    """Small integers (ties), signed zeros, +-inf and NaNs with distinct payloads."""
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.random(flat.size) < 0.15] = -0.0
    flat[rng.random(flat.size) < 0.04] = np.inf
    flat[rng.random(flat.size) < 0.08] = -np.inf
    bits = flat.view(np.uint32)
    nan_at = np.flatnonzero(rng.random(flat.size) < 0.03)
    bits[nan_at] = np.uint32(0x7FC00000) | rng.integers(1, 1 << 20, nan_at.size).astype(np.uint32)
    bits[nan_at[::3]] |= np.uint32(0x80000000)
    return x


def max_values(D, x, k, s, p, d, ceil):
    with cnnfast.no_grad():
        return getattr(F, f"max_pool{D}d")(cnnfast.tensor(x), k, s, p, d, ceil).numpy()


@pytest.mark.parametrize("case", SEPARABLE_CASES, ids=lambda c: "k{}s{}p{}d{}c{}".format(*c[:4], int(c[4])))
def test_max_pool_without_indices_every_width_as_torch(case, simd):
    # Widths 1..40 (every tail of a 16-lane block, rows shorter than one block, windows
    # hanging over both edges) on prime heights, batch 1: values as torch (NaN where
    # torch has one), bit for bit as the scalar reference (signed zeros, NaN payloads).
    k, s, p, d, ceil = case
    rng = np.random.default_rng(41)
    checked = 0
    for W in range(1, 41):
        H = (2, 5, 7, 11, 13)[W % 5]
        x = special_values((1, 2, H, W), rng)
        try:
            ty = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil).numpy()
        except RuntimeError:
            continue
        y = max_values(2, x, k, s, p, d, ceil)
        np.testing.assert_array_equal(y, ty, err_msg=f"W={W} H={H}")
        ref = at_level("scalar", max_values, 2, x, k, s, p, d, ceil)
        np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32), err_msg=f"bits, W={W} H={H}")
        checked += 1
    assert checked >= 30


@pytest.mark.parametrize("D,shape,k,s,p,d,ceil", [
    (1, (1, 3, 37), 3, 2, 1, 1, False),
    (1, (2, 2, 41), 5, 1, 2, 1, True),
    (3, (1, 2, 5, 7, 23), 3, 2, 1, 1, True),
    (3, (1, 1, 6, 5, 19), (2, 3, 3), (1, 1, 2), (1, 1, 0), (2, 1, 1), False),
])
def test_max_pool_without_indices_1d_3d_as_torch(D, shape, k, s, p, d, ceil, simd):
    x = special_values(shape, np.random.default_rng(43))
    y = max_values(D, x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, getattr(TF, f"max_pool{D}d")(torch.tensor(x), k, s, p, d, ceil).numpy())
    ref = at_level("scalar", max_values, D, x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32))


def test_max_pool_without_indices_padding_is_minus_infinity(simd):
    # Windows of only -inf (inside the input and over the padding) give -inf, never
    # a value from the padding; a dilated window that misses the input gives -inf too.
    x = np.full((1, 1, 9, 21), -np.inf, np.float32)
    x[0, 0, 4, 10] = -1e30
    for args in ((3, 2, 1, 1, False), (5, 1, 2, 1, False), (2, 2, 1, 3, True)):
        try:
            ty = TF.max_pool2d(torch.tensor(x), *args).numpy()
        except RuntimeError:
            continue
        np.testing.assert_array_equal(max_values(2, x, *args), ty)
    x = np.arange(1, 4, dtype=np.float32).reshape(1, 1, 1, 3)
    np.testing.assert_array_equal(max_values(2, x, (1, 2), 1, (0, 1), (1, 4), False),
                                  TF.max_pool2d(torch.tensor(x), (1, 2), 1, (0, 1), (1, 4)).numpy())
