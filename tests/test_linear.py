"""Fully connected layer (linear) on the GEMM, against PyTorch and float64 finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import assert_close, assert_nontrivial, numerical_grad


@pytest.mark.parametrize("lead,fin,fout", [((1,), 7, 5), ((3, 4), 17, 13), ((), 19, 3), ((33,), 130, 70),
                                           ((2, 1, 3), 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(lead, fin, fout, bias, simd, rng):
    x = rng.standard_normal(lead + (fin,)).astype(np.float32)
    w = rng.standard_normal((fout, fin)).astype(np.float32)
    b = rng.standard_normal(fout).astype(np.float32)
    gy = rng.standard_normal(lead + (fout,)).astype(np.float32)
    tx, tw, tb = (cnnfast.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.linear(tx, tw, tb if bias else None)
    y.backward(cnnfast.tensor(gy))
    X, W, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    Y = TF.linear(X, W, B if bias else None)
    Y.backward(torch.tensor(gy))
    assert y.shape == tuple(Y.shape)
    assert_close(y.detach().numpy(), Y.detach().numpy(), rtol=1e-4, atol=1e-4, what="y")
    assert_close(tx.grad.numpy(), X.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad_x")
    assert_close(tw.grad.numpy(), W.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad_w")
    if bias:
        assert_close(tb.grad.numpy(), B.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad_b")
    else:
        assert tb.grad is None


def test_linear_float64_finite_differences(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    gy = rng.standard_normal((3, 4))
    gx, gw, gb = _C.linear_backward(gy, x, w)
    nx, nw, nb = numerical_grad(lambda x_, w_, b_: _C.linear_forward(x_, w_, b_), [x, w, b], gy)
    for a, r in ((gx, nx), (gw, nw), (gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-7, atol=1e-8)


def test_linear_bad_input():
    x = cnnfast.tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="input: expected last dimension 5"):
        F.linear(cnnfast.tensor(np.zeros((2, 4), np.float32)), cnnfast.tensor(np.zeros((3, 5), np.float32)))
    with pytest.raises(ValueError, match="weight: expected 2 dimensions"):
        F.linear(x, cnnfast.tensor(np.zeros((5,), np.float32)))
    with pytest.raises(TypeError, match="weight: expected dtype float32"):
        _C.linear_forward(np.zeros((2, 5), np.float32), np.zeros((3, 5)), None)
    with pytest.raises(ValueError, match="bias: expected shape"):
        _C.linear_forward(np.zeros((2, 5), np.float32), np.zeros((3, 5), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="x: expected a C-contiguous"):
        _C.linear_forward(np.zeros((5, 2), np.float32).T, np.zeros((3, 5), np.float32), None)
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        _C.linear_backward(np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32), np.zeros((3, 5), np.float32))


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("fin", [1, 15, 16, 17, 31, 32, 33, 63, 100])
@pytest.mark.parametrize("fout", [1, 2, 7, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_few_rows_matrix_vector_path(rows, fin, fout, threads, simd, rng):
    # Up to 4 rows of x take the matrix-vector kernels (prepack_gemv_avx2/avx512.cpp):
    # rows of W in pairs (AVX-512) or fours (AVX2), 32- or 16-wide steps, masked tails,
    # an odd last row, and the row blocks the threads split W into.
    x = rng.standard_normal((rows, fin)).astype(np.float32)
    w = rng.standard_normal((fout, fin)).astype(np.float32)
    b = rng.standard_normal(fout).astype(np.float32)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        got = _C.linear_forward(x, w, b, activation="relu")
    finally:
        cnnfast.set_num_threads(old)
    ref = np.maximum(x.astype(np.float64) @ w.astype(np.float64).T + b, 0)
    assert_close(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(ref).max()), what=f"{simd} gemv")
