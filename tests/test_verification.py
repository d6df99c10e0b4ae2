"""Triplet mining, the batch triplet loss, threshold selection, ROC/AUC and the
`cnnfast verify` demo: against brute-force NumPy loops, PyTorch, float64 finite
differences and scikit-learn."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast.verification import (auc, batch_hard_triplets, batch_triplet_loss, best_threshold, make_pairs,
                                  pairwise_distances, roc_curve, semi_hard_triplets, verification_accuracy)
from cnnfast.verification.demo import main as verify_main
from cnnfast.verification.demo import one_shot_accuracy
from helpers import assert_close, assert_nontrivial, numerical_grad

SHAPES = [(1, 3), (2, 1), (7, 5), (13, 3), (17, 9)]


def _torch_distances(x, squared):
    diff = x[:, None, :] - x[None, :, :]
    d2 = (diff * diff).sum(-1)
    return d2 if squared else torch.cdist(x, x)


# ---- pairwise distances ------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairwise_distances_match_torch(shape, squared, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    tx = torch.tensor(x.copy(), requires_grad=True)
    d, td = pairwise_distances(cx, squared=squared), _torch_distances(tx, squared)
    tol = (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
    assert d.dtype == dtype and d.shape == (shape[0], shape[0])
    assert_close(d._array, td.detach().numpy(), *tol, what="distances")
    assert np.all(np.diag(d._array) == 0) and np.array_equal(d._array, d._array.T)
    g = rng.standard_normal(d.shape).astype(dtype)
    d.backward(g)
    td.backward(torch.tensor(g))
    assert_close(cx.grad._array, tx.grad.numpy(), *tol, what="grad")
    if shape[0] > 1:
        assert_nontrivial(tx.grad.numpy())


@pytest.mark.parametrize("squared", [True, False])
def test_pairwise_distances_finite_differences(squared, rng):
    x = rng.standard_normal((6, 4))
    g = rng.standard_normal((6, 6))
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    pairwise_distances(cx, squared=squared).backward(g)
    (num,) = numerical_grad(lambda a: pairwise_distances(cnnfast.tensor(a), squared=squared)._array, [x], g)
    assert_nontrivial(num)
    assert_close(cx.grad._array, num, 1e-6, 1e-7, "finite differences")


def test_pairwise_distances_duplicate_rows_pass_no_gradient():
    # Equal rows: zero distance, where sqrt has no derivative; torch.cdist defines it as 0.
    x = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0]])
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    d = pairwise_distances(cx, squared=False)
    assert d._array[0, 1] == 0.0
    d.sum().backward()
    tx = torch.tensor(x.copy(), requires_grad=True)
    torch.cdist(tx, tx).sum().backward()
    assert np.all(np.isfinite(cx.grad._array))
    assert_close(cx.grad._array, tx.grad.numpy(), 1e-12, 1e-12, "duplicate rows")


def test_pairwise_distances_bad_input():
    with pytest.raises(ValueError, match=r"x must be \(N, D\)"):
        pairwise_distances(cnnfast.tensor(np.zeros((2, 3, 4))))


# ---- mining against brute force ---------------------------------------------------------

def _brute_batch_hard(d, y):
    out = []
    for a in range(len(y)):
        pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
        neg = [j for j in range(len(y)) if y[j] != y[a]]
        if not pos or not neg:
            continue
        p = max(pos, key=lambda j: (d[a, j], -j))     # largest distance, lowest index on ties
        n = min(neg, key=lambda j: (d[a, j], j))      # smallest distance, lowest index on ties
        out.append((a, p, n))
    return out


def _brute_semi_hard(d, y):
    out = []
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            neg = [j for j in range(len(y)) if y[j] != y[a]]
            if not neg:
                continue
            farther = [j for j in neg if d[a, j] > d[a, p]]
            n = min(farther, key=lambda j: (d[a, j], j)) if farther else max(neg, key=lambda j: (d[a, j], -j))
            out.append((a, p, n))
    return out


def _triplets(t):
    return list(zip(*(v.tolist() for v in t)))


@pytest.mark.parametrize("seed", range(6))
def test_mining_matches_brute_force(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(5, 24))
    y = r.integers(0, int(r.integers(2, 6)), n)
    y[0] = 99  # a singleton class: never an anchor, always available as a negative
    x = r.standard_normal((n, 3))
    d = pairwise_distances(cnnfast.tensor(x))._array
    bh = _triplets(batch_hard_triplets(d, y))
    sh = _triplets(semi_hard_triplets(d, y))
    assert bh == _brute_batch_hard(d, y)
    assert sh == _brute_semi_hard(d, y)
    assert all(y[a] == y[p] and a != p and y[a] != y[q] for a, p, q in bh + sh)
    assert 0 not in [a for a, _, _ in bh + sh]


def test_mining_breaks_ties_towards_lower_index_and_falls_back_to_farthest_negative():
    y = np.array([0, 0, 1, 1, 1])
    d = np.array([[0, 1, 3, 2, 2],
                  [1, 0, 0.5, 0.5, 0.7],
                  [3, 0.5, 0, 4, 4],
                  [2, 0.5, 4, 0, 1],
                  [2, 0.7, 4, 1, 0]], dtype=np.float64)
    a, p, n = batch_hard_triplets(d, y)
    assert _triplets((a, p, n)) == _brute_batch_hard(d, y)
    assert (a[0], p[0], n[0]) == (0, 1, 3)           # negatives 3 and 4 tie at 2: index 3
    assert (a[2], p[2], n[2]) == (2, 3, 1)           # positives 3 and 4 tie at 4: index 3
    a, p, n = semi_hard_triplets(d, y)
    # anchor 1 (positive 0 at distance 1): no negative is farther, so the farthest (4, 0.7).
    assert (1, 0, 4) in _triplets((a, p, n))
    assert _triplets((a, p, n)) == _brute_semi_hard(d, y)


def test_mining_of_one_class_gives_no_triplets():
    d = pairwise_distances(cnnfast.tensor(np.random.default_rng(0).standard_normal((4, 2))))._array
    for mine in (batch_hard_triplets, semi_hard_triplets):
        assert all(len(v) == 0 for v in mine(d, np.zeros(4, int)))


def test_mining_bad_input():
    with pytest.raises(ValueError, match="square"):
        batch_hard_triplets(np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="labels must have N=3"):
        semi_hard_triplets(np.zeros((3, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="mining: expected one of"):
        batch_triplet_loss(cnnfast.tensor(np.zeros((3, 2))), [0, 1, 1], mining="hardest")
    with pytest.raises(ValueError, match="margin must be >= 0"):
        batch_triplet_loss(cnnfast.tensor(np.zeros((3, 2))), [0, 1, 1], margin=-1.0)


# ---- the batch triplet loss against PyTorch ------------------------------------------------

def _batch(seed, n=12, dim=5, classes=3, dtype=np.float64):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, dim)).astype(dtype), r.integers(0, classes, n)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_triplet_loss_squared_matches_torch(mining, dtype):
    x, y = _batch(1, dtype=dtype)
    margin = 1.5
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    loss, stats = batch_triplet_loss(cx, y, margin=margin, mining=mining, return_stats=True)
    a, p, n = (batch_hard_triplets if mining == "batch_hard" else semi_hard_triplets)(
        _torch_distances(torch.tensor(x), True).numpy(), y)
    tx = torch.tensor(x.copy(), requires_grad=True)
    td = _torch_distances(tx, True)
    tl = torch.clamp(td[a, p] - td[a, n] + margin, min=0).mean()
    tol = (1e-5, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
    assert_close(loss._array, tl.detach().numpy(), *tol, what="loss")
    loss.backward()
    tl.backward()
    assert_nontrivial(tx.grad.numpy())
    assert_close(cx.grad._array, tx.grad.numpy(), *tol, what="grad")
    assert stats["triplets"] == len(a) and 0 < stats["active"] <= 1


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_batch_triplet_loss_plain_distance_is_torch_triplet_margin_loss(mining):
    # With unsquared distances the loss over the mined triplets is exactly
    # torch.nn.functional.triplet_margin_loss (p=2, eps=0) of the gathered rows.
    x, y = _batch(2, n=11, dim=4)
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    loss = batch_triplet_loss(cx, y, margin=0.7, mining=mining, squared=False)
    a, p, n = (batch_hard_triplets if mining == "batch_hard" else semi_hard_triplets)(
        torch.cdist(torch.tensor(x), torch.tensor(x)).numpy(), y)
    tx = torch.tensor(x.copy(), requires_grad=True)
    tl = TF.triplet_margin_loss(tx[a], tx[p], tx[n], margin=0.7, p=2, eps=0.0)
    assert_close(loss._array, tl.detach().numpy(), 1e-10, 1e-12, "loss")
    loss.backward()
    tl.backward()
    assert_nontrivial(tx.grad.numpy())
    assert_close(cx.grad._array, tx.grad.numpy(), 1e-10, 1e-12, "grad")


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("squared", [True, False])
def test_batch_triplet_loss_finite_differences(mining, squared):
    x, y = _batch(3, n=8, dim=3, classes=2)
    cx = cnnfast.tensor(x.copy(), requires_grad=True)
    batch_triplet_loss(cx, y, margin=1.0, mining=mining, squared=squared).backward()
    (num,) = numerical_grad(
        lambda e: batch_triplet_loss(cnnfast.tensor(e), y, margin=1.0, mining=mining, squared=squared)._array,
        [x], np.ones(()))
    assert_nontrivial(num)
    assert_close(cx.grad._array, num, 1e-6, 1e-7, "finite differences")


def test_batch_triplet_loss_without_triplets_is_zero_and_backpropagates():
    cx = cnnfast.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    loss = batch_triplet_loss(cx, [5, 5, 5, 5])
    assert loss.item() == 0.0
    loss.backward()
    assert np.all(cx.grad._array == 0)


# ---- thresholds, ROC and AUC --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_and_auc_match_sklearn(seed, drop):
    metrics = pytest.importorskip("sklearn.metrics")
    r = np.random.default_rng(seed)
    n = int(r.integers(3, 60))
    y = r.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(r.standard_normal(n), 1)  # rounding makes ties
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop)
    rf, rt, rthr = metrics.roc_curve(y, s, drop_intermediate=drop)
    assert_close(fpr, rf, 0, 1e-12, "fpr")
    assert_close(tpr, rt, 0, 1e-12, "tpr")
    assert_close(thr, rthr, 0, 1e-12, "thresholds")
    assert auc(fpr, tpr) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert auc(fpr, tpr) == pytest.approx(metrics.auc(rf, rt), abs=1e-12)


def test_auc_of_perfect_reversed_and_decreasing_curves():
    assert auc(*roc_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[:2]) == 1.0
    assert auc(*roc_curve([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])[:2]) == 0.0
    assert auc([1.0, 0.5, 0.0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)


def test_roc_and_auc_bad_input():
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_curve([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        roc_curve([0, 1], [0.1])
    with pytest.raises(ValueError, match="finite"):
        roc_curve([0, 1], [np.nan, 0.2])
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        auc([0, 1, 0.5], [0, 1, 1])


@pytest.mark.parametrize("seed", range(10))
def test_best_threshold_is_the_best_of_all_thresholds(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(1, 40))
    same = r.random(n) < 0.5
    d = np.round(r.random(n) + 0.5 * ~same, 1)      # rounding makes ties
    t, acc = best_threshold(d, same)
    candidates = np.r_[d.min() - 1, np.unique(d)]
    brute = max(verification_accuracy(d, same, c) for c in candidates)
    assert acc == pytest.approx(brute)
    assert verification_accuracy(d, same, t) == pytest.approx(acc)


def test_best_threshold_separable_puts_threshold_between_classes():
    t, acc = best_threshold([0.1, 0.2, 0.9, 1.0], [True, True, False, False])
    assert acc == 1.0 and t == pytest.approx(0.55)
    t, acc = best_threshold([0.5, 0.7], [False, False])
    assert acc == 1.0 and t < 0.5


def test_make_pairs_are_balanced_and_labelled_right():
    labels = np.repeat(np.arange(4), [5, 1, 7, 3])
    i, j, same = make_pairs(labels, 201, np.random.default_rng(0))
    assert len(i) == 201 and same.sum() == 100
    assert np.array_equal(labels[i] == labels[j], same)
    assert np.all(i[same] != j[same])
    assert 1 not in labels[i[same]]                  # class 1 has one image: no same pairs
    with pytest.raises(ValueError, match="two samples"):
        make_pairs(np.array([0, 1, 2]), 10)


def test_one_shot_accuracy_of_separated_clusters_is_one():
    labels = np.repeat([0, 1, 2], 4)
    emb = np.eye(3)[labels] + 0.01 * np.random.default_rng(0).standard_normal((12, 3))
    assert one_shot_accuracy(emb, labels, 50, np.random.default_rng(0)) == 1.0


# ---- the demo ------------------------------------------------------------------------------

def test_verify_demo_quick_writes_metrics_above_chance(tmp_path, capsys):
    # --quick: 3 epochs on 60 images per seen class, 600 test pairs of digits 7-9. Measured
    # over seeds 0-3: pair accuracy 0.785-0.793, AUC 0.85-0.88; the same network untrained
    # 0.74-0.75 and AUC 0.80-0.84, raw pixels 0.75-0.77. Chance is 0.5 and the standard error
    # of a 600-pair accuracy is 0.02, so 0.70 is ten standard errors above chance and clear of
    # the run-to-run spread; training must also beat the untrained network's AUC.
    out = tmp_path / "v"
    assert verify_main(["--quick", "--out", str(out), "--quiet", "--threads", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for name in ("roc.png", "loss.png"):
        assert os.path.getsize(out / name) > 1000
    assert m["test_classes"] == [7, 8, 9] and m["train_classes"] == list(range(7))
    assert m["test_accuracy"] > 0.70 and m["test_auc"] > 0.80
    assert m["test_auc"] > m["baseline_untrained"]["test_auc"]
    assert m["one_shot_accuracy"] > 0.55                      # chance: 1/3
    assert len(m["history"]["loss"]) == 3 and all(np.isfinite(m["history"]["loss"]))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)


@pytest.mark.parametrize("args, message", [
    (["--train-classes", "0-7", "--test-classes", "7-9"], "must not overlap"),
    (["--train-classes", "zero"], "expected digit classes"),
    (["--test-classes", "8-12"], "classes in 0..9"),
    (["--image-size", "12"], "multiple of 8"),
    (["--margin", "0"], "--margin"),
    (["--widths", "8,x"], "--widths"),
    (["--widths", "8,8,8,8,8"], "--widths"),
])
def test_verify_demo_bad_arguments_return_2(args, message, tmp_path, capsys):
    assert verify_main(args + ["--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnfast verify: error:") and message in err


def test_verify_demo_runs_siamese_net_with_batch_hard_mining(tmp_path):
    # The other model and mining paths must run and beat chance (0.5): one quick epoch gave
    # pair accuracy 0.63-0.68 and AUC 0.72-0.77 over seeds 0-1 (below the untrained network:
    # the README explains why the projected embedding generalises worse).
    out = tmp_path / "s"
    assert verify_main(["--quick", "--epochs", "1", "--model", "siamese", "--mining", "batch_hard",
                        "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "siamese" and m["embedding_size"] == 32 and m["config"]["mining"] == "batch_hard"
    assert m["test_accuracy"] > 0.55 and m["test_auc"] > 0.62
    assert np.isfinite(m["history"]["loss"][0]) and m["history"]["active"][0] > 0
