"""CUDA normalisation layers (BatchNorm with running statistics, InstanceNorm,
GroupNorm, LayerNorm, LRN) against the CPU kernels on odd shapes, both dtypes,
affine and not; a large mean next to a small spread; bad input. Marked gpu."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

pytestmark = pytest.mark.gpu

cu = _C.cuda


def dev(a):
    return cnnfast.cuda.to_device(np.ascontiguousarray(a))


def tols(dtype):
    return (2e-5, 2e-5) if dtype == np.float32 else (1e-11, 1e-11)


def opt(a):
    return None if a is None else dev(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (1, 3, 17), (2, 3, 5, 7), (3, 2, 3, 1, 5), (2, 3, 37, 41)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_cpu(shape, affine, dtype, rng):
    rtol, atol = tols(dtype)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    rm, rv = rng.standard_normal(C).astype(dtype), rng.random(C).astype(dtype) + 0.5
    rm_d, rv_d = dev(rm), dev(rv)
    for training in (True, False):
        y, sm, sr = _C.batch_norm_forward(x, w, b, rm, rv, training, 0.1, 1e-5)
        yg, smg, srg = cu.batch_norm_forward(dev(x), opt(w), opt(b), rm_d, rv_d, training, 0.1, 1e-5)
        assert_close(yg.numpy(), y, rtol=rtol, atol=atol)
        assert_close(smg.numpy(), sm, rtol=rtol, atol=atol)
        assert_close(srg.numpy(), sr, rtol=rtol, atol=atol)
        assert_close(rm_d.numpy(), rm, rtol=rtol, atol=atol, what="running_mean")
        assert_close(rv_d.numpy(), rv, rtol=rtol, atol=atol, what="running_var")
        gy = rng.standard_normal(shape).astype(dtype)
        ref = _C.batch_norm_backward(gy, x, w, sm, sr, training)
        got = cu.batch_norm_backward(dev(gy), dev(x), opt(w), smg, srg, training)
        for g, r in zip(got, ref):
            assert_close(g.numpy(), r, rtol=rtol * 10, atol=atol * 10)


def test_batch_norm_large_mean_small_spread(rng):
    x = (1e4 + rng.standard_normal((16, 3, 33)) * 1e-2).astype(np.float32)
    y, _, _ = _C.batch_norm_forward(x, None, None, None, None, True)
    yg, _, _ = cu.batch_norm_forward(dev(x), None, None, None, None, True)
    assert_close(yg.numpy(), y, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,G", [((2, 6, 7), 3), ((1, 5, 3, 3), 5), ((3, 4, 2, 5), 1), ((2, 6), 2),
                                     ((2, 6, 33, 35), 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_cpu(shape, G, affine, dtype, rng):
    rtol, atol = tols(dtype)
    C = shape[1]
    x = (rng.standard_normal(shape) - 1).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    y, m, r = _C.group_norm_forward(x, G, w, b, 1e-5)
    yg, mg, rg = cu.group_norm_forward(dev(x), G, opt(w), opt(b), 1e-5)
    for a, e in ((yg, y), (mg, m), (rg, r)):
        assert_close(a.numpy(), e, rtol=rtol, atol=atol)
    gy = rng.standard_normal(shape).astype(dtype)
    ref = _C.group_norm_backward(gy, x, G, w, m, r)
    got = cu.group_norm_backward(dev(gy), dev(x), G, opt(w), mg, rg)
    for a, e in zip(got, ref):
        assert_close(a.numpy(), e, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_instance_norm_matches_cpu(dtype, rng):
    rtol, atol = tols(dtype)
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    rm_d, rv_d = dev(rm), dev(rv)
    y, m, r = _C.instance_norm_forward(x, w, b, rm, rv, 0.1, 1e-5)
    yg, mg, rg = cu.instance_norm_forward(dev(x), dev(w), dev(b), rm_d, rv_d, 0.1, 1e-5)
    assert_close(yg.numpy(), y, rtol=rtol, atol=atol)
    assert_close(rm_d.numpy(), rm, rtol=rtol, atol=atol)
    assert_close(rv_d.numpy(), rv, rtol=rtol, atol=atol)
    gy = rng.standard_normal(x.shape).astype(dtype)
    for a, e in zip(cu.instance_norm_backward(dev(gy), dev(x), dev(w), mg, rg),
                    _C.instance_norm_backward(gy, x, w, m, r)):
        assert_close(a.numpy(), e, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,nd", [((7, 13), 1), ((2, 3, 5), 2), ((1, 1000), 1), ((3, 2, 2, 3), 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_cpu(shape, nd, affine, dtype, rng):
    rtol, atol = tols(dtype)
    L = int(np.prod(shape[-nd:]))
    x = (rng.standard_normal(shape) + 2).astype(dtype)
    w = rng.standard_normal(L).astype(dtype) if affine else None
    b = rng.standard_normal(L).astype(dtype) if affine else None
    y, m, r = _C.layer_norm_forward(x, nd, w, b, 1e-5)
    yg, mg, rg = cu.layer_norm_forward(dev(x), nd, opt(w), opt(b), 1e-5)
    for a, e in ((yg, y), (mg, m), (rg, r)):
        assert_close(a.numpy(), e, rtol=rtol, atol=atol)
    gy = rng.standard_normal(shape).astype(dtype)
    ref = _C.layer_norm_backward(gy, x, nd, w, m, r)
    got = cu.layer_norm_backward(dev(gy), dev(x), nd, opt(w), mg, rg)
    for a, e in zip(got, ref):
        assert_close(a.numpy(), e, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,size", [((2, 7, 5), 3), ((1, 5, 3, 4), 4), ((2, 3, 2, 2, 3), 1), ((1, 4, 6), 9)])
def test_lrn_matches_cpu(shape, size, dtype, rng):
    rtol, atol = tols(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y, d = _C.local_response_norm_forward(x, size, 1e-2, 0.75, 1.0)
    yg, dg = cu.local_response_norm_forward(dev(x), size, 1e-2, 0.75, 1.0)
    assert_close(yg.numpy(), y, rtol=rtol, atol=atol)
    assert_close(dg.numpy(), d, rtol=rtol, atol=atol)
    gy = rng.standard_normal(shape).astype(dtype)
    assert_close(cu.local_response_norm_backward(dev(gy), dev(x), yg, dg, size, 1e-2, 0.75).numpy(),
                 _C.local_response_norm_backward(gy, x, y, d, size, 1e-2, 0.75), rtol=rtol, atol=atol)


def test_norm_bad_input():
    x = dev(np.ones((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="running_mean"):
        cu.batch_norm_forward(x, None, None, None, None, False)
    with pytest.raises(ValueError, match="weight: expected shape"):
        cu.batch_norm_forward(x, dev(np.ones(3, np.float32)), None, None, None, True)
    with pytest.raises(TypeError, match="bias"):
        cu.batch_norm_forward(x, None, dev(np.ones(4)), None, None, True)
    with pytest.raises(ValueError, match="num_groups"):
        cu.group_norm_forward(x, 3)
    with pytest.raises(ValueError, match="normalized_ndim"):
        cu.layer_norm_forward(x, 4)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        cu.batch_norm_forward(dev(np.ones((1, 4), np.float32)), None, None, None, None, True)
    with pytest.raises(ValueError, match="size"):
        cu.local_response_norm_forward(x, 0)
