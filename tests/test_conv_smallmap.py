"""The weight-streaming small-map passes (csrc/cpu/conv_smallmap.cpp): dense 2-D layers whose
weights outweigh their maps (at most 512 output positions per call) on AVX-512 (at full rate or split),
the forward and grad_w at any stride, grad_x at stride 1. Each case is checked against PyTorch
in float64 from the same float32 inputs and against the im2col + GEMM path; where this CPU
takes these passes, the plan query says so, so the comparison is known to exercise them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C

# The row tiles (conv_kvec_rows.cpp) take some of these layers' forwards and grad_x; off
# here, so that Auto runs, and this file checks, the paths it is about.
pytestmark = pytest.mark.usefixtures("without_row_tiles")

TAKES_PASSES = "avx512" in cnnfast.simd_levels() and cnnfast.simd_level() == "avx512"

# (N, C, H, W, K, (kh, kw), (top, bottom), (left, right), dilation, stride, bias). Tiles of
# 8 rows by 1-3 vectors (1x3 kernels on 2x6 and 4x6 maps, 3x3 on 6x6), 7 by 4 (7x7 maps),
# 4 by 5-7 (8x8 and 12x12, and 14x14 and 20x20 maps cut into blocks of <= 7 vectors); channel counts
# that leave the last tile of rows part-filled (K = 161 = 20 * 8 + 1, 513 = 73 * 7 + 2,
# 250); asymmetric and one-sided padding, a 5x5 kernel, dilation 2, batch 1-4; strides 2
# and 3 (the forward reads phase planes; grad_x keeps its kernels there), an even kernel.
CASES = [
    (1, 512, 7, 7, 513, (3, 3), (1, 1), (1, 1), 1, 1, True),
    (2, 160, 2, 6, 161, (1, 3), (0, 0), (1, 1), 1, 1, False),
    (3, 160, 4, 6, 144, (1, 3), (0, 0), (2, 0), 1, 1, True),
    (2, 96, 6, 6, 130, (3, 3), (1, 1), (1, 1), 1, 1, True),
    (4, 64, 8, 8, 250, (3, 3), (1, 1), (1, 1), 1, 1, False),
    (1, 256, 14, 14, 97, (3, 3), (1, 1), (1, 1), 1, 1, True),
    (1, 112, 20, 20, 67, (3, 3), (2, 0), (1, 1), 1, 1, False),
    (1, 112, 12, 12, 120, (5, 5), (2, 2), (2, 2), 1, 1, True),
    (2, 128, 12, 12, 128, (3, 3), (2, 2), (2, 2), 2, 1, False),
    (1, 160, 14, 14, 128, (3, 3), (1, 1), (1, 1), 1, 2, True),
    (2, 96, 13, 13, 200, (3, 3), (1, 0), (0, 1), 1, 2, False),
    (1, 64, 23, 23, 72, (5, 5), (2, 2), (2, 2), 1, 3, True),
    # low useful shares at few positions: 4x4 maps (half the lanes, 69% live taps), 5x5 on 7x7
    (1, 256, 4, 4, 200, (3, 3), (1, 1), (1, 1), 1, 1, True),
    (2, 256, 7, 7, 96, (5, 5), (2, 2), (2, 2), 1, 1, False),
    (2, 64, 16, 16, 128, (4, 4), (1, 2), (2, 1), 1, 2, False),
]


def _torch_ref(x, w, b, pt, pl, dil, st, gy):
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    yt = TF.conv2d(TF.pad(xt, (pl[0], pl[1], pt[0], pt[1])), wt, None if b is None else torch.from_numpy(b).double(),
                   stride=st, dilation=dil)
    yt.backward(torch.from_numpy(gy).double())
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _rel(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"k{c[5][0]}{c[5][1]}d{c[8]}s{c[9]}")
def test_passes_match_torch(case, threads):
    N, C, H, W, K, (kh, kw), pt, pl, dil, st, with_bias = case
    rng = np.random.default_rng(N * 7919 + C * 31 + K)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if with_bias else None
    pads = (pt, pl)
    args = ((st, st), pads, (dil, dil), 1)
    plan = _C._conv_auto_plan(list(x.shape), list(w.shape), [st, st], [list(pt), list(pl)], [dil, dil], 1)
    if TAKES_PASSES:
        expected = {"forward", "grad_weight"} | ({"grad_input"} if st == 1 else set())
        for key in ("forward", "grad_input", "grad_weight"):
            assert (plan[key] == "smallmap") == (key in expected), (key, plan)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        y = _C.conv_forward(x, w, b, *args)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx, gw, _ = _C.conv_backward(gy, x, w, *args, True, True, False)
        y_gemm = _C.conv_forward(x, w, b, *args, "gemm")
        gx_gemm, gw_gemm, _ = _C.conv_backward(gy, x, w, *args, True, True, False, "gemm")
    finally:
        cnnfast.set_num_threads(old)
    refs = _torch_ref(x, w, b, pt, pl, dil, st, gy)
    # float32 sums over C kh kw (up to 4608) or N Ho Wo terms in one accumulator each
    for name, ours, gemm, ref in zip(("y", "gx", "gw"), (y, gx, gw), (y_gemm, gx_gemm, gw_gemm), refs):
        assert ours.shape == ref.shape, name
        assert _rel(ours, ref) < 2e-6, (name, _rel(ours, ref))
        np.testing.assert_allclose(ours, gemm, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


def test_results_do_not_depend_on_threads():
    # Every output value is one tile's sum in a fixed order, whichever thread runs it.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 256, 7, 7)).astype(np.float32)
    w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 256, 7, 7)).astype(np.float32)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    old = cnnfast.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            cnnfast.set_num_threads(t)
            outs.append((_C.conv_forward(x, w, None, *args),) + _C.conv_backward(gy, x, w, *args, True, True, False)[:2])
    finally:
        cnnfast.set_num_threads(old)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [
    # (x shape, w shape, stride, padding, dilation, groups): one rule each keeps these passes off
    ((4, 256, 14, 14), (256, 256, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),   # 784 positions: Winograd
    ((1, 128, 28, 28), (128, 128, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),   # 784 positions
    ((16, 512, 4, 4), (512, 512, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),    # 35% useful at 256 positions
    ((8, 256, 4, 4), (256, 256, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),     # ... and at 128
    ((1, 512, 7, 7), (512, 512, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),     # 1x1
    ((1, 512, 7, 7), (512, 16, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 32),     # groups
    ((1, 8, 7, 7), (512, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),         # 8 input channels
    ((1, 32, 9, 16), (32, 32, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),       # small weights, rows of 16
])
def test_other_layers_keep_their_kernels(shape):
    x, w, stride, pads, dil, groups = shape
    plan = _C._conv_auto_plan(list(x), list(w), list(stride), [list(p) for p in pads], list(dil), groups)
    assert "smallmap" not in plan.values(), plan


@pytest.mark.skipif(not TAKES_PASSES, reason="these passes need AVX-512 at full rate")
def test_eager_layer_and_autograd_take_them():
    # The module path (conv_forward_fused under autograd) reaches the same passes as the raw calls.
    rng = np.random.default_rng(9)
    conv = cnnfast.nn.Conv2d(384, 256, 3, padding=1)
    ref = torch.nn.Conv2d(384, 256, 3, padding=1).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(conv.weight.detach().numpy()))
        ref.bias.copy_(torch.from_numpy(conv.bias.detach().numpy()))
    x = rng.standard_normal((1, 384, 13, 13)).astype(np.float32)
    xt = torch.from_numpy(x).double().requires_grad_()
    xc = cnnfast.tensor(x, requires_grad=True)
    y = conv(xc)
    y.sum().backward()
    yt = ref(xt)
    yt.sum().backward()
    assert _rel(y.detach().numpy(), yt.detach().numpy()) < 2e-6
    assert _rel(xc.grad.numpy(), xt.grad.numpy()) < 2e-6
    assert _rel(conv.weight.grad.numpy(), ref.weight.grad.numpy()) < 2e-6


def test_transposed_layer_reaches_them():
    # A transposed convolution's grad_x is the strided forward of the convolution it is the
    # adjoint of, and its weight gradient that convolution's grad_w with the roles of x and
    # grad_y swapped: a DCGAN-like 4x4 stride-2 128 -> 256 layer at 7x7 -> 14x14, batch 2.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 128, 7, 7)).astype(np.float32)
    w = rng.standard_normal((128, 256, 4, 4)).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    plan = _C._conv_auto_plan([2, 256, 14, 14], [128, 256, 4, 4], [2, 2], [[1, 1], [1, 1]], [1, 1], 1)
    if TAKES_PASSES:
        assert plan["forward"] == "smallmap" and plan["grad_weight"] == "smallmap", plan
    y = _C.conv_transpose_forward(x, w, b, (2, 2), ((1, 1), (1, 1)), (0, 0), (1, 1), 1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = _C.conv_transpose_backward(gy, x, w, (2, 2), ((1, 1), (1, 1)), (0, 0), (1, 1), 1)
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    yt = TF.conv_transpose2d(xt, wt, torch.from_numpy(b).double(), stride=2, padding=1)
    yt.backward(torch.from_numpy(gy).double())
    assert _rel(y, yt.detach().numpy()) < 2e-6
    assert _rel(gx, xt.grad.numpy()) < 2e-6
    assert _rel(gw, wt.grad.numpy()) < 2e-6


@pytest.mark.skipif(not TAKES_PASSES, reason="these passes need AVX-512 at full rate")
def test_strided_forward_only_at_few_positions():
    # Strided layers pay for their phase planes: the forward takes these passes up to 256
    # output positions per call (batch 4 of a 3x3/2 layer on 14x14), grad_w up to the same
    # limits as stride 1.
    for n, forward in ((4, "smallmap"), (8, "gemm")):
        plan = _C._conv_auto_plan([n, 512, 14, 14], [512, 512, 3, 3], [2, 2], [[1, 1], [1, 1]], [1, 1], 1)
        assert plan["forward"] == forward and plan["grad_weight"] == "smallmap", (n, plan)
