"""Box kernels: IoU/GIoU/DIoU/CIoU matrices and pair gradients, NMS, soft-NMS, box
formats and k-means anchors, against an independent reference written here (one
formula generic over NumPy and PyTorch, so values are checked against NumPy and
gradients against torch autograd and float64 finite differences)."""
import math

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import _C
from cnnfast.detection import (batched_nms, score_filter, box_area, box_convert, box_iou, box_iou_pairs, complete_box_iou,
                               complete_box_iou_loss, distance_box_iou, distance_box_iou_loss,
                               generalized_box_iou, generalized_box_iou_loss, iou_loss, kmeans_anchors, nms,
                               soft_nms, wh_iou)
from helpers import assert_close, assert_nontrivial, numerical_grad

KINDS = ["iou", "giou", "diou", "ciou"]


# ---- the reference ---------------------------------------------------------------------------
def _safe_div(xp, num, den):
    """num / den where den > 0, else 0 (the kernels' convention for zero denominators)."""
    ok = den > 0
    one = xp.ones_like(den)
    return xp.where(ok, num / xp.where(ok, den, one), xp.zeros_like(num))


def ref_pairs(a, b, kind, xp=np):
    """IoU-type value of a[..., :] vs b[..., :] (broadcast), written from the formulas."""
    c0 = lambda v: xp.clip(v, 0, None)  # noqa: E731
    ax1, ay1, ax2, ay2 = (a[..., i] for i in range(4))
    bx1, by1, bx2, by2 = (b[..., i] for i in range(4))
    wa, ha, wb, hb = c0(ax2 - ax1), c0(ay2 - ay1), c0(bx2 - bx1), c0(by2 - by1)
    inter = c0(xp.minimum(ax2, bx2) - xp.maximum(ax1, bx1)) * c0(xp.minimum(ay2, by2) - xp.maximum(ay1, by1))
    union = wa * ha + wb * hb - inter
    iou = _safe_div(xp, inter, union)
    if kind == "iou":
        return iou
    cw = c0(xp.maximum(ax2, bx2) - xp.minimum(ax1, bx1))
    ch = c0(xp.maximum(ay2, by2) - xp.minimum(ay1, by1))
    if kind == "giou":
        c = cw * ch
        return iou - _safe_div(xp, c - union, c)
    d2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    diou = iou - _safe_div(xp, d2, cw ** 2 + ch ** 2)
    if kind == "diou":
        return diou
    v = 4 / math.pi ** 2 * (xp.arctan2(wb, hb) - xp.arctan2(wa, ha)) ** 2
    return diou - _safe_div(xp, v * v, 1 - iou + v)


def ref_matrix(a, b, kind):
    return ref_pairs(np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :], kind)


def ref_nms(boxes, scores, iou_threshold, score_threshold=-np.inf, labels=None):
    boxes = np.asarray(boxes, np.float64)
    cand = [i for i in range(len(boxes)) if scores[i] >= score_threshold]
    cand.sort(key=lambda i: (-scores[i], i))
    keep = []
    while cand:
        i = cand.pop(0)
        keep.append(i)
        cand = [j for j in cand if (labels is not None and labels[j] != labels[i])
                or ref_pairs(boxes[i], boxes[j], "iou") < iou_threshold]
    return np.array(keep, dtype=np.int64)


def ref_soft_nms(boxes, scores, method, sigma, iou_threshold, score_threshold, labels=None):
    boxes = np.asarray(boxes, np.float64)
    s = np.array(scores, np.float64)
    active = [i for i in range(len(boxes)) if s[i] >= score_threshold]
    keep = []
    while active:
        i = max(active, key=lambda j: (s[j], -j))
        keep.append(i)
        active.remove(i)
        rest = []
        for j in active:
            if labels is None or labels[j] == labels[i]:
                iou = float(ref_pairs(boxes[i], boxes[j], "iou"))
                if method == "gaussian":
                    s[j] *= math.exp(-iou * iou / sigma)
                elif iou >= iou_threshold:
                    s[j] *= 1 - iou
                if s[j] < score_threshold:
                    continue
            rest.append(j)
        active = rest
    return np.array(keep, dtype=np.int64), s


