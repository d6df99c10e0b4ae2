"""Dropout (cnnfast.functional + cnnfast._C): mask reproducibility across thread
counts and SIMD paths, keep-probability and mean, inverted scaling exactly as
torch computes it, gradient through the same mask, channel dropout, the p=0/p=1
and training=False edge cases against torch, and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import TAIL_LENGTHS, assert_close, assert_nontrivial, at_level, numerical_grad


def scale_of(p, dtype=np.float32):
    # torch: noise.div_(1 - p) in the tensor's dtype.
    return dtype(1) / dtype(1.0 - p)


def with_threads(n, fn):
    before = cnnfast.get_num_threads()
    cnnfast.set_num_threads(n)
    try:
        return fn()
    finally:
        cnnfast.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 13, 70001, 300007])
def test_same_key_same_mask_with_1_and_2_threads(n, simd, rng):
    x = rng.standard_normal(n).astype(np.float32) + 5.0  # never 0, so y != 0 is the mask
    y1 = with_threads(1, lambda: _C.dropout_forward(x, 0.37, 123, 4))
    y2 = with_threads(2, lambda: _C.dropout_forward(x, 0.37, 123, 4))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(y1 != 0, _C.dropout_mask(n, 0.37, 123, 4).astype(bool))
    if n > 1000:  # a different key gives a different mask
        assert not np.array_equal(y1, _C.dropout_forward(x, 0.37, 123, 5))
        assert not np.array_equal(y1, _C.dropout_forward(x, 0.37, 124, 4))


@pytest.mark.parametrize("n", TAIL_LENGTHS + [100003])
def test_every_level_gives_the_same_mask_bit_for_bit(n, rng):
    # Masks depend on the position only: every SIMD level, every tail length and
    # both p's must give the scalar path's values exactly (one multiply each).
    x = rng.standard_normal(n).astype(np.float32) + 5.0
    for p in (0.25, 0.8):
        res = {lvl: at_level(lvl, _C.dropout_forward, x, p, 9, 2) for lvl in cnnfast.simd_levels()}
        mask = _C.dropout_mask(n, p, 9, 2).astype(bool)
        np.testing.assert_array_equal(res["scalar"], np.where(mask, x * scale_of(p), np.float32(0)))
        for lvl, r in res.items():
            np.testing.assert_array_equal(r, res["scalar"], err_msg=f"{lvl} vs scalar, p={p}")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_probability_and_mean_on_a_million_elements(p, threads, simd):
    n = 1_000_000
    x = np.ones(n, np.float32)
    y = F.dropout(cnnfast.tensor(x), p, seed=(2024, 7)).numpy()
    keep = np.count_nonzero(y) / n
    assert abs(keep - (1 - p)) <= 0.005 * (1 - p), f"kept fraction {keep} for p={p}"
    # Inverted scaling preserves the mean.
    assert abs(y.mean() - 1.0) <= 0.02
    assert set(np.unique(y)) == {np.float32(0), scale_of(p)}


def test_masks_of_consecutive_offsets_are_uncorrelated():
    a = _C.dropout_mask(200_000, 0.5, 11, 0).astype(np.float64)
    b = _C.dropout_mask(200_000, 0.5, 11, 1).astype(np.float64)
    c = _C.dropout_mask(200_000, 0.5, 12, 0).astype(np.float64)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.01
    # Neighbouring positions are independent too.
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradient_use_the_same_mask(dtype, simd, rng):
    x = rng.standard_normal((3, 5, 17)).astype(dtype)
    p = 0.3
    t = cnnfast.tensor(x, requires_grad=True)
    y = F.dropout(t, p, seed=(5, 1))
    gy = rng.standard_normal(x.shape).astype(dtype)
    y.backward(gy)
    mask = _C.dropout_mask(x.size, p, 5, 1).reshape(x.shape).astype(bool)
    s = scale_of(p, dtype)
    np.testing.assert_array_equal(y.detach().numpy(), np.where(mask, x * s, x * dtype(0)))
    np.testing.assert_array_equal(t.grad.numpy(), np.where(mask, gy * s, gy * dtype(0)))
    # Same as torch given the same mask: input * (mask / (1 - p)) in the input's dtype.
    noise = torch.tensor(mask.astype(dtype)).div_(1 - p)
    np.testing.assert_array_equal(y.detach().numpy(), (torch.tensor(x) * noise).numpy())


def test_gradient_finite_differences(rng):
    x = rng.standard_normal((2, 3, 5))
    gy = rng.standard_normal(x.shape)
    for fn, extra in [(F.dropout, ()), (F.dropout1d, ()), (F.dropout2d, (1,)), (F.dropout3d, (1, 1))]:
        xx = x.reshape(x.shape + extra)
        g = gy.reshape(gy.shape + extra)

        def f(a):
            return fn(cnnfast.tensor(a), 0.4, seed=(3, 3)).numpy()

        t = cnnfast.tensor(xx.copy(), requires_grad=True)
        fn(t, 0.4, seed=(3, 3)).backward(g)
        (num,) = numerical_grad(f, [xx.copy()], g)
        assert_nontrivial(num)
        assert_close(t.grad.numpy(), num, rtol=1e-6, atol=1e-8, what=f"{fn.__name__} grad vs finite differences")


@pytest.mark.parametrize("fn,shape,planes", [
    ("dropout1d", (4, 6, 33), (4, 6)),
    ("dropout1d", (6, 33), (1, 6)),  # unbatched (C, L)
    ("dropout2d", (4, 6, 7, 9), (4, 6)),
    ("dropout3d", (2, 5, 3, 4, 5), (2, 5)),
    ("dropout3d", (5, 3, 4, 5), (1, 5)),  # unbatched (C, D, H, W)
])


def test_channel_dropout_zeroes_whole_planes(fn, shape, planes, threads, rng):
    x = rng.standard_normal(shape).astype(np.float32) + 10.0
    p = 0.5
    t = cnnfast.tensor(x, requires_grad=True)
    y = getattr(F, fn)(t, p, seed=(77, 0))
    gy = rng.standard_normal(shape).astype(np.float32)
    y.backward(gy)
    n = int(np.prod(planes))
    flat_y = y.detach().numpy().reshape(n, -1)
    flat_x = x.reshape(n, -1)
    flat_g = t.grad.numpy().reshape(n, -1)
    keep = _C.dropout_mask(n, p, 77, 0).astype(bool)
    assert 0 < keep.sum() < n
    s = scale_of(p)
    np.testing.assert_array_equal(flat_y[keep], flat_x[keep] * s)
    assert not flat_y[~keep].any()
    np.testing.assert_array_equal(flat_g[keep], gy.reshape(n, -1)[keep] * s)
    assert not flat_g[~keep].any()


def test_dropout2d_on_3d_input_is_channel_dropout_over_n_c_with_a_warning(rng):
    x = rng.standard_normal((3, 4, 10)).astype(np.float32) + 10.0
    with pytest.warns(UserWarning, match="dropout2d"):
        y = F.dropout2d(cnnfast.tensor(x), 0.5, seed=(1, 1)).numpy()
    keep = _C.dropout_mask(12, 0.5, 1, 1).astype(bool)
    zero_planes = ~y.reshape(12, -1).any(axis=1)
    np.testing.assert_array_equal(zero_planes, ~keep)


def test_default_key_follows_manual_seed(rng):
    x = cnnfast.tensor(rng.standard_normal((8, 1000)).astype(np.float32))
    cnnfast.manual_seed(42)
    a, b = F.dropout(x).numpy(), F.dropout(x).numpy()
    cnnfast.manual_seed(42)
    c = F.dropout(x).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_edge_cases_match_torch(rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    t = cnnfast.tensor(x)
    # p = 0 and training=False return the input itself, as torch.
    assert F.dropout(t, 0.0) is t
    assert F.dropout(t, 0.7, training=False) is t
    # p = 1 multiplies by zero: NaN and inf become NaN, everything else 0, as torch.
    y = F.dropout(t, 1.0).numpy()
    ty = TF.dropout(torch.tensor(x), 1.0).numpy()
    assert_close(y, ty, what="p=1")
    g = cnnfast.tensor(x, requires_grad=True)
    F.dropout(g, 1.0).backward(np.ones_like(x))
    assert not g.grad.numpy().any()
    # A dropped NaN stays NaN (input * 0), as torch.
    nans = np.full(1000, np.nan, np.float32)
    assert np.isnan(F.dropout(cnnfast.tensor(nans), 0.5, seed=1).numpy()).all()


def test_inplace_writes_into_the_input_when_no_grad_is_needed(rng):
    x = rng.standard_normal(1000).astype(np.float32) + 5
    t = cnnfast.tensor(x.copy())
    out = F.dropout(t, 0.5, inplace=True, seed=(8, 0))
    assert out is t
    np.testing.assert_array_equal(t.numpy(), _C.dropout_forward(x, 0.5, 8, 0))


def test_bad_input():
    t = cnnfast.tensor(np.ones((2, 3), np.float32))
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
            F.dropout(t, p)
        with pytest.raises(ValueError, match=r"p: expected a dropout probability in \[0, 1\]"):
            _C.dropout_forward(t.numpy(), p, 0, 0)
    with pytest.raises(ValueError, match="dropout1d expects a 2-D"):
        F.dropout1d(cnnfast.tensor(np.ones((2, 3, 4, 5), np.float32)))
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.dropout_forward(np.ones(4, np.int64), 0.5, 0, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.dropout_forward(np.ones((4, 4), np.float32)[:, ::2], 0.5, 0, 0)
    with pytest.raises(ValueError, match="non-empty"):
        _C.dropout_forward(np.ones((0, 4), np.float32), 0.5, 0, 0)
    with pytest.raises(ValueError, match="expected 2 to 32 dimensions"):
        _C.feature_dropout_forward(np.ones(4, np.float32), 0.5, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        F.dropout(t, 0.5, seed=-1)
    with pytest.raises(ValueError, match="out: expected a writeable"):
        ro = np.ones(4, np.float32)
        ro.flags.writeable = False
        _C.dropout_forward(np.ones(4, np.float32), 0.5, 0, 0, out=ro)
