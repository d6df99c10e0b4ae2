"""YOLO encoding/decoding, the YOLO loss with its landmark head, mAP, the generated
shapes and the `cnnfast detect --demo` command (quick setting)."""
import json
import os

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast.detection import (YoloGrid, activate, average_precision, decode, encode, match_detections,
                               mean_average_precision, to_grid, yolo_loss)
from cnnfast.detection import demo
from cnnfast.detection.data import CLASSES, NUM_LANDMARKS, generate_shapes
from helpers import assert_close, assert_nontrivial, numerical_grad

ANCHORS = np.array([[8.0, 8.0], [20.0, 12.0], [12.0, 24.0]])


def spec(landmarks=0, grid=4):
    return YoloGrid(image_size=8 * grid, grid=grid, anchors=ANCHORS, num_classes=3, num_landmarks=landmarks)


def grid_fitting_boxes(rng, s, n_images=6, per_image=5):
    """Boxes with positive size and centres inside the image, at most k per cell."""
    boxes, labels, lms, vis = [], [], [], []
    for _ in range(n_images):
        cells = rng.choice(s.grid * s.grid, per_image, replace=False)
        c = np.stack([(cells % s.grid + rng.uniform(0, 1, per_image)) * s.cell,
                      (cells // s.grid + rng.uniform(0, 1, per_image)) * s.cell], 1)
        wh = rng.uniform(2, 30, (per_image, 2))
        boxes.append(np.concatenate([c - wh / 2, c + wh / 2], 1))
        labels.append(rng.integers(0, s.num_classes, per_image))
        lms.append(c[:, None, :] + rng.normal(0, 6, (per_image, max(s.num_landmarks, 1), 2))[:, :s.num_landmarks])
        vis.append(rng.uniform(size=(per_image, s.num_landmarks)) < 0.7)
    return boxes, labels, lms, vis


def _sorted(d):
    order = np.lexsort(d["boxes"].T[::-1])
    return {k: v[order] for k, v in d.items()}


@pytest.mark.parametrize("landmarks", [0, 3])
def test_encode_decode_identity(landmarks, rng):
    s = spec(landmarks)
    boxes, labels, lms, vis = grid_fitting_boxes(rng, s)
    enc = encode(s, boxes, labels, lms if landmarks else None, vis if landmarks else None)
    assert enc["target"].shape == (6, 4, 4, 3, 8) and enc["dropped"] == 0
    dec = decode(s, enc["target"], enc["landmarks"] if landmarks else None)
    for i, d in enumerate(dec):
        d = _sorted(d)
        ref = _sorted({"boxes": boxes[i], "labels": labels[i], **({"landmarks": lms[i], "vis": vis[i]}
                                                                  if landmarks else {})})
        assert_close(d["boxes"], ref["boxes"], rtol=1e-12, atol=1e-10)
        assert np.array_equal(d["labels"], ref["labels"])
        assert np.all(d["scores"] == 1)
        if landmarks:
            # invisible landmarks are not encoded: they decode to the box centre
            centre = (ref["boxes"][:, None, :2] + ref["boxes"][:, None, 2:]) / 2
            expect = np.where(ref["vis"][..., None], ref["landmarks"], centre)
            assert_close(d["landmarks"], expect, rtol=1e-12, atol=1e-10)


def test_encode_layout_values():
    s = spec()
    # centre (13, 22) -> column 1, row 2 of 8-pixel cells; 10 x 20 box: best anchor 12 x 24
    enc = encode(s, [np.array([[8.0, 12.0, 18.0, 32.0]])], [np.array([2])])
    t = enc["target"]
    assert np.count_nonzero(t[..., 0]) == 1 and t[0, 2, 1, 2, 0] == 1
    assert_close(t[0, 2, 1, 2, :5], [1, 13 / 8 - 1, 22 / 8 - 2, np.log(20 / 24), np.log(10 / 12)], rtol=1e-12,
                 atol=1e-12)
    assert t[0, 2, 1, 2, 5:].tolist() == [0, 0, 1]


def test_encode_collisions_and_drops():
    s = spec()
    same_cell = np.array([[0, 0, 8, 8], [1, 1, 7, 7], [2, 2, 6, 6], [3, 3, 5, 5]], np.float64)
    enc = encode(s, [same_cell], [np.zeros(4, np.int64)])
    # all want the small anchor; the next ones take the next best free anchors; the 4th finds none
    assert enc["target"][0, 0, 0, :, 0].tolist() == [1, 1, 1] and enc["dropped"] == 1
    outside = np.array([[30, 30, 40, 40], [5, 5, 5, 9]], np.float64)  # centre off the image; zero width
    assert encode(s, [outside], [np.zeros(2, np.int64)])["dropped"] == 2
    with pytest.raises(ValueError, match=r"labels\[0\]: expected classes in \[0, 3\)"):
        encode(s, [same_cell], [np.full(4, 3)])


def torch_yolo_loss(raw, target, lm, mask, k, lam):
    """An independent transcription of the documented loss with torch ops."""
    n, c, g, _ = raw.shape
    y = raw.reshape(n, k, c // k, g, g).permute(0, 3, 4, 1, 2)
    p = target.shape[-1] - 5
    t = torch.tensor(target)
    obj = t[..., 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(y[..., 0], obj, reduction="none")
    l_obj = (bce * (lam["obj"] * obj + lam["noobj"] * (1 - obj))).sum()
    l_xy = lam["coord"] * ((torch.sigmoid(y[..., 1:3]) - t[..., 1:3]) ** 2 * obj[..., None]).sum()
    l_wh = lam["coord"] * ((y[..., 3:5] - t[..., 3:5]) ** 2 * obj[..., None]).sum()
    ce = -(torch.log_softmax(y[..., 5:5 + p], -1) * t[..., 5:]).sum(-1)
    l_cls = lam["cls"] * (ce * obj).sum()
    L = mask.shape[-1]
    pl = y[..., 5 + p:].reshape(*y.shape[:4], L, 2)
    m = torch.tensor(mask) * obj[..., None]
    l_lm = lam["landmark"] * (((pl - torch.tensor(lm)) ** 2).sum(-1) * m).sum()
    return (l_obj + l_xy + l_wh + l_cls + l_lm) / n


def test_yolo_loss_matches_torch_and_finite_differences(rng):
    s = spec(landmarks=2, grid=2)
    boxes, labels, lms, vis = grid_fitting_boxes(rng, s, n_images=2, per_image=2)
    enc = encode(s, boxes, labels, lms, vis)
    raw = rng.normal(0, 1, (2, s.channels, 2, 2))
    lam = dict(coord=5.0, noobj=0.5, obj=1.0, cls=1.0, landmark=0.7)
    x = cnnfast.tensor(raw.copy(), requires_grad=True)
    terms = {}
    loss = yolo_loss(x, enc["target"], enc["landmarks"], enc["landmark_mask"], lambda_landmark=0.7,
                     components=terms)
    loss.backward()
    tr = torch.tensor(raw, requires_grad=True)
    ref = torch_yolo_loss(tr, enc["target"], enc["landmarks"], enc["landmark_mask"], s.k, lam)
    ref.backward()
    assert_close(loss.detach().numpy(), ref.item(), rtol=1e-12, atol=1e-12)
    assert sum(terms.values()) == pytest.approx(loss.item(), rel=1e-12)
    assert all(v > 0 for v in terms.values()), terms
    assert_nontrivial(tr.grad.numpy())
    assert_close(x.grad.numpy(), tr.grad.numpy(), rtol=1e-10, atol=1e-12)

    def f(r):
        return np.asarray(yolo_loss(cnnfast.tensor(r), enc["target"], enc["landmarks"], enc["landmark_mask"],
                                    lambda_landmark=0.7).numpy())

    (num,) = numerical_grad(f, [raw.copy()], np.array(1.0))
    assert_close(x.grad.numpy(), num, rtol=1e-5, atol=1e-7)


def test_yolo_loss_float32_and_bad_shapes(rng):
    s = spec()
    enc = encode(s, [np.array([[1.0, 1, 9, 9]])], [np.array([0])])
    x = cnnfast.tensor(rng.normal(size=(1, s.channels, 4, 4)).astype(np.float32), requires_grad=True)
    loss = yolo_loss(x, enc["target"])
    loss.backward()
    assert loss.detach().numpy().dtype == np.float32 and x.grad.dtype == np.float32
    with pytest.raises(ValueError, match=r"pred: expected shape \(1, 24, 4, 4\)"):
        yolo_loss(cnnfast.tensor(np.zeros((1, 25, 4, 4))), enc["target"])
    with pytest.raises(ValueError, match="landmarks, landmark_mask: give both"):
        yolo_loss(x, enc["target"], landmarks=np.zeros((1, 4, 4, 3, 1, 2)))


def test_activate_and_to_grid_layout(rng):
    s = spec(landmarks=1)
    raw = rng.normal(size=(2, s.channels, 4, 4))
    g = to_grid(s, raw)
    # channel a * depth + j of pixel (row, col) is entry j of anchor a in cell (row, col)
    assert g[1, 3, 2, 2, 4] == raw[1, 2 * s.depth + 4, 3, 2]
    y, lm = activate(s, raw)
    assert np.all((y[..., :3] > 0) & (y[..., :3] < 1))
    assert_close(y[..., 5:].sum(-1), np.ones(y.shape[:4]), rtol=1e-12, atol=1e-12)
    assert lm.shape == (2, 4, 4, 3, 1, 2) and lm[1, 3, 2, 2, 0, 1] == raw[1, 2 * s.depth + 9, 3, 2]


def test_average_precision_hand_example():
    # 3 ground truths; ranked detections: TP, FP, TP, FP -> precision envelope 1, 2/3, 2/3 at recall 1/3, 2/3
    ap = average_precision(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.8, 0.7, 0.6]), 3)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert average_precision(np.array([True, True]), np.array([0.5, 0.4]), 2) == pytest.approx(1.0)


def test_matching_and_map(rng):
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    preds = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 25, 25]], np.float64)
    # the duplicate is a false positive; the last has IoU 0.25 < 0.5
    assert match_detections(preds, np.array([0.9, 0.8, 0.7]), gt_boxes).tolist() == [0, -1, -1]
    gts = [{"boxes": gt_boxes, "labels": np.array([0, 1])}]
    perfect = [{"boxes": gt_boxes, "scores": np.array([0.9, 0.8]), "labels": np.array([0, 1])}]
    assert mean_average_precision(perfect, gts, 3)["map"] == 1.0
    assert mean_average_precision(perfect, gts, 3)["ap"][2] is None
    swapped = [{"boxes": gt_boxes, "scores": np.array([0.9, 0.8]), "labels": np.array([1, 0])}]
    assert mean_average_precision(swapped, gts, 3)["map"] == 0.0


