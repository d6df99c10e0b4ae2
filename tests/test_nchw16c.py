"""Frozen chains on the channel-blocked layout (csrc/cpu/conv_nchw16c.h).

A FrozenConvChain with a depthwise layer runs its 1x1, depthwise and squeeze-excite
steps on NCHW16c, converting at its ends. Each case builds a chain by hand and checks
every kept output against float64 torch on the same float32 inputs: odd channel counts
(padded lanes), maps narrower than a vector and 1x1 maps, strides 1 and 2, asymmetric
padding, 3x3 and 5x5 kernels, every epilogue activation, residuals made inside and
outside the chain, an output read by an NCHW step inside the chain, and 1 or 2 threads.
"""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACTS = {
    "none": (0.0, 0.0, lambda v: v),
    "relu": (0.0, 0.0, F.relu),
    "clip": (0.0, 6.0, lambda v: v.clamp(0.0, 6.0)),
    "silu": (0.0, 0.0, F.silu),
    "hardswish": (0.0, 0.0, F.hardswish),
    "sigmoid": (0.0, 0.0, torch.sigmoid),
    "leaky_relu": (0.1, 0.0, lambda v: F.leaky_relu(v, 0.1)),
    "hardsigmoid": (1.0 / 6.0, 0.5, lambda v: (v / 6.0 + 0.5).clamp(0.0, 1.0)),
}
BLOCKED = _C.best_simd_level() == "avx512"


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = cnnfast.get_num_threads()
    cnnfast.set_num_threads(request.param)
    yield request.param
    cnnfast.set_num_threads(before)


def t64(a):
    return torch.from_numpy(np.asarray(a, np.float64))


