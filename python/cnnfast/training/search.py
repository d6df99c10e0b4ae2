"""Hyper-parameter search (``cnnfast search``): random search or, for comparison, grid
search over the learning rate (log-uniform), weight decay (log-uniform), batch size and
dropout, each trial a short ``train`` run scored by its best validation accuracy.

CS231n: with the same budget, random search tries a new value of *every* dimension in
every trial, whereas a grid keeps re-testing the same few values of each; when only
one or two hyper-parameters matter, random search covers them far more densely.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from .trainer import TrainConfig, train

COLUMNS = ("rank", "trial", "lr", "weight_decay", "batch_size", "dropout", "val_acc", "val_loss", "train_acc",
           "test_acc", "seconds")


@dataclass
class SearchSpace:
    lr: tuple = (1e-4, 3e-2)              # log-uniform
    weight_decay: tuple = (1e-6, 1e-2)    # log-uniform
    batch_size: tuple = (16, 32, 64, 128)
    dropout: tuple = (0.0, 0.5)           # uniform

    def sample(self, rng: np.random.Generator) -> dict:
        return {"lr": float(np.exp(rng.uniform(*np.log(self.lr)))),
                "weight_decay": float(np.exp(rng.uniform(*np.log(self.weight_decay)))),
                "batch_size": int(rng.choice(self.batch_size)),
                "dropout": float(rng.uniform(*self.dropout))}

    def grid(self, trials: int) -> list:
        """``trials`` points spread evenly through the product of n levels per dimension
        (n the smallest with n**4 >= trials); levels geometric for lr and weight decay."""
        n = 1
        while n ** 4 < trials:
            n += 1
        lrs = np.geomspace(*self.lr, n) if n > 1 else [math.sqrt(self.lr[0] * self.lr[1])]
        wds = np.geomspace(*self.weight_decay, n) if n > 1 else [math.sqrt(self.weight_decay[0] * self.weight_decay[1])]
        bss = [self.batch_size[i] for i in np.linspace(0, len(self.batch_size) - 1, n).round().astype(int)]
        drs = np.linspace(*self.dropout, n) if n > 1 else [float(np.mean(self.dropout))]
        points = [{"lr": float(a), "weight_decay": float(b), "batch_size": int(c), "dropout": float(d)}
                  for a in lrs for b in wds for c in bss for d in drs]
        pick = np.linspace(0, len(points) - 1, trials).round().astype(int)
        return [points[i] for i in pick]


def search(base: TrainConfig, trials: int = 8, method: str = "random", epochs: int = 3, seed: int = 0,
           space: SearchSpace = None, out: str = None, quiet: bool = False) -> list:
    """Run ``trials`` short trainings; returns result rows (dicts with ``COLUMNS``) sorted by
    validation accuracy, best first. With ``out``, writes search.csv, search.json and search.png."""
    if method not in ("random", "grid"):
        raise ValueError(f"--method: expected 'random' or 'grid', got {method!r}")
    if trials < 1 or epochs < 1:
        raise ValueError(f"--trials/--epochs: expected positive integers, got {trials}/{epochs}")
    space = space or SearchSpace()
    rng = np.random.default_rng(seed)
    points = [space.sample(rng) for _ in range(trials)] if method == "random" else space.grid(trials)
    rows = []
    for i, p in enumerate(points):
        start = time.perf_counter()
        cfg = replace(base, epochs=epochs, out=None, quiet=True, resume=None, plots=False, save_checkpoints=False, **p)
        try:
            m = train(cfg)
            row = {"trial": i + 1, **p, "val_acc": m["best_val_acc"], "val_loss": min(m["history"]["val_loss"]),
                   "train_acc": m["history"]["train_acc"][-1], "test_acc": m["test_accuracy"]}
        except FloatingPointError:
            row = {"trial": i + 1, **p, "val_acc": 0.0, "val_loss": float("inf"), "train_acc": 0.0, "test_acc": 0.0}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if not quiet:
            print(f"trial {i + 1}/{trials}: lr {p['lr']:.2e}  wd {p['weight_decay']:.1e}  batch {p['batch_size']}  "
                  f"dropout {p['dropout']:.2f}  ->  val acc {row['val_acc']:.4f}  ({row['seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (-r["val_acc"], r["val_loss"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "search.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r[k] for k in COLUMNS})
        with open(os.path.join(out, "search.json"), "w") as f:
            json.dump({"method": method, "trials": trials, "epochs": epochs, "seed": seed, "results": rows}, f, indent=2)
        from .plots import plot_search
        plot_search(rows, os.path.join(out, "search.png"))
    return rows


def format_table(rows: list) -> str:
    """The results as an aligned text table."""
    head = f"{'rank':>4} {'trial':>5} {'lr':>9} {'wd':>9} {'batch':>5} {'dropout':>7} {'val_acc':>8} {'val_loss':>8} {'test_acc':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['rank']:>4} {r['trial']:>5} {r['lr']:>9.2e} {r['weight_decay']:>9.1e} {r['batch_size']:>5} "
                     f"{r['dropout']:>7.2f} {r['val_acc']:>8.4f} {r['val_loss']:>8.4f} {r['test_acc']:>8.4f}")
    return "\n".join(lines)
