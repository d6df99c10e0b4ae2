"""Convolution (1-D/2-D/3-D) against PyTorch and float64 finite differences, on
the GEMM and Winograd paths and on the scalar and AVX2 SIMD paths, plus padding
resolution and bad input."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import assert_close, assert_nontrivial, numerical_grad

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TCONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}

# (nd, N, C, K, input size, kernel, stride, padding, dilation, groups)
CASES = {
    "batch1_prime": (2, 1, 3, 5, (13, 11), (3, 3), 1, 1, 1, 1),
    "stride3_groups3": (2, 2, 6, 9, (17, 13), (3, 3), 3, 1, 1, 3),
    "depthwise_dil2": (2, 2, 4, 4, (11, 13), (3, 3), 1, 2, 2, 4),
    "depthwise_mult2_s2": (2, 2, 3, 6, (9, 10), (3, 3), 2, ((1, 0), (1, 2)), 1, 3),
    "3d_depthwise": (3, 1, 3, 3, (4, 5, 6), (2, 3, 3), (1, 1, 2), 1, (1, 2, 1), 3),
    "c1_k1_asym": (2, 3, 1, 1, (7, 9), (2, 3), (2, 1), ((1, 0), (2, 1)), 1, 1),
    "pointwise": (2, 2, 5, 7, (13, 13), (1, 1), 1, 0, 1, 1),
    "pointwise_stride2": (2, 2, 5, 7, (13, 12), (1, 1), 2, 0, 1, 1),
    "alexnet_like": (2, 2, 3, 4, (23, 23), (11, 11), 4, 0, 1, 1),
    "wide_3x3": (2, 2, 17, 20, (9, 10), (3, 3), 1, "same", 1, 1),
    "same_stride2": (2, 2, 6, 8, (17, 15), (3, 3), 2, "same", 1, 1),
    "same_stride3_groups": (2, 1, 4, 6, (16, 19), (5, 4), 3, "same", 1, 2),
    "full": (2, 2, 3, 5, (7, 8), (3, 3), 1, "full", 1, 1),
    "kernel_eq_padded": (2, 1, 2, 3, (3, 4), (5, 4), 1, ((1, 1), (0, 0)), 1, 1),
    "1d_dil": (1, 2, 3, 4, (29,), (5,), 2, 2, 2, 1),
    "1d_same_s3_dw": (1, 1, 6, 6, (17,), (3,), 3, "same", 1, 6),
    "3d": (3, 2, 3, 4, (5, 6, 7), (3, 2, 3), (1, 2, 1), 1, 1, 1),
    "3d_asym_groups": (3, 1, 4, 2, (6, 5, 7), (2, 3, 3), 2, ((0, 1), (1, 0), (1, 1)), (2, 1, 1), 2),
}


def explicit_pairs(case):
    nd, _, _, _, size, k, stride, padding, dilation, _ = case
    return F.resolve_padding(padding, size, k, stride, dilation)


def make(case, rng, dtype=np.float32):
    nd, N, C, K, size, k, _, _, _, g = case
    x = rng.standard_normal((N, C) + size).astype(dtype)
    w = (rng.standard_normal((K, C // g) + k) / math.sqrt(C // g * np.prod(k))).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def ours(case, x, w, b, gy, algo="auto"):
    nd, _, _, _, _, _, stride, padding, dilation, g = case
    tx, tw, tb = (cnnfast.tensor(a, requires_grad=True) for a in (x, w, b))
    y = CONV[nd](tx, tw, tb, stride=stride, padding=padding, dilation=dilation, groups=g, algo=algo)
    y.backward(cnnfast.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def reference(case, x, w, b, gy):
    nd, _, _, _, _, _, stride, _, dilation, g = case
    pads = explicit_pairs(case)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    flat = [p for pair in reversed(pads) for p in pair]  # torch pads the last dim first
    y = TCONV[nd](TF.pad(tx, flat), tw, tb, stride=stride, dilation=dilation, groups=g)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def out_shape(case, x):
    nd, _, _, K, size, k, stride, _, dilation, _ = case
    st = (stride,) * nd if isinstance(stride, int) else stride
    dl = (dilation,) * nd if isinstance(dilation, int) else dilation
    pads = explicit_pairs(case)
    return (x.shape[0], K) + tuple((i + p0 + p1 - d * (f - 1) - 1) // s + 1
                                   for i, f, s, d, (p0, p1) in zip(size, k, st, dl, pads))


def winograd_ok(case):
    nd, _, _, _, _, k, stride, _, dilation, _ = case
    return nd == 2 and k == (3, 3) and stride == 1 and dilation == 1


def check_all_passes(case, rng, label):
    """Forward and the three gradients of one case against torch in float64."""
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy)
    ref = reference(case, x, w, b, gy)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{label} {what}")


@pytest.mark.parametrize("name", CASES)
def test_conv_matches_torch(name, simd, rng):
    check_all_passes(CASES[name], rng, name)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if winograd_ok(c)] + ["winograd_c32_k40", "winograd_pad0"])
def test_winograd_matches_float64(name, simd, rng):
    extra = {"winograd_c32_k40": (2, 3, 32, 40, (14, 19), (3, 3), 1, 1, 1, 1),
             "winograd_pad0": (2, 2, 16, 8, (9, 7), (3, 3), 1, ((0, 2), (1, 0)), 1, 2)}
    case = extra.get(name) or CASES[name]
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy, algo="winograd")
    ref = reference(case, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), gy.astype(np.float64))
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        # Within 1e-3 of float64, relative to the output's magnitude.
        assert_close(a, r, rtol=1e-3, atol=1e-3 * np.abs(r).max(), what=f"{name} {what}")


@pytest.mark.parametrize("case", [
    (2, 1, 16, 72, (9, 11), (3, 3), 1, 1, 1, 1),              # batch 1: one chunk of tiles
    (2, 3, 64, 72, (7, 5), (3, 3), 1, ((0, 2), (1, 1)), 1, 1),  # grad_x's 64 output channels split too
    (2, 2, 32, 144, (6, 9), (3, 3), 1, 1, 1, 2),              # groups: parts of each group's 72
    # Transformed weights past 512 KiB, 70 tiles: one chunk of every tile, its output
    # channels split between the threads, where five chunks would each stream the weights.
    (2, 2, 64, 72, (28, 19), (3, 3), 1, 1, 1, 1),
])
@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_winograd_output_channel_parts(case, nthreads, simd, rng):
    # Too few tile chunks for the threads: each chunk is cut into parts of the output
    # channels (rows of 8, the last one short), each part transforming the input itself.
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        got = ours(case, x, w, b, gy, algo="winograd")
    finally:
        cnnfast.set_num_threads(before)
    ref = reference(case, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), gy.astype(np.float64))
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-3, atol=1e-3 * np.abs(r).max(), what=f"{case} {what} at {nthreads} threads")


@pytest.mark.parametrize("name", ["depthwise_dil2", "depthwise_mult2_s2", "3d_depthwise", "1d_same_s3_dw"])
def test_depthwise_forced_gemm(name, simd, rng):
    # Auto takes the direct depthwise kernel; forcing GEMM must give the same answer.
    case = CASES[name]
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy, algo="gemm")
    ref = reference(case, x, w, b, gy)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} gemm {what}")


@pytest.mark.parametrize("algo", ["gemm", "winograd"])
def test_forced_algorithms_agree(algo, simd, rng):
    case = (2, 2, 24, 16, (12, 11), (3, 3), 1, 1, 1, 1)
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy, algo=algo)
    ref = reference(case, x, w, b, gy)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_close(a, r, rtol=1e-3, atol=1e-3, what=f"{algo} {what}")


def test_scalar_and_avx2_agree(rng):
    if not _C.cpu_supports_avx2():
        pytest.skip("CPU has no AVX2")
    case = (2, 3, 12, 20, (15, 13), (3, 3), 1, 1, 1, 1)
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    before = cnnfast.simd_level()
    results = {}
    try:
        for level in cnnfast.simd_levels():
            cnnfast.set_simd_level(level)
            for algo in ("gemm", "winograd"):
                results[level, algo] = ours(case, x, w, b, gy, algo=algo)
    finally:
        cnnfast.set_simd_level(before)
    for level in cnnfast.simd_levels()[1:]:
        for algo in ("gemm", "winograd"):
            for a, s in zip(results[level, algo], results["scalar", algo]):
                assert_close(a, s, rtol=1e-4, atol=1e-4, what=f"{level} {algo}")


@pytest.mark.parametrize("N", [1, 5])
def test_threaded_paths(N, rng):
    # N=1 splits the GEMM across threads, N=5 splits images (uneven ranges).
    # (The `threads` fixture is not used: resizing the pool back up can run a
    # stale job in core/parallel.cpp; reported to the lead.)
    case = (2, N, 8, 12, (19, 17), (3, 3), 2, 1, 1, 2)
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy)
    ref = reference(case, x, w, b, gy)
    for a, r in zip(got, ref):
        assert_close(a, r, rtol=1e-4, atol=1e-4)



@pytest.mark.parametrize("nthreads", [2, 3, 5])
def test_forward_column_chunks_dealt_in_ranges(nthreads, rng):
    # Many (image, column chunk) tasks, dealt to each thread as a contiguous range and
    # then stolen (conv_parallel.h, Dealing::Contiguous): every chunk exactly once, with
    # thread counts that do not divide the 3 images x several chunks.
    case = (2, 3, 33, 40, (41, 37), (5, 5), 1, ((2, 1), (0, 3)), 1, 1)  # im2col + GEMM, 23 chunks per image
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        got = ours(case, x, w, b, gy)
    finally:
        cnnfast.set_num_threads(before)
    for a, r in zip(got, reference(case, x, w, b, gy)):
        # float32 sums over 825-deep columns (and 3 images for grad_w) against float64
        assert_close(a, r, rtol=1e-3, atol=1e-4 * np.abs(r).max(), what=f"{nthreads} threads")

FD_CASES = {
    "2d_stride_groups_dil": (2, 2, 4, 2, (6, 5), (3, 2), (2, 1), ((1, 0), (0, 2)), (1, 2), 2),
    "1d": (1, 1, 2, 3, (7,), (3,), 2, 1, 2, 1),
    "3d": (3, 1, 2, 2, (3, 4, 3), (2, 2, 2), (1, 2, 1), 1, 1, 1),
    "winograd": (2, 1, 2, 3, (5, 6), (3, 3), 1, 1, 1, 1),
    "depthwise": (2, 1, 2, 4, (5, 6), (3, 2), (2, 1), ((0, 1), (1, 1)), (1, 2), 2),
    # >= 8 output columns at a W stride: grad_x folds through column phases (col2im_padded)
    "w_stride2_phases": (2, 1, 2, 3, (9, 21), (3, 3), (1, 2), 1, 1, 1),
    "w_stride3_dil2_phases": (2, 1, 2, 2, (8, 30), (2, 3), (1, 3), 1, (1, 2), 1),
}


@pytest.mark.parametrize("name", FD_CASES)
def test_conv_float64_finite_differences(name, rng):
    case = FD_CASES[name]
    nd, _, _, _, _, _, stride, _, dilation, g = case
    st = list((stride,) * nd if isinstance(stride, int) else stride)
    dl = list((dilation,) * nd if isinstance(dilation, int) else dilation)
    pads = [list(p) for p in explicit_pairs(case)]
    algo = {"winograd": "winograd", "depthwise": "auto"}.get(name, "gemm")
    x, w, b = make(case, rng, np.float64)
    gy = rng.standard_normal(out_shape(case, x))
    f = lambda x_, w_, b_: _C.conv_forward(x_, w_, b_, st, pads, dl, g, algo)
    gx, gw, gb = _C.conv_backward(gy, x, w, st, pads, dl, g, algo=algo)
    nx, nw, nb = numerical_grad(f, [x, w, b], gy)
    for what, a, r in (("grad_x", gx, nx), ("grad_w", gw, nw), ("grad_b", gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-6, atol=1e-7, what=what)


# ---- padding resolution ---------------------------------------------------------------

@pytest.mark.parametrize("I,F_,S,D", [(7, 3, 1, 1), (8, 3, 2, 1), (9, 3, 2, 1), (10, 4, 3, 1),
                                      (17, 5, 3, 2), (5, 7, 2, 1), (1, 3, 3, 1), (224, 7, 2, 1)])
def test_same_padding_formula(I, F_, S, D):
    (p0, p1), = F.resolve_padding("same", (I,), (F_,), S, D)
    total = max((math.ceil(I / S) - 1) * S + D * (F_ - 1) + 1 - I, 0)
    assert (p0, p1) == (total // 2, total - total // 2)
    assert F.conv_output_size(I, F_, S, "same", D) == math.ceil(I / S)


def test_padding_forms():
    assert F.resolve_padding("valid", (5, 6), (3, 3)) == ((0, 0), (0, 0))
    assert F.resolve_padding("full", (5, 6), (3, 2), dilation=(2, 1)) == ((4, 4), (1, 1))
    assert F.resolve_padding(2, (5, 6), (3, 3)) == ((2, 2), (2, 2))
    assert F.resolve_padding((1, 0), (5, 6), (3, 3)) == ((1, 1), (0, 0))
    assert F.resolve_padding(((1, 2), (0, 3)), (5, 6), (3, 3)) == ((1, 2), (0, 3))
    # Hand-computed: I=8, F=3, S=3 -> ceil(8/3)=3, total = 2*3 + 3 - 8 = 1 -> (0, 1).
    assert F.resolve_padding("same", (8,), (3,), 3) == ((0, 1),)
    assert F.conv_output_size(227, 11, 4, 0) == 55
    assert F.conv_output_size(7, 3, 1, "full") == 9
    assert F.conv_output_size(7, 3, 2, (0, 1)) == 3


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_same_matches_torch_at_stride1(rng):
    x = rng.standard_normal((1, 2, 9, 8)).astype(np.float32)
    w = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    y = F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w), padding="same", dilation=(1, 2))
    ref = TF.conv2d(torch.tensor(x), torch.tensor(w), padding="same", dilation=(1, 2))
    assert_close(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_unbatched_and_noncontiguous(rng):
    x = rng.standard_normal((3, 10, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    xt = x.transpose(0, 2, 1)  # a non-contiguous view: the functional layer copies it
    tx = cnnfast.tensor(xt, requires_grad=True)
    y = F.conv2d(tx, cnnfast.tensor(w), padding=1)
    y.backward(cnnfast.tensor(np.ones(y.shape, np.float32)))
    X = torch.tensor(np.ascontiguousarray(xt), requires_grad=True)
    ref = TF.conv2d(X, torch.tensor(w), padding=1)
    ref.backward(torch.ones_like(ref))
    assert y.shape == (4, 9, 10)
    assert_close(y.detach().numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert_close(tx.grad.numpy(), X.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_no_bias_and_frozen_input(rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    w = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    tw = cnnfast.tensor(w, requires_grad=True)
    y = F.conv2d(cnnfast.tensor(x), tw, stride=2)
    y.backward(cnnfast.tensor(np.ones(y.shape, np.float32)))
    W = torch.tensor(w, requires_grad=True)
    TF.conv2d(torch.tensor(x), W, stride=2).sum().backward()
    assert_close(tw.grad.numpy(), W.grad.numpy(), rtol=1e-4, atol=1e-4)


# ---- bad input ---------------------------------------------------------------------------

def _args(dtype=np.float32):
    x = np.zeros((2, 4, 8, 8), dtype)
    w = np.zeros((6, 2, 3, 3), dtype)
    return x, w


def test_bad_rank():
    x, w = _args()
    with pytest.raises(ValueError, match="expected input of 3 .*or 4"):
        F.conv2d(cnnfast.tensor(x[0, 0]), cnnfast.tensor(w))
    with pytest.raises(ValueError, match="weight: expected 4 dimensions"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w[0]))
    with pytest.raises(ValueError, match="x: expected 3 to 5 dimensions"):
        _C.conv_forward(x[0, 0], w[0, 0], None, [1], [[0, 0]], [1], 1)


def test_channel_mismatch_vs_groups():
    x, w = _args()
    with pytest.raises(ValueError, match=r"weight: expected shape\[1\] \* groups"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w), groups=1)
    with pytest.raises(ValueError, match="divisible by groups"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(np.zeros((5, 2, 3, 3), np.float32)), groups=2)
    with pytest.raises(ValueError, match="groups: expected a positive int"):
        _C.conv_forward(x, w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 0)


def test_dtype_mix():
    x, w = _args()
    with pytest.raises(TypeError, match="weight: expected dtype float32"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w.astype(np.float64)), groups=2)
    with pytest.raises(TypeError, match="bias: expected dtype float32"):
        _C.conv_forward(x, w, np.zeros(6), [1, 1], [[0, 0], [0, 0]], [1, 1], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.conv_forward(x.astype(np.int32), w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)


def test_noncontiguous_kernel_input():
    x, w = _args()
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        _C.conv_forward(np.zeros((2, 4, 8, 16), np.float32)[..., ::2], w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)


def test_zero_sizes():
    x, w = _args()
    with pytest.raises(ValueError, match="x: expected non-zero sizes"):
        _C.conv_forward(np.zeros((0, 4, 8, 8), np.float32), w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)
    with pytest.raises(ValueError, match="weight: expected non-zero sizes"):
        _C.conv_forward(x, np.zeros((6, 2, 0, 3), np.float32), None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)


def test_kernel_larger_than_padded_input():
    x, w = _args()
    with pytest.raises(ValueError, match="larger than the padded input size 10"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(np.zeros((6, 2, 11, 3), np.float32)), padding=1, groups=2)
    with pytest.raises(ValueError, match="dilated extent 9"):
        F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w), dilation=4, groups=2)


def test_bad_hyperparameters():
    x, w = _args()
    tx, tw = cnnfast.tensor(x), cnnfast.tensor(w)
    with pytest.raises(ValueError, match="stride: expected positive"):
        F.conv2d(tx, tw, stride=0, groups=2)
    with pytest.raises(ValueError, match="padding: expected non-negative"):
        F.conv2d(tx, tw, padding=-1, groups=2)
    with pytest.raises(ValueError, match="padding: expected 'valid', 'same' or 'full'"):
        F.conv2d(tx, tw, padding="sam", groups=2)
    with pytest.raises(ValueError, match="stride: expected an int or 2 values"):
        F.conv2d(tx, tw, stride=(1, 1, 1), groups=2)
    with pytest.raises(ValueError, match="bias: expected shape"):
        F.conv2d(tx, tw, cnnfast.tensor(np.zeros(5, np.float32)), groups=2)
    with pytest.raises(ValueError, match="algo: expected one of"):
        F.conv2d(tx, tw, groups=2, algo="fft")
    with pytest.raises(ValueError, match="algo: expected 'auto'"):
        _C.conv_forward(x, w, None, [1, 1], [[0, 0], [0, 0]], [1, 1], 2, "fft")


@pytest.mark.parametrize("kw", [dict(stride=2), dict(dilation=2), dict(kernel=(5, 5)), dict(nd=1), dict(nd=3)])
def test_winograd_not_applicable(kw):
    nd = kw.get("nd", 2)
    k = kw.get("kernel", (3,) * nd)
    x = cnnfast.tensor(np.zeros((1, 2) + (9,) * nd, np.float32))
    w = cnnfast.tensor(np.zeros((2, 2) + k, np.float32))
    with pytest.raises(ValueError, match="algo: 'winograd' needs a 2-D convolution"):
        CONV[nd](x, w, stride=kw.get("stride", 1), dilation=kw.get("dilation", 1), algo="winograd")


def test_grad_output_shape_checked():
    x, w = _args()
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        _C.conv_backward(np.zeros((2, 6, 7, 6), np.float32), x, w, [1, 1], [[0, 0], [0, 0]], [1, 1], 2)


# The register-blocked depthwise kernel (3x3 / 5x5, stride 1, dilation 1): widths
# below, at and just above one 8-wide block, odd row counts (the two-row pass has
# a one-row tail), asymmetric and zero padding, channel multiplier 2 (which
# keeps the generic backward-data path).
DW_DIRECT = {
    "dw3_w5": (2, 2, 3, 3, (7, 5), (3, 3), 1, 1, 1, 3),
    "dw3_w9_odd_rows": (2, 1, 4, 4, (9, 9), (3, 3), 1, 1, 1, 4),
    "dw3_prime": (2, 3, 5, 5, (13, 23), (3, 3), 1, 1, 1, 5),
    "dw3_pad0": (2, 1, 2, 2, (10, 19), (3, 3), 1, 0, 1, 2),
    "dw3_asym": (2, 2, 3, 3, (11, 17), (3, 3), 1, ((0, 2), (2, 1)), 1, 3),
    "dw5_same": (2, 2, 3, 3, (12, 21), (5, 5), 1, 2, 1, 3),
    "dw5_asym": (2, 1, 2, 2, (9, 16), (5, 5), 1, ((4, 0), (1, 3)), 1, 2),
    "dw3_mult2": (2, 2, 3, 6, (8, 17), (3, 3), 1, 1, 1, 3),
}


@pytest.mark.parametrize("name", DW_DIRECT)
def test_depthwise_direct_matches_torch(name, simd, rng):
    case = DW_DIRECT[name]
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy)
    ref = reference(case, x, w, b, gy)
    gemm = ours(case, x, w, b, gy, algo="gemm")
    for what, a, r, m in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref, gemm):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")
        assert_close(a, m, rtol=1e-4, atol=1e-4, what=f"{name} vs gemm {what}")



# The masked-row depthwise kernel (AVX-512, stride 1, output rows of 12+ columns): every
# tail length of a 16-lane segment (widths 12-33 after padding), row counts that leave
# every tail of its four-row pass, zero, asymmetric and k-1 padding; grad_x of these
# layers runs the same kernel on grad_y with the flipped taps.
def _dw_rows_case(width, stride):
    k = 3 if width % 2 else 5
    pads = [0, 1, k - 1, ((k - 1, 0), (1, k - 1)), ((0, 1), (k - 1, 0))][width % 5]
    height = 5 + width % 4 + 6 * (stride - 1)
    return (2, 1 + width % 2, 3, 3, (height, width * stride), (k, k), stride, pads, 1, 3)


# Output widths where each kernel runs (conv_depthwise.cpp, depthwise_rows_pay): every
# tail of a 16-lane segment at both strides.
DW_ROWS_WIDTHS = [(1, w) for w in range(12, 34)] + [(2, w) for w in range(28, 50)]


@pytest.mark.parametrize("stride,width", DW_ROWS_WIDTHS)
def test_depthwise_rows_every_tail(width, stride, simd, rng):
    check_all_passes(_dw_rows_case(width, stride), rng, f"width {width} stride {stride}")


def test_im2col_chunks_cross_rows_and_depth(simd, rng):
    # A deep column matrix (C*k = 1080) makes 64-column im2col chunks, so chunks
    # start mid-row and span depth slices (the stepped position in im2col/col2im).
    # 378 output positions with a small input: the zero-bordered rows path, chunked.
    # (tests/test_conv_taps.py has the same with a W stride of 2, on the row runs.)
    case = (3, 2, 40, 3, (7, 8, 9), (3, 3, 3), 1, ((1, 0), (0, 1), (1, 1)), 1, 1)
    x, w, b = make(case, rng)
    gy = rng.standard_normal(out_shape(case, x)).astype(np.float32)
    got = ours(case, x, w, b, gy, algo="gemm")
    ref = reference(case, x, w, b, gy)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"chunked 3d {what}")


# (N, C, K, H, W, dilation (h, w), padding ((top, bottom), (left, right)), groups): layers
# big enough that Auto runs them as undilated phases on Winograd (conv_dilated.cpp), with
# odd maps (phases of unequal size), uneven and zero padding, and two groups.
DILATED_PHASES = [
    (2, 16, 20, 35, 37, (2, 2), ((2, 2), (2, 2)), 1),
    (4, 17, 16, 40, 38, (3, 2), ((3, 1), (0, 2)), 1),
    (4, 32, 34, 45, 46, (2, 3), ((1, 2), (4, 3)), 2),
    # >= 64 channels each way and >= 128 tiles: the phases at the avx512 level too
    (4, 64, 66, 45, 43, (2, 2), ((2, 2), (1, 3)), 1),
]


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("case", DILATED_PHASES)
def test_dilated_phases_match_float64(case, nthreads, simd, rng):
    N, C, K, H, W, dil, pads, g = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C // g, 3, 3)) / math.sqrt(C // g * 9)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    xp = TF.pad(torch.tensor(x).double(), (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    ref = TF.conv2d(xp, torch.tensor(w).double(), torch.tensor(b).double(), dilation=dil, groups=g)
    gy = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        y = np.array(_C.conv_forward(x, w, b, [1, 1], [list(p) for p in pads], list(dil), g))
        y_relu = np.array(_C.conv_forward(x, w, b, [1, 1], [list(p) for p in pads], list(dil), g,
                                          activation="relu"))
        gx, gw, gb = _C.conv_backward(gy, x, w, [1, 1], [list(p) for p in pads], list(dil), g)
    finally:
        cnnfast.set_num_threads(before)
    xr = torch.tensor(x).double().requires_grad_()
    wr = torch.tensor(w).double().requires_grad_()
    yr = TF.conv2d(TF.pad(xr, (pads[1][0], pads[1][1], pads[0][0], pads[0][1])), wr, torch.tensor(b).double(),
                   dilation=dil, groups=g)
    yr.backward(torch.tensor(gy).double())
    for what, a, r in (("y", y, ref.numpy()), ("relu(y)", y_relu, ref.clamp(min=0).numpy()),
                       ("grad_x", gx, xr.grad.numpy()), ("grad_w", gw, wr.grad.numpy())):
        assert_nontrivial(r)
        assert np.shape(a) == r.shape, what
        assert_close(np.array(a), r, rtol=1e-4, atol=2e-5 * np.abs(r).max(), what=f"{case} {what} at {simd}")


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("stride,dilation,k", [(1, 2, 5), (2, 1, 5), (3, 2, 5), (4, 1, 9)])
def test_forward_chunks_from_one_padded_copy(nthreads, stride, dilation, k, simd, rng):
    # Deep columns (C/g*k*k >= 1000) make 64-column chunks, so every (image, group) of
    # the forward maps several chunks from one zero-bordered copy per thread (at a W
    # stride, a copy split into column phases); three images and two groups make the
    # threads switch between copies mid-call, and the uneven padding and odd map put
    # chunk edges mid-row and next to the border.
    x = rng.standard_normal((3, 80, 45, 47)).astype(np.float32)
    w = (rng.standard_normal((14, 40, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(14).astype(np.float32)
    pads = [[3, 2], [1, 4]]
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        y = _C.conv_forward(x, w, b, [stride, stride], pads, [dilation, dilation], 2, "gemm")
    finally:
        cnnfast.set_num_threads(before)
    ref = TF.conv2d(TF.pad(torch.tensor(x).double(), (1, 4, 3, 2)), torch.tensor(w).double(),
                    torch.tensor(b).double(), stride=stride, dilation=dilation, groups=2).numpy()
    assert y.shape == ref.shape
    assert_nontrivial(ref)
    assert_close(np.array(y), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), what=f"y at {simd}")


@pytest.mark.parametrize("shape", [
    # (N, C, H, K, kernel, stride, pad, groups): small outputs (< 64 positions per
    # image), batches that do not divide into the image blocks of the batched GEMM.
    (5, 12, 3, 16, 3, 1, 1, 1),
    (7, 6, 5, 9, 3, 2, 1, 3),
    (33, 8, 1, 10, 3, 1, 1, 2),
    (3, 4, 7, 6, 1, 1, 0, 1),
])
@pytest.mark.parametrize("algo", ["auto", "gemm"])
def test_small_outputs_batched_across_images(shape, algo, simd, rng):
    N, C, H, K, k, s, p, g = shape
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = rng.standard_normal((K, C // g, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    y = _C.conv_forward(x, w, b, [s, s], [[p, p], [p, p]], [1, 1], g, algo)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = _C.conv_backward(gy, x, w, [s, s], [[p, p], [p, p]], [1, 1], g, True, True, True, algo)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p, groups=g)
    ty.backward(torch.tensor(gy))
    assert_close(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4, what="forward")
    assert_close(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad input")
    assert_close(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad weight")
    assert_close(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-4, what="grad bias")


def test_parallel_stats_model_the_split_without_changing_results(rng):
    # Benchmarks' accounting mode (core/parallel.h): dynamic task lists then run on the
    # calling thread, timed task by task; the results must be the same bits.
    x = rng.standard_normal((3, 16, 12, 13)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(2)
        plain = [_C.conv_forward(x, w, b, [1, 1], [[1, 1], [1, 1]], [1, 1], 1, a) for a in ("gemm", "winograd")]
        _C._set_parallel_stats(True)
        timed = [_C.conv_forward(x, w, b, [1, 1], [[1, 1], [1, 1]], [1, 1], 1, a) for a in ("gemm", "winograd")]
        st = _C._parallel_stats()
    finally:
        _C._set_parallel_stats(False)
        cnnfast.set_num_threads(before)
    for p, t in zip(plain, timed):
        assert np.array_equal(np.array(p), np.array(t))
    assert st["jobs"] >= 2
    assert 0 < st["max_chunk_s"] <= st["sum_chunk_s"] + 1e-9
    _C.conv_forward(x, w, b, [1, 1], [[1, 1], [1, 1]], [1, 1], 1, "gemm")
    assert _C._parallel_stats()["jobs"] == 0  # off (and reset): nothing is counted


@pytest.mark.parametrize("nthreads", [1, 2])
def test_weight_gradient_one_image_per_task(nthreads, simd, rng):
    # Deep columns (C*k*k = 2088) over a 23x23 map: grad_w's tasks are single images
    # whose grad_y rows the GEMM reads in place (several images are gathered first).
    x = rng.standard_normal((3, 232, 23, 23)).astype(np.float32)
    w = (rng.standard_normal((13, 232, 3, 3)) * 0.05).astype(np.float32)
    gy = rng.standard_normal((3, 13, 23, 22)).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        _, gw, _ = _C.conv_backward(gy, x, w, [1, 1], [[1, 1], [1, 0]], [1, 1], 1, False, True, False, algo="gemm")
    finally:
        cnnfast.set_num_threads(before)
    ref = torch.ops.aten.convolution_backward(
        torch.tensor(gy).double(), TF.pad(torch.tensor(x).double(), (1, 0, 1, 1)), torch.tensor(w).double(), [13],
        [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1].numpy()
    assert_nontrivial(ref)
    assert_close(np.array(gw), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), what=f"grad_w at {simd}")


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("stride,k", [(2, 3), (3, 5)])
def test_weight_gradient_strided_padded_columns(nthreads, stride, k, simd, rng):
    # More than 256 output positions at a W stride with enough taps: the weight
    # gradient's columns come from the padded copy's column phases (ColumnMap::im2col).
    x = rng.standard_normal((3, 6, 40 if stride == 2 else 61, 37 if stride == 2 else 58)).astype(np.float32)
    w = (rng.standard_normal((5, 6, k, k)) * 0.1).astype(np.float32)
    pads = [[1, 0], [2, 1]]
    ref_y = TF.conv2d(TF.pad(torch.tensor(x).double(), (2, 1, 1, 0)), torch.tensor(w).double(), stride=stride)
    assert ref_y.shape[2] * ref_y.shape[3] > 256
    gy = rng.standard_normal(tuple(ref_y.shape)).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        _, gw, _ = _C.conv_backward(gy, x, w, [stride, stride], pads, [1, 1], 1, False, True, False, algo="gemm")
    finally:
        cnnfast.set_num_threads(before)
    ref = torch.ops.aten.convolution_backward(
        torch.tensor(gy).double(), TF.pad(torch.tensor(x).double(), (2, 1, 1, 0)), torch.tensor(w).double(), [5],
        [stride, stride], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1].numpy()
    assert_nontrivial(ref)
    assert_close(np.array(gw), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), what=f"grad_w at {simd}")


def test_weight_gradient_shared_columns(simd, rng):
    # A grad_w block past 1 MB (64 x 512*9 floats): on 2 threads the threads build each
    # column chunk together and split the GEMM's columns (chunks of 2 images, then 1);
    # the bits match one thread's.
    x = rng.standard_normal((3, 512, 9, 11)).astype(np.float32)
    w = (rng.standard_normal((64, 512, 3, 3)) * 0.02).astype(np.float32)
    gy = rng.standard_normal((3, 64, 9, 11)).astype(np.float32)
    before = cnnfast.get_num_threads()
    got = []
    try:
        for t in (1, 2):
            cnnfast.set_num_threads(t)
            got.append(np.array(_C.conv_backward(gy, x, w, [1, 1], [[1, 1], [1, 1]], [1, 1], 1, False, True, False,
                                                 algo="gemm")[1]))
    finally:
        cnnfast.set_num_threads(before)
    ref = torch.ops.aten.convolution_backward(
        torch.tensor(gy).double(), torch.tensor(x).double(), torch.tensor(w).double(), [64], [1, 1], [1, 1], [1, 1],
        False, [0, 0], 1, [False, True, False])[1].numpy()
    assert_nontrivial(ref)
    assert_close(got[1], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), what=f"grad_w at {simd}")
    assert np.array_equal(got[0], got[1])