# ---- box sets ---------------------------------------------------------------------------------
def random_boxes(rng, n, scale=10.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def degenerate_boxes():
    """Points, lines, an inverted box, identical boxes, boxes touching along an edge or
    at a corner, nested boxes and disjoint boxes."""
    return np.array([
        [1, 1, 1, 1],      # a point
        [1, 1, 1, 1],      # the same point
        [0, 2, 4, 2],      # a horizontal line
        [2, 0, 2, 4],      # a vertical line
        [3, 3, 1, 1],      # inverted: area 0
        [0, 0, 2, 2],
        [0, 0, 2, 2],      # identical to the previous
        [2, 0, 4, 2],      # touches [0,0,2,2] along x = 2
        [2, 2, 3, 3],      # touches [0,0,2,2] at a corner
        [0.5, 0.5, 1.5, 1.5],  # inside [0,0,2,2]
        [10, 10, 12, 13],  # far away
        [0, 0, 4, 1],      # wide, overlaps
    ], dtype=np.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_matches_reference_random_and_degenerate(kind, dtype, rng):
    a = np.concatenate([random_boxes(rng, 13), degenerate_boxes()]).astype(dtype)
    b = np.concatenate([degenerate_boxes(), random_boxes(rng, 17)]).astype(dtype)
    out = _C.box_iou_forward(a, b, kind)
    assert out.shape == (len(a), len(b)) and out.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(out, ref_matrix(a, b, kind), rtol=tol, atol=tol, what=kind)


def test_hand_computed_values():
    a = np.array([[0, 0, 2, 2]], np.float64)
    b = np.array([[1, 1, 3, 3]], np.float64)
    assert box_iou(a, b)[0, 0] == pytest.approx(1 / 7)
    assert generalized_box_iou(a, b)[0, 0] == pytest.approx(1 / 7 - 2 / 9)
    assert distance_box_iou(a, b)[0, 0] == pytest.approx(1 / 7 - 2 / 18)
    # same aspect ratio: v = 0, CIoU = DIoU
    assert complete_box_iou(a, b)[0, 0] == pytest.approx(1 / 7 - 2 / 18)
    # identical boxes: every variant is 1; touching boxes: IoU 0, GIoU 0 (the enclosing box is the union)
    assert np.allclose([f(a, a)[0, 0] for f in (box_iou, generalized_box_iou, distance_box_iou,
                                                  complete_box_iou)], 1.0)
    touch = np.array([[2, 0, 4, 2]], np.float64)
    assert box_iou(a, touch)[0, 0] == 0 and generalized_box_iou(a, touch)[0, 0] == 0
    # zero-area boxes: IoU 0 even when identical
    p = np.array([[1, 1, 1, 1]], np.float64)
    assert box_iou(p, p)[0, 0] == 0 and complete_box_iou(p, p)[0, 0] == 0
    # CIoU penalises a different aspect ratio with the same centre
    tall = np.array([[0.5, -1, 1.5, 3]], np.float64)
    assert complete_box_iou(a, tall)[0, 0] < distance_box_iou(a, tall)[0, 0]


@pytest.mark.parametrize("kind", KINDS)
def test_pairs_equal_matrix_diagonal(kind, rng):
    a = np.concatenate([random_boxes(rng, 11), degenerate_boxes()])
    b = np.concatenate([random_boxes(rng, 11), degenerate_boxes()[::-1]])
    pairs = _C.box_iou_pairs_forward(a, b, kind)
    assert_close(pairs, np.diag(_C.box_iou_forward(a, b, kind)), rtol=0, atol=0)


def test_matrix_independent_of_thread_count(rng):
    a = random_boxes(rng, 301)
    b = random_boxes(rng, 211)
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(1)
        one = _C.box_iou_forward(a, b, "ciou")
        cnnfast.set_num_threads(2)
        two = _C.box_iou_forward(a, b, "ciou")
    finally:
        cnnfast.set_num_threads(before)
    assert np.array_equal(one, two)


def test_empty_box_sets():
    e = np.zeros((0, 4), np.float32)
    b = np.ones((3, 4), np.float32)
    assert _C.box_iou_forward(e, b).shape == (0, 3)
    assert _C.box_iou_forward(b, e).shape == (3, 0)
    assert _C.nms_forward(e, np.zeros(0, np.float32)).shape == (0,)


# ---- gradients ----------------------------------------------------------------------------------
def well_separated_pairs(rng, n):
    """Random overlapping and disjoint pairs whose coordinates never tie (max/min have no kink)."""
    a = random_boxes(rng, n, 6)
    b = a + rng.uniform(-2.5, 2.5, (n, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.3)
    b[-1] += 20  # one disjoint pair: only GIoU/DIoU/CIoU have a gradient there
    return a, b


@pytest.mark.parametrize("kind", KINDS)
def test_pair_gradient_matches_torch_and_finite_differences(kind, rng):
    a, b = well_separated_pairs(rng, 7)
    g = rng.normal(size=len(a))
    ga, gb = _C.box_iou_pairs_backward(g, a, b, kind)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    (ref_pairs(ta, tb, kind, xp=torch) * torch.tensor(g)).sum().backward()
    assert_nontrivial(ta.grad.numpy(), tb.grad.numpy())
    assert_close(ga, ta.grad.numpy(), rtol=1e-9, atol=1e-11, what=f"{kind} grad boxes1 vs torch")
    assert_close(gb, tb.grad.numpy(), rtol=1e-9, atol=1e-11, what=f"{kind} grad boxes2 vs torch")
    na, nb = numerical_grad(lambda x, y: _C.box_iou_pairs_forward(x, y, kind), [a.copy(), b.copy()], g)
    assert_close(ga, na, rtol=1e-5, atol=1e-7, what=f"{kind} grad boxes1 vs FD")
    assert_close(gb, nb, rtol=1e-5, atol=1e-7, what=f"{kind} grad boxes2 vs FD")


def test_gradient_float32_close_to_float64(rng):
    a, b = well_separated_pairs(rng, 9)
    g = rng.normal(size=len(a))
    for kind in KINDS:
        g64 = _C.box_iou_pairs_backward(g, a, b, kind)
        g32 = _C.box_iou_pairs_backward(g.astype(np.float32), a.astype(np.float32), b.astype(np.float32), kind)
        for x32, x64 in zip(g32, g64):
            assert x32.dtype == np.float32
            assert_close(x32, x64, rtol=1e-3, atol=1e-4, what=kind)


def test_gradient_is_finite_on_degenerate_pairs():
    d = degenerate_boxes()
    a, b = d, d[::-1].copy()
    for kind in KINDS:
        ga, gb = _C.box_iou_pairs_backward(np.ones(len(a)), a, b, kind)
        assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb)), kind


@pytest.mark.parametrize("fn,kind", [(iou_loss, "iou"), (generalized_box_iou_loss, "giou"),
                                     (distance_box_iou_loss, "diou"), (complete_box_iou_loss, "ciou")])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_losses_autograd(fn, kind, reduction, rng):
    a, b = well_separated_pairs(rng, 5)
    ta = cnnfast.tensor(a, requires_grad=True)
    tb = cnnfast.tensor(b, requires_grad=True)
    loss = fn(ta, tb, reduction=reduction)
    per = 1 - ref_pairs(a, b, kind)
    expected = {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction]
    assert_close(loss.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    loss.sum().backward() if reduction == "none" else loss.backward()
    w = np.full(len(a), 1 / len(a) if reduction == "mean" else 1.0)
    na, nb = numerical_grad(lambda x, y: 1 - ref_pairs(x, y, kind), [a.copy(), b.copy()], w)
    assert_close(ta.grad.numpy(), na, rtol=1e-5, atol=1e-7)
    assert_close(tb.grad.numpy(), nb, rtol=1e-5, atol=1e-7)


def test_giou_loss_trains_a_box_onto_its_target():
    pred = cnnfast.tensor(np.array([[0.0, 0.0, 1.0, 1.0]]), requires_grad=True)
    target = cnnfast.tensor(np.array([[4.0, 3.0, 7.0, 5.0]]))
    opt = cnnfast.optim.Adam([pred], lr=0.1)
    for _ in range(300):
        loss = generalized_box_iou_loss(pred, target, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    # disjoint at the start: plain IoU would have no gradient at all
    assert box_iou(pred.detach().numpy(), target.numpy())[0, 0] > 0.9


# ---- NMS ----------------------------------------------------------------------------------
def clustered(rng, n, dtype=np.float64, grid=None):
    """Boxes in a few clusters (so NMS suppresses), scores with ties."""
    centres = rng.uniform(5, 25, (4, 2))
    c = centres[rng.integers(0, 4, n)] + rng.normal(0, 1.5, (n, 2))
    wh = rng.uniform(2, 8, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
    if grid:
        boxes = np.round(boxes / grid) * grid
    scores = np.round(rng.uniform(0, 1, n), 1)  # a tenth apart: many exact ties
    return boxes.astype(dtype), scores.astype(dtype)


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_reference(iou_threshold, rng):
    for trial in range(5):
        boxes, scores = clustered(rng, 60)
        boxes = np.concatenate([boxes, degenerate_boxes()])
        scores = np.concatenate([scores, np.full(len(degenerate_boxes()), 0.5)])
        keep = _C.nms_forward(boxes, scores, iou_threshold)
        assert keep.dtype == np.int64
        assert np.array_equal(keep, ref_nms(boxes, scores, iou_threshold)), trial


def test_nms_float32_on_exact_grid(rng):
    """Half-pixel coordinates make every IoU exact in float32, so float32 must agree exactly too."""
    boxes, scores = clustered(rng, 80, np.float32, grid=0.5)
    keep = nms(boxes, scores, 0.5, score_threshold=0.3)
    assert np.array_equal(keep, ref_nms(boxes, scores, 0.5, 0.3))


def test_nms_cs230_rule():
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 2, 1], [5, 5, 6, 6], [5, 5, 6, 6]], np.float64)
    scores = np.array([0.9, 0.8, 0.9, 0.59, 0.7])
    # box 1 has IoU exactly 0.5 with box 0: suppressed (>=); boxes 0 and 2 tie: the lower index
    # wins; box 3 (score 0.59) is kept by default, as torchvision keeps every score, and box 4,
    # identical to it with a higher score, suppresses it
    assert nms(boxes, scores).tolist() == [0, 4]
    assert nms(boxes, scores, score_threshold=None).tolist() == [0, 4]
    # the CS-230 pipeline: the score filter drops box 3 first, then NMS
    sel = score_filter(scores)
    assert sel.tolist() == [0, 1, 2, 4]
    assert sel[nms(boxes[sel], scores[sel])].tolist() == [0, 4]
    assert nms(boxes, scores, score_threshold=0.6).tolist() == [0, 4]
    # a lone low-scoring box survives NMS (no hidden score threshold) but not the filter
    lone = np.array([[0, 0, 1, 1]], np.float64)
    assert nms(lone, np.array([0.1])).tolist() == [0]
    assert batched_nms(lone, np.array([0.1]), [0]).tolist() == [0]
    assert score_filter(np.array([0.1, np.nan, 0.6])).tolist() == [2]
    assert nms(boxes, scores, iou_threshold=0.51, score_threshold=None).tolist() == [0, 1, 4]


def test_nms_threshold_compares_the_iou_of_the_boxes_dtype():
    """IoU 7/10 rounds below 0.7 in float32 and to 0.7 in float64; the threshold must not be
    rounded to float32 too (float32(0.7) would equal the float32 IoU and suppress)."""
    boxes = np.array([[0, 0, 10, 1], [0, 0, 7, 1]])
    scores = np.array([0.9, 0.8])
    assert float(box_iou(boxes[:1].astype(np.float32), boxes[1:].astype(np.float32))[0, 0]) < 0.7
    assert nms(boxes.astype(np.float32), scores.astype(np.float32), 0.7, None).tolist() == [0, 1]
    assert nms(boxes.astype(np.float64), scores, 0.7, None).tolist() == [0]


def test_nms_zero_area_boxes_never_suppress():
    boxes = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2]], np.float64)
    assert nms(boxes, np.array([0.9, 0.9, 0.8]), score_threshold=None).tolist() == [0, 1, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_nms_matches_reference(dtype, rng):
    for _ in range(5):
        boxes, scores = clustered(rng, 70, dtype, grid=0.5)
        labels = rng.integers(0, 3, len(boxes))
        keep = batched_nms(boxes, scores, labels, 0.5, 0.2)
        assert np.array_equal(keep, ref_nms(boxes, scores, 0.5, 0.2, labels))
        # per class equals plain NMS on each class alone
        for c in range(3):
            idx = np.flatnonzero(labels == c)
            alone = idx[nms(boxes[idx], scores[idx], 0.5, 0.2)]
            assert np.array_equal(np.sort(keep[labels[keep] == c]), np.sort(alone))


def test_nms_large_input_uses_threads_consistently(rng):
    boxes, scores = clustered(rng, 9000)
    scores = scores + rng.uniform(0, 0.01, len(scores))
    before = cnnfast.get_num_threads()
    try:
        cnnfast.set_num_threads(1)
        one = nms(boxes, scores, 0.5, None)
        cnnfast.set_num_threads(2)
        two = nms(boxes, scores, 0.5, None)
    finally:
        cnnfast.set_num_threads(before)
    assert np.array_equal(one, two) and 0 < len(one) < len(boxes)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("per_class", [False, True])
def test_soft_nms_matches_reference(method, per_class, rng):
    boxes, scores = clustered(rng, 40)
    labels = rng.integers(0, 2, len(boxes)) if per_class else None
    keep, kept_scores = soft_nms(boxes, scores, labels, method=method, sigma=0.5, iou_threshold=0.3,
                                 score_threshold=0.05)
    ref_keep, ref_scores = ref_soft_nms(boxes, scores, method, 0.5, 0.3, 0.05, labels)
    assert np.array_equal(keep, ref_keep)
    assert_close(kept_scores, ref_scores[ref_keep], rtol=1e-12, atol=1e-12)
    # soft-NMS keeps more boxes than hard NMS at the same threshold, and only lowers scores
    assert len(keep) >= len(nms(boxes, scores, 0.3, 0.05))
    assert np.all(kept_scores <= scores[keep])


# ---- formats, anchors ------------------------------------------------------------------------
def test_box_convert_round_trips_and_values(rng):
    b = random_boxes(rng, 9)
    for fmt in ("xywh", "cxcywh"):
        assert_close(box_convert(box_convert(b, "xyxy", fmt), fmt, "xyxy"), b, rtol=1e-12, atol=1e-12)
    one = np.array([[1.0, 2.0, 5.0, 4.0]])
    assert box_convert(one, "xyxy", "xywh").tolist() == [[1, 2, 4, 2]]
    assert box_convert(one, "xyxy", "cxcywh").tolist() == [[3, 3, 4, 2]]
    assert box_convert(np.array([[3.0, 3, 4, 2]]), "cxcywh", "xywh").tolist() == [[1, 2, 4, 2]]
    assert box_area(np.array([[0, 0, 2, 3], [1, 1, 1, 5], [3, 3, 1, 1]])).tolist() == [6, 0, 0]


def test_kmeans_anchors_recovers_clusters(rng):
    true = np.array([[4.0, 12.0], [10.0, 10.0], [24.0, 8.0]])
    wh = np.concatenate([t * np.exp(rng.normal(0, 0.05, (200, 2))) for t in true])
    anchors, mean_iou = kmeans_anchors(wh, 3, seed=0)
    assert anchors.shape == (3, 2)
    assert np.all(np.diff(anchors.prod(1)) >= 0)  # sorted by area
    assert_close(anchors, true, rtol=0.05, atol=0)
    assert mean_iou > 0.85
    again, _ = kmeans_anchors(wh, 3, seed=0)
    assert np.array_equal(anchors, again)
    # more anchors never fit worse than fewer
    assert kmeans_anchors(wh, 1)[1] < kmeans_anchors(wh, 2)[1] < mean_iou


def test_wh_iou_is_centred_box_iou():
    wh = np.array([[2.0, 4.0], [4.0, 2.0]])
    assert_close(wh_iou(wh, wh), [[1, 4 / 12], [4 / 12, 1]], rtol=1e-12, atol=0)


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_input_raises():
    b = np.zeros((3, 4), np.float32)
    s = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"boxes1: expected boxes of shape \(N, 4\).*\(3, 3\)"):
        _C.box_iou_forward(np.zeros((3, 3), np.float32), b)
    with pytest.raises(ValueError, match=r"boxes2: expected boxes of shape"):
        _C.box_iou_forward(b, np.zeros((4,), np.float32))
    with pytest.raises(TypeError, match="boxes2: expected dtype float32"):
        _C.box_iou_forward(b, b.astype(np.float64))
    with pytest.raises(TypeError, match="boxes1: expected a float32 or float64 array, got dtype int64"):
        _C.box_iou_forward(b.astype(np.int64), b)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.box_iou_forward(np.zeros((3, 8), np.float32)[:, ::2], b)
    with pytest.raises(ValueError, match="kind: expected 'iou', 'giou', 'diou' or 'ciou', got 'xiou'"):
        _C.box_iou_forward(b, b, "xiou")
    with pytest.raises(ValueError, match=r"boxes2: expected shape \(3, 4\), got \(2, 4\)"):
        _C.box_iou_pairs_forward(b, b[:2].copy())
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3,\)"):
        _C.box_iou_pairs_backward(np.zeros(2, np.float32), b, b)
    with pytest.raises(ValueError, match=r"scores: expected shape \(3,\)"):
        _C.nms_forward(b, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="scores: expected dtype float32"):
        _C.nms_forward(b, s.astype(np.float64))
    with pytest.raises(TypeError, match="labels: expected dtype int64"):
        _C.nms_forward(b, s, labels=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\)"):
        _C.nms_forward(b, s, labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="iou_threshold: expected a finite number"):
        _C.nms_forward(b, s, float("nan"))
    with pytest.raises(ValueError, match="sigma: expected a finite number > 0"):
        _C.soft_nms_forward(b, s, "gaussian", 0.0)
    with pytest.raises(ValueError, match="method: expected 'linear' or 'gaussian', got 'hard'"):
        _C.soft_nms_forward(b, s, "hard")
    with pytest.raises(ValueError, match="in_fmt: expected one of"):
        box_convert(b, "xyz", "xyxy")
    with pytest.raises(ValueError, match="reduction: expected"):
        generalized_box_iou_loss(cnnfast.tensor(b), cnnfast.tensor(b), reduction="avg")
    with pytest.raises(TypeError, match="boxes1: expected a cnnfast.Tensor"):
        box_iou_pairs(b, cnnfast.tensor(b))
    with pytest.raises(ValueError, match="idxs: expected shape"):
        batched_nms(b, s, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        kmeans_anchors(np.ones((5, 2)), 0)
    with pytest.raises(ValueError, match="wh: expected at least k = 6 shapes"):
        kmeans_anchors(np.ones((5, 2)), 6)
