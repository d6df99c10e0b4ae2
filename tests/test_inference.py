"""Frozen inference graphs (cnnfast.inference.freeze) and the fused output pass of the
convolution and linear kernels (conv_forward / linear_forward with residual= and
activation=): every fusion pattern against the unfrozen graph, onnxruntime and a NumPy
reference, on odd shapes, at every SIMD level; every cnnfast.models architecture frozen
against eager; bad input."""
import numpy as np
import pytest

import cnnfast
import cnnfast.models as M
import cnnfast.onnx  # noqa: F401
from cnnfast import _C
from cnnfast.inference import FrozenModule, freeze
from helpers import assert_close, assert_nontrivial

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ACTS = {
    "none": lambda v, a, b: v,
    "relu": lambda v, a, b: np.maximum(v, 0),
    "leaky_relu": lambda v, a, b: np.where(v > 0, v, v * a),
    "clip": lambda v, a, b: np.clip(v, a, b),
    "hardsigmoid": lambda v, a, b: np.clip(a * v + b, 0, 1),
    "hardswish": lambda v, a, b: v * np.clip(v / 6 + 0.5, 0, 1),
    "sigmoid": lambda v, a, b: 1 / (1 + np.exp(-v)),
    "silu": lambda v, a, b: v / (1 + np.exp(-v)),
}
PARAMS = {"leaky_relu": (0.13, 0.0), "clip": (-0.5, 1.25), "hardsigmoid": (1 / 6, 0.5)}


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- the kernels' output pass ------------------------------------------------------------

CONV_CASES = [
    # N, C, K, spatial, kernel, stride, padding pairs, dilation, groups
    (1, 3, 5, (13, 11), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),
    (2, 6, 9, (17, 7), (3, 2), (3, 1), [(0, 2), (1, 0)], (2, 1), 3),
    (1, 16, 16, (9, 9), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),      # Winograd-sized
    (3, 8, 8, (10, 10), (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1), 8),      # depthwise
    (1, 7, 31, (5,), (1,), (1,), [(0, 0)], (1,), 1),                      # 1-D, 1x1
    (1, 13, 13, (7, 7), (5, 5), (1, 1), [(2, 2), (2, 2)], (1, 1), 13),    # channel-blocked depthwise
    (1, 8, 8, (40, 35), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 8),     # wide map: plane kernel
    (2, 5, 5, (6, 5), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),       # batched GEMM (small maps)
]

