"""Batch augmentations: shapes, value ranges, determinism under a seed, and what each
transform does to the pixels."""
import numpy as np
import pytest

from cnnfast.data import transforms as T


def _batch(n=7, c=3, h=11, w=13, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


ALL = [
    lambda: T.RandomHorizontalFlip(),
    lambda: T.RandomVerticalFlip(),
    lambda: T.RandomCrop((11, 13), padding=3),
    lambda: T.RandomResizedCrop((11, 13), scale=(0.3, 1.0)),
    lambda: T.ColorJitter(0.4, 0.4, 0.4),
    lambda: T.RandomBrightness(0.5),
    lambda: T.RandomContrast(0.5),
    lambda: T.Cutout(4, n_holes=2),
    lambda: T.Compose([T.RandomCrop((11, 13), 2), T.RandomHorizontalFlip(),
                       T.ColorJitter(0.2, 0.2), T.Cutout(3)]),
]


@pytest.mark.parametrize("make", ALL)
def test_shape_dtype_range_and_determinism(make):
    x = _batch()
    before = x.copy()
    t = make()
    a = t(x, np.random.default_rng(42))
    b = t(x, np.random.default_rng(42))
    c = t(x, np.random.default_rng(43))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, before)      # the input is never modified
    seeded = make()
    seeded._rng = np.random.default_rng(5)
    again = make()
    again._rng = np.random.default_rng(5)
    np.testing.assert_array_equal(seeded(x), again(x))


def test_flips_mirror_exactly_the_drawn_images():
    x = _batch(n=64)
    out = T.RandomHorizontalFlip(p=0.5)(x, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(out, x)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert np.all(flipped ^ kept) and 10 < flipped.sum() < 54
    np.testing.assert_array_equal(T.RandomVerticalFlip(p=1.0)(x), x[:, :, ::-1, :])
    np.testing.assert_array_equal(T.RandomVerticalFlip(p=0.0)(x), x)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _batch(n=16, c=2, h=6, w=7)
    out = T.RandomCrop((6, 7), padding=2)(x, np.random.default_rng(0))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for o, p in zip(out, padded):
        assert any(np.array_equal(o, p[:, i:i + 6, j:j + 7]) for i in range(5) for j in range(5))
    small = T.RandomCrop(3)(x, np.random.default_rng(0))
    assert small.shape == (16, 2, 3, 3)
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.RandomCrop(9)(x)


def test_resize_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    x = _batch(n=2, c=3, h=8, w=5)
    for size in [(32, 32), (3, 4), (8, 5)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(T.resize(x, size), ref.numpy(), atol=1e-6)


def test_resized_crop_full_box_is_the_identity():
    x = _batch(n=3, c=1, h=9, w=9)
    out = T.RandomResizedCrop(9, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, x, atol=1e-6)
    scaled = T.RandomResizedCrop(5, scale=(0.2, 0.5))(x, np.random.default_rng(0))
    assert scaled.shape == (3, 1, 5, 5)
    with pytest.raises(ValueError, match="scale"):
        T.RandomResizedCrop(5, scale=(0.0, 1.0))


def test_color_jitter_effects():
    x = _batch(n=50, c=3) * 0.5 + 0.25
    bright = T.RandomBrightness(0.3)(x, np.random.default_rng(0))
    ratio = bright / x
    per_image = ratio.reshape(50, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1), rtol=1e-5)
    assert np.all((per_image >= 0.7 - 1e-6) & (per_image <= 1.3 + 1e-6))
    contrast = T.RandomContrast(0.5)(x, np.random.default_rng(0))
    np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-5)
    gray = np.repeat(x[:, :1], 3, axis=1)
    np.testing.assert_allclose(T.ColorJitter(saturation=0.9)(gray, np.random.default_rng(0)), gray, atol=1e-6)
    with pytest.raises(ValueError, match="brightness"):
        T.ColorJitter(brightness=1.5)


def test_cutout_zeroes_squares_of_the_right_size():
    x = np.ones((20, 2, 16, 16), np.float32)
    out = T.Cutout(4)(x, np.random.default_rng(0))
    zeros = (out == 0)
    assert np.all(zeros[:, 0] == zeros[:, 1])          # the same hole in every channel
    counts = zeros[:, 0].sum(axis=(1, 2))
    assert counts.max() == 16 and counts.min() >= 4     # 4x4, clipped at the border
    rows = zeros[:, 0].any(axis=2).sum(axis=1)
    assert rows.max() <= 4
    np.testing.assert_array_equal(T.Cutout(4, p=0.0)(x), x)


def test_normalize():
    x = _batch(n=4, c=2)
    out = T.Normalize([0.5, 0.25], [2.0, 0.5])(x)
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 0.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], (x[:, 1] - 0.25) / 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        T.Normalize([0.0], [1.0])(x)
    with pytest.raises(ValueError, match="std"):
        T.Normalize([0.0], [0.0])


def test_bad_batches():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.RandomHorizontalFlip()(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="floating"):
        T.RandomHorizontalFlip()(np.zeros((1, 1, 4, 4), np.uint8))


def test_parse_augment():
    c = T.parse_augment("crop:2, hflip, vflip:0.1, scale:0.5, jitter:0.3, brightness, contrast:0.1, cutout:3", (12, 10))
    assert [type(t).__name__ for t in c.transforms] == [
        "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "ColorJitter",
        "RandomBrightness", "RandomContrast", "Cutout"]
    assert c.transforms[0].padding == 2 and c.transforms[0].size == (12, 10)
    assert c.transforms[2].p == 0.1 and c.transforms[3].scale == (0.5, 1.0) and c.transforms[7].size == 3
    assert T.parse_augment(None, 8) is None and T.parse_augment("none", 8) is None
    with pytest.raises(ValueError, match="unknown transform 'rotate'"):
        T.parse_augment("rotate", 8)
    with pytest.raises(ValueError, match="not a number"):
        T.parse_augment("crop:x", 8)
