"""``cnnfast verify``: one-shot verification of digit classes the network never saw.

A Siamese embedding network (``verification.net.ConvEmbedding``, or ``--model siamese``
for ``cnnfast.models.SiameseNet``; L2-normalised outputs) is trained with the triplet
loss and online mining on the digits of some classes (default 0-6). The distance
threshold that decides "same" vs "different" is chosen on validation pairs of those
classes, then applied unchanged to pairs of the held-out classes (default 7-9), none of
whose images were used in training. Reported: pair accuracy at
that threshold (chance: 50%, the pairs are balanced), ROC AUC, one-shot N-way
identification accuracy (one reference image per held-out class, chance 1/N), and the
same figures for raw-pixel distances and for the untrained network as baselines.

Writes to ``--out`` (default runs/verify-<timestamp>/): metrics.json, roc.png, loss.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from .._cli_common import Formatter, run_folder, run_guarded

PROG = "cnnfast verify"


def _classes(text: str, flag: str) -> list:
    """'0-6' or '7,8,9' -> sorted list of digit classes."""
    out = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"{flag}: expected digit classes like 0-6 or 7,8,9, got {text!r}") from None
    if not out or min(out) < 0 or max(out) > 9:
        raise ValueError(f"{flag}: expected digit classes in 0..9, got {text!r}")
    return sorted(out)


def build_parser() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n", 1)[1].replace("``", ""),
                                formatter_class=Formatter)
    p.add_argument("--demo", action="store_true", help="run the demo (the default; kept for symmetry)")
    p.add_argument("--train-classes", default="0-6", help="digit classes used for training and validation")
    p.add_argument("--test-classes", default="7-9", help="held-out digit classes for one-shot verification")
    p.add_argument("--model", default="conv", choices=["conv", "siamese"],
                   help="conv: conv features without projection (verification.net.ConvEmbedding); "
                        "siamese: cnnfast.models.SiameseNet (pooled, projected to --embedding-dim)")
    p.add_argument("--widths", default="32,64",
                   help="--model conv: channels of the conv stages (each halves the size)")
    p.add_argument("--epochs", type=int, default=12, help="passes over the training images")
    p.add_argument("--per-class", type=int, default=8, help="images per class in each batch (P x K sampling)")
    p.add_argument("--mining", default="semi_hard", choices=["batch_hard", "semi_hard"],
                   help="semi_hard: per anchor-positive pair, the nearest negative farther than the positive; "
                        "batch_hard: per anchor, the farthest positive and the nearest negative")
    p.add_argument("--margin", type=float, default=0.5, help="alpha of the triplet loss (squared distances)")
    p.add_argument("--embedding-dim", type=int, default=32, help="--model siamese: output size")
    p.add_argument("--image-size", type=int, default=16, help="digits are enlarged and padded to N x N")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine-annealed)")
    p.add_argument("--pairs", type=int, default=2000, help="pairs for validation and for the test")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, weights, batches and pairs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--quick", action="store_true",
                   help="at most 3 epochs on 60 images per class, 600 pairs (for tests)")
    p.add_argument("--out", default=None, help="output folder (default runs/verify-<timestamp>/)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _embed(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    import cnnfast

    with cnnfast.no_grad():
        return np.concatenate([model(cnnfast.tensor(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def _evaluate_pairs(emb: np.ndarray, pairs: tuple, threshold: Optional[float] = None) -> dict:
    from .verify import auc, best_threshold, pair_distances, roc_curve, verification_accuracy

    i, j, same = pairs
    d = pair_distances(emb, i, j)
    fpr, tpr, _ = roc_curve(same.astype(int), -d)
    out = {"auc": auc(fpr, tpr), "fpr": fpr, "tpr": tpr}
    t_best, acc_best = best_threshold(d, same)
    out["best_threshold"], out["best_accuracy"] = t_best, acc_best
    if threshold is not None:
        out["accuracy"] = verification_accuracy(d, same, threshold)
    return out


def one_shot_accuracy(emb: np.ndarray, labels: np.ndarray, episodes: int, rng: np.random.Generator) -> float:
    """N-way one-shot identification: per episode one random reference image per class and
    one query of a random class (not the reference itself); correct when the nearest
    reference is of the query's class. emb: (N, D), labels: (N,)."""
    classes = np.unique(labels)
    members = [np.nonzero(labels == c)[0] for c in classes]
    hits = 0
    for _ in range(episodes):
        refs = np.array([rng.choice(m) for m in members])
        k = rng.integers(len(classes))
        query = rng.choice(members[k][members[k] != refs[k]])
        d = np.sum((emb[refs] - emb[query]) ** 2, axis=1)
        hits += int(np.argmin(d) == k)
    return hits / episodes