class Chain:
    """A FrozenConvChain and its float64 reference, step by step."""

    def __init__(self, rng, x):
        self.rng = rng
        self.chain = _C.FrozenConvChain()
        # These chains are short: "auto" would keep most of them NCHW (a conversion at
        # each end for three layers).
        self.chain.set_layout("nchw16c")
        self.vals = [x]
        self.ref = [t64(x)]
        self.shapes = [x.shape]

    def _slot(self):
        self.vals.append(None)
        self.shapes.append(None)
        return len(self.vals) - 1

    def conv(self, src, out_c, k=1, stride=1, pad=((0, 0), (0, 0)), groups=1, act="none", residual=-1,
             bias=True):
        n, c, h, w = self.shapes[src]
        weight = (self.rng.standard_normal((out_c, c // groups, k, k)) / np.sqrt(c // groups * k * k)).astype(
            np.float32)
        b = self.rng.standard_normal(out_c).astype(np.float32) if bias else None
        packed = _C.ConvPacked(weight, groups) if groups == 1 else None
        alpha, beta, fn = ACTS[act]
        out = self._slot()
        self.chain.add(src, residual, out, [n, c, h, w], weight, b, (stride, stride), pad, (1, 1), groups, act,
                       alpha, beta, packed, None)
        (pt, pb), (pl, pr) = pad
        v = F.conv2d(F.pad(self.ref[src], (pl, pr, pt, pb)), t64(weight), None if b is None else t64(b),
                     stride=stride, groups=groups)
        if residual >= 0:
            v = v + self.ref[residual]
        self.ref.append(fn(v))
        self.shapes[out] = tuple(self.ref[out].shape)
        return out

    def se(self, src, rows, act1="relu", act2="sigmoid"):
        n, c, h, w = self.shapes[src]
        w1 = (self.rng.standard_normal((rows, c)) / np.sqrt(c)).astype(np.float32)
        b1 = self.rng.standard_normal(rows).astype(np.float32)
        w2 = (self.rng.standard_normal((c, rows)) / np.sqrt(rows)).astype(np.float32)
        b2 = self.rng.standard_normal(c).astype(np.float32)
        a1, c1, f1 = ACTS[act1]
        a2, c2, f2 = ACTS[act2]
        out = self._slot()
        self.chain.add_squeeze_excite(src, out, [n, c, h, w], w1, b1, w2, b2, act1, a1, c1, act2, a2, c2, None)
        x = self.ref[src]
        s = f2(f1(x.mean(dim=(2, 3)) @ t64(w1).T + t64(b1)) @ t64(w2).T + t64(b2))
        self.ref.append(x * s[:, :, None, None])
        self.shapes[out] = self.shapes[src]
        return out

    def run_and_check(self, keep):
        self.chain.keep(keep)
        if BLOCKED:
            assert self.chain.blocked()
        self.chain.run(self.vals)
        for slot in keep:
            want = self.ref[slot].numpy()
            got = self.vals[slot]
            assert got.shape == want.shape, slot
            assert_close(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max(), what=f"slot {slot}")


@pytest.mark.parametrize("c,t,hw,stride,k", [
    (16, 6, (7, 7), 1, 3), (24, 6, (14, 14), 2, 3), (17, 3, (13, 11), 1, 3), (40, 6, (15, 15), 2, 5),
    (8, 4, (1, 1), 1, 3), (33, 2, (3, 29), 1, 5), (32, 6, (23, 23), 2, 3),
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("batch", [1, 3])
def test_inverted_residual_block_matches_float64(rng, threads, c, t, hw, stride, k, batch):
    # expand 1x1 + act, depthwise + act, project 1x1 (+ the block's input as residual
    # when the shape stays): MobileNet-V2's block, the residual packed from outside.
    x = rng.standard_normal((batch, c) + hw).astype(np.float32)
    ch = Chain(rng, x)
    p = k // 2
    e = ch.conv(0, c * t, act="clip")
    d = ch.conv(e, c * t, k=k, stride=stride, pad=((p, p), (p, p)), groups=c * t, act="clip")
    out = ch.conv(d, c, residual=0 if stride == 1 else -1)
    ch.run_and_check([out])


@pytest.mark.parametrize("act", sorted(ACTS))
def test_every_activation_in_blocked_steps(rng, act):
    x = rng.standard_normal((2, 20, 9, 10)).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, 40, act=act)
    d = ch.conv(e, 40, k=3, pad=((1, 1), (1, 1)), groups=40, act=act)
    p = ch.conv(d, 24, act=act, residual=-1)
    ch.run_and_check([e, d, p])


@pytest.mark.parametrize("pad", [((0, 1), (0, 1)), ((1, 2), (2, 1)), ((2, 2), (0, 0)), ((0, 0), (1, 1))])
def test_asymmetric_padding_and_squeeze_excite(rng, threads, pad):
    # EfficientNet's stride-2 5x5 depthwise layers with TensorFlow's asymmetric "same"
    # padding, then squeeze-excite (SiLU, sigmoid) and the projection.
    x = rng.standard_normal((2, 24, 16, 13)).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, 144, act="silu")
    d = ch.conv(e, 144, k=5, stride=2, pad=pad, groups=144, act="silu")
    s = ch.se(d, 6, act1="silu", act2="sigmoid")
    p = ch.conv(s, 40)
    ch.run_and_check([s, p])


@pytest.mark.parametrize("batch,c,hidden,hw", [(1, 16, 96, (56, 56)), (3, 40, 240, (7, 9)), (2, 24, 72, (13, 1))])
def test_squeeze_excite_scales_applied_by_the_next_1x1_layer(rng, threads, batch, c, hidden, hw):
    # EfficientNet's block: the SE output is read only by the projection, which scales
    # its weight rows per image instead of reading a scaled copy of x; with the SE
    # output kept as well, the scaled copy is written as before.
    x = rng.standard_normal((batch, c) + hw).astype(np.float32)
    for keep_se in (False, True):
        ch = Chain(rng, x)
        e = ch.conv(0, hidden, act="silu")
        d = ch.conv(e, hidden, k=3, pad=((1, 1), (1, 1)), groups=hidden, act="silu")
        s = ch.se(d, max(1, c // 4), act1="silu", act2="sigmoid")
        p = ch.conv(s, c, residual=0)
        ch.run_and_check([s, p] if keep_se else [p])
        if BLOCKED:
            assert ch.chain._scales_fused() == (0 if keep_se else 1)


def test_outputs_read_by_an_nchw_step_and_a_second_reader(rng, threads):
    # A dense 3x3 in the middle of the chain reads a blocked output (unpacked for it);
    # its own output is packed again for the next depthwise layer, which also takes the
    # chain's input as a residual; the same input feeds two blocked steps (packed once).
    x = rng.standard_normal((2, 16, 11, 12)).astype(np.float32)
    ch = Chain(rng, x)
    a = ch.conv(0, 32, act="relu")
    b = ch.conv(a, 16, k=3, pad=((1, 1), (1, 1)), act="relu")  # dense: NCHW
    c = ch.conv(b, 16, k=3, pad=((1, 1), (1, 1)), groups=16, residual=0)
    d = ch.conv(0, 48, act="hardswish")
    e = ch.se(d, 4, act1="relu", act2="hardsigmoid")
    ch.run_and_check([b, c, e])
    # Kept outputs only: a and d were freed inside the chain, so nothing promises them.


def test_unkept_outputs_are_not_required_and_repeated_runs_agree(rng):
    x = rng.standard_normal((1, 24, 28, 28)).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, 144, act="clip")
    d = ch.conv(e, 144, k=3, stride=2, pad=((1, 1), (1, 1)), groups=144, act="clip")
    p = ch.conv(d, 32)
    ch.run_and_check([p])
    first = ch.vals[p].copy()
    ch.vals = [x] + [None] * (len(ch.vals) - 1)
    ch.chain.run(ch.vals)
    np.testing.assert_array_equal(ch.vals[p], first)


@pytest.mark.parametrize("c,hidden,hw,stride,k,pad,batch", [
    (16, 128, (64, 71), 1, 3, ((1, 1), (1, 1)), 1),
    (24, 144, (57, 56), 2, 5, ((1, 2), (2, 1)), 5),
    (16, 96, (80, 80), 2, 3, ((1, 1), (1, 1)), 4),
    (32, 128, (73, 72), 1, 5, ((2, 2), (2, 2)), 2),
], ids=["3x3s1-odd", "5x5s2-asym-144", "3x3s2-b4", "5x5s1-b2"])
def test_expand_and_depthwise_fused_in_bands(rng, threads, c, hidden, hw, stride, k, pad, batch):
    # Where the expanded tensor passes the caches the expanding 1x1 layer runs inside
    # the depthwise layer's row bands; the bands' edge rows, the last partial band and
    # the padding rows must give the unfused values.
    x = rng.standard_normal((batch, c) + hw).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, hidden, act="silu")
    d = ch.conv(e, hidden, k=k, stride=stride, pad=pad, groups=hidden, act="clip")
    p = ch.conv(d, c + 8)
    ch.run_and_check([d, p])
    if BLOCKED:
        assert ch.chain._banded() == 1


@pytest.mark.parametrize("stride,k,pad", [(1, 3, ((1, 1), (1, 1))), (2, 5, ((2, 1), (1, 2)))])
def test_depthwise_after_a_stem_packs_its_input_in_bands(rng, threads, stride, k, pad):
    # A dense NCHW layer (a stem) makes a large input for the depthwise layer, which packs
    # it band by band instead of whole; a second chain where the stem's output has another
    # reader packs it whole.
    x = rng.standard_normal((2, 3, 130, 127)).astype(np.float32)
    ch = Chain(rng, x)
    s = ch.conv(0, 40, k=3, stride=1, pad=((1, 1), (1, 1)), act="relu")
    d = ch.conv(s, 40, k=k, stride=stride, pad=pad, groups=40, act="silu")
    p = ch.conv(d, 24)
    ch.run_and_check([d, p])
    if BLOCKED:
        assert ch.chain._banded() == 1
    ch = Chain(rng, x)
    s = ch.conv(0, 40, k=3, stride=1, pad=((1, 1), (1, 1)), act="relu")
    d = ch.conv(s, 40, k=k, stride=stride, pad=pad, groups=40, act="silu")
    p = ch.conv(d, 40, residual=s if stride == 1 else -1)
    ch.run_and_check([p])
    if BLOCKED:
        assert ch.chain._banded() == (0 if stride == 1 else 1)


def test_no_fusion_where_the_expanded_output_is_read_again(rng):
    # Kept, or read by a second step: the 1x1 output must exist whole.
    x = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
    for second_reader in (False, True):
        ch = Chain(rng, x)
        e = ch.conv(0, 128, act="relu")
        d = ch.conv(e, 128, k=3, pad=((1, 1), (1, 1)), groups=128, act="relu")
        keep = [d]
        if second_reader:
            keep.append(ch.conv(e, 16))
        else:
            keep.append(e)
        ch.run_and_check(keep)
        assert ch.chain._banded() == 0


def test_chains_without_depthwise_stay_nchw(rng):
    # ResNet's chains alternate 1x1 and dense 3x3 layers: no blocked layout there.
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    ch = Chain(rng, x)
    a = ch.conv(0, 64, act="relu")
    b = ch.conv(a, 64, k=3, pad=((1, 1), (1, 1)), act="relu")
    c = ch.conv(b, 32, residual=0)
    ch.chain.keep([c])
    assert not ch.chain.blocked()
    ch.chain.run(ch.vals)
    want = ch.ref[c].numpy()
    assert_close(ch.vals[c], want, rtol=2e-5, atol=2e-5 * np.abs(want).max(), what="nchw chain")


def test_auto_layout_leaves_short_chains_nchw(rng):
    # Three layers between two conversions (ShuffleNet's branches) stay NCHW under
    # "auto"; "nchw" turns the layout off; a bad name is refused.
    x = rng.standard_normal((1, 24, 10, 10)).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, 48, act="relu")
    d = ch.conv(e, 48, k=3, pad=((1, 1), (1, 1)), groups=48, act="relu")
    p = ch.conv(d, 24)
    ch.chain.keep([p])
    assert ch.chain.blocked() == BLOCKED
    ch.chain.set_layout("auto")
    assert not ch.chain.blocked()
    ch.chain.set_layout("nchw")
    assert not ch.chain.blocked()
    ch.chain.run(ch.vals)
    want = ch.ref[p].numpy()
    assert_close(ch.vals[p], want, rtol=2e-5, atol=2e-5 * np.abs(want).max(), what="nchw layout")
    with pytest.raises(ValueError, match="layout"):
        ch.chain.set_layout("nhwc")


def test_blocked_chain_follows_the_simd_level(rng):
    # At a level without AVX-512 the same chain runs its NCHW kernels, same values.
    if not BLOCKED:
        pytest.skip("needs AVX-512")
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    ch = Chain(rng, x)
    e = ch.conv(0, 48, act="relu")
    d = ch.conv(e, 48, k=3, pad=((1, 1), (1, 1)), groups=48, act="relu")
    p = ch.conv(d, 16, residual=0)
    ch.chain.keep([p])
    before = _C.simd_level()
    try:
        _C.set_simd_level("avx2")
        assert not ch.chain.blocked()
        ch.chain.run(ch.vals)
    finally:
        _C.set_simd_level(before)
    want = ch.ref[p].numpy()
    assert_close(ch.vals[p], want, rtol=2e-5, atol=2e-5 * np.abs(want).max(), what="avx2 chain")