DW_CASES = [
    # N, C, (H, W), kernel, stride, dilation, padding (top, bottom, left, right)
    (1, 13, (7, 7), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
    (3, 17, (11, 6), (3, 3), (3, 2), (2, 1), (0, 2, 1, 3)),
    (1, 16, (1, 1), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (2, 8, (2, 3), (3, 5), (1, 2), (1, 1), (1, 1, 2, 2)),
    (1, 24, (29, 31), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    (1, 9, (37, 41), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (2, 7, (8, 9), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    # AVX-512's 16-channel blocks, unpacked as two groups of 8: a last block with its
    # second group part-filled (29 = 16 + 8 + 5), blocks of exactly one group (40 = 16 + 16 + 8),
    # and a map under 8 positions
    (1, 29, (9, 10), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    (2, 40, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 35, (2, 2), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"N{c[0]}C{c[1]}{c[2]}k{c[3]}s{c[4]}d{c[5]}")
def test_depthwise_forward_matches_torch(simd, case, rng):
    # The channel-blocked depthwise kernel: channel tails (13, 17, 9, 7 channels), maps
    # smaller than a vector, strides, dilation, asymmetric padding; with and without
    # the fused residual + activation.
    N, C, sp, k, stride, dil, p = case
    x, w, b = randn(rng, N, C, *sp), randn(rng, C, 1, *k), randn(rng, C)
    xt = torch.nn.functional.pad(torch.from_numpy(x).double(), (p[2], p[3], p[0], p[1]))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride=stride,
                                     dilation=dil, groups=C).numpy()
    pads = [(p[0], p[1]), (p[2], p[3])]
    got = _C.conv_forward(x, w, b, list(stride), pads, list(dil), C)
    assert_close(got, ref, rtol=1e-5, atol=1e-5, what=f"{simd} depthwise")
    r = randn(rng, *ref.shape)
    got = _C.conv_forward(x, w, b, list(stride), pads, list(dil), C, residual=r, activation="hardswish")
    assert_close(got, ACTS["hardswish"](ref + r, 0, 0), rtol=1e-5, atol=1e-5, what=f"{simd} depthwise fused")


@pytest.mark.parametrize("stride,width", [(1, w) for w in range(12, 34)] + [(2, w) for w in range(28, 50)])
def test_depthwise_rows_forward_fused(simd, width, stride, rng):
    # The row kernels (AVX-512, 12+ output columns; stride 2 on even/odd column phases)
    # with the epilogue applied per plane: every tail of a 16-lane segment (the input
    # width is chosen for `width` output columns, odd or even), every row tail of the
    # 4-row pass, and padding from 0 to k - 1, asymmetric.
    k = 3 if width % 2 else 5
    top, bottom, left, right = [(0, 0, 0, 0), (1, 1, 1, 1), (k - 1, 0, 0, k - 1), (0, k - 1, k - 1, 1)][width % 4]
    N, C, H = 1 + width % 2, 3 + width % 5, k + width % 5 + 4 * (stride - 1)
    in_w = (width - 1) * stride + k - left - right + (width % 3 == 0) * (stride - 1)
    x, w, b = randn(rng, N, C, H, in_w), randn(rng, C, 1, k, k), randn(rng, C)
    xt = torch.nn.functional.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride=stride,
                                     groups=C).numpy()
    assert ref.shape[3] == width
    r = randn(rng, *ref.shape)
    got = _C.conv_forward(x, w, b, [stride, stride], [(top, bottom), (left, right)], [1, 1], C, residual=r,
                          activation="relu")
    assert_nontrivial(ref)
    assert_close(got, np.maximum(ref + r, 0), rtol=1e-5, atol=1e-5, what=f"{simd} width {width}")


STEM_KERNELS = [(3, 3), (5, 5), (7, 7), (3, 5), (2, 3), (11, 11)]
STEM_ACTS = [("relu", 0.0, 0.0), ("clip", 0.0, 6.0), ("silu", 0.0, 0.0), ("hardswish", 0.0, 0.0), ("none", 0.0, 0.0)]


@pytest.mark.parametrize("wo", range(1, 34))
def test_stem_direct_forward_fused(simd, threads, wo, rng):
    # Few input channels (the network stems: AVX-512 direct kernel, conv_stem_avx512.cpp,
    # which takes maps of 16+ columns): every tail length of a row's last 16-lane vector
    # (17..33 columns; 1..16 run the other paths), strides 1 to 4 (2: even/odd column split,
    # 3 and 4 gathered; AlexNet's 11x11/4),
    # padding 0, k // 2 and asymmetric (wider than the kernel's half too), output channels
    # not a multiple of the 8-channel block, output rows split across threads.
    C = 1 + wo % 4
    kh, kw = STEM_KERNELS[wo % len(STEM_KERNELS)]
    stride = 1 + (wo // 2) % 4
    top, bottom, left, right = [(0, 0, 0, 0), (kh // 2, kh // 2, kw // 2, kw // 2), (kh - 1, 0, 1, kw),
                                (0, kh // 2 + 1, kw - 1, 0)][wo % 4]
    N, K, Ho = 1 + 2 * (wo % 3 == 0), [8, 13, 19, 32, 9][wo % 5], 1 + wo % 6
    H = (Ho - 1) * stride + kh - top - bottom
    W = (wo - 1) * stride + kw - left - right
    if H < 1 or W < 1:  # the padding alone would cover the window: one more input row / column
        H, bottom = max(H, 1), bottom + max(0, 1 - H)
        W, right = max(W, 1), right + max(0, 1 - W)
    x, w, b = randn(rng, N, C, H, W), randn(rng, K, C, kh, kw), randn(rng, K)
    xt = torch.nn.functional.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride=stride)
    ref = ref.numpy()
    assert ref.shape[3] == wo
    assert_nontrivial(ref)
    act, a, bb = STEM_ACTS[wo % len(STEM_ACTS)]
    r = randn(rng, *ref.shape)
    pads = [(top, bottom), (left, right)]
    packed = _C.ConvPacked(w, 1)
    tol = 1e-5 * max(1.0, C * kh * kw / 100)  # float32 sums of up to 484 taps (11x11, 4 channels)
    for res in (None, r):
        got = _C.conv_forward(x, w, b, [stride, stride], pads, [1, 1], 1, residual=res, activation=act, alpha=a,
                              beta=bb, packed=packed)
        want = ACTS[act](ref + (0 if res is None else res), a, bb)
        assert_close(got, want, rtol=1e-5, atol=tol, what=f"{simd} wo {wo} residual {res is not None}")
    # Unpacked (eager) calls take the same kernel.
    got = _C.conv_forward(x, w, b, [stride, stride], pads, [1, 1], 1)
    assert_close(got, ref, rtol=1e-5, atol=tol, what=f"{simd} wo {wo} plain")


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"N{c[0]}C{c[1]}K{c[2]}s{c[3]}")
@pytest.mark.parametrize("with_residual", [False, True])
def test_conv_epilogue_matches_reference(simd, act, case, with_residual, rng):
    N, C, K, sp, k, stride, pads, dil, g = case
    x = randn(rng, N, C, *sp)
    w = randn(rng, K, C // g, *k)
    b = randn(rng, K)
    plain = _C.conv_forward(x, w, b, list(stride), pads, list(dil), g)
    r = randn(rng, *plain.shape) if with_residual else None
    a, bb = PARAMS.get(act, (0.0, 0.0))
    got = _C.conv_forward(x, w, b, list(stride), pads, list(dil), g, residual=r, activation=act, alpha=a, beta=bb)
    pre = plain.astype(np.float64) + (0 if r is None else r)
    assert_close(got, ACTS[act](pre, a, bb), rtol=2e-6, atol=2e-6, what=f"{simd} {act}")


PACKED_CASES = [
    # N, C, K, spatial, kernel, stride, padding pairs, dilation, groups
    (1, 16, 72, (7, 9), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),     # batch 1: output-channel split
    (1, 160, 136, (7, 7), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),   # pointwise, 7x7 map
    (3, 6, 9, (17, 13), (3, 2), (3, 1), [(0, 2), (1, 0)], (2, 1), 3),     # groups, stride 3, dilation 2
    (2, 64, 67, (9, 9), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),     # batched small maps: not packed
    (1, 8, 40, (3, 3), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),      # tiny map: tap path
    (1, 7, 33, (29,), (5,), (2,), [(2, 1)], (1,), 1),                     # 1-D
    (1, 256, 64, (14, 14), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),  # Winograd-sized, batch 1 -> GEMM
    (1, 5, 13, (11, 8), (3, 3), (2, 2), [(0, 2), (1, 0)], (1, 1), 1),     # stride 2, asymmetric padding
    (3, 17, 29, (6, 7), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),     # batch 3, im2col per image
    (2, 19, 23, (7, 7), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),     # 49 = 48 + 1 (matrix-vector)
    (1, 37, 19, (7, 7), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),     # 333 rows of im2col: two slices
    # weights past 1 MiB stream from memory with the next panel slice prefetched, and the
    # 49th position rides in a masked vector instead of a second pass over the weights:
    (1, 131, 229, (7, 7), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),   # deep: 1179 rows, 5 slices
    (1, 251, 1051, (7, 7), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),  # one slice, panel after panel
    (1, 67, 523, (9, 9), (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1), 1),    # stride 2, 25 positions
    # batch-1 im2col by whole channels (conv_im2col_avx512.cpp): column phases at stride 2
    # and 3, rows of two vectors, a final row that may not spill past the matrix's row
    (1, 37, 29, (15, 13), (1, 1), (2, 2), [(0, 0), (0, 0)], (1, 1), 1),   # 1x1 stride 2
    (1, 24, 40, (40, 40), (1, 1), (2, 2), [(0, 0), (0, 0)], (1, 1), 1),   # 20 columns a row, 400 = 25 x 16
    (1, 7, 40, (41, 39), (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1), 1),    # 21 x 20 outputs
    (1, 19, 23, (20, 17), (3, 3), (3, 3), [(2, 0), (1, 3)], (2, 2), 1),   # stride 3, dilation 2
    (1, 20, 31, (19, 23), (2, 4), (2, 2), [(0, 1), (2, 1)], (1, 3), 1),   # even kernel, dilated columns
    (1, 33, 18, (16, 16), (5, 5), (1, 1), [(2, 2), (2, 2)], (1, 1), 1),   # 256 outputs, no spare column
    # channel-vector tiles (conv_kvec_avx512.cpp): 32 output channels by up to 14 positions,
    # the last block part-filled, tiles of 1-14 positions, deep layers in slices of 256 rows
    (1, 100, 28, (3, 4), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),    # 12 positions, 900 rows
    (1, 128, 120, (1, 2), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),   # 2 positions, 24-row block
    (3, 96, 64, (7, 7), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),     # batch 3, straight from x
    (1, 200, 60, (20, 20), (1, 1), (1, 1), [(0, 0), (0, 0)], (1, 1), 1),  # 400 positions, 29 tiles
    (1, 300, 32, (9, 9), (3, 3), (2, 2), [(1, 0), (0, 1)], (1, 1), 1),    # 2700 rows: 11 slices
    # Winograd layers (>= 512 output positions over the batch) on the pack's transformed weights
    (2, 16, 24, (17, 19), (3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),
    (4, 32, 48, (12, 13), (3, 3), (1, 1), [(0, 2), (1, 1)], (1, 1), 2),   # groups, asymmetric padding
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", PACKED_CASES, ids=lambda c: f"N{c[0]}C{c[1]}K{c[2]}s{c[3]}g{c[8]}")
def test_prepacked_conv_matches_torch(simd, case, threads, rng):
    # At avx512 dense layers up to 1024 output positions take the panel kernel
    # (conv_panels_avx512.cpp) through im2col, deeper than 256 rows in slices; at avx2
    # (conv_panels_avx2.cpp) those at batch 1 that the packed GEMM declines (7x7 maps).
    N, C, K, sp, k, stride, pads, dil, g = case
    x, w, b = randn(rng, N, C, *sp), randn(rng, K, C // g, *k), randn(rng, K)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[len(sp)]
    flat = [v for pair in reversed(pads) for v in pair]
    xt = torch.nn.functional.pad(torch.from_numpy(x).double(), flat)
    ref = conv(xt, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride=stride, dilation=dil,
               groups=g).numpy()
    r = randn(rng, *ref.shape)
    packed = _C.ConvPacked(w, g)
    assert packed.shape == (K, C // g, int(np.prod(k)), g)
    old = cnnfast.get_num_threads()
    cnnfast.set_num_threads(threads)
    try:
        got = _C.conv_forward(x, w, b, list(stride), pads, list(dil), g, packed=packed)
        fused = _C.conv_forward(x, w, b, list(stride), pads, list(dil), g, packed=packed, residual=r,
                                activation="leaky_relu", alpha=0.13)
    finally:
        cnnfast.set_num_threads(old)
    scale = np.abs(ref).max()
    assert_close(got, ref, rtol=1e-5, atol=1e-5 * scale, what=f"{simd} packed")
    assert_close(fused, ACTS["leaky_relu"](ref + r, 0.13, 0), rtol=1e-5, atol=1e-5 * scale, what=f"{simd} packed fused")


def test_prepacked_winograd_across_thread_counts(simd, rng):
    # The pack keeps Winograd weights for one split of the output channels; a call with
    # another thread count (another split) must rebuild them, not reuse the old blocks.
    x, w, b = randn(rng, 1, 32, 28, 28), randn(rng, 96, 32, 3, 3), randn(rng, 96)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), padding=1).numpy()
    packed = _C.ConvPacked(w, 1)
    old = cnnfast.get_num_threads()
    try:
        for threads in (2, 1, 2):
            cnnfast.set_num_threads(threads)
            got = _C.conv_forward(x, w, b, [1, 1], [(1, 1), (1, 1)], [1, 1], 1, packed=packed, activation="relu")
            assert_close(got, np.maximum(ref, 0), rtol=1e-5, atol=1e-5 * np.abs(ref).max(), what=f"{threads} threads")
    finally:
        cnnfast.set_num_threads(old)


POINTWISE_CASES = [
    # N, C, K, spatial: the AVX-512 1x1 kernel's row panels (6 channels) and 16-lane column
    # vectors (four to a tile, the last masked) at their edges
    (1, 13, 31, (7, 7)),        # 49 positions: 48 in one tile, the last by the matrix-vector kernel
    (3, 1, 5, (11, 13)),        # one input channel, fewer rows than a panel, 143 = 2 tiles + 15
    (1, 67, 97, (1, 17)),       # 17 positions: one vector and the matrix-vector kernel
    (2, 16, 96, (16, 4)),       # exactly one full tile per image
    (1, 160, 137, (14, 14)),    # several panels per task, 196 positions
    (1, 3, 7, (5,)),            # 1-D
    (1, 29, 6, (1, 1)),         # one position (not the matrix-vector path: K > 1 but a 1x1 map)
    (2, 5, 11, (3, 6)),         # 18 = 16 + 2: the last two positions by the matrix-vector kernel
    (1, 300, 13, (5, 7)),       # deeper than one 256-row slice: y accumulated between slices
    # the AVX2 tile's 16-position strips (two vectors of 8): a last strip of exactly 8, and of 9
    (1, 11, 19, (4, 6)),        # 24 = 16 + 8
    (2, 9, 14, (5, 5)),         # 25 = 16 + 9
]


@pytest.mark.parametrize("case", POINTWISE_CASES, ids=lambda c: f"N{c[0]}C{c[1]}K{c[2]}{c[3]}")
@pytest.mark.parametrize("act", sorted(ACTS))
def test_prepacked_pointwise_every_activation(simd, threads, case, act, rng):
    # 1x1 convolutions with packed weights: at avx512 and avx2 the in-register-epilogue
    # kernels (conv_panels_avx512.cpp, conv_panels_avx2.cpp), at scalar the GEMM; with and
    # without bias and residual.
    N, C, K, sp = case
    x, w, b = randn(rng, N, C, *sp), randn(rng, K, C, *(1,) * len(sp)), randn(rng, K)
    ref = np.einsum("kc,nc...->nk...", w.reshape(K, C).astype(np.float64), x.astype(np.float64))
    r = randn(rng, *ref.shape)
    a, bb = PARAMS.get(act, (0.0, 0.0))
    packed = _C.ConvPacked(w, 1)
    one, zero = [1] * len(sp), [(0, 0)] * len(sp)
    scale = np.abs(ref).max() + np.abs(b).max() + 1
    for bias in (b, None):
        for res in (None, r):
            got = _C.conv_forward(x, w, bias, one, zero, one, 1, packed=packed, residual=res, activation=act,
                                  alpha=a, beta=bb)
            pre = ref + (0 if bias is None else b.reshape((K,) + (1,) * len(sp))) + (0 if res is None else res)
            assert_close(got, ACTS[act](pre, a, bb), rtol=1e-5, atol=1e-5 * scale,
                         what=f"{simd} pointwise {act} bias={bias is not None} residual={res is not None}")


@pytest.mark.parametrize("rows", [1, 2, 4, 5])
@pytest.mark.parametrize("k,out", [(1, 3), (7, 13), (13, 5), (1281, 37)])
def test_small_batch_linear_and_1x1_map_conv(simd, rows, k, out, rng):
    # Up to four rows take the matrix-vector kernel (a batch-1 Linear, a squeeze-and-
    # excitation 1x1 convolution); five go back to the GEMM. K tails 1, 7, 13, 1281.
    x, w, b = randn(rng, rows, k), randn(rng, out, k), randn(rng, out)
    pre = x.astype(np.float64) @ w.T.astype(np.float64) + b
    scale = np.abs(pre).max()
    got = _C.linear_forward(x, w, b, activation="relu")
    assert_close(got, np.maximum(pre, 0), rtol=1e-5, atol=1e-5 * scale, what=f"{simd} linear")
    r = randn(rng, rows, out, 1, 1)
    got = _C.conv_forward(x.reshape(rows, k, 1, 1), w.reshape(out, k, 1, 1), b, [1, 1], [(0, 0), (0, 0)], [1, 1], 1,
                          residual=r, activation="silu")
    want = ACTS["silu"](pre + r.reshape(rows, out), 0, 0)
    assert_close(got.reshape(rows, out), want, rtol=1e-5, atol=1e-5 * scale, what=f"{simd} 1x1 conv on 1x1")


def test_conv_forward_into_out(rng):
    # out=: the frozen graphs' buffer reuse; written whole (stale values must not leak into
    # y), returned as the very same array, and checked like any output.
    x, w, b = randn(rng, 2, 5, 9, 7), randn(rng, 6, 5, 3, 3), randn(rng, 6)
    args = (x, w, b, [1, 1], [(1, 1), (1, 1)], [1, 1], 1)
    want = _C.conv_forward(*args)
    for packed in (None, _C.ConvPacked(w, 1)):
        out = np.full(want.shape, np.nan, np.float32)
        got = _C.conv_forward(*args, packed=packed, out=out)
        assert got is out
        assert_close(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())  # packed may take another kernel
    with pytest.raises(ValueError, match="out"):
        _C.conv_forward(*args, out=np.empty((2, 6, 9, 6), np.float32))
    with pytest.raises(TypeError, match="out"):
        _C.conv_forward(*args, out=np.empty(want.shape, np.float64))
    with pytest.raises(ValueError, match="out"):
        _C.conv_forward(*args, out=np.empty(want.shape[::-1], np.float32).T)
    ro = np.empty(want.shape, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        _C.conv_forward(*args, out=ro)
    # A 1x1 layer's output the size of its input: out may not be x itself.
    x1, w1 = randn(rng, 1, 4, 5, 5), randn(rng, 4, 4, 1, 1)
    with pytest.raises(ValueError, match="overlap"):
        _C.conv_forward(x1, w1, None, [1, 1], [(0, 0), (0, 0)], [1, 1], 1, out=x1)


def test_prepack_bad_input(rng):
    w = randn(rng, 8, 4, 3, 3)
    x = randn(rng, 1, 4, 6, 6)
    args = (x, w, None, [1, 1], [(1, 1), (1, 1)], [1, 1], 1)
    with pytest.raises(TypeError, match="packed: expected a ConvPacked"):
        _C.conv_forward(*args, packed=w)
    with pytest.raises(ValueError, match="packed: packed for another weight shape"):
        _C.conv_forward(*args, packed=_C.ConvPacked(randn(rng, 8, 2, 3, 3), 2))
    with pytest.raises(TypeError, match="float32"):
        _C.ConvPacked(w.astype(np.float64))
    with pytest.raises(ValueError, match="groups"):
        _C.ConvPacked(w, 3)
    with pytest.raises(ValueError, match="weight"):
        _C.ConvPacked(randn(rng, 8, 4))
    # A float64 call ignores nothing silently: the packed float32 weights are simply not used.
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    got = _C.conv_forward(x64, w64, None, [1, 1], [(1, 1), (1, 1)], [1, 1], 1, packed=_C.ConvPacked(w))
    assert_close(got, _C.conv_forward(x64, w64, None, [1, 1], [(1, 1), (1, 1)], [1, 1], 1), rtol=0, atol=0)


@pytest.mark.parametrize("act", sorted(ACTS))
def test_linear_epilogue_every_tail_length(simd, act, rng):
    # Row lengths 1..31 put every possible remainder after the vector body.
    a, bb = PARAMS.get(act, (0.0, 0.0))
    for out in range(1, 32):
        x, w, b = randn(rng, 3, 5), randn(rng, out, 5), randn(rng, out)
        r = randn(rng, 3, out)
        plain = _C.linear_forward(x, w, b)
        got = _C.linear_forward(x, w, b, residual=r, activation=act, alpha=a, beta=bb)
        assert_close(got, ACTS[act](plain.astype(np.float64) + r, a, bb), rtol=2e-6, atol=2e-6,
                     what=f"{simd} {act} out={out}")


def test_epilogue_float64_and_large(rng):
    x, w, b = randn(rng, 2, 4, 40, 41, dtype=np.float64), randn(rng, 6, 4, 3, 3, dtype=np.float64), None
    plain = _C.conv_forward(x, w, b, [1, 1], [(1, 1), (1, 1)], [1, 1], 1)
    r = randn(rng, *plain.shape, dtype=np.float64)
    got = _C.conv_forward(x, w, b, [1, 1], [(1, 1), (1, 1)], [1, 1], 1, residual=r, activation="silu")
    assert_close(got, ACTS["silu"](plain + r, 0, 0), rtol=1e-12, atol=1e-12)


def test_epilogue_bad_input(rng):
    x, w = randn(rng, 1, 2, 5, 5), randn(rng, 3, 2, 3, 3)
    args = (x, w, None, [1, 1], [(1, 1), (1, 1)], [1, 1], 1)
    with pytest.raises(ValueError, match="activation: expected one of none, relu"):
        _C.conv_forward(*args, activation="gelu")
    with pytest.raises(ValueError, match="residual"):
        _C.conv_forward(*args, residual=randn(rng, 1, 3, 5, 4))
    with pytest.raises(TypeError, match="residual"):
        _C.conv_forward(*args, residual=randn(rng, 1, 3, 5, 5, dtype=np.float64))
    with pytest.raises(TypeError, match="residual: expected a NumPy array or None"):
        _C.conv_forward(*args, residual=[1.0])
    ro = randn(rng, 1, 3, 5, 5)
    ro.flags.writeable = False  # the residual is only read: a read-only array is fine
    _C.conv_forward(*args, residual=ro)
    with pytest.raises(ValueError, match="residual"):
        _C.conv_forward(*args, residual=np.asfortranarray(randn(rng, 1, 3, 5, 5)))
    with pytest.raises(ValueError, match="residual"):
        _C.linear_forward(randn(rng, 2, 3), randn(rng, 4, 3), None, residual=randn(rng, 2, 3))


# ---- fusion patterns, on hand-built ONNX graphs -------------------------------------------

def _graph(nodes, inits, x_shape, out_name="y", out_rank=None):
    dims = [f"d{i}" for i in range(len(x_shape) if out_rank is None else out_rank)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, dims)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _bn_inits(rng, prefix, c):
    return {f"{prefix}_s": rng.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}_b": randn(rng, c),
            f"{prefix}_m": randn(rng, c), f"{prefix}_v": rng.uniform(0.5, 2.0, c).astype(np.float32)}


def _bn(prefix, x, y):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
                            [y], epsilon=1e-3)


def _act_nodes(act, x, y):
    if act == "relu":
        return [helper.make_node("Relu", [x], [y])], {}
    if act == "leaky_relu":
        return [helper.make_node("LeakyRelu", [x], [y], alpha=0.13)], {}
    if act == "relu6":
        return [helper.make_node("Clip", [x, "lo", "hi"], [y])], {"lo": np.float32(0), "hi": np.float32(6)}
    if act == "hardsigmoid":
        return [helper.make_node("HardSigmoid", [x], [y], alpha=1 / 6, beta=0.5)], {}
    if act == "hardswish":
        return [helper.make_node("HardSwish", [x], [y])], {}
    if act == "sigmoid":
        return [helper.make_node("Sigmoid", [x], [y])], {}
    if act == "silu":
        return [helper.make_node("Sigmoid", [x], [x + "_sig"]), helper.make_node("Mul", [x, x + "_sig"], [y])], {}
    raise AssertionError(act)


def _check_frozen(model_proto, x, expect):
    ref = cnnfast.onnx.load(model_proto)
    frozen = freeze(ref, x)
    with cnnfast.no_grad():
        want = ref(x).numpy()
    got = frozen(x).numpy()
    assert np.abs(want).max() > 0
    assert_close(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), what="frozen vs graph")
    sess = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(got, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4 * np.abs(want).max(), what="vs onnxruntime")
    for key, count in expect.items():
        assert frozen.fusions[key] == count, (key, frozen.fusions)
    return frozen


def _plan_model(rng):
    # Convolutions of one shape whose outputs are read again steps later (r1 by the fused
    # residual of c3, c2 by that of c5: a buffer handed on too soon would change them), a
    # Concat the plan runs through its general converter, a Flatten view of a convolution's
    # output among the graph's outputs (it must reach the caller as an array the next call
    # does not overwrite), and GlobalAveragePool -> Flatten -> Gemm.
    inits = {f"w{i}": randn(rng, 4, 4, 3, 3) * 0.3 for i in (1, 2, 3, 5)}
    inits["w6"] = randn(rng, 4, 8, 3, 3) * 0.3
    inits["g"] = randn(rng, 5, 4)
    conv = lambda i, o, w: helper.make_node("Conv", [i, w], [o], pads=[1, 1, 1, 1])  # noqa: E731
    nodes = [conv("x", "c1", "w1"), helper.make_node("Relu", ["c1"], ["r1"]), conv("r1", "c2", "w2"),
             conv("c2", "c3", "w3"), helper.make_node("Add", ["c3", "r1"], ["s"]), conv("s", "c5", "w5"),
             helper.make_node("Add", ["c5", "c2"], ["t"]), helper.make_node("Concat", ["t", "s"], ["cat"], axis=1),
             conv("cat", "c6", "w6"), helper.make_node("GlobalAveragePool", ["c6"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
             helper.make_node("Flatten", ["c6"], ["v"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "d"]) for n in ("y", "v")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 9, 9])], outs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_plan_replay_matches_the_graph_and_owns_nothing_it_returns(rng):
    ref = cnnfast.onnx.load(_plan_model(rng))
    x1, x2, x3 = randn(rng, 1, 4, 9, 9), randn(rng, 1, 4, 9, 9), randn(rng, 3, 4, 9, 9)
    frozen = freeze(ref, x1)
    assert len(frozen._plans) == 1  # made by freeze's check call

    def want(x):
        with cnnfast.no_grad():
            return [t.numpy().copy() for t in ref(x)]

    first = [t.numpy() for t in frozen(x1)]
    second = [t.numpy() for t in frozen(x2)]
    for got, exp in ((first, want(x1)), (second, want(x2))):
        for g, e in zip(got, exp):
            assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), what="plan vs graph")
    # Another batch size: another plan, the first kept.
    third = [t.numpy() for t in frozen(x3)]
    assert len(frozen._plans) == 2
    for g, e in zip(third, want(x3)):
        assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), what="second plan")
    # A call while the plan is busy (another thread) takes the general executor.
    plan = next(iter(frozen._plans.values()))
    with plan.lock:
        busy = [t.numpy() for t in frozen(x2)]
    for g, e in zip(busy, want(x2)):
        assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), what="busy plan")


def test_plan_reuses_freed_buffers_across_shapes(rng):
    # A chain whose convolution outputs change shape (channels 4 -> 12 -> 3 -> 9 -> 12 -> 2,
    # then a stride-2 layer): a later output takes a block an earlier one of another shape
    # freed (c4 that of c1), and the residual read four steps on (r0 into c3's output) must
    # still see its own values.
    shapes = [(12, 4), (3, 12), (9, 3), (12, 9), (2, 12), (5, 2)]
    inits = {f"w{i}": randn(rng, o, c, 3, 3) * 0.3 for i, (o, c) in enumerate(shapes)}
    conv = lambda i, o, w, s=1: helper.make_node("Conv", [i, w], [o], pads=[1, 1, 1, 1], strides=[s, s])  # noqa: E731
    nodes = [conv("x", "c0", "w0"), helper.make_node("Relu", ["c0"], ["r0"]), conv("r0", "c1", "w1"),
             conv("c1", "c2", "w2"), conv("c2", "c3", "w3"), helper.make_node("Add", ["c3", "r0"], ["s"]),
             conv("s", "c4", "w4"), conv("c4", "y", "w5", 2)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 11, 11])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, 6, 6])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    ref = cnnfast.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x1, x2 = randn(rng, 2, 4, 11, 11), randn(rng, 2, 4, 11, 11)
    frozen = freeze(ref, x1)
    plan = next(iter(frozen._plans.values()))
    planned = [step[4] for step in plan._steps if step[4] is not None]
    starts = {b.__array_interface__["data"][0] for b in planned}
    assert len(planned) >= 3 and len(starts) < len(planned), "a freed block is taken by a later output"
    assert len({b.shape for b in planned}) >= 3
    for x in (x1, x2, x1):
        with cnnfast.no_grad():
            want = ref(x).numpy()
        assert_close(frozen(x).numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), what="plan vs graph")


