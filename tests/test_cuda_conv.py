"""CUDA convolution, transposed convolution, linear and GEMM against the CPU kernels
(cnnfast._C) on odd shapes: batch 1, prime sizes, stride 3, dilation 2, groups 3,
depthwise, asymmetric padding, 1-D/2-D/3-D, float32 and float64; the TF32 path within
a looser tolerance; bad input. Marked gpu: skipped without a device."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C

pytestmark = pytest.mark.gpu

cu = _C.cuda


def dev(a):
    return cnnfast.cuda.to_device(np.ascontiguousarray(a))


def close(actual, expected, tol):
    """max |actual - expected| <= tol * (1 + max |expected|): sums in a different order."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert err <= tol * (1.0 + np.max(np.abs(expected))), f"max error {err}"


TOL = {np.float32: 2e-5, np.float64: 1e-12}

# (x shape, weight shape, stride, padding pairs, dilation, groups)
CASES = [
    ((1, 3, 7, 11), (5, 3, 3, 3), [1, 1], [[1, 1], [1, 1]], [1, 1], 1),
    ((2, 6, 13, 17), (9, 2, 3, 5), [3, 2], [[0, 2], [1, 0]], [2, 1], 3),
    ((3, 5, 11, 7), (5, 1, 3, 3), [1, 3], [[1, 1], [2, 1]], [1, 2], 5),  # depthwise
    ((2, 4, 9, 9), (8, 1, 3, 3), [2, 2], [[1, 1], [1, 1]], [1, 1], 4),  # depthwise, multiplier 2
    ((2, 7, 23), (11, 7, 4), [3], [[2, 1]], [2], 1),  # 1-D
    ((2, 3, 17), (6, 1, 4), [3], [[2, 0]], [2], 3),  # 1-D depthwise, multiplier 2, stride 3, dilation 2
    ((1, 2, 4, 5, 6), (2, 1, 2, 3, 2), [1, 2, 1], [[1, 0], [0, 1], [1, 1]], [1, 1, 2], 2),  # 3-D depthwise
    ((1, 3, 5, 6, 7), (4, 3, 2, 3, 3), [1, 2, 1], [[1, 0], [0, 1], [1, 1]], [2, 1, 1], 1),  # 3-D
    ((2, 70, 9, 10), (129, 70, 1, 1), [1, 1], [[0, 0], [0, 0]], [1, 1], 1),  # 1x1, several tiles in M and K
    ((1, 1, 1, 1), (1, 1, 1, 1), [1, 1], [[0, 0], [0, 0]], [1, 1], 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_conv_forward_backward_match_cpu(case, dtype, rng):
    xs, ws, stride, pad, dil, groups = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = _C.conv_forward(x, w, b, stride, pad, dil, groups)
    y_gpu = cu.conv_forward(dev(x), dev(w), dev(b), stride, pad, dil, groups, allow_tf32=False)
    close(y_gpu.numpy(), y, TOL[dtype])
    gy = rng.standard_normal(y.shape).astype(dtype)
    ref = _C.conv_backward(gy, x, w, stride, pad, dil, groups)
    got = cu.conv_backward(dev(gy), dev(x), dev(w), stride, pad, dil, groups, allow_tf32=False)
    for g, r, name in zip(got, ref, ("grad_x", "grad_weight", "grad_bias")):
        close(g.numpy(), r, TOL[dtype] * 4)


def test_conv_backward_need_flags(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    gx, gw, gb = cu.conv_backward(dev(gy), dev(x), dev(w), [1, 1], [[0, 0], [0, 0]], [1, 1], 1, need_input=False,
                                  need_bias=False)
    assert gx is None and gb is None
    close(gw.numpy(), _C.conv_backward(gy, x, w, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)[1], 1e-4)


def test_weight_gradient_split_k_large_reduction(rng):
    # N * out = 4 * 1024 positions for a 8 x 27 weight: the kernel splits K over many blocks.
    x = rng.standard_normal((4, 3, 34, 34)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 8, 32, 32)).astype(np.float32)
    ref = _C.conv_backward(gy, x, w, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)[1]
    got = cu.conv_backward(dev(gy), dev(x), dev(w), [1, 1], [[0, 0], [0, 0]], [1, 1], 1)[1]
    close(got.numpy(), ref, 1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,pad,opad,dil,groups", [
    ((2, 4, 5, 7), (4, 3, 3, 3), [2, 3], [[1, 1], [0, 2]], [1, 2], [1, 1], 1),
    ((1, 6, 4, 5), (6, 2, 3, 2), [1, 2], [[0, 0], [1, 1]], [0, 1], [2, 1], 3),
    ((3, 5, 9), (5, 2, 4), [3], [[1, 2]], [2], [1], 1),
    ((2, 4, 6, 5), (4, 1, 3, 3), [2, 2], [[1, 1], [1, 1]], [1, 0], [1, 1], 4),  # depthwise transposed
])
def test_conv_transpose_matches_cpu(xs, ws, stride, pad, opad, dil, groups, dtype, rng):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[1] * groups).astype(dtype)
    y = _C.conv_transpose_forward(x, w, b, stride, pad, opad, dil, groups)
    close(cu.conv_transpose_forward(dev(x), dev(w), dev(b), stride, pad, opad, dil, groups).numpy(), y, TOL[dtype])
    gy = rng.standard_normal(y.shape).astype(dtype)
    ref = _C.conv_transpose_backward(gy, x, w, stride, pad, opad, dil, groups)
    got = cu.conv_transpose_backward(dev(gy), dev(x), dev(w), stride, pad, opad, dil, groups)
    for g, r in zip(got, ref):
        close(g.numpy(), r, TOL[dtype] * 4)


