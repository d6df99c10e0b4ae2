"""Figures written by ``cnnfast train``/``search``: loss and accuracy curves, the
confusion matrix, the learning-rate finder and the search results. matplotlib with
the Agg backend (no display needed); each function writes one PNG and returns its path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: dict, path: str, title: str = "") -> str:
    """history: lists ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc`` per epoch."""
    plt = _plt()
    epochs = np.arange(1, len(history.get("train_loss", [])) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = history.get(f"{split}_{key}", [])
            if len(values):
                ax.plot(epochs[:len(values)], values, style, ms=3, label="validation" if split == "val" else split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def plot_confusion(cm: np.ndarray, path: str, classes: Optional[Sequence[str]] = None, title: str = "") -> str:
    plt = _plt()
    k = len(cm)
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if k <= 30:
        ticks = np.arange(k)
        ax.set_xticks(ticks, labels=classes, rotation=90 if k > 10 else 0)
        ax.set_yticks(ticks, labels=classes)
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if cm[i, j] > threshold else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(title or f"confusion matrix (accuracy {acc:.2%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lr_finder(lrs: Sequence[float], losses: Sequence[float], path: str, suggestion: Optional[float] = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss (smoothed)")
    if suggestion:
        ax.axvline(suggestion, color="red", ls="--", label=f"suggested lr {suggestion:.2g}")
        ax.legend()
    ax.set_title("learning-rate finder")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_search(rows: Sequence[dict], path: str) -> str:
    """Validation accuracy against learning rate (log) and weight decay, one point per trial,
    coloured by batch size."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    lr = np.array([r["lr"] for r in rows], float)
    wd = np.array([r["weight_decay"] for r in rows], float)
    acc = np.array([r["val_acc"] for r in rows], float)
    bs = np.array([r["batch_size"] for r in rows], float)
    sc = a1.scatter(lr, acc, c=bs, cmap="viridis")
    a1.set_xscale("log")
    a1.set_xlabel("learning rate")
    a1.set_ylabel("validation accuracy")
    a2.scatter(np.maximum(wd, 1e-8), acc, c=bs, cmap="viridis")
    a2.set_xscale("log")
    a2.set_xlabel("weight decay (0 drawn at 1e-8)")
    fig.colorbar(sc, ax=a2, label="batch size")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"hyper-parameter search ({len(rows)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