@pytest.mark.parametrize("shape,axis", [((2, 5, 3, 4), 1), ((2, 5, 3, 4), 0), ((2, 5, 3, 4), 3), ((2, 5, 3, 4), 4),
                                        ((2, 5, 3, 4), -2), ((3, 6, 7), 1), ((1, 4, 2, 3, 2), 2)])
def test_frozen_global_pool_and_flatten(shape, axis, rng):
    # Frozen graphs run GlobalAveragePool on NCHW and Flatten straight on the arrays; other
    # ranks and negative axes go through the ONNX converters. Both must agree with the graph.
    x = randn(rng, *shape)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Add", ["p", "r"], ["s"]), helper.make_node("Flatten", ["s"], ["y"], axis=axis)]
    _check_frozen(_graph(nodes, {}, x.shape, out_rank=2), x, {})


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "relu6", "hardsigmoid", "hardswish", "sigmoid", "silu"])
@pytest.mark.parametrize("residual", [False, True])
def test_conv_bn_residual_activation_fuse(act, residual, rng):
    x = randn(rng, 1, 5, 11, 13)
    inits = {"w": randn(rng, 5, 5, 3, 3), "cb": randn(rng, 5), **_bn_inits(rng, "bn", 5)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]), _bn("bn", "c", "n")]
    last = "n"
    if residual:
        nodes.append(helper.make_node("Add", ["x", "n"], ["s"]))
        last = "s"
    more, consts = _act_nodes(act, last, "y")
    inits.update(consts)
    frozen = _check_frozen(_graph(nodes + more, inits, x.shape), x,
                           {"fused_convs": 1, "bn_folded": 1, "residuals_fused": int(residual),
                            "activations_fused": 1})
    assert frozen.op_counts() == {"FusedConv": 1}


