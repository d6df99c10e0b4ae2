"""Dead kernel taps and the two im2col paths of the convolution.

A tap whose input position is padding for every output (a 3x3 kernel on a 1x1 map with
padding 1 has eight) is skipped by running the convolution over the window of live taps
(csrc/cpu/conv_window.cpp, live_tap_window). Small outputs (<= 256 positions) build the column
matrix from an offset table or zero-bordered copies, larger ones by row runs; tiny maps
run tap by tap over the (output, input) pairs that exist. Checked against PyTorch (float32,
scalar and AVX2) and float64 finite differences, forward, grad_input and grad_weight,
plain and transposed.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnfast import _C
from helpers import assert_close, assert_nontrivial, numerical_grad

TCONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
TCONVT = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}

# x shape, weight shape, stride, ((start, end) per dim), dilation, groups
DEAD = {
    # ResNet-18 at 32x32: layer4's second 3x3 sees 1x1 maps (1 live tap of 9) ...
    "1x1_pad1": ((3, 5, 1, 1), (4, 5, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    # ... and its first one a 2x2 map at stride 2 (a 2x2 window of live taps).
    "2x2_stride2_pad1": ((2, 4, 2, 2), (6, 4, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    "1x1_5x5_pad2": ((2, 3, 1, 1), (4, 3, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    "2x2_5x5_pad2": ((2, 3, 2, 2), (5, 3, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    "1x3_dil2_pad2": ((1, 3, 1, 3), (4, 3, 3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    # Trimming here would leave a negative padding: the window is widened instead.
    "dil2_pad1_widened": ((2, 3, 3, 3), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (2, 2), 1),
    "stride3_asym": ((1, 4, 2, 5), (6, 2, 3, 4), (3, 3), ((2, 2), (1, 3)), (1, 1), 2),
    "groups_1x1": ((2, 6, 1, 1), (9, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 3),
    "depthwise_1x2": ((2, 4, 1, 2), (4, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    "3d_1x1x1": ((2, 3, 1, 1, 1), (4, 3, 3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), (1, 1, 1), 1),
    # Live taps {0, 2} with a dead one between them (stride 2, dilation 3).
    "1d_gap": ((2, 3, 1), (4, 3, 3), (2,), ((6, 6),), (3,), 1),
    # No live tap at all: y is the bias, every gradient but the bias's is zero.
    "1d_all_dead": ((2, 3, 1), (4, 3, 3), (4,), ((3, 3),), (1,), 1),
}


def _run(xs, ws, stride, pads, dil, g, rng, dtype, algo="auto"):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    st, pd, dl = list(stride), [list(p) for p in pads], list(dil)
    y = _C.conv_forward(x, w, b, st, pd, dl, g, algo)
    gy = rng.standard_normal(y.shape).astype(dtype)
    grads = _C.conv_backward(gy, x, w, st, pd, dl, g, algo=algo)
    return (x, w, b, gy), (y,) + tuple(grads)


def _torch(x, w, b, gy, stride, pads, dil, g):
    nd = x.ndim - 2
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    flat = [p for pair in reversed(pads) for p in pair]
    y = TCONV[nd](TF.pad(tx, flat), tw, tb, stride=stride, dilation=dil, groups=g)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("name", DEAD)
def test_dead_taps_match_torch(name, simd, rng):
    xs, ws, stride, pads, dil, g = DEAD[name]
    (x, w, b, gy), got = _run(xs, ws, stride, pads, dil, g, rng, np.float32)
    ref = _torch(x, w, b, gy, stride, pads, dil, g)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")
    if name == "1d_all_dead":
        assert np.all(got[1] == 0) and np.all(got[2] == 0)
        assert_close(got[0], np.broadcast_to(b[None, :, None], got[0].shape), what="bias only")
    else:
        assert_nontrivial(ref[2])
        # Some weight taps really are dead here: their gradient is exactly zero.
        assert np.any(ref[2] == 0) and np.any(got[2] == 0)
        assert np.array_equal(got[2] == 0, ref[2] == 0)


@pytest.mark.parametrize("name", ["1x1_pad1", "2x2_stride2_pad1", "1x3_dil2_pad2", "stride3_asym", "1d_gap",
                                  "depthwise_1x2"])
def test_dead_taps_float64_finite_differences(name, rng):
    xs, ws, stride, pads, dil, g = DEAD[name]
    xs = (1,) + xs[1:]
    (x, w, b, gy), (y, gx, gw, gb) = _run(xs, ws, stride, pads, dil, g, rng, np.float64, "gemm")
    st, pd, dl = list(stride), [list(p) for p in pads], list(dil)
    f = lambda x_, w_, b_: _C.conv_forward(x_, w_, b_, st, pd, dl, g, "gemm")
    nx, nw, nb = numerical_grad(f, [x, w, b], gy)
    for what, a, r in (("grad_x", gx, nx), ("grad_w", gw, nw), ("grad_b", gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-6, atol=1e-7, what=f"{name} {what}")


def test_forced_winograd_on_a_1x1_map(simd, rng):
    # 'winograd' keeps the full 3x3 kernel (no trimming); it must agree all the same.
    xs, ws, stride, pads, dil, g = DEAD["1x1_pad1"]
    (x, w, b, gy), got = _run((2, 16, 1, 1), (16, 16, 3, 3), stride, pads, dil, g, rng, np.float32, "winograd")
    ref = _torch(x, w, b, gy, stride, pads, dil, g)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_close(a, r, rtol=1e-3, atol=1e-3, what=what)


# x (N, C_in, *in), weight (C_in, C_out/groups, *k), stride, padding, output_padding, groups, dilation.
# Padding crops the transposed output, so taps that only reach the cropped border are dead.
DEAD_T = {
    "1x1_pad1": ((2, 4, 1, 1), (4, 3, 3, 3), 1, 1, 0, 1, 1),
    "2x1_stride2_pad2": ((2, 4, 2, 1), (4, 6, 5, 5), 2, 2, 1, 2, 1),
    "1d_dil2": ((1, 3, 2), (3, 2, 3), 1, 2, 0, 1, 2),
}


@pytest.mark.parametrize("name", DEAD_T)
def test_dead_taps_transposed_match_torch(name, simd, rng):
    xs, ws, s, p, op, g, d = DEAD_T[name]
    nd = len(xs) - 2
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[1] * g).astype(np.float32)
    pads = [[p, p]] * nd
    y = _C.conv_transpose_forward(x, w, b, [s] * nd, pads, [op] * nd, [d] * nd, g)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = (y,) + tuple(_C.conv_transpose_backward(gy, x, w, [s] * nd, pads, [op] * nd, [d] * nd, g))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = TCONVT[nd](tx, tw, tb, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
    ty.backward(torch.tensor(gy))
    ref = (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())
    assert np.any(ref[2] == 0), "no dead tap in this case"
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")


# The three im2col/col2im paths: outputs of at most 256 positions go through an offset
# table when output rows are shorter than 8, else through zero-bordered copies of the
# input, which larger outputs at unit W stride also take when the input is small;
# the rest through row runs of the unpadded input.
ROWS_AND_TABLE = {
    "table_20x5": ((2, 3, 20, 5), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "table_stride3_asym": ((3, 4, 13, 11), (5, 4, 4, 3), (3, 2), ((2, 0), (1, 2)), (1, 1), 1),
    "padded_16x16": ((2, 3, 16, 16), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "padded_stride2_dil2": ((2, 4, 21, 19), (6, 2, 3, 3), (2, 2), ((2, 1), (0, 2)), (2, 2), 2),
    "padded_3d": ((2, 3, 3, 4, 17), (4, 3, 2, 3, 3), (1, 1, 2), ((1, 0), (1, 1), (0, 2)), (1, 1, 1), 1),
    "padded_17x17": ((2, 3, 17, 17), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "rows_stride2_dil2_groups": ((2, 4, 41, 37), (6, 2, 3, 3), (2, 2), ((2, 1), (0, 2)), (2, 2), 2),
    "padded_1d_long": ((2, 3, 301), (4, 3, 5), (1,), ((2, 2),), (1,), 1),
    "rows_1d_stride2": ((2, 3, 701), (4, 3, 5), (2,), ((2, 1),), (1,), 1),
    # 36 outputs, but a padded copy of the input would be 1.4M elements of scratch.
    "rows_small_output_big_input": ((1, 4, 600, 600), (2, 4, 3, 3), (100, 100), ((1, 0), (0, 1)), (1, 1), 1),
}


@pytest.mark.parametrize("name", ROWS_AND_TABLE)
def test_table_and_row_im2col_match_torch(name, simd, rng):
    xs, ws, stride, pads, dil, g = ROWS_AND_TABLE[name]
    (x, w, b, gy), got = _run(xs, ws, stride, pads, dil, g, rng, np.float32, "gemm")
    ref = _torch(x, w, b, gy, stride, pads, dil, g)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")


# Tiny maps whose column matrix is mostly padding even with every tap live: run tap
# by tap over the (output, input) pairs that exist (<= 64 outputs, <= 85% density).
SPARSE = {
    "2x2_pad1": ((5, 6, 2, 2), (7, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "4x4_pad1_groups": ((3, 8, 4, 4), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    "4x4_stride2": ((2, 5, 4, 4), (4, 5, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    "3x5_asym_dil": ((2, 3, 3, 5), (4, 3, 2, 3), (1, 2), ((1, 0), (2, 2)), (2, 1), 1),
    "batch1_2x3": ((1, 4, 2, 3), (5, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "3d_2x2x2": ((2, 3, 2, 2, 2), (4, 3, 3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), (1, 1, 1), 1),
    "1d_5x7": ((3, 4, 3), (5, 4, 7), (1,), ((3, 3),), (1,), 1),
    # 7x7 under 3x3 padding 1 (82% dense, ResNet layer4 at 224x224); 17 channels for GEMM tails.
    "7x7_pad1": ((3, 17, 7, 7), (19, 17, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    # 37 output channels: grad_w's 9 tap tasks split in two row blocks on 2 threads.
    "7x7_rows_split": ((5, 6, 7, 7), (37, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
}


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("algo", ["auto", "gemm"])
def test_sparse_taps_match_torch(name, algo, simd, rng):
    xs, ws, stride, pads, dil, g = SPARSE[name]
    (x, w, b, gy), got = _run(xs, ws, stride, pads, dil, g, rng, np.float32, algo)
    ref = _torch(x, w, b, gy, stride, pads, dil, g)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what}")


@pytest.mark.parametrize("name", ["2x2_pad1", "4x4_pad1_groups", "3x5_asym_dil", "1d_5x7", "7x7_rows_split"])
def test_sparse_taps_float64_finite_differences(name, rng):
    xs, ws, stride, pads, dil, g = SPARSE[name]
    xs = (2,) + xs[1:]
    (x, w, b, gy), (y, gx, gw, gb) = _run(xs, ws, stride, pads, dil, g, rng, np.float64, "gemm")
    st, pd, dl = list(stride), [list(p) for p in pads], list(dil)
    f = lambda x_, w_, b_: _C.conv_forward(x_, w_, b_, st, pd, dl, g, "gemm")
    nx, nw, nb = numerical_grad(f, [x, w, b], gy)
    for what, a, r in (("grad_x", gx, nx), ("grad_w", gw, nw), ("grad_b", gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-6, atol=1e-7, what=f"{name} {what}")


# Too few (image block, group, chunk) tasks for the threads: the forward and grad_x
# also split their output rows (72 = 40 + 32 on 2 threads, 24 x 3 on 3), and grad_x
# of an uneven (image, group) count takes the image-by-image split.
FEW_TASKS = {
    "taps_batch1": ((1, 64, 3, 4), (72, 64, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "taps_batch1_groups": ((1, 10, 2, 2), (144, 5, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    "dense_batch1": ((1, 6, 9, 10), (72, 6, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "pointwise_batch1": ((1, 16, 5, 7), (72, 16, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "stride3_batch3": ((3, 7, 13, 17), (40, 7, 3, 3), (3, 3), ((1, 1), (0, 2)), (1, 1), 1),
}


@pytest.mark.parametrize("name", FEW_TASKS)
@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_few_tasks_split_rows(name, nthreads, simd, rng):
    import cnnfast
    xs, ws, stride, pads, dil, g = FEW_TASKS[name]
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        (x, w, b, gy), got = _run(xs, ws, stride, pads, dil, g, rng, np.float32)
    finally:
        cnnfast.set_num_threads(before)
    ref = _torch(*(a.astype(np.float64) for a in (x, w, b, gy)), stride, pads, dil, g)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} {what} at {nthreads} threads")


@pytest.mark.parametrize("name", ["4x4_pad1_groups", "7x7_rows_split"])
def test_sparse_taps_threads_give_the_same_bits(name, rng):
    # grad_w sums every image of a tap in one task, so the result is thread-count independent.
    import cnnfast
    xs, ws, stride, pads, dil, g = SPARSE[name]
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(1)
        _, one = _run(xs, ws, stride, pads, dil, g, np.random.default_rng(5), np.float32)
        cnnfast.set_num_threads(2)
        _, two = _run(xs, ws, stride, pads, dil, g, np.random.default_rng(5), np.float32)
    finally:
        cnnfast.set_num_threads(before)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["table_20x5", "padded_stride2_dil2", "padded_3d"])
def test_im2col_paths_float64_finite_differences(name, rng):
    xs, ws, stride, pads, dil, g = ROWS_AND_TABLE[name]
    if name == "padded_stride2_dil2":
        xs, ws = (1, 2, 17, 19), (2, 1, 3, 3)
    xs = (1,) + xs[1:]
    (x, w, b, gy), (y, gx, gw, gb) = _run(xs, ws, stride, pads, dil, g, rng, np.float64, "gemm")
    st, pd, dl = list(stride), [list(p) for p in pads], list(dil)
    f = lambda x_, w_, b_: _C.conv_forward(x_, w_, b_, st, pd, dl, g, "gemm")
    nx, nw, nb = numerical_grad(f, [x, w, b], gy)
    for what, a, r in (("grad_x", gx, nx), ("grad_w", gw, nw), ("grad_b", gb, nb)):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-6, atol=1e-7, what=f"{name} {what}")


def test_row_runs_in_chunks_cross_rows_and_depth(simd, rng):
    # C*k = 1080 makes 64-column im2col chunks that start mid-row and span depth
    # slices; the W stride of 2 keeps this 350-output layer on the row runs.
    xs, ws = (2, 40, 6, 8, 19), (3, 40, 3, 3, 3)
    stride, pads, dil = (1, 1, 2), ((1, 0), (0, 1), (1, 1)), (1, 1, 1)
    (x, w, b, gy), got = _run(xs, ws, stride, pads, dil, 1, rng, np.float32, "gemm")
    assert got[0].shape == (2, 3, 5, 7, 10)
    ref = _torch(x, w, b, gy, stride, pads, dil, 1)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"chunked rows {what}")


@pytest.mark.parametrize("nthreads", [1, 2])
def test_taps_deep_channels(nthreads, simd, rng):
    # More than 256 input (forward) and output (grad_x) channels: each tap's GEMM, on its
    # prepacked W_t, crosses a 256-deep slice and ends in a partial panel of 16 / 32
    # columns (3 images x up to 12 pairs of the 4x3 map).
    import cnnfast
    xs, ws = (3, 300, 4, 3), (270, 300, 3, 3)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        (x, w, b, gy), got = _run(xs, ws, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, rng, np.float32)
    finally:
        cnnfast.set_num_threads(before)
    ref = _torch(*(a.astype(np.float64) for a in (x, w, b, gy)), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    for what, a, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref):
        assert_nontrivial(r)
        assert_close(a, r, rtol=1e-4, atol=1e-5 * np.abs(r).max(), what=f"{what} at {nthreads} threads")


@pytest.mark.parametrize("shape", [((2, 64, 1, 1), (48, 64, 3, 3), ((1, 1), (1, 1))),     # 1 live tap of 9
                                   ((2, 40, 2, 2), (50, 40, 3, 3), ((1, 1), (1, 1)))],   # s2: 2x2 window
                         ids=["1x1_map", "2x2_map_stride2"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_dead_taps_grad_weight_written_over_used_memory(shape, nthreads, rng):
    """grad_w of a trimmed layer is written in one pass into an uninitialised array
    (zeros at the dead taps): rows in several blocks and threads, with the memory it lands
    in dirtied with NaN first (freed heap chunks of the same size), against torch."""
    import cnnfast
    xs, ws, pads = shape
    stride = (1, 1) if xs[2] == 1 else (2, 2)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(nthreads)
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        y = _C.conv_forward(x, w, None, list(stride), [list(p) for p in pads], [1, 1], 1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        for _ in range(3):
            dirt = [np.full(ws, np.nan, np.float32) for _ in range(4)]
            del dirt
            _, gw, _ = _C.conv_backward(gy, x, w, list(stride), [list(p) for p in pads], [1, 1], 1,
                                        need_input=False, need_weight=True, need_bias=False)
            ref = _torch(x.astype(np.float64), w.astype(np.float64), np.zeros(ws[0]), gy.astype(np.float64),
                         stride, pads, (1, 1), 1)[2]
            assert np.all(np.isfinite(gw))
            assert np.array_equal(gw == 0, ref == 0)
            assert_close(gw, ref, rtol=1e-4, atol=1e-4, what=f"grad_w at {nthreads} threads")
    finally:
        cnnfast.set_num_threads(before)


@pytest.mark.parametrize("name", ["1x1_pad1", "2x2_stride2_pad1", "1x3_dil2_pad2", "stride3_asym", "1d_gap",
                                  "3d_1x1x1", "1d_all_dead", "dil2_pad1_widened"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_dead_taps_through_autograd_match_torch(name, input_grad, rng):
    """cnnfast.functional.conv*d cuts the weight to its live taps once in the forward and
    reuses the cut for grad_x (functional/conv.py); grad_w still covers the full kernel."""
    import cnnfast
    import cnnfast.functional as F
    xs, ws, stride, pads, dil, g = DEAD[name]
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(xs) - 2]
    tx, tw, tb = (cnnfast.tensor(a, requires_grad=rg) for a, rg in ((x, input_grad), (w, True), (b, True)))
    y = conv(tx, tw, tb, stride=stride, padding=pads, dilation=dil, groups=g)
    gy = rng.standard_normal(y.shape)
    y.backward(cnnfast.tensor(gy))
    ry, rgx, rgw, rgb = _torch(x, w, b, gy, stride, pads, dil, g)
    assert_close(y.detach().numpy(), ry, rtol=1e-10, atol=1e-10, what=f"{name} y")
    assert (tx.grad is None) != input_grad
    if input_grad:
        assert_close(tx.grad.numpy(), rgx, rtol=1e-10, atol=1e-10, what=f"{name} grad_x")
    assert_close(tw.grad.numpy(), rgw, rtol=1e-10, atol=1e-10, what=f"{name} grad_w")
    assert_close(tb.grad.numpy(), rgb, rtol=1e-10, atol=1e-10, what=f"{name} grad_b")
    assert np.array_equal(tw.grad.numpy() == 0, rgw == 0)


def test_conv_live_window_query():
    # The shape-only query autograd uses to cut a layer's weight to its live taps.
    from cnnfast import _C
    assert _C._conv_live_window([2, 4, 8, 8], [5, 4, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1) is None
    lo, hi, pads = _C._conv_live_window([2, 4, 1, 1], [5, 4, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    assert (list(lo), list(hi), [tuple(p) for p in pads]) == ([1, 1], [2, 2], [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match="_conv_live_window: expected x and weight shapes of equal rank"):
        _C._conv_live_window([2, 4, 8, 8], [5, 4, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    with pytest.raises(ValueError, match="groups >= 1"):
        _C._conv_live_window([2, 4, 8, 8], [5, 4, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 0)


@pytest.mark.parametrize("shape,lo,hi", [((7, 5, 3, 3), [1, 1], [2, 2]), ((6, 3, 3, 3), [1, 1], [3, 3]),
                                         ((4, 3, 5), [1], [4]), ((2, 3, 3, 4, 5), [0, 1, 2], [2, 3, 5]),
                                         # more rows than one thread's share (4096), one tap and several
                                         ((300, 41, 3, 3), [1, 1], [2, 2]), ((300, 41, 3, 3), [0, 1], [3, 3])])
def test_conv_weight_window_cut(shape, lo, hi):
    # The threaded copy autograd cuts a dead-tap layer's weight with: NumPy's slice, contiguous.
    from cnnfast import _C
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    cut = _C._conv_weight_window(w, lo, hi)
    ref = w[(slice(None), slice(None)) + tuple(map(slice, lo, hi))]
    assert cut.flags.c_contiguous and cut.shape == ref.shape
    np.testing.assert_array_equal(cut, ref)


def test_conv_weight_window_bad_input():
    from cnnfast import _C
    w = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="0 <= lo < hi <= kernel size"):
        _C._conv_weight_window(w, [1, 2], [2, 2])
    with pytest.raises(ValueError, match="one bound per spatial dim"):
        _C._conv_weight_window(w, [1], [2])
    with pytest.raises(TypeError, match="float32"):
        _C._conv_weight_window(w.astype(np.float64), [0, 0], [1, 1])
    with pytest.raises(ValueError, match="contiguous"):
        _C._conv_weight_window(np.zeros((2, 3, 3, 6), np.float32)[..., ::2], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="rank 3-5"):
        _C._conv_weight_window(np.zeros((2, 3), np.float32), [], [])
    with pytest.raises(ValueError, match="0 <= lo < hi"):
        _C._conv_weight_window(np.zeros((2, 3, 0, 3), np.float32), [0, 0], [1, 1])
    # Zero filters is an empty cut, and NaN is copied as any value (a copy judges nothing).
    assert _C._conv_weight_window(np.zeros((0, 3, 3, 3), np.float32), [1, 1], [2, 2]).shape == (0, 3, 1, 1)
    nan = np.full((1, 1, 3, 3), np.nan, np.float32)
    assert np.isnan(_C._conv_weight_window(nan, [1, 1], [2, 2])).all()


# Batched small outputs (< 64 positions, several images): one-group layers run as the
# transposed product y^T = col^T W^T on the parallel GEMM at the AVX-512 level, transposed back
# in 16 x 16 blocks (channel and position tails of every length here); odd channel counts,
# narrowing and widening 1x1 layers at stride 1 and 2, a dense 3x3 (too few output channels
# for the small-map passes), batch 2-40, with bias, residual and activation.
BATCHED = {
    "1x1_narrow": ((3, 70, 6, 5), (33, 70, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "1x1_stride2_narrow": ((2, 97, 13, 11), (40, 97, 1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    "1x1_widen": ((4, 24, 7, 7), (130, 24, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "3x3_valid": ((5, 40, 8, 9), (12, 40, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "1x1_many_images": ((40, 35, 5, 5), (17, 35, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
}


@pytest.mark.parametrize("name", BATCHED)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("epilogue", [False, True])
def test_batched_small_outputs_match_torch(name, nthreads, epilogue, simd, rng):
    import cnnfast
    xs, ws, stride, pads, dil, groups = BATCHED[name]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    ref = TF.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                    stride=stride, dilation=dil, groups=groups).numpy()
    kwargs = {}
    if epilogue:
        res = rng.standard_normal(ref.shape).astype(np.float32)
        kwargs = {"residual": res, "activation": "relu"}
        ref = np.maximum(ref + res, 0)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(nthreads)
    try:
        y = _C.conv_forward(x, w, b, stride, pads, dil, groups, **kwargs)
    finally:
        cnnfast.set_num_threads(old)
    assert_nontrivial(ref)
    assert_close(y, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
