"""CUDA pooling (max with indices, average, adaptive, unpooling) and dropout against the
CPU kernels: same values and indices on odd shapes (stride 3, dilation 2, ceil_mode,
asymmetric sizes, 1-D/2-D/3-D, both dtypes); the dropout mask equals the CPU mask bit for
bit for the same (seed, offset); bad input. Marked gpu: skipped without a device."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

pytestmark = pytest.mark.gpu

cu = _C.cuda


def dev(a):
    return cnnfast.cuda.to_device(np.ascontiguousarray(a))


MAX_CASES = [
    (1, (1, 1, 13), [3], [3], [1], [2], True),
    (2, (2, 3, 11, 13), [3, 2], [3, 1], [1, 1], [2, 1], False),
    (2, (1, 2, 7, 9), [2, 3], [2, 2], [1, 0], [1, 2], True),
    (3, (1, 2, 5, 7, 6), [2, 3, 2], [2, 2, 1], [1, 1, 0], [1, 1, 2], False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D,shape,k,s,p,d,ceil", MAX_CASES)
def test_max_pool_matches_cpu(D, shape, k, s, p, d, ceil, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::7] = x.flat[1]  # ties: the first maximum in scan order wins on both
    y, idx = getattr(_C, f"max_pool{D}d_forward")(x, k, s, p, d, ceil)
    yg, ig = getattr(cu, f"max_pool{D}d_forward")(dev(x), k, s, p, d, ceil)
    assert np.array_equal(yg.numpy(), y) and np.array_equal(ig.numpy(), idx)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = getattr(_C, f"max_pool{D}d_backward")(gy, idx, list(shape))
    gxg = getattr(cu, f"max_pool{D}d_backward")(dev(gy), ig, list(shape))
    assert_close(gxg.numpy(), gx, rtol=1e-6, atol=1e-6)
    y2, none = getattr(cu, f"max_pool{D}d_forward")(dev(x), k, s, p, d, ceil, return_indices=False)
    assert none is None and np.array_equal(y2.numpy(), y)


def test_max_pool_nan_wins(rng):
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    y, idx = _C.max_pool2d_forward(x, [2, 2])
    yg, ig = cu.max_pool2d_forward(dev(x), [2, 2])
    assert_close(yg.numpy(), y)
    assert np.array_equal(ig.numpy(), idx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D,shape,k,s,p,ceil,cip,div", [
    (1, (2, 3, 17), [4], [3], [2], True, False, None),
    (2, (1, 2, 11, 7), [3, 2], [2, 3], [1, 1], False, True, None),
    (2, (2, 1, 9, 8), [3, 3], [3, 2], [1, 0], True, False, 5),
    (3, (1, 2, 5, 6, 7), [2, 3, 3], [1, 2, 2], [1, 1, 0], False, True, None),
])
def test_avg_pool_matches_cpu(D, shape, k, s, p, ceil, cip, div, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y = getattr(_C, f"avg_pool{D}d_forward")(x, k, s, p, ceil, cip, div)
    yg = getattr(cu, f"avg_pool{D}d_forward")(dev(x), k, s, p, ceil, cip, div)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert_close(yg.numpy(), y, rtol=tol, atol=tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = getattr(_C, f"avg_pool{D}d_backward")(gy, list(shape), k, s, p, ceil, cip, div)
    gxg = getattr(cu, f"avg_pool{D}d_backward")(dev(gy), list(shape), k, s, p, ceil, cip, div)
    assert_close(gxg.numpy(), gx, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D,shape,out", [(1, (2, 3, 13), [5]), (2, (1, 2, 11, 7), [3, 4]), (2, (2, 3, 5, 5), [7, 1]),
                                         (3, (1, 2, 5, 7, 6), [2, 3, 4])])
def test_adaptive_pools_match_cpu(D, shape, out, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    y = getattr(_C, f"adaptive_avg_pool{D}d_forward")(x, out)
    assert_close(getattr(cu, f"adaptive_avg_pool{D}d_forward")(dev(x), out).numpy(), y, rtol=tol, atol=tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(getattr(cu, f"adaptive_avg_pool{D}d_backward")(dev(gy), list(shape)).numpy(),
                 getattr(_C, f"adaptive_avg_pool{D}d_backward")(gy, list(shape)), rtol=tol, atol=tol)
    ym, im = getattr(_C, f"adaptive_max_pool{D}d_forward")(x, out)
    ymg, img = getattr(cu, f"adaptive_max_pool{D}d_forward")(dev(x), out)
    assert np.array_equal(ymg.numpy(), ym) and np.array_equal(img.numpy(), im)
    assert_close(getattr(cu, f"adaptive_max_pool{D}d_backward")(dev(gy), img, list(shape)).numpy(),
                 getattr(_C, f"adaptive_max_pool{D}d_backward")(gy, im, list(shape)), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_unpool_matches_cpu(dtype, rng):
    x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)
    y, idx = _C.max_pool2d_forward(x, [3, 2], [3, 2])  # disjoint windows: no duplicate indices
    up = _C.max_unpool2d_forward(y, idx, [9, 7])
    upg = cu.max_unpool2d_forward(dev(y), dev(idx), [9, 7])
    assert np.array_equal(upg.numpy(), up)
    g = rng.standard_normal(up.shape).astype(dtype)
    assert np.array_equal(cu.max_unpool2d_backward(dev(g), dev(idx)).numpy(), _C.max_unpool2d_backward(g, idx))


def test_pool_bad_input():
    x = dev(np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="padding"):
        cu.max_pool2d_forward(x, [2, 2], [2, 2], [2, 2])
    with pytest.raises(ValueError, match="kernel_size"):
        cu.avg_pool2d_forward(x, [0, 2])
    with pytest.raises(ValueError, match="input"):
        cu.max_pool2d_forward(dev(np.ones((1, 4, 4), np.float32)), [2, 2])
    with pytest.raises(TypeError, match="indices"):
        cu.max_pool2d_backward(dev(np.ones((1, 1, 2, 2), np.float32)), dev(np.zeros((1, 1, 2, 2), np.int32)),
                               [1, 1, 4, 4])
    bad = np.full((1, 1, 2, 2), 99, np.int64)
    with pytest.raises(ValueError, match="indices: expected values in"):
        cu.max_pool2d_backward(dev(np.ones((1, 1, 2, 2), np.float32)), dev(bad), [1, 1, 4, 4])
    with pytest.raises(ValueError, match="indices: expected values in"):
        cu.max_unpool2d_forward(dev(np.ones((1, 1, 2, 2), np.float32)), dev(bad), [4, 4])


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_equals_cpu_bit_for_bit(p, dtype, rng):
    x = rng.standard_normal((3, 7, 1001)).astype(dtype)
    for seed, offset in [(0, 0), (1234, 77), (2**63 + 5, 2**40 + 3)]:
        y = _C.dropout_forward(x, p, seed, offset)
        yg = cu.dropout_forward(dev(x), p, seed, offset)
        assert np.array_equal(yg.numpy(), y)
        assert np.array_equal(cu.dropout_backward(dev(x), p, seed, offset).numpy(), _C.dropout_backward(x, p, seed, offset))
        assert np.array_equal(cu.feature_dropout_forward(dev(x), p, seed, offset).numpy(),
                              _C.feature_dropout_forward(x, p, seed, offset))


def test_dropout_mask_equals_cpu():
    n = 1 << 20
    m_cpu = _C.dropout_mask(n, 0.3, 42, 9)
    m_gpu = cu.dropout_mask(n, 0.3, 42, 9).numpy()
    assert m_gpu.dtype == np.uint8 and np.array_equal(m_gpu, m_cpu)


def test_dropout_in_place_and_bad_input():
    x = dev(np.ones(1000, np.float32))
    y = cu.dropout_forward(x, 0.5, 1, 2, out=x)
    assert y.data_ptr == x.data_ptr
    assert np.array_equal(x.numpy(), _C.dropout_forward(np.ones(1000, np.float32), 0.5, 1, 2))
    with pytest.raises(ValueError, match="p: expected"):
        cu.dropout_forward(x, 1.5, 0, 0)
    with pytest.raises(ValueError, match="input"):
        cu.feature_dropout_forward(x, 0.5, 0, 0)
    with pytest.raises(TypeError, match="input: expected a CUDA array"):
        cu.dropout_forward(np.ones(3, np.float32), 0.5, 0, 0)