def test_resnet_block_with_downsample_branch(rng):
    # The residual (a strided 1x1 branch) is computed after the main branch's last
    # convolution in node order: the fused node must run where the Add was.
    x = randn(rng, 2, 4, 9, 9)
    inits = {"w1": randn(rng, 8, 4, 3, 3), "w2": randn(rng, 8, 8, 3, 3), "wd": randn(rng, 8, 4, 1, 1),
             **_bn_inits(rng, "b1", 8), **_bn_inits(rng, "b2", 8), **_bn_inits(rng, "bd", 8)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]), _bn("b1", "c1", "n1"),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), _bn("b2", "c2", "n2"),
             helper.make_node("Conv", ["x", "wd"], ["cd"], strides=[2, 2]), _bn("bd", "cd", "nd"),
             helper.make_node("Add", ["n2", "nd"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    _check_frozen(_graph(nodes, inits, x.shape), x,
                  {"fused_convs": 3, "bn_folded": 3, "residuals_fused": 1, "activations_fused": 2})


def test_gemm_bn_relu_fuse_and_plain_gemm_runs_fused(rng):
    # The plain Linear at the end (no bias, nothing to fold) runs as a FusedGemm as well;
    # a Gemm with alpha != 1 keeps the converter.
    x = randn(rng, 3, 7)
    inits = {"w": randn(rng, 6, 7), "b": randn(rng, 6), **_bn_inits(rng, "bn", 6), "w2": randn(rng, 4, 6),
             "w3": randn(rng, 5, 4)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1), _bn("bn", "g", "n"),
             helper.make_node("Relu", ["n"], ["r"]), helper.make_node("Gemm", ["r", "w2"], ["q"], transB=1),
             helper.make_node("Gemm", ["q", "w3"], ["y"], transB=1, alpha=0.5)]
    frozen = _check_frozen(_graph(nodes, inits, x.shape), x, {"fused_gemms": 2, "bn_folded": 1})
    assert frozen.op_counts() == {"FusedGemm": 2, "Gemm": 1}


def test_values_read_twice_are_not_fused_away(rng):
    # conv output feeds the BN and is also a second graph output path: no BN folding;
    # the activation output is read twice: no activation fusion either.
    x = randn(rng, 1, 3, 8, 8)
    inits = {"w": randn(rng, 3, 3, 3, 3), **_bn_inits(rng, "bn", 3)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _bn("bn", "c", "n"),
             helper.make_node("Add", ["n", "c"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Mul", ["r", "r"], ["y"])]
    frozen = _check_frozen(_graph(nodes, inits, x.shape), x, {"bn_folded": 0, "activations_fused": 0})
    assert "BatchNormalization" in frozen.op_counts()


def test_weights_behind_identity_nodes_fuse(rng):
    # torch.onnx.export shares equal initializers through Identity nodes (MobileNet's
    # zero biases); the convolution still has constant weights and must fuse.
    x = randn(rng, 1, 3, 7, 5)
    inits = {"w": randn(rng, 3, 1, 3, 3), "b": randn(rng, 3), "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Identity", ["w"], ["w_i"]), helper.make_node("Identity", ["b"], ["b_i"]),
             helper.make_node("Identity", ["b"], ["b_j"]),
             helper.make_node("Conv", ["x", "w_i", "b_i"], ["c"], pads=[1, 0, 1, 2], group=3),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
             helper.make_node("Conv", ["r", "w_i", "b_j"], ["c2"], pads=[1, 1, 1, 1], group=3),
             helper.make_node("Add", ["c2", "r"], ["y"])]
    frozen = _check_frozen(_graph(nodes, inits, x.shape), x,
                           {"fused_convs": 2, "residuals_fused": 1, "activations_fused": 1})
    assert frozen.op_counts() == {"FusedConv": 2}


def _se_graph(rng, c, r, act1, act2, bias, pool_of="d"):
    inits = {"w": randn(rng, c, 1, 3, 3), "w1": randn(rng, r, c, 1, 1), "w2": randn(rng, c, r, 1, 1)}
    b1, b2 = ("b1", "b2") if bias else ("", "")
    if bias:
        inits.update(b1=randn(rng, r), b2=randn(rng, c))
    nodes = [helper.make_node("Conv", ["x", "w"], ["d"], pads=[1, 1, 1, 1], group=c),
             helper.make_node("GlobalAveragePool", [pool_of], ["p"]),
             helper.make_node("Conv", ["p", "w1", b1], ["h0"])]
    more, consts = _act_nodes(act1, "h0", "h")
    nodes += more
    inits.update(consts)
    nodes.append(helper.make_node("Conv", ["h", "w2", b2], ["s0"]))
    more, consts = _act_nodes(act2, "s0", "s")
    nodes += more
    inits.update(consts)
    nodes.append(helper.make_node("Mul", ["s", "d"], ["y"]))
    return nodes, inits


@pytest.mark.parametrize("act1,act2,bias,n", [("silu", "sigmoid", True, 1), ("relu", "hardsigmoid", False, 3),
                                              ("relu", "sigmoid", True, 5)])
def test_squeeze_excite_fuses(act1, act2, bias, n, rng):
    # EfficientNet's (SiLU, sigmoid) and MobileNet-V3's (ReLU, hard sigmoid) blocks, 13
    # channels squeezed to 5, on a 7x9 map; batch 5 takes the GEMM instead of the
    # matrix-vector kernel.
    x = randn(rng, n, 13, 7, 9)
    nodes, inits = _se_graph(rng, 13, 5, act1, act2, bias)
    frozen = _check_frozen(_graph(nodes, inits, x.shape), x, {"squeeze_excite_fused": 1, "fused_convs": 3})
    assert frozen.op_counts() == {"FusedConv": 1, "SqueezeExcite": 1}


def test_squeeze_excite_of_another_tensor_is_not_fused(rng):
    # The pool reads x, the scale multiplies the convolution's output: not an SE block.
    x = randn(rng, 1, 13, 7, 9)
    nodes, inits = _se_graph(rng, 13, 5, "relu", "sigmoid", True, pool_of="x")
    frozen = _check_frozen(_graph(nodes, inits, x.shape), x, {"squeeze_excite_fused": 0})
    assert "GlobalAveragePool" in frozen.op_counts() and "Mul" in frozen.op_counts()


@pytest.mark.parametrize("spatial", [(1, 1), (3, 5), (4, 4), (1, 17), (56, 56)])
def test_squeeze_excite_kernel_matches_numpy(spatial, rng):
    # The pool's sixteen partial sums: planes shorter than, equal to and just past one
    # round of them, and a large one (3136 positions), against float64.
    x = randn(rng, 2, 7, *spatial) + 3  # an offset, so a sloppy running sum would show
    w1, b1, w2, b2 = randn(rng, 3, 7), randn(rng, 3), randn(rng, 7, 3), randn(rng, 7)
    got = _C.squeeze_excite_forward(x, w1, b1, w2, b2, act1="relu", act2="sigmoid")
    x64 = x.astype(np.float64)
    h = np.maximum(x64.mean(axis=(2, 3)) @ w1.T + b1, 0)
    s = 1 / (1 + np.exp(-(h @ w2.T + b2)))
    assert_close(got, x64 * s[:, :, None, None], rtol=1e-5, atol=1e-5, what=f"squeeze-excite {spatial}")


def test_squeeze_excite_kernel_bad_input(rng):
    x = randn(rng, 2, 6, 4, 4)
    w1, w2 = randn(rng, 3, 6), randn(rng, 6, 3)
    with pytest.raises(ValueError, match="w1: expected"):
        _C.squeeze_excite_forward(x, randn(rng, 3, 5), None, w2, None)
    with pytest.raises(ValueError, match="w2: expected"):
        _C.squeeze_excite_forward(x, w1, None, randn(rng, 6, 4), None)
    with pytest.raises(ValueError, match="b1"):
        _C.squeeze_excite_forward(x, w1, randn(rng, 4), w2, None)
    with pytest.raises(ValueError, match="activation"):
        _C.squeeze_excite_forward(x, w1, None, w2, None, act1="tanh")
    with pytest.raises(TypeError):
        _C.squeeze_excite_forward(x.astype(np.float64), w1, None, w2, None)
    with pytest.raises(ValueError, match="x: expected"):
        _C.squeeze_excite_forward(randn(rng, 2, 6), w1, None, w2, None)


def test_unfusable_model_still_runs(rng):
    x = randn(rng, 2, 3, 6, 6)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2]), helper.make_node("Tanh", ["p"], ["y"])]
    frozen = _check_frozen(_graph(nodes, {}, x.shape), x, {"fused_convs": 0})
    assert frozen.op_counts() == {"MaxPool": 1, "Tanh": 1}


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),      # ResNet's stem pool: the kernel
    dict(kernel_shape=[2, 3], strides=[1, 2], ceil_mode=1),             # ceil mode, a partial window
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),      # asymmetric padding: converter
    dict(kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 0, 1, 0]),    # dilated
])
def test_frozen_max_pool(attrs, rng):
    # The frozen MaxPool calls the kernel itself (geometry once per shape) where the window
    # is torch-style, and the converter otherwise; both agree with the graph and onnxruntime,
    # on two input shapes (a plan each).
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], **attrs), helper.make_node("Tanh", ["p"], ["y"])]
    for shape in ((1, 5, 11, 13), (2, 3, 8, 7)):
        _check_frozen(_graph(nodes, {}, shape), randn(rng, *shape), {})


