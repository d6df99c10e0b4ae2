"""The ops of today's efficient CNNs against PyTorch (forward and backward, float32 on
every SIMD path) and float64 finite differences, on odd shapes (SIMD tails, primes,
batch 1): gelu (exact, tanh), hardswish, hardsigmoid, relu6, mish, softplus, interpolate
(nearest, nearest-exact, linear, bilinear, trilinear, bicubic; align_corners; size and
scale_factor), pixel_shuffle/unshuffle, channel_shuffle, stochastic depth, LayerNorm2d;
plus bad input."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnfast  # noqa: E402
import cnnfast.functional as F  # noqa: E402
import cnnfast.nn as cnn  # noqa: E402
from cnnfast import _C  # noqa: E402
from helpers import assert_close, assert_nontrivial, numerical_grad  # noqa: E402

TF = torch.nn.functional

ACTS = {
    "gelu": (lambda t: F.gelu(t), lambda t: TF.gelu(t)),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh")),
    "hardswish": (F.hardswish, TF.hardswish),
    "hardsigmoid": (F.hardsigmoid, TF.hardsigmoid),
    "relu6": (F.relu6, TF.relu6),
    "mish": (F.mish, TF.mish),
    "softplus": (F.softplus, TF.softplus),
    "softplus_b2_t3": (lambda t: F.softplus(t, 2.0, 3.0), lambda t: TF.softplus(t, 2.0, 3.0)),
    "erf": (F.erf, torch.erf),
}


def _both(fn_c, fn_t, x, g):
    xc = cnnfast.tensor(x, requires_grad=True)
    yc = fn_c(xc)
    yc.backward(cnnfast.tensor(g))
    xt = torch.tensor(x, requires_grad=True)
    yt = fn_t(xt)
    yt.backward(torch.tensor(g))
    return yc.detach().numpy(), xc.grad.numpy(), yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", sorted(ACTS))
@pytest.mark.parametrize("shape", [(1, 1, 3), (13,), (2, 3, 17), (1, 5, 7, 11)])
def test_activation_matches_torch(simd, name, shape, rng):
    # Wide range: the tails (GELU far negative, Softplus past its threshold) and the kinks
    # of the piecewise ops (+-3, 0, 6), hit exactly by the integers mixed in.
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    if x.size >= 13:
        x.reshape(-1)[:6] = [-3, 3, 0, 6, -12, 25]
    g = rng.standard_normal(shape).astype(np.float32)
    y, gx, yt, gt = _both(*ACTS[name], x, g)
    assert_nontrivial(y, gx)
    assert_close(y, yt, rtol=1e-5, atol=1e-6, what=f"{name} forward")
    assert_close(gx, gt, rtol=1e-5, atol=2e-6, what=f"{name} backward")


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_float64_finite_differences(name, rng):
    x = rng.standard_normal((3, 7)) * 3
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01  # keep the central difference off a kink
    x[np.abs(x - 6) < 1e-3] += 0.01
    x[np.abs(x) < 1e-3] += 0.01
    g = rng.standard_normal(x.shape)
    fn = ACTS[name][0]
    xc = cnnfast.tensor(x.copy(), requires_grad=True)
    fn(xc).backward(cnnfast.tensor(g))
    (num,) = numerical_grad(lambda a: fn(cnnfast.tensor(a)).numpy(), [x.copy()], g)
    assert_nontrivial(num)
    assert_close(xc.grad.numpy(), num, rtol=1e-6, atol=1e-7, what=name)


def test_activation_float64_matches_torch(rng):
    x = rng.standard_normal((4, 9)) * 6
    for name, (fc, ft) in ACTS.items():
        assert_close(fc(cnnfast.tensor(x)).numpy(), ft(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-14, what=name)


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "hardswish", "hardsigmoid", "relu6", "mish", "softplus", "erf"])
def test_activation_nan_propagates(simd, name):
    # (torch's own GELU gives NaN at one of +-inf from its 1 + erf / tanh forms; not tested here.)
    x = np.array([np.nan, 1.0, -2.0, 7.0, -0.0] * 3, np.float32)
    y = ACTS[name][0](cnnfast.tensor(x)).numpy()
    yt = ACTS[name][1](torch.tensor(x)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt))
    # Finite values against torch in float64: torch's float32 GELU on its AVX2 path computes
    # 1 + erf(x/sqrt 2) and loses 3.6e-6 relative at x = -2 by cancellation (ours is exact there).
    finite = ~np.isnan(yt)
    y64 = ACTS[name][1](torch.tensor(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(y[finite], y64[finite], rtol=1e-6, atol=1e-7)


def test_gelu_negative_tail_relative_accuracy(simd):
    # 1 + erf(x / sqrt 2) would cancel to 0 here; the erfc form keeps ~7 digits.
    x = np.linspace(-9, -3, 61).astype(np.float32)
    y = F.gelu(cnnfast.tensor(x)).numpy()
    # torch's float64 GELU cancels to -0 below about -8, so the reference is math.erfc.
    ref = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    np.testing.assert_allclose(y, ref, rtol=2e-5)


def test_activation_modules_and_bad_input():
    x = cnnfast.tensor(np.linspace(-4, 4, 9, dtype=np.float32))
    for mod, fn in [(cnn.GELU(), F.gelu), (cnn.GELU("tanh"), lambda t: F.gelu(t, "tanh")), (cnn.Hardswish(), F.hardswish),
                    (cnn.Hardsigmoid(), F.hardsigmoid), (cnn.ReLU6(inplace=True), F.relu6), (cnn.Mish(), F.mish),
                    (cnn.Softplus(2.0, 5.0), lambda t: F.softplus(t, 2.0, 5.0))]:
        np.testing.assert_array_equal(mod(x).numpy(), fn(x).numpy())
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="approximate"):
        cnn.GELU("fast")
    with pytest.raises(ValueError, match="beta"):
        F.softplus(x, beta=0.0)
    with pytest.raises(TypeError, match="input"):
        F.mish(np.ones(3))
    with pytest.raises(TypeError, match="x"):
        _C.gelu_forward(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="x"):
        _C.hardswish_forward(np.ones((0, 3), np.float32))
    with pytest.raises(ValueError, match="x"):
        _C.relu6_backward(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x"):
        _C.mish_backward(np.ones(3, np.float32), np.ones(3, np.float64))
    with pytest.raises(ValueError, match="x"):
        _C.gelu_forward(np.ones((4, 4), np.float32)[:, ::2])


# ---- interpolate -------------------------------------------------------------------------

INTERP = [
    ("nearest", None, (2, 3, 7), dict(size=12)),
    ("nearest", None, (1, 2, 5, 7), dict(scale_factor=(2.0, 0.5))),
    ("nearest", None, (1, 2, 5, 7), dict(size=(3, 17))),
    ("nearest", None, (1, 2, 3, 5, 4), dict(scale_factor=1.5)),
    ("nearest-exact", None, (2, 3, 5, 7), dict(size=(11, 3))),
    ("nearest-exact", None, (1, 2, 3, 4, 5), dict(size=(5, 3, 7))),
    ("linear", False, (2, 3, 7), dict(size=13)),
    ("linear", True, (2, 3, 7), dict(scale_factor=2.5)),
    ("bilinear", False, (1, 3, 5, 7), dict(size=(13, 4))),
    ("bilinear", True, (2, 3, 5, 7), dict(size=(13, 4))),
    ("bilinear", False, (2, 3, 5, 7), dict(scale_factor=(1.7, 0.6))),
    ("bilinear", False, (1, 16, 9, 9), dict(scale_factor=8)),
    ("bilinear", True, (1, 1, 1, 1), dict(size=(3, 5))),
    ("trilinear", False, (1, 2, 3, 4, 5), dict(size=(5, 7, 3))),
    ("trilinear", True, (1, 2, 3, 4, 5), dict(scale_factor=2)),
    ("bicubic", False, (2, 3, 5, 7), dict(size=(13, 4))),
    ("bicubic", True, (1, 2, 5, 7), dict(size=(11, 17))),
    ("bicubic", False, (1, 2, 6, 5), dict(scale_factor=(0.5, 3.0))),
    # Rows wider than one 16-lane register, with tails, for the AVX-512 row and gather loops.
    ("bilinear", False, (1, 3, 6, 37), dict(size=(11, 53))),
    ("bicubic", True, (2, 2, 4, 19), dict(size=(5, 41))),
    ("nearest", None, (1, 2, 3, 33), dict(scale_factor=(1.0, 0.5))),
    # Downsampling past 16 source values per 16 outputs: the AVX-512 gather path.
    ("bilinear", False, (1, 2, 3, 70), dict(size=(3, 17))),
    ("bicubic", True, (1, 1, 2, 81), dict(size=(2, 21))),
]


def _interp_both(x, g, mode, ac, kw):
    return _both(lambda t: F.interpolate(t, mode=mode, align_corners=ac, **kw),
                 lambda t: TF.interpolate(t, mode=mode, align_corners=ac, **kw), x, g)


@pytest.mark.parametrize("mode,ac,shape,kw", INTERP)
def test_interpolate_matches_torch(simd, mode, ac, shape, kw, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    out_shape = TF.interpolate(torch.tensor(x), mode=mode, align_corners=ac, **kw).shape
    g = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    y, gx, yt, gt = _interp_both(x, g, mode, ac, kw)
    assert y.shape == yt.shape
    assert_nontrivial(y, gx)
    assert_close(y, yt, rtol=1e-5, atol=1e-5, what="forward")
    assert_close(gx, gt, rtol=1e-5, atol=1e-5, what="backward")


@pytest.mark.parametrize("mode,ac,shape,kw", [c for c in INTERP if c[2][0] * c[2][1] * np.prod(c[2][2:]) <= 120])
def test_interpolate_float64_finite_differences(mode, ac, shape, kw, rng):
    x = rng.standard_normal(shape)
    fn = lambda a: F.interpolate(cnnfast.tensor(a), mode=mode, align_corners=ac, **kw).numpy()  # noqa: E731
    g = rng.standard_normal(fn(x).shape)
    xc = cnnfast.tensor(x.copy(), requires_grad=True)
    F.interpolate(xc, mode=mode, align_corners=ac, **kw).backward(cnnfast.tensor(g))
    (num,) = numerical_grad(fn, [x.copy()], g)
    assert_nontrivial(num)
    assert_close(xc.grad.numpy(), num, rtol=1e-7, atol=1e-8)


def test_upsample_modules(rng):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    for mod, ref in [(cnn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Upsample(scale_factor=2, mode="bilinear")),
                     (cnn.Upsample(size=(7, 3)), torch.nn.Upsample(size=(7, 3))),
                     (cnn.UpsamplingBilinear2d(scale_factor=3), torch.nn.UpsamplingBilinear2d(scale_factor=3)),
                     (cnn.UpsamplingNearest2d(size=9), torch.nn.UpsamplingNearest2d(size=9))]:
        assert_close(mod(cnnfast.tensor(x)).numpy(), ref(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_interpolate_bad_input():
    x = cnnfast.tensor(np.ones((1, 2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="size, scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="size, scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(x, size=3, mode="area51")
    with pytest.raises(ValueError, match="size"):
        F.interpolate(x, size=(3, 0))
    with pytest.raises(ValueError, match="size"):
        F.interpolate(x, size=(3, 4, 5))
    with pytest.raises(ValueError, match="scale_factor"):
        F.interpolate(x, scale_factor=float("nan"))
    with pytest.raises(ValueError, match="scale_factor"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ValueError, match="input"):
        F.interpolate(cnnfast.tensor(np.ones((2, 3), np.float32)), size=3)
    idx, w = np.zeros((3, 2), np.int64), np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="index_w"):
        _C.resample_forward(np.ones((1, 1, 4), np.float32), idx + 4, w)
    with pytest.raises(ValueError, match="index_w"):
        _C.resample_forward(np.ones((1, 1, 4), np.float32), idx - 1, w)
    with pytest.raises(TypeError, match="weight_w"):
        _C.resample_forward(np.ones((1, 1, 4), np.float32), idx, w.astype(np.float64))
    with pytest.raises(ValueError, match="index_h"):
        _C.resample_forward(np.ones((1, 1, 4), np.float32), idx, w, idx, w)
    with pytest.raises(TypeError, match="index_h"):
        _C.resample_forward(np.ones((1, 1, 4, 4), np.float32), idx, w)
    with pytest.raises(ValueError, match="grad_output"):
        _C.resample_backward(np.ones((1, 1, 4), np.float32), [1, 1, 4], idx, w)
    with pytest.raises(ValueError, match="input_shape"):
        _C.resample_backward(np.ones((1, 1, 3), np.float32), [1, 1, -4], idx, w)


# ---- pixel shuffle, channel shuffle, stochastic depth, LayerNorm2d ------------------------

@pytest.mark.parametrize("shape,r", [((1, 9, 5, 7), 3), ((2, 4, 3, 1), 2), ((3, 2, 8, 1, 2), 1), ((12, 3, 2), 2)])
def test_pixel_shuffle_round_trip_and_torch(shape, r, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(TF.pixel_shuffle(torch.tensor(x), r).shape).astype(np.float32)
    y, gx, yt, gt = _both(lambda t: F.pixel_shuffle(t, r), lambda t: TF.pixel_shuffle(t, r), x, g)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(gx, gt)
    back = F.pixel_unshuffle(cnnfast.tensor(y), r).numpy()
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(back, TF.pixel_unshuffle(torch.tensor(y), r).numpy())
    np.testing.assert_array_equal(cnn.PixelShuffle(r)(cnnfast.tensor(x)).numpy(), yt)


# The last two pass 4 MiB, where the copy streams past the caches (non-temporal stores
# from a 16-byte-aligned point of each plane): planes of 3599 floats start at every
# alignment, and planes of 1221.
@pytest.mark.parametrize("shape,g", [((2, 6, 5, 3), 3), ((1, 12, 7), 4), ((3, 5, 1), 5), ((1, 4, 2, 3, 2), 2),
                                     ((3, 122, 61, 59), 2), ((4, 231, 37, 33), 3)])
def test_channel_shuffle_matches_torch(shape, g, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    y, gx, yt, gt = _both(lambda t: F.channel_shuffle(t, g), lambda t: TF.channel_shuffle(t, g), x, gy)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(gx, gt)
    np.testing.assert_array_equal(cnn.ChannelShuffle(g)(cnnfast.tensor(x)).numpy(), yt)


def test_channel_shuffle_strided_input_and_inverse(rng):
    # A transposed (non-contiguous) float64 input, and shuffling by k undoes shuffling by g.
    x = rng.standard_normal((3, 5, 6, 4)).transpose(0, 2, 1, 3)  # (3, 6, 5, 4), strided
    gy = rng.standard_normal((3, 6, 5, 4))
    xc = cnnfast.tensor(x, requires_grad=True)
    y = F.channel_shuffle(xc, 2)
    y.backward(cnnfast.tensor(gy))
    yt = TF.channel_shuffle(torch.tensor(np.ascontiguousarray(x)), 2).numpy()
    np.testing.assert_array_equal(y.detach().numpy(), yt)
    np.testing.assert_array_equal(F.channel_shuffle(y.detach(), 3).numpy(), x)
    # The gradient of a permutation is the inverse permutation of the incoming gradient.
    np.testing.assert_array_equal(xc.grad.numpy(), TF.channel_shuffle(torch.tensor(gy), 3).numpy())


def test_shuffle_bad_input():
    x = cnnfast.tensor(np.ones((1, 6, 4, 4), np.float32))
    with pytest.raises(ValueError, match="input"):
        F.pixel_shuffle(x, 4)
    with pytest.raises(ValueError, match="upscale_factor"):
        F.pixel_shuffle(x, 0)
    with pytest.raises(ValueError, match="input"):
        F.pixel_unshuffle(x, 3)
    with pytest.raises(ValueError, match="groups"):
        F.channel_shuffle(x, 0)
    with pytest.raises(ValueError, match="input"):
        F.channel_shuffle(x, 4)
    with pytest.raises(ValueError, match="input"):
        F.channel_shuffle(cnnfast.tensor(np.ones((2, 4), np.float32)), 2)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth(mode, rng):
    x = rng.uniform(1, 2, (64, 3, 2, 2)).astype(np.float32)
    xc = cnnfast.tensor(x, requires_grad=True)
    y = F.stochastic_depth(xc, 0.3, mode, training=True)
    y.backward(cnnfast.tensor(np.ones_like(x)))
    yn, gn = y.detach().numpy().reshape(64, -1), xc.grad.numpy().reshape(64, -1)
    kept = (yn != 0).all(1)
    assert ((yn == 0).all(1) | kept).all(), "a sample is dropped whole or kept whole"
    np.testing.assert_allclose(yn[kept], x.reshape(64, -1)[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(gn[kept], 1 / 0.7, rtol=1e-6)
    assert (gn[~kept] == 0).all()
    if mode == "row":
        assert 0 < kept.sum() < 64
    else:
        assert kept.all() or not kept.any()
    assert F.stochastic_depth(xc, 0.3, mode, training=False) is xc
    m = cnn.StochasticDepth(0.3, mode).eval()
    assert m(xc) is xc
    with pytest.raises(ValueError, match="p"):
        F.stochastic_depth(xc, 1.5, mode)
    with pytest.raises(ValueError, match="mode"):
        F.stochastic_depth(xc, 0.5, "col")


def test_layer_norm2d_matches_torch(rng):
    x = rng.standard_normal((2, 5, 3, 7)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    m = cnn.LayerNorm2d(5, eps=1e-6)
    m.weight.data[:] = rng.standard_normal(5)
    m.bias.data[:] = rng.standard_normal(5)
    ref = torch.nn.LayerNorm(5, eps=1e-6)
    ref.load_state_dict({k: torch.tensor(v.numpy()) for k, v in m.state_dict().items()})
    xc = cnnfast.tensor(x, requires_grad=True)
    y = m(xc)
    y.backward(cnnfast.tensor(g))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    yt.backward(torch.tensor(g))
    assert_close(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert_close(xc.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert_close(m.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert sorted(m.state_dict()) == ["bias", "weight"]


def test_erf_small_values_relative_accuracy(simd):
    x = np.array([1e-30, -1e-20, 1e-8, -3e-4, 0.01, 0.3, -0.49, 0.51, 2.0, -4.0], np.float32)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    np.testing.assert_allclose(F.erf(cnnfast.tensor(x)).numpy(), ref, rtol=3e-7)


# Accuracy of the float32 kernels of every level against the float64 scalar path, on a
# dense grid over the whole useful range: (forward, backward) bounds on |got - ref| /
# max(|ref|, 1e-2), i.e. relative, and absolute near the functions' zeros. (The far
# negative tail of GELU has its own relative test above.)
DENSE_BOUNDS = {"gelu": (3e-6, 8e-6), "gelu_tanh": (3e-6, 8e-6), "hardswish": (3e-7, 3e-6),
                "hardsigmoid": (2e-6, 1e-7), "relu6": (0, 0), "mish": (3e-6, 8e-6), "softplus": (5e-7, 5e-7),
                "softplus_b2_t3": (5e-7, 5e-7), "erf": (5e-7, 3e-6)}


@pytest.mark.parametrize("name", sorted(DENSE_BOUNDS))
def test_activation_simd_levels_dense_grid(simd, name):
    """Every level (scalar, AVX2, AVX-512 where the CPU has them) against float64; the
    integers and +-3/6 kinks are avoided so both sides take the same branch."""
    x = np.concatenate([np.linspace(-30, 30, 60001), np.linspace(-0.5, 0.5, 4001)]).astype(np.float32)
    x = x[(np.abs(x - np.round(x)) > 1e-3)]
    fn = ACTS[name][0]
    xc = cnnfast.tensor(x, requires_grad=True)
    fn(xc).backward(cnnfast.tensor(np.ones_like(x)))
    x64 = cnnfast.tensor(x.astype(np.float64), requires_grad=True)
    y64 = fn(x64)
    y64.backward(cnnfast.tensor(np.ones(x.shape)))
    rf, rb = DENSE_BOUNDS[name]
    for got, ref, r, what in [(fn(cnnfast.tensor(x)).numpy(), y64.detach().numpy(), rf, "forward"),
                              (xc.grad.numpy(), x64.grad.numpy(), rb, "backward")]:
        err = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-2)
        assert err.max() <= r, f"{name} {what} at {simd}: {err.max():.3g} at x = {x[err.argmax()]}"
