"""``cnnfast gan``: train a small DCGAN on the handwritten digits.

The 1,797 digits (8x8) are enlarged and padded to 16x16 (``--image-size 32`` for 32x32)
and scaled to [-1, 1]. The generator and discriminator (``cnnfast.gan.dcgan``) train with
BCE-with-logits and Adam(lr 2e-4, betas (0.5, 0.999)) as in the DCGAN paper, one
discriminator step (real vs detached fakes) and one non-saturating generator step
(fakes labelled real) per batch.

Sample quality is measured with a digits classifier that cnnfast trains first on real
digits (a few seconds; its held-out accuracy is reported): on 1,000 generated images,

* ``digit_score`` = exp(E_x KL(p(y|x) || p(y))), the Inception Score with this
  classifier in place of Inception: 1 for samples that all look alike or like no digit,
  10 for confidently recognised digits spread evenly over the ten classes;
* ``confidence``: the mean top-class probability (do samples look like some digit?);
* ``classes_covered``: classes receiving at least 5% of the samples (mode collapse shows
  as fewer than 10).

The same figures on real held-out digits are the ceiling, and at epoch 0 (untrained
generator) the floor. Writes to ``--out`` (default runs/gan-<timestamp>/):
samples_epoch_NNN.png (8x8 grid from fixed noise), losses.png, metrics.json.
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

PROG = "cnnfast gan"


def build_parser() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n", 1)[1].replace("``", ""),
                                formatter_class=Formatter)
    p.add_argument("--epochs", type=int, default=15, help="passes over the digits")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--nz", type=int, default=32, help="size of the noise vector z")
    p.add_argument("--width", type=int, default=32,
                   help="ngf = ndf: channels of the highest-resolution hidden layers, doubled at each halving "
                        "of the size")
    p.add_argument("--image-size", type=int, default=16, choices=[16, 32],
                   help="digits are enlarged and padded to N x N")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (both networks)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--samples", type=int, default=1000, help="generated images scored per epoch")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, noise and batches")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--device", default="cpu",
                   help="where G and D train: cpu, cuda (cuda:N) or auto (the GPU when one is present); the "
                        "digit classifier that scores the samples stays on the CPU")
    p.add_argument("--quick", action="store_true",
                   help="at most 2 epochs on 512 digits, 300 scored samples (for tests)")
    p.add_argument("--out", default=None, help="output folder (default runs/gan-<timestamp>/)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


class DigitClassifier:
    """A small CNN trained on real digits in [-1, 1]; ``probs(x)`` -> (N, 10)."""

    def __init__(self, image_size: int):
        from .. import nn

        s = image_size // 4
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(32 * s * s, 10))

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, rng: np.random.Generator) -> None:
        import cnnfast
        from .. import functional as F
        from .. import optim

        opt = optim.Adam(self.model.parameters(), lr=2e-3)
        self.model.train()
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x) - 1, 64):
                b = order[i:i + 64]
                loss = F.cross_entropy(self.model(cnnfast.tensor(x[b])), cnnfast.tensor(y[b]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model.eval()

    def probs(self, x: np.ndarray) -> np.ndarray:
        import cnnfast

        with cnnfast.no_grad():
            logits = np.concatenate([self.model(cnnfast.tensor(x[i:i + 500])).numpy()
                                     for i in range(0, len(x), 500)]).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def sample_quality(p: np.ndarray) -> dict:
    """Scores of class probabilities p (N, K) of generated images (see the module docstring)."""
    eps = 1e-12
    marginal = p.mean(axis=0)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    share = np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / len(p)
    return {"digit_score": float(np.exp(kl.mean())), "confidence": float(p.max(axis=1).mean()),
            "classes_covered": int(np.sum(share >= 0.05)), "class_share": share.round(4).tolist()}


def _grid(images: np.ndarray, path: str, nrow: int = 8) -> None:
    """Tile (N, 1, H, W) images in [-1, 1] into one PNG, 2 pixels of gap, each pixel 3x3."""
    from ..training.plots import _plt

    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    g = np.ones((rows * (h + 2) + 2, nrow * (w + 2) + 2), np.float32)
    for k in range(n):
        r, c = divmod(k, nrow)
        g[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = (images[k, 0] + 1) / 2
    g = np.kron(np.clip(g, 0, 1), np.ones((3, 3), np.float32))
    _plt().imsave(path, g, cmap="gray", vmin=0.0, vmax=1.0)


def _plot_losses(history: dict, path: str, ceiling: float) -> None:
    from ..training.plots import _plt

    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(history["step_d_loss"]) + 1)
    a1.plot(steps, history["step_d_loss"], lw=0.6, alpha=0.5, label="D loss (per step)")
    a1.plot(steps, history["step_g_loss"], lw=0.6, alpha=0.5, label="G loss (per step)")
    per = len(steps) / max(1, len(history["d_loss"]))
    ep = np.arange(1, len(history["d_loss"]) + 1) * per
    a1.plot(ep, history["d_loss"], "-o", ms=3, label="D loss (epoch mean)")
    a1.plot(ep, history["g_loss"], "-s", ms=3, label="G loss (epoch mean)")
    a1.set_xlabel("step")
    a1.set_title("losses (BCE with logits)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    e = np.arange(0, len(history["digit_score"]))
    a2.plot(e, history["digit_score"], "-o", ms=3, label="digit score (generated)")
    a2.axhline(ceiling, color="0.5", ls="--", label=f"real digits ({ceiling:.2f})")
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 10.5)
    a2.set_title("sample quality (1-10)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(a: argparse.Namespace) -> dict:
    import cnnfast
    from .. import _device
    from .. import functional as F
    from .. import optim
    from ..data import load_digits, split_indices
    from ..training.progress import ProgressBar
    from ..training.trainer import _json_default, set_threads
    from .dcgan import Discriminator, Generator, dcgan_init_

    start = time.perf_counter()
    for name in ("epochs", "batch_size", "nz", "width", "samples"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(a, name)}")
    if a.batch_size < 2:
        raise ValueError(f"--batch-size: BatchNorm needs at least 2 images per batch, got {a.batch_size}")
    if not a.lr > 0 or not 0 <= a.beta1 < 1:
        raise ValueError(f"--lr must be > 0 and --beta1 in [0, 1), got {a.lr} and {a.beta1}")
    dev = _device.resolve(a.device)  # ValueError (a usage error) when the device cannot be used
    set_threads(a.threads)
    cnnfast.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    out = a.out
    if out is None:
        out = run_folder("gan-")
    os.makedirs(out, exist_ok=True)

    data = load_digits(a.image_size)
    x_all = data.x * 2.0 - 1.0
    tr, _, te = split_indices(data.y, 0.0, 0.2, a.seed)
    clf = DigitClassifier(a.image_size)
    clf.fit(x_all[tr], data.y[tr], 2 if a.quick else 4, rng)
    p_real = clf.probs(x_all[te])
    clf_acc = float(np.mean(p_real.argmax(axis=1) == data.y[te]))
    real_quality = sample_quality(p_real)

    x = x_all if not a.quick else x_all[rng.permutation(len(x_all))[:512]]
    G = dcgan_init_(Generator(a.nz, a.width, 1, a.image_size))
    D = dcgan_init_(Discriminator(a.width, 1, a.image_size))
    G.to(dev)  # initialised on the CPU, so a GPU run starts from the CPU run's weights
    D.to(dev)
    opt_g = optim.Adam(G.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    fixed = rng.standard_normal((64, a.nz)).astype(np.float32)
    score_noise = rng.standard_normal((a.samples, a.nz)).astype(np.float32)

    def generate(z: np.ndarray) -> np.ndarray:
        G.eval()
        with cnnfast.no_grad():
            imgs = np.concatenate([G(cnnfast.tensor(z[i:i + 500], device=dev)).cpu().numpy()
                                   for i in range(0, len(z), 500)])
        G.train()
        return imgs

    history = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": [], "step_d_loss": [], "step_g_loss": []}
    q0 = sample_quality(clf.probs(generate(score_noise)))
    for k in ("digit_score", "confidence", "classes_covered"):
        history[k] = [q0[k]]
    steps = len(x) // a.batch_size
    for epoch in range(1, a.epochs + 1):
        order = rng.permutation(len(x))
        bar = ProgressBar(steps, desc=f"epoch {epoch}/{a.epochs}", enabled=not a.quiet)
        for s in range(steps):
            real = cnnfast.tensor(x[order[s * a.batch_size:(s + 1) * a.batch_size]], device=dev)
            n = real.shape[0]
            ones, zeros = cnnfast.ones(n, device=dev), cnnfast.zeros(n, device=dev)
            z = cnnfast.tensor(rng.standard_normal((n, a.nz)).astype(np.float32), device=dev)
            fake = G(z)
            # D: real -> 1, fake -> 0; the fakes are detached so this step leaves G alone.
            logit_real, logit_fake = D(real), D(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(logit_real, ones) + \
                F.binary_cross_entropy_with_logits(logit_fake, zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            # G: make D call the same fakes real (the non-saturating loss of the GAN paper).
            loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            ld, lg = loss_d.item(), loss_g.item()
            if not (np.isfinite(ld) and np.isfinite(lg)):
                raise FloatingPointError(f"losses became D {ld}, G {lg} in epoch {epoch}")
            history["step_d_loss"].append(ld)
            history["step_g_loss"].append(lg)
            bar.update(n, d_loss=ld, g_loss=lg,
                       d_real=float(np.mean(1 / (1 + np.exp(-logit_real.detach().cpu().numpy())))),
                       d_fake=float(np.mean(1 / (1 + np.exp(-logit_fake.detach().cpu().numpy())))))
        q = sample_quality(clf.probs(generate(score_noise)))
        for k in ("d_loss", "g_loss", "d_real", "d_fake"):
            history[k].append(bar.metrics[k])
        for k in ("digit_score", "confidence", "classes_covered"):
            history[k].append(q[k])
        _grid(generate(fixed), os.path.join(out, f"samples_epoch_{epoch:03d}.png"))
        bar.close(score=round(q["digit_score"], 3), covered=q["classes_covered"])

    final = sample_quality(clf.probs(generate(score_noise)))
    metrics = {
        "epochs": a.epochs, "image_size": a.image_size, "n_images": int(len(x)),
        "d_loss": history["d_loss"], "g_loss": history["g_loss"],
        "d_real": history["d_real"], "d_fake": history["d_fake"],
        "digit_score": history["digit_score"], "confidence": history["confidence"],
        "classes_covered": history["classes_covered"],
        "final": final, "untrained_generator": q0, "real_digits": real_quality,
        "classifier_test_accuracy": clf_acc,
        "quality_note": "digit_score = exp(E KL(p(y|x) || p(y))) with a cnnfast digits classifier (1..10); "
                        "index 0 of the per-epoch lists is the untrained generator",
        "step_d_loss": history["step_d_loss"], "step_g_loss": history["step_g_loss"],
        "config": dict(vars(a)), "out": out,
        "wall_time_s": time.perf_counter() - start,
    }
    _plot_losses(history, os.path.join(out, "losses.png"), real_quality["digit_score"])
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=_json_default)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if a.quick:
        a.epochs = min(a.epochs, 2)
        a.samples = min(a.samples, 300)
    return run_guarded(PROG, lambda: _report(run(a)), usage_errors=(ValueError,))


def _report(m: dict) -> int:
    print(json.dumps({"d_loss": round(m["d_loss"][-1], 4), "g_loss": round(m["g_loss"][-1], 4),
                      "digit_score": round(m["final"]["digit_score"], 3),
                      "real_digit_score": round(m["real_digits"]["digit_score"], 3),
                      "classes_covered": m["final"]["classes_covered"],
                      "wall_time_s": round(m["wall_time_s"], 1), "out": m["out"]}))
    return 0