def test_tf32_path_is_close_but_not_required_exact(rng):
    x = rng.standard_normal((2, 16, 15, 13)).astype(np.float32)
    w = rng.standard_normal((33, 16, 3, 3)).astype(np.float32)
    y = _C.conv_forward(x, w, None, [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    got = cu.conv_forward(dev(x), dev(w), None, [1, 1], [[1, 1], [1, 1]], [1, 1], 1, allow_tf32=True).numpy()
    close(got, y, 5e-3)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ref = _C.conv_backward(gy, x, w, [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    res = cu.conv_backward(dev(gy), dev(x), dev(w), [1, 1], [[1, 1], [1, 1]], [1, 1], 1, allow_tf32=True)
    for g, r in zip(res, ref):
        close(g.numpy(), r, 5e-3)


def test_global_tf32_switch(rng):
    x = rng.standard_normal((64, 300)).astype(np.float32)
    w = rng.standard_normal((70, 300)).astype(np.float32)
    exact = cu.linear_forward(dev(x), dev(w), None).numpy()
    try:
        cnnfast.cuda.set_allow_tf32(True)
        assert cnnfast.cuda.get_allow_tf32()
        tf32 = cu.linear_forward(dev(x), dev(w), None).numpy()
    finally:
        cnnfast.cuda.set_allow_tf32(False)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    close(exact, ref, 1e-5)
    close(tf32, ref, 5e-3)
    assert not np.array_equal(exact, tf32)  # the TF32 path really ran (10-bit mantissa products)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,inf,outf", [(1, 1, 1), (7, 13, 5), (130, 67, 129)])
def test_linear_matches_cpu(M, inf, outf, dtype, rng):
    x = rng.standard_normal((M, inf)).astype(dtype)
    w = rng.standard_normal((outf, inf)).astype(dtype)
    b = rng.standard_normal(outf).astype(dtype)
    close(cu.linear_forward(dev(x), dev(w), dev(b)).numpy(), _C.linear_forward(x, w, b), TOL[dtype])
    gy = rng.standard_normal((M, outf)).astype(dtype)
    for g, r in zip(cu.linear_backward(dev(gy), dev(x), dev(w)), _C.linear_backward(gy, x, w)):
        close(g.numpy(), r, TOL[dtype] * 4)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_transposes(ta, tb, rng):
    M, N, K = 67, 131, 29
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    close(cu.gemm(dev(a), dev(b), ta, tb).numpy(), ref, 1e-5)


def test_bad_input_names_the_argument(rng):
    x = dev(np.ones((1, 3, 5, 5), np.float32))
    w = dev(np.ones((2, 3, 3, 3), np.float32))
    with pytest.raises(TypeError, match="x: expected a CUDA array"):
        cu.conv_forward(np.ones((1, 3, 5, 5), np.float32), w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(TypeError, match="weight: expected typestr"):
        cu.conv_forward(x, dev(np.ones((2, 3, 3, 3))), None, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(ValueError, match="groups"):
        cu.conv_forward(x, w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)
    with pytest.raises(ValueError, match="stride"):
        cu.conv_forward(x, w, None, [0, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(ValueError, match="kernel size"):
        cu.conv_forward(x, dev(np.ones((2, 3, 7, 7), np.float32)), None, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(ValueError, match="bias"):
        cu.conv_forward(x, w, dev(np.ones(3, np.float32)), [1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(ValueError, match="grad_output"):
        cu.conv_backward(dev(np.ones((1, 2, 4, 4), np.float32)), x, w, [1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(ValueError, match="algo"):
        cu.conv_forward(x, w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 1, algo="winograd")
    with pytest.raises(ValueError, match="b: expected"):
        cu.gemm(dev(np.ones((3, 4), np.float32)), dev(np.ones((5, 2), np.float32)))
