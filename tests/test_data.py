"""Data pipeline: datasets, the seeded prefetching DataLoader, the digits/npz/folder
loaders, the stratified split and the clear errors on bad data."""
import numpy as np
import pytest

from cnnfast.data import (DataError, DataLoader, Subset, TensorDataset, channel_stats, load_data, load_digits,
                          load_image_folder, load_npz, random_split, split_indices)


def _xy(n=23, c=1, h=5, w=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, c, h, w), dtype=np.float32), rng.integers(0, k, n)


def test_tensor_dataset_indexing_and_length():
    x, y = _xy()
    ds = TensorDataset(x, y)
    assert len(ds) == 23
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi, x[4])
    assert yi == y[4]
    xb, yb = ds[np.array([3, 1, 7])]
    np.testing.assert_array_equal(xb, x[[3, 1, 7]])
    with pytest.raises(ValueError, match="rows"):
        TensorDataset(x, y[:5])


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_each_sample_once(prefetch, drop_last):
    x, y = _xy(n=23)
    dl = DataLoader(TensorDataset(x, np.arange(23)), batch_size=5, shuffle=True, drop_last=drop_last,
                    prefetch=prefetch, seed=3)
    batches = list(dl)
    assert len(batches) == len(dl) == (4 if drop_last else 5)
    assert all(len(b[1]) == 5 for b in batches[:4])
    seen = np.concatenate([b[1] for b in batches])
    assert len(set(seen.tolist())) == len(seen) == (20 if drop_last else 23)
    for xb, idx in batches:
        np.testing.assert_array_equal(xb, x[idx])


def test_loader_order_is_seeded_per_epoch():
    x, y = _xy(n=40)
    def order(seed, epoch, prefetch):
        dl = DataLoader(TensorDataset(x, np.arange(40)), batch_size=8, shuffle=True, seed=seed, prefetch=prefetch)
        dl.set_epoch(epoch)
        return np.concatenate([b[1] for b in dl])
    a = order(0, 1, 0)
    np.testing.assert_array_equal(a, order(0, 1, 2))       # same with or without the prefetch thread
    assert not np.array_equal(a, order(0, 2, 0))           # a new epoch reshuffles
    assert not np.array_equal(a, order(1, 1, 0))           # another seed, another order
    dl = DataLoader(TensorDataset(x, np.arange(40)), batch_size=8, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in dl]), np.arange(40))


def test_loader_without_set_epoch_advances():
    x, _ = _xy(n=16)
    dl = DataLoader(TensorDataset(x, np.arange(16)), batch_size=16, shuffle=True, prefetch=0)
    first, second = next(iter(dl))[1], next(iter(dl))[1]
    assert not np.array_equal(first, second)


def test_loader_applies_transform_and_propagates_errors():
    x, y = _xy(n=10)
    dl = DataLoader(TensorDataset(x, y), batch_size=4, transform=lambda b, rng: b * 2, prefetch=2)
    np.testing.assert_allclose(np.concatenate([b[0] for b in dl]), x * 2)

    def boom(b, rng):
        raise RuntimeError("transform failed")
    with pytest.raises(RuntimeError, match="transform failed"):
        list(DataLoader(TensorDataset(x, y), batch_size=4, transform=boom, prefetch=2))


def test_loader_abandoned_iteration_stops_thread():
    import threading
    x, y = _xy(n=100)
    before = threading.active_count()
    for _ in range(3):
        for b in DataLoader(TensorDataset(x, y), batch_size=2, prefetch=1):
            break
    assert threading.active_count() == before


def test_loader_generic_dataset_collates():
    class Squares:
        def __len__(self):
            return 7

        def __getitem__(self, i):
            if not isinstance(i, int):
                raise TypeError("ints only")
            return np.full((1, 2, 2), i, np.float32), i * i

    batches = list(DataLoader(Squares(), batch_size=3, prefetch=0))
    assert [b[1].tolist() for b in batches] == [[0, 1, 4], [9, 16, 25], [36]]
    assert batches[0][0].shape == (3, 1, 2, 2)


def test_bad_loader_arguments():
    x, y = _xy()
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(TensorDataset(x, y), batch_size=0)


def test_subset_and_random_split():
    x, y = _xy(n=20)
    ds = TensorDataset(x, y)
    a, b = random_split(ds, [0.75, 0.25], seed=1)
    assert len(a) == 15 and len(b) == 5
    assert not set(a.indices.tolist()) & set(b.indices.tolist())
    np.testing.assert_array_equal(Subset(ds, [2, 5])[1][0], x[5])
    with pytest.raises(ValueError, match="lengths"):
        random_split(ds, [3, 4])


def test_digits_is_32x32_in_unit_range():
    d = load_digits()
    assert d.x.shape == (1797, 1, 32, 32) and d.x.dtype == np.float32
    assert d.x.min() == 0.0 and d.x.max() <= 1.0
    assert d.num_classes == 10 and set(np.unique(d.y).tolist()) == set(range(10))
    assert np.all(d.x[:, :, :2, :] == 0) and np.all(d.x[:, :, :, -2:] == 0)   # the 2-pixel margin


