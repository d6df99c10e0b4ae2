"""The row tiles (csrc/cpu/conv_kvec_rows.cpp): dense 2-D forwards with 64 output channels in the
vector lanes by up to 7 positions of one output row, from a zero-bordered image, visiting only the
live taps of each row (and skipping the first and last position's FMAs where their column falls in
the border), with the weights packed per (64-channel block, channel chunk) as the tiles go.

Each case runs with the tiles forced on (where this CPU has them the plan query says "rows", so
the comparison is known to exercise them) against PyTorch in float64 from the same float32 inputs
and against the im2col + GEMM path."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C

TAKES_TILES = "avx512" in cnnfast.simd_levels() and cnnfast.simd_level() == "avx512"


@pytest.fixture
def forced_rows():
    old = _C._set_kvec_rows(1)
    yield
    _C._set_kvec_rows(old)


# (N, C, H, W, K, (kh, kw), (top, bottom), (left, right), dilation, (sh, sw), bias). Output rows of
# 1-7 positions (one tile) and 12, 13, 14, 20 (balanced tiles 6+6, 7+6, 7+7, 7+7+6); 64-channel
# blocks part-filled by every kind of tail (K = 65, 95, 130, 200, 48, 7); channel counts of one
# to several chunks with a part-filled last one (3, 5, 300 at 3x3: chunks of 56); asymmetric,
# one-sided and no padding, padding wider than the kernel reach on one side; 1x3, 2x7, 4x4, 5x5
# kernels; dilation 2; column stride 2 with row strides 1-3; batch 1-3.
CASES = [
    (2, 40, 7, 7, 65, (3, 3), (1, 1), (1, 1), 1, (1, 1), True),
    (1, 300, 5, 5, 130, (3, 3), (1, 1), (1, 1), 1, (1, 1), False),
    (3, 3, 6, 13, 95, (3, 3), (1, 1), (1, 1), 1, (1, 1), True),
    (1, 5, 9, 12, 48, (3, 3), (0, 2), (2, 0), 1, (1, 1), True),
    (2, 17, 14, 14, 200, (3, 3), (1, 1), (1, 1), 1, (2, 2), True),
    (1, 33, 11, 20, 64, (5, 5), (2, 2), (2, 2), 1, (1, 1), False),
    (1, 24, 10, 10, 70, (3, 3), (2, 2), (2, 2), 2, (1, 1), True),
    (2, 9, 8, 31, 80, (2, 7), (1, 0), (3, 2), 1, (1, 1), True),
    (1, 16, 13, 29, 64, (3, 3), (1, 1), (1, 1), 1, (3, 2), False),
    (1, 12, 4, 4, 64, (4, 4), (3, 3), (3, 3), 1, (1, 1), True),
    (2, 20, 1, 9, 66, (1, 3), (0, 0), (1, 1), 1, (1, 1), True),
    (1, 8, 3, 3, 7, (3, 3), (1, 1), (1, 1), 1, (1, 1), True),
    (1, 64, 2, 2, 64, (3, 3), (1, 1), (1, 1), 1, (1, 1), True),
    (2, 32, 15, 6, 64, (3, 3), (1, 1), (0, 0), 1, (2, 2), False),
]


def _ids(c):
    return "x".join(map(str, c[:5])) + f"k{c[5][0]}{c[5][1]}d{c[8]}s{c[9][0]}{c[9][1]}"


def _rel(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def _layer(case, seed, pass_name):
    """x, w, bias (or None) and conv_forward's positional args for a case, after checking that
    the plan names the row tiles for `pass_name` wherever this CPU has them."""
    N, C, H, W, K, (kh, kw), pt, pl, dil, st, with_bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if with_bias else None
    plan = _C._conv_auto_plan(list(x.shape), list(w.shape), list(st), [list(pt), list(pl)], [dil, dil], 1)
    if TAKES_TILES:
        assert plan[pass_name] == "rows", plan
    return x, w, b, (list(st), (pt, pl), (dil, dil), 1), rng


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_matches_torch(case, threads, forced_rows):
    N, C, H, W, K, (kh, kw), pt, pl, dil, st, _ = case
    x, w, b, args, _ = _layer(case, N * 7919 + C * 31 + K, "forward")
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        y = _C.conv_forward(x, w, b, *args)
        y_gemm = _C.conv_forward(x, w, b, *args, "gemm")
    finally:
        cnnfast.set_num_threads(old)
    xt = TF.pad(torch.from_numpy(x).double(), (pl[0], pl[1], pt[0], pt[1]))
    ref = TF.conv2d(xt, torch.from_numpy(w).double(), None if b is None else torch.from_numpy(b).double(),
                    stride=st, dilation=dil).numpy()
    assert y.shape == ref.shape
    # One float32 sum of C kh kw products per output.
    tol = 2e-6 * max(1.0, np.sqrt(C * kh * kw / 9))
    assert _rel(y, ref) < tol, _rel(y, ref)
    assert _rel(y, y_gemm) < 2 * tol


DATA_CASES = [c for c in CASES if c[9] == (1, 1) and max(c[6]) <= c[8] * (c[5][0] - 1) and max(c[7]) <= c[8] * (c[5][1] - 1)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", DATA_CASES, ids=_ids)
def test_grad_input_matches_torch(case, threads, forced_rows):
    # The stride-1 grad_x as the forward of grad_y, the weights rotated and swapped while packed
    # (5x5: 25 taps, two transposes per channel; 4x4: exactly 16; 2x7 and 1x3 asymmetric).
    N, C, H, W, K, (kh, kw), pt, pl, dil, st, _ = case
    x, w, _, args, rng = _layer(case, N * 131 + C * 7 + K, "grad_input")
    y = _C.conv_forward(x, w, None, *args)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        gx = _C.conv_backward(gy, x, w, *args, True, False, False)[0]
    finally:
        cnnfast.set_num_threads(old)
    xt = torch.from_numpy(x).double().requires_grad_()
    yt = TF.conv2d(TF.pad(xt, (pl[0], pl[1], pt[0], pt[1])), torch.from_numpy(w).double(), dilation=dil)
    yt.backward(torch.from_numpy(gy).double())
    tol = 2e-6 * max(1.0, np.sqrt(K * kh * kw / 9))
    assert _rel(gx, xt.grad.numpy()) < tol, _rel(gx, xt.grad.numpy())


def test_grad_input_matches_finite_differences(forced_rows):
    # float64 central differences of sum(y * gy) through the float32 forward's own inputs.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 40, 5, 6)).astype(np.float32)
    w = rng.standard_normal((66, 40, 3, 3)).astype(np.float32)
    args = ([1, 1], ((1, 1), (1, 1)), (1, 1), 1)
    gy = rng.standard_normal((1, 66, 5, 6))
    gx = _C.conv_backward(gy.astype(np.float32), x, w, *args, True, False, False)[0]
    wd = torch.from_numpy(w).double()
    for idx in [(0, 0, 0, 0), (0, 17, 2, 3), (0, 39, 4, 5), (0, 5, 0, 5)]:
        h = 1e-4
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += h
        xm[idx] -= h
        f = [float((TF.conv2d(torch.from_numpy(v), wd, padding=1).numpy() * gy).sum()) for v in (xp, xm)]
        fd = (f[0] - f[1]) / (2 * h)
        assert abs(gx[idx] - fd) <= 1e-4 * max(1.0, abs(fd)), (idx, gx[idx], fd)


@pytest.mark.parametrize("activation", ["relu", "hardswish"])
def test_fused_epilogue_on_the_tiles(forced_rows, activation):
    # The frozen-graph output pass (residual, then the activation) applied per tile as it is stored.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 48, 7, 9)).astype(np.float32)
    w = rng.standard_normal((70, 48, 3, 3)).astype(np.float32) * 0.2
    b = rng.standard_normal(70).astype(np.float32)
    r = rng.standard_normal((2, 70, 7, 9)).astype(np.float32)
    pads = ((1, 1), (1, 1))
    got = _C.conv_forward(x, w, b, [1, 1], pads, [1, 1], 1, residual=r, activation=activation)
    z = TF.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                  padding=1) + torch.from_numpy(r).double()
    ref = (TF.relu(z) if activation == "relu" else TF.hardswish(z)).numpy()
    assert _rel(got, ref) < 1e-5, _rel(got, ref)


def test_default_rule_picks_the_tiles_for_deep_small_maps():
    # ResNet's 512-channel 3x3 at 7x7: the small-map passes at batch 1 (each weight read once
    # beats packing them), the row tiles at batch 8, Winograd at batch 32; never below AVX-512.
    def plan(n):
        return _C._conv_auto_plan([n, 512, 7, 7], [512, 512, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)["forward"]

    if TAKES_TILES:
        assert (plan(1), plan(8), plan(32)) == ("smallmap", "rows", "winograd")
    else:
        assert "rows" not in (plan(1), plan(8), plan(32))


def test_other_simd_levels_never_take_the_tiles(forced_rows):
    old = cnnfast.simd_level()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 40, 7, 7)).astype(np.float32)
    w = rng.standard_normal((64, 40, 3, 3)).astype(np.float32)
    ref = TF.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    try:
        for level in [lv for lv in cnnfast.simd_levels() if lv != "avx512"]:
            cnnfast.set_simd_level(level)
            plan = _C._conv_auto_plan([1, 40, 7, 7], [64, 40, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
            assert plan["forward"] != "rows", (level, plan)
            y = _C.conv_forward(x, w, None, [1, 1], ((1, 1), (1, 1)), [1, 1], 1)
            assert _rel(y, ref) < 1e-5, level
    finally:
        cnnfast.set_simd_level(old)
