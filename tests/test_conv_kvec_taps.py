"""The channel-vector tiles run straight from a zero-bordered image (csrc/cpu/conv_kvec_taps.cpp):
dense layers with rows of >= 16 outputs: the forward (strides 1 to 4) where Auto does not give
Winograd, grad_x at stride 1, grad_w with 3 to 5 kernel columns (strides 1 and 2), on AVX-512 (at full rate or split, as on Zen 4). Each
case is checked against PyTorch in float64 from the same float32 inputs and against the im2col
+ GEMM path; where this CPU takes the tiles, the plan query says so, so the comparison is known
to exercise them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C

# The row tiles (conv_kvec_rows.cpp) take some of these layers' forwards and grad_x; off
# here, so that Auto runs, and this file checks, the paths it is about.
pytestmark = pytest.mark.usefixtures("without_row_tiles")

TAKES_TILES = "avx512" in cnnfast.simd_levels() and cnnfast.simd_level() == "avx512"

# (N, C, H, W, K, kh, kw, (top, bottom), (left, right), bias, passes on the tiles: forward,
# grad_x, grad_w; the weight gradient's blocks are 64 channels, 1 or 2 kernel rows). Output widths 16, 17, 29, 40,
# 43, 27 (row tiles 8 + 8, 8 + 9, 14 + 15 ...); K or C = 30, 58, 121, 31, 29, 60 leave the
# last 32-channel block of the forward or of grad_x partly empty; asymmetric padding, even
# and rectangular kernels, a 3x3 layer on 6 rows (too few tiles for Winograd), batch 1
# (the threads split the channels).
CASES = [
    (1, 32, 9, 16, 32, 5, 5, (2, 2), (2, 2), True, "fxw"),
    (3, 30, 7, 17, 30, 5, 5, (1, 3), (2, 2), False, "fxw"),
    (2, 29, 6, 29, 58, 3, 3, (1, 1), (1, 1), True, "fxw"),
    (1, 31, 5, 40, 121, 3, 4, (0, 2), (3, 0), True, "fxw"),
    (2, 60, 11, 45, 64, 3, 5, (2, 0), (0, 2), False, "fxw"),
    (2, 96, 13, 27, 256, 5, 5, (2, 2), (2, 2), True, "fxw"),
    (2, 5, 19, 17, 121, 5, 3, (2, 1), (1, 1), False, "w"),
    # grad_w of layers with at most 32 channels: two-zmm tiles of up to 12 taps
    (3, 7, 20, 29, 29, 5, 5, (2, 2), (1, 3), True, "w"),
    (2, 12, 17, 33, 32, 4, 4, (1, 2), (2, 1), False, "w"),
    (4, 9, 18, 20, 30, 3, 3, (1, 1), (1, 1), False, "w"),
    # grad_w on small maps and in passes of several images (3 images of 70x70 go 2 + 1)
    (5, 40, 4, 6, 60, 3, 3, (1, 1), (1, 1), True, "w"),
    (3, 16, 70, 70, 64, 3, 3, (1, 1), (1, 1), False, "w"),
    # stride 2: forward and grad_w (grad_x of a strided layer is a transposed convolution)
    (2, 30, 37, 41, 64, 3, 3, (1, 0), (2, 1), True, "fw", 2),
    (1, 17, 36, 40, 121, 5, 5, (2, 2), (0, 3), False, "fw", 2),
    (3, 64, 21, 34, 58, 4, 4, (1, 1), (1, 1), True, "fw", 2),
    # strides 3 and 4, forward only (AlexNet's 11x11/4 stem and smaller kin, which the
    # few-input-channel stem kernel leaves to the tiles): batch 1 with 1 or 3 channel
    # blocks (two threads split the rows too), rows of 16 to 19, asymmetric padding
    (1, 3, 31, 83, 96, 11, 11, (0, 0), (0, 0), True, "f", 4),
    (2, 4, 23, 64, 30, 8, 8, (1, 2), (2, 1), False, "f", 3),
    (1, 5, 30, 90, 29, 7, 9, (3, 0), (0, 4), True, "f", 4),
    (3, 36, 14, 71, 64, 3, 3, (1, 1), (0, 2), True, "f", 4),
]


def _torch_ref(x, w, b, pt, pl, gy, st):
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    yt = TF.conv2d(TF.pad(xt, (pl[0], pl[1], pt[0], pt[1])), wt, None if b is None else torch.from_numpy(b).double(),
                   stride=st)
    yt.backward(torch.from_numpy(gy).double())
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _rel(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_passes_match_torch(case, threads):
    N, C, H, W, K, kh, kw, pt, pl, with_bias, passes, *rest = case
    st = rest[0] if rest else 1
    rng = np.random.default_rng(N * 7919 + C * 31 + K)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if with_bias else None
    pads = (pt, pl)
    plan = _C._conv_auto_plan(list(x.shape), list(w.shape), [st, st], [list(pt), list(pl)], [1, 1], 1)
    if TAKES_TILES:
        for key, flag in (("forward", "f"), ("grad_input", "x"), ("grad_weight", "w")):
            assert (plan[key] == "kvec") == (flag in passes), (key, plan)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        y = _C.conv_forward(x, w, b, (st, st), pads, (1, 1), 1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx, gw, _ = _C.conv_backward(gy, x, w, (st, st), pads, (1, 1), 1, True, True, False)
        y_gemm = _C.conv_forward(x, w, b, (st, st), pads, (1, 1), 1, "gemm")
        gx_gemm, gw_gemm, _ = _C.conv_backward(gy, x, w, (st, st), pads, (1, 1), 1, True, True, False, "gemm")
    finally:
        cnnfast.set_num_threads(old)
    refs = _torch_ref(x, w, b, pt, pl, gy, st)
    # float32 sums over C * kh * kw (up to 6400) or N * Ho * Wo terms in one accumulator each
    for name, ours, gemm, ref in zip(("y", "gx", "gw"), (y, gx, gw), (y_gemm, gx_gemm, gw_gemm), refs):
        assert ours.shape == ref.shape, name
        assert _rel(ours, ref) < 2e-6, (name, _rel(ours, ref))
        np.testing.assert_allclose(ours, gemm, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("shape", [
    # (x shape, w shape, stride, padding, dilation, groups): one rule each keeps the tiles off
    ((2, 16, 9, 30), (64, 16, 5, 5), (2, 1), ((2, 2), (2, 2)), (1, 1), 1),   # unequal strides
    ((2, 16, 9, 30), (64, 16, 3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),   # dilation
    ((2, 16, 9, 30), (64, 8, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 2),    # groups
    ((2, 16, 9, 14), (64, 16, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),   # rows of 14
    ((2, 16, 9, 30), (40, 16, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),   # 40 of 64 channels
    ((2, 8, 9, 30), (64, 8, 2, 2), (1, 1), ((0, 1), (1, 0)), (1, 1), 1),     # depth 32
    ((4, 64, 28, 28), (64, 64, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),  # Winograd's
    ((2, 64, 9, 6), (64, 64, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),    # rows of 6
])
def test_other_layers_keep_their_kernels(shape):
    x, w, stride, pads, dil, groups = shape
    plan = _C._conv_auto_plan(list(x), list(w), list(stride), [list(p) for p in pads], list(dil), groups)
    assert plan["forward"] != "kvec", plan
    # Frozen graphs (weights packed once) take rows of 14 too; every other rule holds.
    assert plan["frozen_forward_kvec"] == (x[3] == 14), plan


_ACTS = {"relu": lambda v: np.maximum(v, 0), "silu": lambda v: v / (1 + np.exp(-v)),
         "clip": lambda v: np.clip(v, 0.0, 6.0)}


# Frozen-only cases: rows of 7 to 15 outputs (eager calls keep the GEMM there), stride 1
# and 2, a part-filled last channel block, batch 1 and 2.
FROZEN_CASES = [c for c in CASES if "f" in c[10]] + [
    (1, 40, 7, 7, 64, 3, 3, (1, 1), (1, 1), True, "F"),
    (2, 30, 14, 14, 58, 3, 3, (1, 1), (1, 1), False, "F"),
    (1, 32, 28, 27, 60, 3, 3, (1, 1), (1, 1), True, "F", 2),
    (2, 64, 13, 15, 32, 5, 5, (2, 2), (2, 2), True, "F"),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", ["relu", "silu", "clip"])
@pytest.mark.parametrize("case", FROZEN_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_frozen_forward_with_packed_weights_and_epilogue(case, act, threads):
    # Frozen graphs pass the pack (its weights already in the tiles' layout) and the fused
    # residual add and activation, run on each block of 32 channels as it is written.
    N, C, H, W, K, kh, kw, pt, pl, with_bias, passes, *rest = case
    st = rest[0] if rest else 1
    plan = _C._conv_auto_plan([N, C, H, W], [K, C, kh, kw], [st, st], [list(pt), list(pl)], [1, 1], 1)
    if TAKES_TILES:
        assert plan["frozen_forward_kvec"], plan
        assert (plan["forward"] == "kvec") == ("f" in passes), plan
    rng = np.random.default_rng(N * 7919 + C * 31 + K + 1)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if with_bias else None
    pads = (pt, pl)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        plain = _C.conv_forward(x, w, b, (st, st), pads, (1, 1), 1, "gemm")
        residual = rng.standard_normal(plain.shape).astype(np.float32)
        got = _C.conv_forward(x, w, b, (st, st), pads, (1, 1), 1, "auto", residual, act, 0.0, 6.0,
                              _C.ConvPacked(w, 1), None)
    finally:
        cnnfast.set_num_threads(old)
    want = _ACTS[act](_torch_ref(x, w, b, pt, pl, np.zeros_like(plain), st)[0] + residual.astype(np.float64))
    assert got.shape == want.shape
    assert _rel(got, want) < 2e-6, _rel(got, want)
    np.testing.assert_allclose(got, _ACTS[act](plain.astype(np.float64) + residual), rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())


# Eager forwards through im2col columns with the weights packed per call (prepack.cpp,
# conv_forward_kvec_eager): dense layers whose rows are under 16 outputs, >= 1024
# positions over the batch. Stride 2 and 3, dilation 2, asymmetric padding, a 5x5 kernel,
# K leaving the last 32-channel block part-filled (60, 58, 121), with and without bias
# and a fused ReLU; against PyTorch in float64 and the im2col + GEMM path.
EAGER_CASES = [
    # (N, C, H, W, K, k, stride, (top, bottom), (left, right), dilation, bias)
    (8, 32, 28, 28, 60, 3, 2, (1, 1), (1, 1), 1, True),
    (6, 24, 20, 15, 58, 3, 1, (2, 0), (0, 1), 1, False),
    (9, 20, 15, 15, 121, 5, 1, (2, 2), (2, 2), 1, True),
    (7, 16, 16, 14, 64, 3, 1, (2, 2), (2, 2), 2, False),
    (7, 40, 40, 38, 32, 3, 3, (1, 0), (0, 1), 1, True),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", EAGER_CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_eager_forward_through_columns_matches_torch(case, threads):
    N, C, H, W, K, k, st, pt, pl, d, with_bias = case
    rng = np.random.default_rng(N * 7919 + C * 31 + K + 2)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if with_bias else None
    args = ((st, st), (pt, pl), (d, d), 1)
    plan = _C._conv_auto_plan(list(x.shape), list(w.shape), [st, st], [list(pt), list(pl)], [d, d], 1)
    xt = TF.pad(torch.from_numpy(x).double(), (pl[0], pl[1], pt[0], pt[1]))
    ref = TF.conv2d(xt, torch.from_numpy(w).double(), None if b is None else torch.from_numpy(b).double(),
                    stride=st, dilation=d).numpy()
    if TAKES_TILES:
        assert plan["forward"] == "kvec" and ref.shape[3] < 16 and N * ref.shape[2] * ref.shape[3] >= 1024, plan
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        y = _C.conv_forward(x, w, b, *args)
        y_relu = _C.conv_forward(x, w, b, *args, activation="relu")
        y_gemm = _C.conv_forward(x, w, b, *args, "gemm")
    finally:
        cnnfast.set_num_threads(old)
    assert y.shape == ref.shape
    assert _rel(y, ref) < 2e-6, _rel(y, ref)
    assert _rel(y_relu, np.maximum(ref, 0)) < 2e-6
    np.testing.assert_allclose(y, y_gemm, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.skipif(not TAKES_TILES, reason="the stem kernel and the tiles run at the avx512 level")
@pytest.mark.parametrize("stride, want", [(4, "kvec"), (3, "kvec"), (2, "stem"), (1, "stem")])
def test_big_kernel_stems_take_the_tiles_only_at_strides_3_and_4(stride, want):
    # 11x11 3->96: the tiles at strides 3-4 (full channel lanes against 16-column vectors
    # 86% filled by rows of 55), the stem kernel at 1-2 where it measured ahead.
    plan = _C._conv_auto_plan([1, 3, 227, 227], [96, 3, 11, 11], [stride, stride], [[2, 2], [2, 2]], [1, 1], 1)
    assert plan["forward"] == want, plan
    # ResNet's 7x7/2 stem (147 taps, too few for the tiles) stays on the stem kernel.
    plan = _C._conv_auto_plan([1, 3, 224, 224], [64, 3, 7, 7], [2, 2], [[3, 3], [3, 3]], [1, 1], 1)
    assert plan["forward"] == "stem", plan