def test_frozen_reuses_buffers_without_touching_held_values(rng):
    # The general executor (a call whose shapes have no plan, or whose plan another thread
    # is running: held here): freed convolution outputs are written again by later
    # convolutions of the same shape (this call's and the next one's); a value the caller
    # still holds (an earlier output) or that another value views must never be one of them.
    cnnfast.manual_seed(0)
    model = M.get_model("resnet18")
    model.eval()
    x1, x2 = randn(rng, 1, 3, 64, 64), randn(rng, 1, 3, 64, 64)
    frozen = freeze(model, x1)
    for plan in frozen._plans.values():
        plan.lock.acquire()
    with cnnfast.no_grad():
        want1, want2 = model(cnnfast.tensor(x1)).numpy(), model(cnnfast.tensor(x2)).numpy()
    y1 = frozen(x1)
    kept = y1.numpy().copy()
    pooled = sum(len(v) for v in frozen._pool._free.values())
    assert pooled >= 2, "a ResNet's chain of equal-shaped convolutions leaves buffers to reuse"
    y2 = frozen(x2)
    ids_before = {id(a) for lst in frozen._pool._free.values() for a in lst}
    y3 = frozen(x1)
    ids_after = {id(a) for lst in frozen._pool._free.values() for a in lst}
    assert ids_before & ids_after, "the second call's buffers are written again by the third"
    np.testing.assert_array_equal(y1.numpy(), kept)  # the caller's earlier output is untouched
    scale = np.abs(want1).max()
    assert_close(y2.numpy(), want2, rtol=1e-4, atol=1e-4 * scale, what="second call")
    assert_close(y3.numpy(), want1, rtol=1e-4, atol=1e-4 * scale, what="third call")
    assert id(y3.numpy()) not in ids_after
    for v in (y1, y2, y3):
        assert all(v.numpy() is not a for lst in frozen._pool._free.values() for a in lst)


