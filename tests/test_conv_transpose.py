"""Transposed convolution (1-D/2-D/3-D) against PyTorch and float64 finite
differences: output_padding, stride, dilation, groups; GEMM and Winograd paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import assert_close, assert_nontrivial, numerical_grad

OURS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TORCH = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}

# (nd, N, C_in, C_out, input size, kernel, stride, padding, output_padding, groups, dilation)
CASES = {
    "4x4_stride2": (2, 2, 4, 6, (5, 7), (4, 4), 2, 1, 0, 1, 1),
    "groups3_outpad": (2, 1, 6, 3, (4, 5), (3, 2), (3, 2), (1, 0), (2, 1), 3, 1),
    "dilation2_groups2": (2, 2, 4, 4, (5, 4), (3, 3), 1, 1, 0, 2, 2),
    "outpad_below_dilation": (2, 1, 2, 2, (4, 4), (3, 3), 1, 0, (1, 1), 1, 2),
    "3x3_stride1_wide": (2, 2, 16, 20, (6, 9), (3, 3), 1, 1, 0, 1, 1),
    "3x3_stride1_pad0": (2, 1, 3, 2, (6, 5), (3, 3), 1, 0, 0, 1, 1),
    "depthwise": (2, 2, 5, 5, (7, 6), (3, 3), 2, 1, 1, 5, 1),
    "1d": (1, 2, 3, 5, (11,), (4,), 3, 2, 1, 1, 1),
    "1d_c1": (1, 1, 1, 1, (13,), (5,), 2, 0, 1, 1, 2),
    "3d": (3, 1, 2, 4, (3, 4, 3), (2, 3, 2), (2, 1, 2), (0, 1, 1), (1, 0, 0), 2, 1),
    # maps of >= 8 columns at a W stride: col2im folds into column phases (col2im_phased)
    "4x4_stride2_wide": (2, 2, 5, 3, (9, 11), (4, 4), 2, 1, 0, 1, 1),
    "5x5_stride3_dil2": (2, 1, 4, 6, (8, 10), (5, 5), 3, 2, (1, 2), 1, 2),
    "stride_w_only": (2, 3, 3, 2, (7, 13), (3, 4), (1, 2), (1, 0), (0, 1), 1, 1),
}


def make(case, rng, dtype=np.float32):
    nd, N, Ci, Co, size, k, *_ = case
    g = case[9]
    x = rng.standard_normal((N, Ci) + size).astype(dtype)
    w = (rng.standard_normal((Ci, Co // g) + k) / np.sqrt(Ci * np.prod(k))).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    return x, w, b


def torch_run(case, x, w, b, gy=None):
    nd, _, _, _, _, _, stride, padding, op, g, dil = case
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = TORCH[nd](tx, tw, tb, stride=stride, padding=padding, output_padding=op, groups=g, dilation=dil)
    if gy is None:
        return y.detach().numpy()
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def ours_run(case, x, w, b, gy, algo="auto"):
    nd, _, _, _, _, _, stride, padding, op, g, dil = case
    tx, tw, tb = (cnnfast.tensor(a, requires_grad=True) for a in (x, w, b))
    y = OURS[nd](tx, tw, tb, stride=stride, padding=padding, output_padding=op, groups=g, dilation=dil, algo=algo)
    y.backward(cnnfast.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("name", CASES)
def test_conv_transpose_matches_torch(name, simd, rng):
    case = CASES[name]
    x, w, b = make(case, rng)
    gy = rng.standard_normal(torch_run(case, x, w, b).shape).astype(np.float32)
    got = ours_run(case, x, w, b, gy)
    ref = torch_run(case, x, w, b, gy)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")


@pytest.mark.parametrize("name", ["3x3_stride1_wide", "3x3_stride1_pad0"])
@pytest.mark.parametrize("algo", ["gemm", "winograd"])
def test_conv_transpose_forced_algorithms(name, algo, simd, rng):
    case = CASES[name]
    x, w, b = make(case, rng)
    gy = rng.standard_normal(torch_run(case, x, w, b).shape).astype(np.float32)
    got = ours_run(case, x, w, b, gy, algo=algo)
    ref = torch_run(case, *(a.astype(np.float64) for a in (x, w, b)), gy.astype(np.float64))
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_close(a, r, rtol=1e-3, atol=1e-3 * np.abs(r).max(), what=f"{name} {algo} {what}")


@pytest.mark.parametrize("name", ["groups3_outpad", "1d", "3d", "outpad_below_dilation"])
def test_conv_transpose_float64_finite_differences(name, rng):
    case = CASES[name]
    nd, N, Ci, Co, size, k, stride, padding, op, g, dil = case
    tup = lambda v: list((v,) * nd if isinstance(v, int) else v)
    pads = [[p, p] for p in tup(padding)]
    x, w, b = make(case, rng, np.float64)
    if N * Ci * np.prod(size) > 60:  # keep finite differences tiny
        x = x[:1]
    f = lambda x_, w_, b_: _C.conv_transpose_forward(x_, w_, b_, tup(stride), pads, tup(op), tup(dil), g)
    gy = rng.standard_normal(f(x, w, b).shape)
    gx, gw, gb = _C.conv_transpose_backward(gy, x, w, tup(stride), pads, tup(op), tup(dil), g)
    nx, nw, nb = numerical_grad(f, [x, w, b], gy)
    for what, a, r in (("grad_x", gx, nx), ("grad_w", gw, nw), ("grad_b", gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-6, atol=1e-7, what=what)


def test_asymmetric_padding_pairs(rng):
    # Explicit (start, end) pairs: equal to symmetric padding, then cropping the output.
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    y = F.conv_transpose2d(cnnfast.tensor(x), cnnfast.tensor(w), stride=2, padding=((1, 0), (0, 2)))
    full = TF.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2).numpy()
    assert_close(y.numpy(), full[:, :, 1:, :-2], rtol=1e-5, atol=1e-5)


def test_conv_transpose_bad_input():
    x = cnnfast.tensor(np.zeros((1, 4, 5, 5), np.float32))
    w = cnnfast.tensor(np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="output_padding: expected values smaller than stride or dilation"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"weight: expected shape\[0\] == x channels"):
        F.conv_transpose2d(x, cnnfast.tensor(np.zeros((3, 2, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="divisible by groups"):
        F.conv_transpose2d(x, w, groups=3)
    with pytest.raises(ValueError, match="transposed output size"):
        F.conv_transpose2d(x, w, padding=5)
    with pytest.raises(ValueError, match="padding: transposed convolutions take ints"):
        F.conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match="algo: 'winograd' needs"):
        F.conv_transpose2d(x, w, stride=2, algo="winograd")
    with pytest.raises(ValueError, match="expected input of 3"):
        F.conv_transpose2d(cnnfast.tensor(np.zeros((5, 5), np.float32)), w)
    with pytest.raises(TypeError, match="weight: expected dtype float64"):
        _C.conv_transpose_forward(np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3), np.float32), None, [1, 1],
                                  [[0, 0], [0, 0]], [0, 0], [1, 1], 1)
