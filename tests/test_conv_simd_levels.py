"""The SGEMM and convolution kernels at every SIMD level (scalar, avx2, avx512 where the
CPU has them): GEMM edges of every length 1-31 in M, N and K (the AVX-512 kernel's 8x32
tile and masked stores, the AVX2 kernel's 6x16), all four transpositions, against
float64; convolution passes at each level against the scalar level and PyTorch on odd
shapes whose channel and position counts leave tails; Winograd tile counts either side
of the 32-column packed panels; and the global accurate-path switch
cnnfast.set_conv_algorithm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from cnnfast import _C
from helpers import assert_close, assert_nontrivial, numerical_grad


def _gemm_check(M, N, K, ta, tb, rng):
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    A = np.ascontiguousarray(a.T) if ta else a
    B = np.ascontiguousarray(b.T) if tb else b
    c = _C.gemm(A, B, trans_a=ta, trans_b=tb)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert_close(c, ref, rtol=1e-4, atol=1e-4 * np.sqrt(K), what=f"M={M} N={N} K={K} ta={ta} tb={tb}")


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_tails_every_length(ta, tb, simd, rng):
    # Each tail 1-31 alone, the other two sizes one full tile plus a tail of their own,
    # and each tail past a whole 8x32 / 6x16 tile and past one 256-deep K slice.
    for t in range(1, 32):
        _gemm_check(t, 37, 29, ta, tb, rng)
        _gemm_check(13, t, 29, ta, tb, rng)
        _gemm_check(9, 35, t, ta, tb, rng)
        _gemm_check(48 + t, 64 + t, 256 + t, ta, tb, rng)


def test_gemm_levels_agree(rng):
    # The same product at every level: each within float32 rounding of the scalar one.
    a = rng.standard_normal((67, 301)).astype(np.float32)
    b = rng.standard_normal((301, 95)).astype(np.float32)
    before = cnnfast.simd_level()
    try:
        out = {}
        for lvl in cnnfast.simd_levels():
            cnnfast.set_simd_level(lvl)
            out[lvl] = _C.gemm(a, b)
    finally:
        cnnfast.set_simd_level(before)
    for lvl, c in out.items():
        assert_close(c, out["scalar"], rtol=1e-4, atol=1e-3, what=lvl)


# (N, C, K, H, W, kernel, stride, padding, dilation, groups): output channels and
# positions that are not multiples of 8 or 32.
CONV_CASES = {
    "k31_p_tail": (2, 5, 31, 9, 11, 3, 1, 1, 1, 1),
    "stride2_k17": (3, 7, 17, 13, 10, 3, 2, 1, 1, 1),
    "dilated_k9": (1, 6, 9, 12, 13, 3, 1, 2, 2, 1),
    "groups4_k12": (2, 8, 12, 9, 7, 3, 1, 1, 1, 4),
    "pointwise_k33": (2, 19, 33, 7, 9, 1, 1, 0, 1, 1),
    "5x5_k23": (1, 3, 23, 11, 12, 5, 2, 2, 1, 1),
    "tiny_map_k40": (5, 24, 40, 2, 3, 3, 1, 1, 1, 1),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_every_level_matches_scalar_and_torch(case, simd, rng):
    N, C, K, H, W, k, s, p, d, g = CONV_CASES[case]
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C // g, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    gy_shape = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, s, p, d, g).shape
    gy = rng.standard_normal(tuple(gy_shape)).astype(np.float32)

    def run():
        xt, wt, bt = (cnnfast.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d, groups=g)
        y.backward(cnnfast.tensor(gy))
        return [np.array(v) for v in (y.data, xt.grad.data, wt.grad.data, bt.grad.data)]

    got = run()
    level = cnnfast.simd_level()
    try:
        cnnfast.set_simd_level("scalar")
        scalar = run()
    finally:
        cnnfast.set_simd_level(level)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    yt = TF.conv2d(xt, wt, bt, s, p, d, g)
    yt.backward(torch.from_numpy(gy))
    ref = [yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]
    assert_nontrivial(*got)
    for name, a, sc, r in zip(("y", "grad_x", "grad_w", "grad_b"), got, scalar, ref):
        assert_close(a, sc, rtol=1e-4, atol=1e-4, what=f"{name} vs scalar")
        assert_close(a, r, rtol=1e-4, atol=1e-4, what=f"{name} vs torch")


@pytest.mark.parametrize("tiles_w", [1, 7, 8, 9])
def test_winograd_tile_counts_every_level(tiles_w, simd, rng):
    # 4 rows of tiles per image, 3 images: 12 * tiles_w tiles, so the chunk's last
    # 16- or 32-column panel is partial for most counts.
    H, W = 16, 4 * tiles_w
    x = rng.standard_normal((3, 16, H, W)).astype(np.float32)
    w = rng.standard_normal((20, 16, 3, 3)).astype(np.float32)
    y = np.array(F.conv2d(cnnfast.tensor(x), cnnfast.tensor(w), padding=1, algo="winograd").data)
    ref = TF.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    assert_close(y, ref, rtol=1e-3, atol=1e-3)


def test_conv_float64_finite_differences_tails(rng):
    # The scalar reference the levels are compared with, against float64 finite differences.
    x = rng.standard_normal((1, 3, 5, 6))
    w = rng.standard_normal((7, 3, 3, 3))
    gy = rng.standard_normal((1, 7, 3, 3))

    def f(xa, wa):
        return np.array(F.conv2d(cnnfast.tensor(xa), cnnfast.tensor(wa), stride=2, padding=1).data)

    xt, wt = cnnfast.tensor(x, requires_grad=True), cnnfast.tensor(w, requires_grad=True)
    F.conv2d(xt, wt, stride=2, padding=1).backward(cnnfast.tensor(gy))
    gx_num, gw_num = numerical_grad(f, [x, w], gy)
    assert_close(np.array(xt.grad.data), gx_num, rtol=1e-6, atol=1e-7)
    assert_close(np.array(wt.grad.data), gw_num, rtol=1e-6, atol=1e-7)


@pytest.fixture
def conv_algorithm():
    before = cnnfast.get_conv_algorithm()
    yield
    cnnfast.set_conv_algorithm(before)


def test_set_conv_algorithm_gemm_avoids_winograd(conv_algorithm, rng):
    x = cnnfast.tensor(rng.standard_normal((2, 32, 20, 20)).astype(np.float32))
    w = cnnfast.tensor(rng.standard_normal((32, 32, 3, 3)).astype(np.float32))
    gemm = np.array(F.conv2d(x, w, padding=1, algo="gemm").data)
    wino = np.array(F.conv2d(x, w, padding=1, algo="winograd").data)
    assert cnnfast.get_conv_algorithm() == "auto"
    # This layer is one Auto sends to Winograd (800 output positions; fewer than 512 stay on the GEMM),
    # whose rounding differs from GEMM's.
    assert np.array_equal(np.array(F.conv2d(x, w, padding=1).data), wino)
    assert not np.array_equal(gemm, wino)
    cnnfast.set_conv_algorithm("gemm")
    assert cnnfast.get_conv_algorithm() == "gemm"
    assert np.array_equal(np.array(F.conv2d(x, w, padding=1).data), gemm)
    # An explicit algo= still wins, and modules follow the setting too.
    assert np.array_equal(np.array(F.conv2d(x, w, padding=1, algo="winograd").data), wino)
    conv = cnnfast.nn.Conv2d(32, 32, 3, padding=1, bias=False)
    conv.weight.data[...] = np.array(w.data)
    assert np.array_equal(np.array(conv(x).data), gemm)
    # Depthwise layers keep working (their direct kernel) under "gemm".
    xd = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    wd = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    yd = np.array(F.conv2d(cnnfast.tensor(xd), cnnfast.tensor(wd), padding=1, groups=4).data)
    assert_close(yd, TF.conv2d(torch.from_numpy(xd), torch.from_numpy(wd), padding=1, groups=4).numpy(),
                 rtol=1e-5, atol=1e-5)
    cnnfast.set_conv_algorithm("auto")
    assert np.array_equal(np.array(F.conv2d(x, w, padding=1).data), wino)


def test_set_conv_algorithm_rejects_unknown(conv_algorithm):
    with pytest.raises(ValueError, match="name"):
        cnnfast.set_conv_algorithm("winograd")
    with pytest.raises(ValueError, match="name"):
        cnnfast.set_conv_algorithm("fast")
    assert cnnfast.get_conv_algorithm() == "auto"


def test_auto_takes_winograd_on_7x7_maps_with_enough_tiles(rng):
    # 7x7 outputs: Winograd once the batch gives >= 128 tiles (4 per image), GEMM below.
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    for n, algo in ((32, "winograd"), (4, "gemm")):
        x = cnnfast.tensor(rng.standard_normal((n, 16, 7, 7)).astype(np.float32))
        auto = np.array(F.conv2d(x, cnnfast.tensor(w), padding=1).data)
        forced = np.array(F.conv2d(x, cnnfast.tensor(w), padding=1, algo=algo).data)
        plan = _C._conv_auto_plan([n, 16, 7, 7], [16, 16, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
        if algo == "winograd" or plan["forward"] == "gemm":
            assert np.array_equal(auto, forced), f"batch {n}: Auto did not run {algo}"
        else:  # below Winograd's tiles the weight-streaming small-map pass may take it instead
            assert plan["forward"] == "smallmap", plan
            assert_close(auto, forced, rtol=1e-4, atol=1e-4)
        ref = TF.conv2d(torch.from_numpy(np.array(x.data)).double(), torch.from_numpy(w).double(), padding=1)
        assert_close(auto, ref.numpy(), rtol=1e-3, atol=1e-3)


def test_widening_layers_from_16_channels_run_their_forward_on_the_gemm(rng):
    # With 16 input channels per group Winograd's small GEMMs are 16 deep and a widening
    # layer's output transform dominates: Auto's forward takes the GEMM, grad_x keeps
    # Winograd; 32 -> 16 and 32 -> 64 keep Winograd for both.
    plan = _C._conv_auto_plan([8, 16, 56, 56], [32, 16, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    assert plan["forward"] == "gemm" and plan["grad_input"] == "winograd", plan
    for k in (16, 64):
        plan = _C._conv_auto_plan([8, 32, 56, 56], [k, 32, 3, 3], [1, 1], [[1, 1], [1, 1]], [1, 1], 1)
        assert plan["forward"] == "winograd" and plan["grad_input"] == "winograd", plan
    x = rng.standard_normal((2, 16, 23, 23)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    auto = _C.conv_forward(x, w, None, *args)
    assert np.array_equal(auto, _C.conv_forward(x, w, None, *args, "gemm"))
    ref = TF.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    assert_close(auto, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