def test_generated_shapes_are_consistent():
    d = generate_shapes(20, 64, seed=3)
    again = generate_shapes(20, 64, seed=3)
    assert np.array_equal(d.images, again.images)
    assert d.images.shape == (20, 3, 64, 64) and d.images.dtype == np.float32
    for b, l, m, v in zip(d.boxes, d.labels, d.landmarks, d.visible):
        assert 1 <= len(b) <= 3 and np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= 64)
        assert m.shape == (len(b), NUM_LANDMARKS, 2)
        assert v.sum(1).tolist() == [{0: 0, 1: 4, 2: 3}[int(c)] for c in l]
        # corners lie on the box edges: their extremes are the box
        for box, pts, vis in zip(b, m, v):
            if vis.any():
                p = pts[vis]
                assert_close(np.concatenate([p.min(0), p.max(0)]), box, rtol=0, atol=1e-4)
    assert set(np.concatenate(d.labels).tolist()) == set(range(len(CLASSES)))


def test_demo_quick_writes_metrics(tmp_path):
    out = str(tmp_path / "run")
    assert demo.main(["--demo", "--quick", "--out", out, "--seed", "0"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    # The quick setting (320 images, 6 epochs of a width-8 network, ~3 s of CPU) is a smoke test
    # of the whole pipeline, far from converged (the default demo reaches mAP@0.5 0.94). It scored
    # 0.21-0.28 over seeds 0-3, an untrained network 0.0 (its boxes are anchors at cell
    # centres): 0.12 leaves room for platform rounding and still fails if nothing is learned.
    assert m["map_50"] >= 0.12, m["map_50"]
    assert m["landmark_error_px"] is not None and m["landmark_error_px"] < 12
    assert m["history"]["loss"][-1] < m["history"]["loss"][0]
    assert os.path.exists(os.path.join(out, "predictions.png")) and os.path.exists(os.path.join(out, "loss.png"))


def test_demo_bad_arguments(capsys):
    assert demo.main([]) == 2
    assert "pass --demo" in capsys.readouterr().err
    assert demo.main(["--demo", "--epochs", "0"]) == 2
    assert demo.main(["--demo", "--image-size", "60"]) == 2
    assert demo.main(["--demo", "--bogus"]) == 2