def test_pool_refuses_values_still_referenced():
    from cnnfast.inference import _BufferPool

    pool = _BufferPool()
    a = np.empty((2, 3), np.float32)
    pool.own(a)
    t = cnnfast.Tensor._wrap(a)
    view = a[:1]
    del a
    pool.release(t)  # `view` still reads the buffer
    assert pool.take(((2, 3), "f")) is None
    del view
    pool.release(t)
    assert pool.take(((2, 3), "f")) is not None
    b = np.empty((4,), np.float32)  # never given out by the pool: not taken back
    pool.release(cnnfast.Tensor._wrap(b))
    assert pool.take(((4,), "f")) is None
    # A buffer given out and then collected leaves no claim on its id: Python reuses ids,
    # and an unrelated array at the same id must not be taken back (convnext_small's frozen
    # graph once received a Fortran-ordered one as a convolution's out=).
    c = np.empty((6, 5), np.float32)
    pool.own(c)
    gone = id(c)
    del c
    assert gone not in pool._owned
    # Nor is an owned buffer that stopped being writable (the Tensor holds the only
    # reference, as in a graph; the same buffer writable is taken, the control).
    for writeable in (False, True):
        t = cnnfast.Tensor._wrap(np.empty((6, 5), np.float32))
        pool.own(t._array)
        t._array.flags.writeable = writeable
        pool.release(t)
        assert (pool.take(((6, 5), "f")) is not None) == writeable


