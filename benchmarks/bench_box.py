"""Side-by-side timing of cnnfast's box kernels against PyTorch.

PyTorch itself has no box operations (torchvision's ``box_iou``/``generalized_box_iou``/
``complete_box_iou`` are plain torch tensor ops), so the comparison is with those
formulas written in torch ops here:

- IoU-type matrices, (N, 4) x (M, 4) -> (N, M), for each kind;
- the matched-pair CIoU loss, forward + backward (cnnfast's C++ gradient vs torch autograd);
- greedy NMS: against ``torchvision.ops.nms`` (a C++ kernel) when torchvision imports;
  otherwise against torch ops (one IoU matrix, then a Python loop over kept boxes, the
  usual pure-PyTorch fallback). That row compares a C++ loop with a Python one, so it is
  printed but left out of the geometric mean.

Both libraries run on 2 threads; each case is warmed up, then the two sides are timed
in turn ``--repeats`` times and the medians compared (ratio = torch / cnnfast, > 1 means
cnnfast is faster). Other jobs on the machine make the numbers noisy.

    python benchmarks/bench_box.py [--quick]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import cnnfast
from cnnfast import _C
from cnnfast.detection import complete_box_iou_loss, nms

from _common import header, interleaved, median

try:
    from torchvision.ops import nms as torchvision_nms
except Exception:  # not installed, or built for another torch (it fails at import then)
    torchvision_nms = None


def torch_formula(a, b, kind):
    """IoU-type value of a[..., 4] vs b[..., 4] (broadcast) in torch ops, as torchvision writes it."""
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=0), (a[..., 3] - a[..., 1]).clamp(min=0)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=0), (b[..., 3] - b[..., 1]).clamp(min=0)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    union = wa * ha + wb * hb - inter
    iou = inter / union.clamp(min=1e-12)
    if kind == "iou":
        return iou
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    if kind == "giou":
        c = (cw * ch).clamp(min=1e-12)
        return iou - (c - union) / c
    d2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) ** 2
          + (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) ** 2) / 4
    diou = iou - d2 / (cw ** 2 + ch ** 2).clamp(min=1e-12)
    if kind == "diou":
        return diou
    v = 4 / math.pi ** 2 * (torch.atan2(wb, hb) - torch.atan2(wa, ha)) ** 2
    return diou - v * v / (1 - iou + v).clamp(min=1e-12)


def torch_matrix(a, b, kind):
    return torch_formula(a[:, None, :], b[None, :, :], kind)


def torch_nms(boxes, scores, thr):
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    iou = torch_matrix(b, b, "iou")
    alive = torch.ones(len(b), dtype=torch.bool)
    keep = []
    for i in range(len(b)):
        if alive[i]:
            keep.append(i)
            alive &= iou[i] < thr
    return order[torch.tensor(keep, dtype=torch.long)]


def random_boxes(rng, n, dtype=np.float32):
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2, help="threads for both libraries")
    a = ap.parse_args()
    cnnfast.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    n = 300 if a.quick else 1500
    repeats = a.repeats or (3 if a.quick else 15)
    boxes1, boxes2 = random_boxes(rng, n), random_boxes(rng, n)
    t1, t2 = torch.from_numpy(boxes1), torch.from_numpy(boxes2)
    cases = []
    for kind in ("iou", "giou", "diou", "ciou"):
        cases.append((f"{kind} matrix {n}x{n}", lambda k=kind: _C.box_iou_forward(boxes1, boxes2, k),
                      lambda k=kind: torch_matrix(t1, t2, k)))

    pairs = 10 * n
    p1, p2 = random_boxes(rng, pairs, np.float64), random_boxes(rng, pairs, np.float64)
    p2[:, :2] = p1[:, :2] + rng.uniform(-10, 10, (pairs, 2))
    p2[:, 2:] = p2[:, :2] + rng.uniform(5, 80, (pairs, 2))

    def ours_loss():
        x = cnnfast.tensor(p1, requires_grad=True)
        complete_box_iou_loss(x, cnnfast.tensor(p2), reduction="sum").backward()

    def torch_loss():
        x = torch.tensor(p1, requires_grad=True)
        (1 - torch_formula(x, torch.from_numpy(p2), "ciou")).sum().backward()

    cases.append((f"ciou loss fwd+bwd {pairs} pairs", ours_loss, torch_loss))
    nb = 2000 if a.quick else 6000
    nboxes = random_boxes(rng, nb)
    nscores = rng.uniform(0, 1, nb).astype(np.float32)
    tb, ts = torch.from_numpy(nboxes), torch.from_numpy(nscores)
    # Random float scores and coordinates: no IoU lands exactly on 0.5, so ">=" (ours) and
    # ">" (torchvision) keep the same boxes.
    assert np.array_equal(nms(nboxes, nscores, 0.5), torch_nms(tb, ts, 0.5).numpy())
    if torchvision_nms is not None:
        assert np.array_equal(nms(nboxes, nscores, 0.5), torchvision_nms(tb, ts, 0.5).numpy())
        cases.append((f"nms {nb} boxes (torchvision.ops)", lambda: nms(nboxes, nscores, 0.5),
                      lambda: torchvision_nms(tb, ts, 0.5), True))
    else:
        cases.append((f"nms {nb} boxes (Python loop) *", lambda: nms(nboxes, nscores, 0.5),
                      lambda: torch_nms(tb, ts, 0.5), False))

    print(header(a.threads, f"median of {repeats} interleaved calls, 20 ms pause before each"))
    print(f"{'case':38s} {'cnnfast ms':>11s} {'torch ms':>10s} {'torch/cnnfast':>14s}")
    ratios = []
    for name, ours, theirs, *in_mean in cases:
        t = interleaved({"ours": ours, "torch": theirs}, repeats, pause=0.02)
        t_ours, t_torch = median(t["ours"]), median(t["torch"])
        if not in_mean or in_mean[0]:
            ratios.append(t_torch / t_ours)
        print(f"{name:38s} {t_ours * 1e3:11.3f} {t_torch * 1e3:10.3f} {t_torch / t_ours:13.2f}x")
    print(f"geometric mean ratio over {len(ratios)} cases {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x")
    if torchvision_nms is None:
        print("* torchvision does not import here: NMS is compared with a Python loop over torch ops "
              "and left out of the mean")


if __name__ == "__main__":
    main()
