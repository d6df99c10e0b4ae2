"""bfloat16 kernels (cnnfast.amp, _C.*_bf16): every pass on every path the machine has,
against a float64 reference computed from the same bf16-rounded inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import _C

ml_dtypes = pytest.importorskip("ml_dtypes")
torch = pytest.importorskip("torch")
BF16 = ml_dtypes.bfloat16
# "amx" runs the AMX GEMM passes (im2col packing) only; "amx_direct" forces the direct AMX
# passes (conv_bf16_direct_amx.cpp) wherever they apply: 2-D, 16+ channels and filters
# per group. Auto chooses between the two by shape. Likewise "avx512_bf16" is the
# VDPBF16PS GEMM only and "avx512_bf16_rows" forces its row tiles (conv_kvec_rows.cpp)
# wherever they apply: 2-D, groups 1, column stride 1 or 2 (the forward; grad_x and grad_w at stride 1).
PATHS = ["amx", "amx_direct", "avx512_bf16", "avx512_bf16_rows", "fallback"]


@pytest.fixture(params=PATHS)
def path(request):
    kernel_path = request.param.replace("_direct", "").replace("_rows", "")
    if kernel_path not in _C.bf16_paths():
        pytest.skip(f"{kernel_path} not available here ({_C.amx_permission()})")
    _C.set_bf16_path(kernel_path)
    _C._set_bf16_direct("on" if request.param == "amx_direct" else "off")
    _C._set_kvec_rows(1 if request.param.endswith("_rows") else 0)
    yield request.param
    _C.set_bf16_path("auto")
    _C._set_bf16_direct("auto")
    _C._set_kvec_rows(-1)


def r64(a):
    """The value bf16 kernels multiply: a rounded to bfloat16, as float64."""
    return np.asarray(a).astype(BF16).astype(np.float64)


def close(got, ref, k):
    """Within float32 accumulation error over k products (the products themselves are exact)."""
    tol = 4 * k * np.finfo(np.float32).eps * (np.abs(ref).max() + 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    assert got.dtype == np.float32


CASES = [  # N, C, K, in, k, stride, dilation, groups, pads
    (1, 3, 5, (13,), (3,), (1,), (1,), 1, [(1, 1)]),
    (2, 6, 10, (11, 13), (3, 2), (2, 1), (1, 2), 2, [(1, 2), (0, 1)]),
    (3, 4, 17, (7, 9), (3, 3), (3, 3), (1, 1), 1, [(2, 0), (1, 1)]),
    (2, 8, 8, (9, 10), (3, 3), (1, 1), (2, 1), 8, [(1, 1), (1, 1)]),
    (2, 35, 33, (8, 8), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (1, 2, 3, (5, 6, 7), (2, 3, 2), (1, 2, 1), (2, 1, 1), 1, [(1, 0), (0, 1), (1, 1)]),
    # Stride 1 on maps of 8+ columns runs on the padded grid (bf16_impl.h conv_*_grid);
    # more than 512 taps x 256 positions: several k and column blocks per GEMM.
    (2, 5, 7, (12, 19), (3, 3), (1, 1), (2, 2), 1, [(2, 0), (1, 3)]),
    (1, 6, 9, (9, 17), (3, 5), (1, 1), (1, 2), 3, [(0, 2), (2, 2)]),
    (2, 70, 20, (5, 33), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (2, 3, 4, (41,), (5,), (1,), (3,), 1, [(4, 1)]),
    # The direct AMX passes: channel and filter counts off the 32-blocks, stride 2 and 3
    # (phase planes), dilation, groups of 16+, a 1x1 stride-2 kernel (one phase of four).
    (1, 48, 20, (7, 11), (3, 3), (1, 1), (1, 1), 1, [(1, 0), (2, 1)]),
    (3, 16, 16, (5, 5), (3, 3), (2, 2), (1, 1), 1, [(1, 1), (1, 1)]),
    (2, 64, 64, (9, 13), (3, 3), (3, 3), (1, 1), 2, [(0, 2), (1, 1)]),
    (2, 32, 48, (10, 10), (3, 3), (1, 1), (2, 2), 1, [(2, 2), (2, 2)]),
    (2, 64, 96, (4, 4), (1, 1), (2, 2), (1, 1), 1, [(0, 0), (0, 0)]),
    (2, 35, 33, (16, 16), (5, 5), (2, 2), (1, 1), 1, [(2, 2), (2, 2)]),
    (1, 17, 70, (33, 9), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (0, 2)]),
    # Output rows of 16+ columns: position tiles along rows, full ones stored straight into y
    # (an odd tile count leaves a block with one position tile).
    (2, 32, 64, (5, 32), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (1, 32, 64, (5, 16), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (1, 32, 32, (6, 20), (3, 3), (1, 1), (2, 2), 1, [(2, 2), (2, 2)]),
    (1, 32, 40, (5, 37), (3, 3), (2, 2), (1, 1), 1, [(1, 0), (1, 1)]),
    # The row tiles: odd channel counts (the last pair half empty), 64-lane blocks with tails,
    # output rows of 1-20 positions, a 5x5 kernel (25 taps: two transposes per channel when
    # packed rotated for grad_x), stride 2.
    (2, 7, 65, (6, 13), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (1, 33, 130, (9, 20), (5, 5), (1, 1), (1, 1), 1, [(2, 2), (2, 2)]),
    (3, 40, 64, (7, 7), (3, 3), (2, 2), (1, 1), 1, [(1, 1), (1, 1)]),
    # Maps smaller than the kernel: taps that read only padding are dropped (live_taps).
    (2, 16, 24, (1, 2), (3, 3), (1, 1), (1, 1), 1, [(1, 1), (1, 1)]),
    (3, 6, 4, (2, 3), (3, 5), (2, 1), (1, 1), 2, [(2, 1), (0, 3)]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[3])}d-g{c[7]}-s{c[5][0]}")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv_all_passes(path, case, dtype, rng):
    N, C, K, ins, ks, stride, dil, groups, pads = case
    nd = len(ins)
    x = rng.standard_normal((N, C) + ins).astype(np.float32)
    w = rng.standard_normal((K, C // groups) + ks).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    xt = torch.tensor(r64(x), requires_grad=True)
    wt = torch.tensor(r64(w), requires_grad=True)
    bt = torch.tensor(b.astype(np.float64), requires_grad=True)
    flat = [p for pair in reversed(pads) for p in pair]
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[nd]
    yt = conv(torch.nn.functional.pad(xt, flat), wt, bt, stride=stride, dilation=dil, groups=groups)
    cast = (lambda a: a.astype(BF16)) if dtype == "bfloat16" else (lambda a: a)
    args = (list(stride), [list(p) for p in pads], list(dil), groups)
    y = _C.conv_forward_bf16(cast(x), cast(w), b, *args)
    kdepth = (C // groups) * int(np.prod(ks))
    close(y, yt.detach().numpy(), kdepth)
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(r64(g)))
    gx, gw, gb = _C.conv_backward_bf16(cast(g), cast(x), cast(w), *args)
    close(gx, xt.grad.numpy(), K)
    close(gw, wt.grad.numpy(), N * int(np.prod(y.shape[2:])))
    close(gb, cast(g).astype(np.float64).sum(axis=(0,) + tuple(range(2, 2 + nd))), g.size)


@pytest.mark.parametrize("case", [CASES[12], CASES[13], CASES[15], CASES[19], CASES[21]],
                         ids=lambda c: f"{c[3]}-s{c[5][0]}-d{c[6][0]}-g{c[7]}")
def test_conv_backward_matches_float64_finite_differences(path, case, rng):
    """grad_x and grad_w against central differences of a float64 NumPy convolution at the
    bf16-rounded inputs (no torch): the loss is linear in x and in w, so the differences are
    exact up to float64 rounding, and the kernels differ only by float32 accumulation."""
    N, C, K, ins, ks, stride, dil, groups, pads = case
    x = r64(rng.standard_normal((N, C) + ins).astype(np.float32))
    w = r64(rng.standard_normal((K, C // groups) + ks).astype(np.float32))

    def conv64(xv, wv):
        xp = np.pad(xv, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
        Ho = (xp.shape[2] - dil[0] * (ks[0] - 1) - 1) // stride[0] + 1
        Wo = (xp.shape[3] - dil[1] * (ks[1] - 1) - 1) // stride[1] + 1
        y = np.zeros((N, K, Ho, Wo))
        Cg, Kg = C // groups, K // groups
        for g in range(groups):
            for i in range(ks[0]):
                for j in range(ks[1]):
                    patch = xp[:, g * Cg:(g + 1) * Cg, i * dil[0]:i * dil[0] + stride[0] * (Ho - 1) + 1:stride[0],
                               j * dil[1]:j * dil[1] + stride[1] * (Wo - 1) + 1:stride[1]]
                    y[:, g * Kg:(g + 1) * Kg] += np.einsum("nchw,kc->nkhw", patch, wv[g * Kg:(g + 1) * Kg, :, i, j])
        return y

    gy = r64(rng.standard_normal(conv64(x, w).shape).astype(np.float32))
    args = (list(stride), [list(p) for p in pads], list(dil), groups)
    gx, gw, _ = _C.conv_backward_bf16(gy.astype(np.float32), x.astype(np.float32), w.astype(np.float32), *args,
                                      need_bias=False)
    eps = 0.5
    for arr, got, k in ((x, gx, K * int(np.prod(ks))), (w, gw, N * gy[0, 0].size)):
        for idx in zip(*(rng.integers(0, n, 12) for n in arr.shape)):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fx = (lambda v: conv64(v, w)) if arr is x else (lambda v: conv64(x, v))
            fd = float((gy * (fx(plus) - fx(minus))).sum() / (2 * eps))
            close(np.array([got[idx]]), np.array([fd]), k)


@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[6], CASES[7], CASES[8], CASES[10], CASES[12], CASES[15]],
                         ids=lambda c: f"{c[3]}-g{c[7]}")
def test_conv_thread_splits_agree(path, case, rng):
    """Threads split columns (positions) or rows (filters, input channels: small maps with
    large weights); every split gives the 1-thread result bit for bit (same summation order)."""
    N, C, K, ins, ks, stride, dil, groups, pads = case
    x = rng.standard_normal((N, C) + ins).astype(np.float32)
    w = rng.standard_normal((K, C // groups) + ks).astype(np.float32)
    args = (list(stride), [list(p) for p in pads], list(dil), groups)
    before = cnnfast.get_num_threads()
    out = {}
    try:
        for t in (1, 3):
            cnnfast.set_num_threads(t)
            y = _C.conv_forward_bf16(x, w, None, *args)
            out[t] = (y,) + _C.conv_backward_bf16(np.ones_like(y), x, w, *args, need_bias=False)[:2]
    finally:
        cnnfast.set_num_threads(before)
    for a, b in zip(out[1], out[3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("M,inf,out", [(1, 7, 3), (33, 65, 17), (64, 300, 129)])
def test_linear(path, M, inf, out, rng):
    x = rng.standard_normal((M, inf)).astype(np.float32)
    w = rng.standard_normal((out, inf)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    y = _C.linear_forward_bf16(x, w, b)
    close(y, r64(x) @ r64(w).T + b, inf)
    g = rng.standard_normal((M, out)).astype(np.float32)
    gx, gw, gb = _C.linear_backward_bf16(g, x, w)
    close(gx, r64(g) @ r64(w), out)
    close(gw, r64(g).T @ r64(x), M)
    close(gb, g.astype(np.float64).sum(0), M)
    y2 = _C.linear_forward_bf16(x.astype(BF16), w.astype(BF16), b)
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("M,K,N", [(37, 70, 300), (600, 40, 33), (290, 700, 20)])
def test_gemm(path, ta, tb, M, K, N, rng):
    """Odd shapes; 600 rows: row slabs and M blocks; K 700: two k blocks."""
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    A, B = (np.ascontiguousarray(a.T) if ta else a), (np.ascontiguousarray(b.T) if tb else b)
    close(_C.gemm_bf16(A, B, ta, tb), r64(a) @ r64(b), K)


def test_paths_agree_closely(rng):
    """Every path computes the same exact products; only the float32 summation order differs."""
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    outs = []
    for p in _C.bf16_paths():
        _C.set_bf16_path(p)
        outs.append(_C.conv_forward_bf16(x, w, None, [1, 1], [[1, 1], [1, 1]], [1, 1], 1))
    _C.set_bf16_path("auto")
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-4)


def test_rounding_is_nearest_even():
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5, 3e38, np.inf, 1e-3], np.float32)
    got = _C.to_bfloat16(x)
    assert got.dtype == BF16
    np.testing.assert_array_equal(got.astype(np.float32), x.astype(BF16).astype(np.float32))
    assert np.isnan(_C.to_bfloat16(np.array([np.nan], np.float32)).astype(np.float32)[0])


def test_bad_input(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    args = ([1, 1], [[0, 0], [0, 0]], [1, 1], 1)
    with pytest.raises(TypeError, match="float16"):
        _C.conv_forward_bf16(x.astype(np.float16), w.astype(np.float16), None, *args)
    with pytest.raises(TypeError, match="weight"):
        _C.conv_forward_bf16(x, w.astype(BF16), None, *args)
    with pytest.raises(TypeError, match="x"):
        _C.conv_forward_bf16(x.astype(np.float64), w.astype(np.float64), None, *args)
    with pytest.raises(TypeError, match="bias"):
        _C.conv_forward_bf16(x, w, np.zeros(3, np.float64), *args)
    with pytest.raises(ValueError, match="contiguous"):
        _C.conv_forward_bf16(x[:, :, ::2], w, None, *args)
    # A kernel without a bf16 path names the dtype instead of crashing.
    with pytest.raises(TypeError, match="bfloat16"):
        _C.conv_forward(x.astype(BF16), w.astype(BF16), None, *args)
    with pytest.raises(ValueError, match="path"):
        _C.set_bf16_path("tpu")
    with pytest.raises(ValueError, match="float16"):
        cnnfast.autocast(dtype="float16")


def test_direct_setting():
    before = _C._bf16_direct()
    try:
        for mode in ("on", "off", "auto"):
            _C._set_bf16_direct(mode)
            assert _C._bf16_direct() == mode
        with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
            _C._set_bf16_direct("fast")
    finally:
        _C._set_bf16_direct(before)


def test_amx_refused_falls_back():
    """CNNFAST_AMX_DENY simulates Linux refusing the tile state: the next path is used and
    forcing amx is a ValueError that says why."""
    code = ("from cnnfast import _C\n"
            "print(_C.amx_permission()); print(_C.bf16_path()); print(_C.bf16_paths())\n"
            "try:\n    _C.set_bf16_path('amx')\nexcept ValueError as e:\n    print('refused:', e)\n")
    env = dict(os.environ, CNNFAST_AMX_DENY="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert "CNNFAST_AMX_DENY" in lines[0] or "not supported" in lines[0]
    assert lines[1] in ("avx512_bf16", "fallback")
    assert "amx" not in lines[2]
    assert lines[3].startswith("refused:") and "amx" in lines[3]


def test_simd_cap_narrows_path():
    env = dict(os.environ, CNNFAST_CPU_CAP="avx2")
    out = subprocess.run([sys.executable, "-c", "from cnnfast import _C; print(_C.bf16_path())"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "fallback"


def test_autocast_uses_bf16_and_keeps_fp32(rng):
    from cnnfast import functional as F
    xa = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    wa = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = cnnfast.tensor(xa, requires_grad=True)
    w = cnnfast.tensor(wa, requires_grad=True)
    with cnnfast.autocast(dtype="bfloat16"):
        assert cnnfast.amp.is_autocast_enabled()
        y = F.conv2d(x, w, padding=1)
    assert not cnnfast.amp.is_autocast_enabled()
    ref = torch.nn.functional.conv2d(torch.tensor(r64(xa)), torch.tensor(r64(wa)), padding=1)
    close(y.detach().numpy(), ref.numpy(), 27)
    y32 = F.conv2d(x, w, padding=1).detach().numpy()
    assert np.abs(y32 - ref.numpy()).max() > 0  # fp32 did not round the inputs: autocast did something
    y.sum().backward()
    assert x.grad.numpy().dtype == np.float32 and w.grad.numpy().dtype == np.float32


@pytest.mark.parametrize("hw,stride", [((1, 1), 1), ((2, 2), 2), ((1, 3), 1)])
def test_autocast_dead_taps_all_grads(rng, hw, stride):
    """3x3 kernels on maps so small that taps read only padding: autocast cuts the live
    window once, runs forward and grad_x on it, and grad_w comes back full-size with zeros
    at the dead taps. Values against float64 from the same bf16-rounded inputs."""
    from cnnfast import functional as F
    xa = rng.standard_normal((3, 20, *hw)).astype(np.float32)
    wa = rng.standard_normal((24, 20, 3, 3)).astype(np.float32)
    ga = rng.standard_normal((3, 24) + tuple((h + 2 - 3) // stride + 1 for h in hw)).astype(np.float32)
    x = cnnfast.tensor(xa, requires_grad=True)
    w = cnnfast.tensor(wa, requires_grad=True)
    with cnnfast.autocast():
        y = F.conv2d(x, w, stride=stride, padding=1)
    y.backward(cnnfast.tensor(ga))
    xt = torch.tensor(r64(xa), requires_grad=True)
    wt = torch.tensor(r64(wa), requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1)
    yt.backward(torch.tensor(r64(ga)))
    close(y.detach().numpy(), yt.detach().numpy(), 180)
    close(x.grad.numpy(), xt.grad.numpy(), 24 * 9)
    close(w.grad.numpy(), wt.grad.numpy(), ga[:, 0].size)
    dead = wt.grad.numpy() == 0
    assert dead.any() and (w.grad.numpy()[dead] == 0).all()


def _train_small_cnn(precision, steps, rng_seed=0):
    from cnnfast import nn
    from cnnfast import functional as F
    cnnfast.manual_seed(rng_seed)
    rng = np.random.default_rng(rng_seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    opt = cnnfast.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    centers = rng.standard_normal((10, 1, 8, 8)).astype(np.float32)
    losses = []
    for _ in range(steps):
        y = rng.integers(0, 10, 32)
        x = centers[y] + 0.5 * rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
        with cnnfast.autocast(enabled=precision == "bf16"):
            loss = F.cross_entropy(model(cnnfast.tensor(x)), cnnfast.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return np.mean(losses[-20:]), model


def test_autocast_training_tracks_fp32():
    l32, m32 = _train_small_cnn("fp32", 200)
    l16, m16 = _train_small_cnn("bf16", 200)
    assert all(p.data.dtype == np.float32 for p in m16.parameters())
    assert l32 < 0.5  # it learned
    assert abs(l16 - l32) <= 0.05 * max(l32, 0.05) + 0.02


@pytest.mark.slow
def test_cli_train_bf16_reaches_98_percent(tmp_path):
    """`cnnfast train --precision bf16` on the default data (digits, LeNet-5)."""
    import json
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-m", "cnnfast", "train", "--precision", "bf16", "--quiet", "--threads", "2",
                          "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, check=True).stdout
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["test_accuracy"] >= 0.98


def test_precision_fallback_warns(tmp_path):
    """Without bf16 hardware (forced here with the SIMD cap), bf16 training says it will be slower."""
    from cnnfast.training import TrainConfig, train
    before = _C.simd_level()
    _C.set_simd_level("avx2")
    try:
        with pytest.warns(RuntimeWarning, match="slower"):
            m = train(TrainConfig(precision="bf16", quiet=True, epochs=1, limit=64, threads=1))
    finally:
        _C.set_simd_level(before)
    assert np.isfinite(m["test_accuracy"])
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16").check()


def test_output_pass_residual_activation(rng):
    """conv_forward_bf16 / linear_forward_bf16 with the inference output pass."""
    x = rng.standard_normal((2, 5, 9, 11)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    args = ([1, 1], [[1, 1], [1, 1]], [1, 1], 1)
    y = _C.conv_forward_bf16(x, w, b, *args)
    r = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(_C.conv_forward_bf16(x, w, b, *args, residual=r, activation="relu"),
                               np.maximum(y + r, 0), rtol=1e-6, atol=1e-6)
    xl, wl = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)
    yl = _C.linear_forward_bf16(xl, wl, None)
    np.testing.assert_allclose(_C.linear_forward_bf16(xl, wl, None, activation="leaky_relu", alpha=0.1),
                               np.where(yl > 0, yl, 0.1 * yl), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="residual"):
        _C.conv_forward_bf16(x, w, b, *args, residual=r.astype(np.float64))
    with pytest.raises(ValueError, match="residual"):
        _C.conv_forward_bf16(x, w, b, *args, residual=r[:1])
    with pytest.raises(ValueError):
        _C.conv_forward_bf16(x, w, b, *args, activation="nope")


def test_freeze_bf16_precision(rng):
    """freeze(precision="bf16") runs the fused convolutions in bfloat16: close to the fp32 graph."""
    from cnnfast.inference import freeze
    from cnnfast.models import resnet18
    m = resnet18(num_classes=10)
    m.eval()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    a = freeze(m, x)(x).numpy()
    b = freeze(m, x, precision="bf16")(x).numpy()
    assert 0 < np.abs(a - b).max() <= 3e-2 * np.abs(a).max()  # bf16 rounding shows, within its error
    with pytest.raises(ValueError, match="precision"):
        freeze(m, x, precision="fp16")


def test_freeze_bf16_fallback_warns(rng):
    from cnnfast.inference import freeze
    from cnnfast.models import lenet5
    m = lenet5(activation="relu", pool="max")
    m.eval()
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    before = _C.simd_level()
    _C.set_simd_level("avx2")
    try:
        with pytest.warns(RuntimeWarning, match="slower"):
            f = freeze(m, x, precision="bf16")
        assert np.isfinite(f(x).numpy()).all()
    finally:
        _C.set_simd_level(before)
