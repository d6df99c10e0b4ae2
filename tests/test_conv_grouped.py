"""Grouped convolutions with 2-16 channels per group (the direct kernels of
conv_grouped.cpp at the avx512 and avx2 levels, im2col + GEMM at scalar) at every SIMD level:
forward, grad_x and grad_w against PyTorch in float64 and against the scalar level, on
widths that leave every tail of the 16-lane column blocks, channel counts that leave
every remainder of the 8/4/2/1 channel blocks, asymmetric padding wider and narrower
than the kernel, dilation and kernels wider than the 3-tap groups of the weight pass; and the ungrouped and
wide-group stride-1 layers the kernel also takes for some passes (dilated, few input
channels)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C
from helpers import assert_close, assert_nontrivial


def _passes(x, w, b, pads, dil, g, stride=(1, 1)):
    y = _C.conv_forward(x, w, b, list(stride), pads, dil, g, "auto")
    gy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    gx, gw, gb = _C.conv_backward(gy, x, w, list(stride), pads, dil, g, algo="auto")
    return gy, [np.array(a) for a in (y, gx, gw, gb)]


def _torch_ref(x, w, b, gy, pads, dil, g, stride=(1, 1)):
    (t, bo), (l, r) = pads
    xt, wt, bt = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w, b))
    y = TF.conv2d(TF.pad(xt, (l, r, t, bo)), wt, bt, stride=stride, dilation=dil, groups=g)
    y.backward(torch.from_numpy(gy.astype(np.float64)))
    return [y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]


def _check(N, Cg, Kg, G, H, W, kh, kw, pads, dil, rng, stride=(1, 1)):
    x = rng.standard_normal((N, Cg * G, H, W)).astype(np.float32)
    w = rng.standard_normal((Kg * G, Cg, kh, kw)).astype(np.float32)
    b = rng.standard_normal(Kg * G).astype(np.float32)
    gy, got = _passes(x, w, b, pads, dil, G, stride)
    ref = _torch_ref(x, w, b, gy, pads, dil, G, stride)
    level = cnnfast.simd_level()
    try:
        cnnfast.set_simd_level("scalar")
        _, scalar = _passes(x, w, b, pads, dil, G, stride)
    finally:
        cnnfast.set_simd_level(level)
    assert_nontrivial(*ref)
    what = f"N={N} Cg={Cg} Kg={Kg} G={G} {H}x{W} k={kh}x{kw} pads={pads} dil={dil} stride={stride} at {level}"
    for name, a, r, sc in zip(("y", "grad_x", "grad_w", "grad_b"), got, ref, scalar):
        tol = 2e-5 * np.sqrt(Cg * kh * kw * max(1, N * H * W if name == "grad_w" else 1))
        assert_close(a, r, rtol=1e-4, atol=tol, what=f"{name} vs torch float64, {what}")
        assert_close(a, sc, rtol=1e-4, atol=tol, what=f"{name} vs scalar, {what}")


def test_grouped_every_row_tail(simd, rng):
    # Widths 1-35: every tail of one and two 16-lane column blocks (and the odd block
    # count the two-block pass rounds up); padding 1 puts masked lanes at both ends.
    for W in range(1, 36):
        _check(1, 3, 5, 2, 3, W, 3, 3, [[1, 1], [1, 1]], [1, 1], rng)


@pytest.mark.parametrize("Cg,Kg", [(2, 1), (4, 4), (8, 8), (5, 13), (16, 16), (16, 15), (3, 7)])
def test_grouped_channel_blocks(Cg, Kg, simd, rng):
    _check(2, Cg, Kg, 3, 7, 19, 3, 3, [[1, 1], [1, 1]], [1, 1], rng)


@pytest.mark.parametrize("kh,kw,pads,dil", [
    (3, 3, [[2, 0], [0, 3]], [2, 2]),   # asymmetric padding, dilation 2
    (5, 5, [[2, 2], [2, 2]], [1, 1]),   # 5 taps along W: a full and a partial group of 3
    (1, 7, [[0, 0], [3, 3]], [1, 1]),   # one tap row, 7 along W
    (3, 2, [[0, 1], [1, 0]], [1, 3]),   # even kernel, dilation only along W
    (3, 3, [[0, 0], [0, 0]], [1, 1]),   # no padding: output narrower than input
    (2, 4, [[3, 3], [5, 4]], [1, 1]),   # padding wider than the kernel reaches
])
def test_grouped_taps_padding_dilation(kh, kw, pads, dil, simd, rng):
    _check(3, 4, 6, 2, 8, 21, kh, kw, pads, dil, rng)


def test_grouped_batch_and_threads(simd, threads, rng):
    # More (image, group) tasks than threads and fewer groups than threads.
    _check(5, 8, 8, 4, 6, 17, 3, 3, [[1, 1], [1, 1]], [1, 1], rng)
    _check(3, 6, 10, 1 + 1, 5, 9, 3, 3, [[1, 1], [1, 1]], [1, 1], rng)
    # One group: grad_w's tasks are blocks of 8 output channels (8, 8, 5).
    _check(2, 3, 21, 1, 5, 19, 5, 5, [[2, 2], [2, 2]], [1, 1], rng)


@pytest.mark.parametrize("N", [1, 3])
def test_dense_output_channel_split(N, simd, threads, rng):
    # Fewer (image, group) plane sets than a multiple of the threads: the threads also
    # split the output channels in blocks of 8 (21 = 8 + 8 + 5), forward and grad_x.
    _check(N, 20, 21, 1, 9, 37, 3, 3, [[2, 1], [2, 3]], [2, 2], rng)
    # The strided forward's stacked column phases, shared by a thread's channel parts.
    _check(N, 3, 19, 1, 23, 79, 11, 11, [[0, 0], [0, 0]], [1, 1], rng, (4, 4))
    _check(N, 5, 13, 1, 13, 53, 3, 3, [[1, 0], [1, 2]], [1, 1], rng, (3, 3))


def test_grouped_threads_give_the_same_bits(rng):
    x = rng.standard_normal((3, 12, 6, 21)).astype(np.float32)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    before = cnnfast.get_num_threads()
    try:
        out = []
        for t in (1, 2):
            cnnfast.set_num_threads(t)
            out.append(_passes(x, w, b, [[1, 1], [1, 1]], [1, 1], 3)[1])
    finally:
        cnnfast.set_num_threads(before)
    for a, c in zip(*out):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("N,Cg,Kg,G,H,W,kh,kw,pads,dil", [
    (2, 20, 19, 1, 9, 37, 3, 3, [[2, 2], [2, 2]], [2, 2]),   # dilated: forward and grad_x direct
    (3, 3, 33, 1, 6, 35, 5, 5, [[2, 1], [0, 2]], [1, 1]),    # 3 input channels: forward and grad_w direct
    (2, 18, 17, 2, 5, 23, 1, 5, [[0, 0], [2, 2]], [1, 1]),   # wide groups, one tap row
    (2, 24, 8, 1, 7, 9, 3, 3, [[1, 1], [1, 1]], [1, 2]),     # under 16 columns: forward stays GEMM
])
def test_dense_stride1_passes(N, Cg, Kg, G, H, W, kh, kw, pads, dil, simd, rng):
    _check(N, Cg, Kg, G, H, W, kh, kw, pads, dil, rng)


@pytest.mark.parametrize("stride,kh,kw,pads,dil", [
    ((2, 2), 3, 3, [[1, 1], [1, 1]], [1, 1]),   # ResNeXt's downsampling 3x3/2
    ((1, 3), 3, 4, [[2, 0], [1, 3]], [2, 1]),   # stride 3 along W only (3 column phases, one with 2 taps)
    ((3, 2), 5, 5, [[0, 1], [2, 2]], [1, 1]),   # stride 3 along H, 5 taps over 2 phases
    ((2, 4), 3, 2, [[1, 1], [0, 0]], [1, 1]),   # more phases than taps: phases 2 and 3 are empty
])
def test_grouped_strided_forward(stride, kh, kw, pads, dil, simd, rng):
    _check(2, 4, 6, 3, 11, 71, kh, kw, pads, dil, rng, stride)


@pytest.mark.parametrize("stride,kh,kw,pads", [
    ((2, 2), 3, 3, [[1, 1], [1, 1]]),   # ResNet's 3x3/2
    ((4, 4), 11, 11, [[0, 0], [0, 0]]), # AlexNet's 11x11/4 (3 input channels)
])
def test_dense_strided_forward(stride, kh, kw, pads, simd, rng):
    _check(2, 3 if kh == 11 else 20, 19, 1, 23, 79, kh, kw, pads, [1, 1], rng, stride)