# ---- whole models -------------------------------------------------------------------------

FAST_MODELS = [("lenet5", (2, 1, 32, 32)), ("resnet18", (1, 3, 64, 64)), ("googlenet", (1, 3, 64, 64)),
               ("densenet121", (1, 3, 64, 64)), ("siamese", (2, 1, 64, 64)), ("unet", (1, 1, 64, 64)),
               ("vgg11_bn", (1, 3, 32, 32)), ("alexnet", (1, 3, 227, 227))]
# regnet_y_128gf (644M parameters, 2.6 GB per copy of its weights) would need several GB more
# for the frozen copy: its structure is regnet_y_32gf's, which stays in.
SLOW_MODELS = [(n, (1,) + M.default_input_shape(n)) for n in M.list_models()
               if n not in dict(FAST_MODELS) and n != "regnet_y_128gf"]


def _freeze_matches_eager(name, shape):
    cnnfast.manual_seed(0)
    model = M.get_model(name)
    model.eval()
    # Non-trivial BatchNorm statistics, so folding them is really checked.
    rng = np.random.default_rng(1)
    for key, value in model.state_dict().items():
        array = value.numpy() if hasattr(value, "numpy") else value  # shares memory with the buffer
        if key.endswith("running_var"):
            array[...] = rng.uniform(0.5, 2.0, value.shape)
        elif key.endswith("running_mean"):
            array[...] = rng.standard_normal(value.shape) * 0.1
    x = rng.standard_normal(shape).astype(np.float32)
    frozen = freeze(model, x)
    assert model.training is False
    with cnnfast.no_grad():
        want = model(cnnfast.tensor(x))
    want = next(iter(want.values())) if isinstance(want, dict) else want
    want = want[0] if isinstance(want, tuple) else want
    got = frozen(x)
    got = got[0] if isinstance(got, tuple) else got
    scale = np.abs(want.numpy()).max()
    assert scale > 0
    assert_close(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5 * scale, what=name)
    # A second input of another batch size runs through the same frozen graph.
    x2 = rng.standard_normal((shape[0] + 1,) + shape[1:]).astype(np.float32)
    with cnnfast.no_grad():
        want2 = model(cnnfast.tensor(x2))
    want2 = next(iter(want2.values())) if isinstance(want2, dict) else want2
    want2 = want2[0] if isinstance(want2, tuple) else want2
    got2 = frozen(x2)
    got2 = got2[0] if isinstance(got2, tuple) else got2
    assert_close(got2.numpy(), want2.numpy(), rtol=1e-5, atol=1e-5 * np.abs(want2.numpy()).max(), what=name)
    return frozen


@pytest.mark.parametrize("name,shape", FAST_MODELS, ids=[n for n, _ in FAST_MODELS])
def test_models_frozen_match_eager(name, shape):
    frozen = _freeze_matches_eager(name, shape)
    assert isinstance(frozen, FrozenModule)


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", SLOW_MODELS, ids=[n for n, _ in SLOW_MODELS])
def test_models_frozen_match_eager_slow(name, shape):
    _freeze_matches_eager(name, shape)


def test_resnet_fuses_every_conv():
    model = M.resnet18()
    model.eval()
    frozen = freeze(model, np.zeros((1, 3, 32, 32), np.float32))
    assert frozen.fusions["fused_convs"] == 20 and frozen.fusions["bn_folded"] == 20
    assert frozen.fusions["residuals_fused"] == 8
    assert "BatchNormalization" not in frozen.op_counts() and "Relu" not in frozen.op_counts()