def _plots(out: str, history: dict, test: dict, val: dict, pixels: dict, title: str) -> None:
    from ..training.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(test["fpr"], test["tpr"], label=f"held-out classes (AUC {test['auc']:.3f})")
    ax.plot(val["fpr"], val["tpr"], "--", label=f"validation, seen classes (AUC {val['auc']:.3f})")
    ax.plot(pixels["fpr"], pixels["tpr"], ":", label=f"raw pixels, held-out (AUC {pixels['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "roc.png"), dpi=100)
    plt.close(fig)

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, history["loss"], "-o", ms=3, label="triplet loss")
    a1.plot(epochs, history["active"], "-s", ms=3, label="fraction of active triplets")
    a1.set_xlabel("epoch")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(epochs, history["val_accuracy"], "-o", ms=3, label="validation pair accuracy")
    a2.plot(epochs, history["val_auc"], "-s", ms=3, label="validation AUC")
    a2.set_xlabel("epoch")
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=100)
    plt.close(fig)


def run(a: argparse.Namespace) -> dict:
    import cnnfast
    from .. import optim
    from ..data import load_digits, split_indices
    from ..data.transforms import RandomCrop
    from ..models.siamese import SiameseNet
    from .net import ConvEmbedding
    from ..training.progress import ProgressBar
    from ..training.trainer import _json_default, set_threads
    from .mining import batch_triplet_loss
    from .verify import make_pairs

    start = time.perf_counter()
    set_threads(a.threads)
    cnnfast.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    train_classes = _classes(a.train_classes, "--train-classes")
    test_classes = _classes(a.test_classes, "--test-classes")
    if set(train_classes) & set(test_classes):
        raise ValueError(f"--test-classes must not overlap --train-classes, both have "
                         f"{sorted(set(train_classes) & set(test_classes))}")
    if len(train_classes) < 2 or len(test_classes) < 2:
        raise ValueError("--train-classes and --test-classes need at least two classes each")
    for name in ("epochs", "per_class", "embedding_dim", "pairs"):
        if getattr(a, name) < 1 or (name == "per_class" and a.per_class < 2) or (name == "pairs" and a.pairs < 2):
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive value (per-class, pairs >= 2), "
                             f"got {getattr(a, name)}")
    if a.image_size < 8 or a.image_size % 8:
        raise ValueError(f"--image-size: expected a multiple of 8, got {a.image_size}")
    try:
        widths = tuple(int(w) for w in a.widths.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1 or a.image_size % 2 ** len(widths):
        raise ValueError(f"--widths: expected positive integers like 16,32 whose count k keeps --image-size "
                         f"divisible by 2**k, got {a.widths!r}")
    if a.margin <= 0:
        raise ValueError(f"--margin: expected a positive value, got {a.margin}")

    data = load_digits(a.image_size)
    seen = np.isin(data.y, train_classes)
    x_seen, y_seen = data.x[seen], data.y[seen]
    x_test, y_test = data.x[np.isin(data.y, test_classes)], data.y[np.isin(data.y, test_classes)]
    tr, va, _ = split_indices(y_seen, 0.2, 0.0, a.seed)
    if a.quick:
        tr = np.sort(rng.permutation(tr)[:60 * len(train_classes)])
    mean, std = float(x_seen[tr].mean()), float(x_seen[tr].std())
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    x_tr, y_tr = x_seen[tr], y_seen[tr]
    x_va, y_va = norm(x_seen[va]), y_seen[va]
    x_te = norm(x_test)
    augment = RandomCrop(a.image_size, padding=max(1, a.image_size // 16), seed=a.seed)

    if a.model == "siamese":
        model = SiameseNet(in_channels=1, embedding_dim=a.embedding_dim, widths=(32, 64, 128), normalize=True)
    else:
        model = ConvEmbedding(in_channels=1, widths=widths)
    by_class = {c: np.nonzero(y_tr == c)[0] for c in train_classes}
    batch = a.per_class * len(train_classes)
    steps = max(1, len(y_tr) // batch)
    opt = optim.Adam(model.parameters(), lr=a.lr)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * steps)
    val_pairs = make_pairs(y_va, a.pairs, np.random.default_rng(a.seed + 1))
    test_pairs = make_pairs(y_test, a.pairs, np.random.default_rng(a.seed + 2))

    # The same network before any training: how much of the result the triplet loss earns.
    model.eval()
    untrained_val = _evaluate_pairs(_embed(model, x_va), val_pairs)
    untrained = _evaluate_pairs(_embed(model, x_te), test_pairs, untrained_val["best_threshold"])
    history = {"loss": [], "active": [], "val_accuracy": [], "val_auc": []}
    for epoch in range(1, a.epochs + 1):
        model.train()
        bar = ProgressBar(steps, desc=f"epoch {epoch}/{a.epochs}", enabled=not a.quiet)
        for _ in range(steps):
            idx = np.concatenate([rng.choice(m, a.per_class, replace=len(m) < a.per_class) for m in by_class.values()])
            xb = norm(augment(x_tr[idx]))
            loss, stats = batch_triplet_loss(model(cnnfast.tensor(xb)), y_tr[idx], margin=a.margin,
                                             mining=a.mining, return_stats=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(len(idx), loss=loss.item(), active=stats["active"])
        model.eval()
        val = _evaluate_pairs(_embed(model, x_va), val_pairs)
        history["loss"].append(bar.metrics["loss"])
        history["active"].append(bar.metrics["active"])
        history["val_accuracy"].append(val["best_accuracy"])
        history["val_auc"].append(val["auc"])
        bar.close(val_acc=val["best_accuracy"], val_auc=val["auc"])
        if not np.isfinite(bar.metrics["loss"]):
            raise FloatingPointError(f"the triplet loss became {bar.metrics['loss']} in epoch {epoch}")

    model.eval()
    emb_va, emb_te = _embed(model, x_va), _embed(model, x_te)
    val = _evaluate_pairs(emb_va, val_pairs)
    threshold = val["best_threshold"]
    test = _evaluate_pairs(emb_te, test_pairs, threshold)
    pix_va = _evaluate_pairs(x_va.reshape(len(x_va), -1), val_pairs)
    pixels = _evaluate_pairs(x_te.reshape(len(x_te), -1), test_pairs, pix_va["best_threshold"])
    episodes = 2000
    one_shot = one_shot_accuracy(emb_te, y_test, episodes, np.random.default_rng(a.seed + 3))
    one_shot_pix = one_shot_accuracy(x_te.reshape(len(x_te), -1), y_test, episodes, np.random.default_rng(a.seed + 3))

    metrics = {
        "task": "one-shot verification on held-out digit classes",
        "train_classes": train_classes, "test_classes": test_classes,
        "n_train_images": int(len(y_tr)), "n_val_images": int(len(y_va)), "n_test_images": int(len(y_test)),
        "pairs": a.pairs, "threshold": threshold, "distance": "squared Euclidean of L2-normalised embeddings",
        "model": a.model,
        "embedding_size": int(emb_te.shape[1]),
        "val_accuracy": val["best_accuracy"], "val_auc": val["auc"],
        "test_accuracy": test["accuracy"], "test_auc": test["auc"],
        "test_accuracy_oracle_threshold": test["best_accuracy"],
        "one_shot_accuracy": one_shot, "one_shot_ways": len(test_classes), "one_shot_episodes": episodes,
        "chance_pair_accuracy": 0.5, "chance_one_shot": 1.0 / len(test_classes),
        "baseline_pixels": {"test_accuracy": pixels["accuracy"], "test_auc": pixels["auc"],
                            "one_shot_accuracy": one_shot_pix},
        "baseline_untrained": {"test_accuracy": untrained["accuracy"], "test_auc": untrained["auc"]},
        "history": history,
        "config": {k: v for k, v in vars(a).items()},
        "wall_time_s": time.perf_counter() - start,
    }
    out = a.out
    if out is None:
        out = run_folder("verify-")
    os.makedirs(out, exist_ok=True)
    metrics["out"] = out
    _plots(out, history, test, val, pixels,
           f"one-shot verification, digits {a.test_classes} (unseen)")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=_json_default)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if a.quick:
        a.epochs = min(a.epochs, 3)
        a.pairs = min(a.pairs, 600)
    return run_guarded(PROG, lambda: _report(run(a)), usage_errors=(ValueError,))


def _report(m: dict) -> int:
    print(json.dumps({"test_accuracy": round(m["test_accuracy"], 4), "test_auc": round(m["test_auc"], 4),
                      "one_shot_accuracy": round(m["one_shot_accuracy"], 4),
                      "pixel_baseline_accuracy": round(m["baseline_pixels"]["test_accuracy"], 4),
                      "untrained_accuracy": round(m["baseline_untrained"]["test_accuracy"], 4),
                      "wall_time_s": round(m["wall_time_s"], 1), "out": m["out"]}))
    return 0