def test_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    tr, va, te = split_indices(y, 0.2, 0.1, seed=5)
    assert len(tr) + len(va) + len(te) == 100
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    np.testing.assert_array_equal(np.bincount(y[va]), [2, 4, 6, 8])
    np.testing.assert_array_equal(np.bincount(y[te]), [1, 2, 3, 4])
    for a, b in zip((tr, va, te), split_indices(y, 0.2, 0.1, seed=5)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(te, split_indices(y, 0.2, 0.1, seed=6)[2])
    with pytest.raises(ValueError, match="val"):
        split_indices(y, 0.6, 0.5)


def test_channel_stats():
    x = np.stack([np.full((4, 4), 2.0), np.arange(16.0).reshape(4, 4)])[None].repeat(3, 0)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, [2.0, 7.5])
    np.testing.assert_allclose(std, [1.0, np.arange(16.0).std()])   # constant channel: 1, not 0


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for shape, expect in [((6, 9, 7), (6, 1, 9, 7)), ((6, 9, 7, 3), (6, 3, 9, 7)), ((6, 3, 9, 7), (6, 3, 9, 7))]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        p = tmp_path / "d.npz"
        np.savez(p, x=x, y=np.arange(6) % 2)
        d = load_npz(str(p))
        assert d.x.shape == expect and d.x.dtype == np.float32 and d.x.max() <= 1.0
        assert d.classes == ["0", "1"]
    np.savez(p, x=rng.random((4, 8, 8)), y=[0, 1, 2, 1], classes=np.array(["cat", "dog", "eel"]))
    d = load_npz(str(p), image_size=5)
    assert d.x.shape == (4, 1, 5, 5) and d.classes == ["cat", "dog", "eel"]


def test_npz_errors(tmp_path):
    p = str(tmp_path / "d.npz")
    with pytest.raises(DataError, match="file not found"):
        load_npz(p)
    np.savez(p, images=np.zeros((3, 4, 4)), y=[0, 1, 0])
    with pytest.raises(DataError, match=r"missing \['x'\]"):
        load_npz(p)
    np.savez(p, x=np.zeros((3, 4, 4)), y=[0, -1, 0])
    with pytest.raises(DataError, match="labels out of range"):
        load_npz(p)
    np.savez(p, x=np.zeros((3, 4, 4)), y=[0, 3, 1], classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"labels out of range: expected 0..1 \(2 classes\), found \[3\]"):
        load_npz(p)
    bad = np.zeros((3, 4, 4))
    bad[1, 2, 2] = np.nan
    np.savez(p, x=bad, y=[0, 1, 0])
    with pytest.raises(DataError, match="NaN.*first in sample 1"):
        load_npz(p)
    np.savez(p, x=np.zeros((3, 4, 4)), y=[0, 1])
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_npz(p)
    np.savez(p, x=np.zeros((3, 4, 4)), y=[0.5, 1, 0])
    with pytest.raises(DataError, match="integer"):
        load_npz(p)
    open(tmp_path / "junk.npz", "w").write("not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_npz(str(tmp_path / "junk.npz"))


def _write_png(path, array):
    from PIL import Image
    Image.fromarray(array).save(path)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            _write_png(tmp_path / name / f"{i}.png", np.full((6, 5), 40 * k + i, np.uint8))
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    d = load_image_folder(str(tmp_path))
    assert d.classes == ["cat", "dog"] and d.x.shape == (6, 1, 6, 5)
    np.testing.assert_array_equal(d.y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(d.x[4, 0, 0, 0], 41 / 255, rtol=1e-6)
    _write_png(tmp_path / "dog" / "rgb.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="different sizes.*--image-size"):
        load_image_folder(str(tmp_path))
    d = load_data(str(tmp_path), image_size=8)
    assert d.x.shape == (7, 3, 8, 8)   # one colour image makes the set RGB


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_image_folder(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_png(tmp_path / "a" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="empty class folder"):
        load_image_folder(str(tmp_path))
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read"):
        load_image_folder(str(tmp_path))


def test_load_data_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_data(str(tmp_path / "missing.csv"))
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DataError, match="unsupported"):
        load_data(str(tmp_path / "data.csv"))


def test_tensor_dataset_accepts_cnnfast_tensors():
    import cnnfast
    x, y = _xy(n=6)
    ds = TensorDataset(cnnfast.tensor(x), cnnfast.tensor(y))
    xb, yb = next(iter(DataLoader(ds, batch_size=6, prefetch=0)))
    np.testing.assert_array_equal(xb, x)
    np.testing.assert_array_equal(yb, y)


def test_digits_at_another_size():
    d = load_data("digits", image_size=16)
    assert d.x.shape == (1797, 1, 16, 16) and np.all(d.x[:, :, 0, :] == 0)


def test_digits_read_directly_equal_sklearn():
    from sklearn.datasets import load_digits as sk_digits
    from cnnfast.data.sources import _read_digits
    images, target = _read_digits()
    ref = sk_digits()
    np.testing.assert_array_equal(images, ref.images)
    np.testing.assert_array_equal(target, ref.target)