def test_frozen_bad_input_and_mode_restored(rng):
    model = M.resnet18()
    model.train()
    frozen = freeze(model, randn(rng, 1, 3, 32, 32))
    assert model.training
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        frozen(randn(rng, 3, 32, 32))
    with pytest.raises(TypeError, match="expected dtype float32"):
        frozen(randn(rng, 1, 3, 32, 32, dtype=np.float64))
    with pytest.raises(ValueError, match="dimension 1"):
        frozen(randn(rng, 1, 4, 32, 32))
    with pytest.raises(TypeError, match="expected at most 1 inputs"):
        frozen(randn(rng, 1, 3, 32, 32), randn(rng, 1, 3, 32, 32))
    # A transposed (non-contiguous) input is copied, not refused or misread.
    xt = np.ascontiguousarray(randn(rng, 1, 3, 32, 32).transpose(0, 1, 3, 2))
    xnc = xt.transpose(0, 1, 3, 2)
    assert_close(frozen(xnc).numpy(), frozen(np.ascontiguousarray(xnc)).numpy(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="example_input"):
        freeze(model)


def test_freeze_detects_a_wrong_graph(rng, monkeypatch):
    import cnnfast.inference._fuse as fz

    real = fz._weight_bias

    def broken(node, consts, kind):
        w, b = real(node, consts, kind)
        return w * 1.01, b

    monkeypatch.setattr(fz, "_weight_bias", broken)
    with pytest.raises(RuntimeError, match="differs from the model"):
        freeze(M.resnet18(), randn(rng, 1, 3, 32, 32))


# ---- torchvision architectures, exported by torch.onnx.export ------------------------------

TV_MODELS = ["resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
             "shufflenet_v2_x1_0", "squeezenet1_0", "regnet_y_400mf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_models_frozen_match_torch(name):
    # Random weights with non-trivial BatchNorm statistics, exported in eval mode (BN folded
    # by the exporter, initializers shared through Identity nodes), frozen, and compared
    # with the PyTorch module within 1e-5 of the largest output.
    import io
    import warnings

    import tv_reference

    if tv_reference.load() is None:
        pytest.skip("no torchvision wheel to read the reference models from")
    torch.manual_seed(0)
    net = tv_reference.build(name)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32))
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, x, f, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    frozen = freeze(cnnfast.onnx.load(f.getvalue()), x.numpy())
    assert frozen.fusions["fused_convs"] > 0
    for batch in (x, x[:1]):
        with torch.no_grad():
            want = net(batch).numpy()
        got = frozen(batch.numpy()).numpy()
        assert_close(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), what=name)


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("groups", [1, 11])
def test_epilogue_nan_like_scalar_level(act, groups, rng):
    # The in-register epilogues (panel kernel, channel-blocked depthwise) treat NaN as
    # the scalar epilogue does: the same outputs are NaN at every SIMD level.
    x, w, b = randn(rng, 1, 11, 7, 7), randn(rng, 11, 11 // groups, 1 if groups == 1 else 3, 1 if groups == 1 else 3), \
        randn(rng, 11)
    x[0, 3, 2, 4] = np.nan
    pad = [(0, 0)] * 2 if groups == 1 else [(1, 1)] * 2
    a, bb = PARAMS.get(act, (0.0, 0.0))
    packed = _C.ConvPacked(w, groups) if groups == 1 else None
    before = cnnfast.simd_level()
    outs = {}
    try:
        for level in ("scalar", before):
            cnnfast.set_simd_level(level)
            outs[level] = _C.conv_forward(x, w, b, [1, 1], pad, [1, 1], groups, activation=act, alpha=a, beta=bb,
                                          packed=packed)
    finally:
        cnnfast.set_simd_level(before)
    np.testing.assert_array_equal(np.isnan(outs[before]), np.isnan(outs["scalar"]))
    ok = ~np.isnan(outs["scalar"])
    assert_close(outs[before][ok], outs["scalar"][ok], rtol=1e-5, atol=1e-5, what=f"{act} groups={groups}")


def test_plan_runs_convolutions_in_chains_and_falls_back_per_step(rng):
    # Consecutive float32 convolutions (a residual one among them) run as one
    # FrozenConvChain; the Concat between them splits the chain; a float64 call of the same
    # graph keeps every step in Python. All agree with the graph.
    ref = cnnfast.onnx.load(_plan_model(rng))
    x = randn(rng, 2, 4, 9, 9)
    frozen = freeze(ref, x)
    plan = next(iter(frozen._plans.values()))
    chains = [e[1] for e in plan._program if e[0] is None]
    assert len(chains) >= 2 and sum(len(c) for c in chains) == 5, [len(c) for c in chains]
    with cnnfast.no_grad():
        want = [t.numpy() for t in ref(x)]
    for g, e in zip((t.numpy() for t in frozen(x)), want):
        assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), what="chained plan")


def test_frozen_conv_chain_checks_its_steps_and_inputs(rng):
    w = randn(rng, 6, 4, 3, 3)
    b = randn(rng, 6)
    pads = ((1, 1), (1, 1))
    chain = _C.FrozenConvChain()
    with pytest.raises(ValueError, match="slots"):
        chain.add(-2, -1, 1, [1, 4, 8, 8], w, b, (1, 1), pads, (1, 1), 1, "relu", 0.0, 0.0, _C.ConvPacked(w), None)
    with pytest.raises(ValueError, match="packed"):
        chain.add(0, -1, 1, [1, 4, 8, 8], w, b, (1, 1), pads, (1, 1), 1, "relu", 0.0, 0.0,
                  _C.ConvPacked(randn(rng, 5, 4, 3, 3)), None)
    with pytest.raises(ValueError, match="buffer"):
        chain.add(0, -1, 1, [1, 4, 8, 8], w, b, (1, 1), pads, (1, 1), 1, "relu", 0.0, 0.0, _C.ConvPacked(w),
                  np.empty((1, 6, 7, 8), np.float32))
    with pytest.raises(TypeError, match="float32"):
        chain.add(0, -1, 1, [1, 4, 8, 8], w.astype(np.float64), None, (1, 1), pads, (1, 1), 1, "none", 0.0, 0.0,
                  None, None)
    assert len(chain) == 0
    chain.add(0, -1, 1, [1, 4, 8, 8], w, b, (1, 1), pads, (1, 1), 1, "relu", 0.0, 0.0, _C.ConvPacked(w), None)
    wd = randn(rng, 6, 1, 3, 3)
    chain.add(1, 1, 2, [1, 6, 8, 8], wd, None, (1, 1), pads, (1, 1), 6, "none", 0.0, 0.0,
              None, None)  # depthwise (no pack), with the first output as its residual
    x = randn(rng, 1, 4, 8, 16)[..., ::2]  # a strided view: the chain copies it
    vals = [x, None, None]
    chain.run(vals)
    want1 = _C.conv_forward(np.ascontiguousarray(x), w, b, (1, 1), pads, (1, 1), 1, "gemm", None, "relu")
    np.testing.assert_allclose(vals[1], want1, rtol=1e-5, atol=1e-5)
    want2 = _C.conv_forward(want1, wd, None, (1, 1), pads, (1, 1), 6, "gemm", want1)
    np.testing.assert_allclose(vals[2], want2, rtol=1e-5, atol=1e-5)
    assert not np.shares_memory(vals[1], vals[2])
    for bad, err, what in (([x.astype(np.float64), None, None], TypeError, "float32"),
                           ([randn(rng, 1, 4, 8, 7), None, None], ValueError, "shape"),
                           ([[1.0], None, None], TypeError, "NumPy array"), ([x], ValueError, "slot")):
        with pytest.raises(err, match=what):
            chain.run(bad)


def test_frozen_conv_chain_squeeze_excite_step(rng):
    # A squeeze-excite block inside a chain (EfficientNet's run conv -> SE -> conv in one
    # call) gives squeeze_excite_forward's values, written into its planned buffer.
    w = randn(rng, 8, 4, 1, 1)
    w1, b1, w2, b2 = randn(rng, 3, 8), randn(rng, 3), randn(rng, 8, 3), None
    chain = _C.FrozenConvChain()
    chain.add(0, -1, 1, [2, 4, 5, 7], w, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "silu", 0.0, 0.0,
              _C.ConvPacked(w), None)
    buf = np.full((2, 8, 5, 7), np.nan, np.float32)
    chain.add_squeeze_excite(1, 2, [2, 8, 5, 7], w1, b1, w2, b2, "silu", 0.0, 0.0, "sigmoid", 0.0, 0.0, buf)
    with pytest.raises(ValueError, match="w1, w2"):
        chain.add_squeeze_excite(1, 3, [2, 8, 5, 7], w2, None, w1, None, "relu", 0.0, 0.0, "sigmoid", 0.0, 0.0, None)
    with pytest.raises(ValueError, match="b1"):
        chain.add_squeeze_excite(1, 3, [2, 8, 5, 7], w1, randn(rng, 4), w2, None, "relu", 0.0, 0.0, "sigmoid",
                                 0.0, 0.0, None)
    x = randn(rng, 2, 4, 5, 7)
    vals = [x, None, None]
    chain.run(vals)
    y1 = _C.conv_forward(x, w, None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "gemm", None, "silu")
    want = _C.squeeze_excite_forward(y1, w1, b1, w2, b2, act1="silu", act2="sigmoid")
    assert vals[2] is buf or np.shares_memory(vals[2], buf)
    np.testing.assert_allclose(vals[2], want, rtol=1e-5, atol=1e-6)
