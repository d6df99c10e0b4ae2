"""``cnnfast style [CONTENT] [STYLE]``: neural style transfer on the command line.

Writes to ``--out`` (default ``runs/style-<timestamp>/``): ``result.png`` (the generated
image), ``comparison.png`` (content | style | result), ``loss.png`` (J, J_content,
J_style per evaluation) and ``metrics.json`` (initial and final costs, per-layer style
costs, evaluations, seconds, the configuration and the loss history).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from .._cli_common import nonneg_float, positive_int, run_folder, run_guarded
from .features import layer_names
from .transfer import DEFAULT_CONTENT, DEFAULT_STYLE, SAMPLE_IMAGES, StyleConfig

QUICK = dict(size=32, steps=40, width=8, log_every=10)  # the reduced setting the tests run (a few seconds)

EPILOG = f"""\
examples:
  cnnfast style                                   {DEFAULT_CONTENT} in the style of {DEFAULT_STYLE} (scikit-learn)
  cnnfast style photo.jpg painting.png --size 160 --steps 400
  cnnfast style --optimizer adam --lr 0.02 --beta 3e4
  cnnfast style --style-layers relu2_1,relu3_1 --style-weights 0.3,0.7 --content-layer relu4_1
  cnnfast style --quick                           tiny images, {QUICK['steps']} steps: a smoke test

layers: {', '.join(n for n in layer_names() if n.startswith('relu'))}
"""


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnfast style", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Neural style transfer (CS-230): optimise an image G to lower "
                    "J = alpha J_content(C, G) + beta J_style(S, G), with J_content = 1/2 ||a(C) - a(G)||^2 at "
                    "one layer and J_style = sum_l lambda_l ||Gram(S) - Gram(G)||^2 / (2 nH nW nC)^2, on the "
                    "features of a fixed random-weight VGG-like network.")
    p.add_argument("content", nargs="?", default=DEFAULT_CONTENT,
                   help=f"content image file (default: scikit-learn's {DEFAULT_CONTENT})")
    p.add_argument("style", nargs="?", default=DEFAULT_STYLE,
                   help=f"style image file (default: scikit-learn's {DEFAULT_STYLE})")
    d = StyleConfig()
    p.add_argument("--size", type=positive_int, default=None, help=f"longer side in pixels (default {d.size})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"loss evaluations, i.e. forward+backward passes (default {d.steps})")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default=d.optimizer,
                   help="L-BFGS with a strong-Wolfe line search, or Adam (default %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="step size (default 1 for lbfgs, 0.02 for adam)")
    p.add_argument("--alpha", type=nonneg_float, default=d.alpha, help="content weight (default %(default)g)")
    p.add_argument("--beta", type=nonneg_float, default=d.beta, help="style weight (default %(default)g)")
    p.add_argument("--tv", type=nonneg_float, default=d.tv,
                   help="weight of a total-variation smoothness prior added to what is minimised, reported "
                        "apart from J (default %(default)g; 0 minimises the sheet's J alone)")
    p.add_argument("--content-layer", default=d.content_layer, help="layer of J_content (default %(default)s)")
    p.add_argument("--style-layers", default=",".join(d.style_layers),
                   help="comma-separated layers of J_style (default %(default)s)")
    p.add_argument("--style-weights", default=None, help="comma-separated lambda per style layer (default 1/L each)")
    p.add_argument("--init", choices=("content", "noise"), default=d.init, help="starting image (default %(default)s)")
    p.add_argument("--width", type=positive_int, default=None,
                   help=f"channels of the feature network's first block (default {d.width})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the network weights and the noise")
    p.add_argument("--log-every", type=positive_int, default=None, help="progress line every N evaluations")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--out", default=None, help="output folder (default runs/style-<timestamp>/)")
    p.add_argument("--quick", action="store_true",
                   help=f"reduced setting: size {QUICK['size']}, {QUICK['steps']} steps, width {QUICK['width']}")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _config(a: argparse.Namespace) -> StyleConfig:
    base = StyleConfig()
    quick = QUICK if a.quick else {}

    def pick(name):
        value = getattr(a, name)
        return value if value is not None else quick.get(name, getattr(base, name))

    style_layers = [s.strip() for s in a.style_layers.split(",") if s.strip()]
    known = layer_names()
    for name in [a.content_layer, *style_layers]:
        if name not in known:
            raise ValueError(f"unknown layer {name!r}; expected one of {', '.join(known)}")
    if not style_layers:
        raise ValueError("--style-layers: expected at least one layer")
    weights = None
    if a.style_weights is not None:
        try:
            weights = [float(w) for w in a.style_weights.split(",")]
        except ValueError:
            raise ValueError(f"--style-weights: expected comma-separated numbers, got {a.style_weights!r}") from None
        if len(weights) != len(style_layers):
            raise ValueError(f"--style-weights: expected {len(style_layers)} values (one per style layer), "
                             f"got {len(weights)}")
    return StyleConfig(size=pick("size"), steps=pick("steps"), optimizer=a.optimizer, lr=a.lr, alpha=a.alpha,
                       beta=a.beta, tv=a.tv, content_layer=a.content_layer, style_layers=tuple(style_layers),
                       style_weights=weights, init=a.init, width=pick("width"), seed=a.seed,
                       log_every=pick("log_every"))


def _plots(out: str, content, style, result: dict) -> None:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    final = result["final"]
    for ax, img, title in zip(axes, (content, style, result["image"]),
                              ("content C", "style S", f"generated G\nJ_content {final['J_content']:.3g}, "
                                                       f"J_style {final['J_style']:.3g}")):
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="lanczos")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "comparison.png"), dpi=100)
    plt.close(fig)

    hist = result["history"]
    steps = [h["eval"] for h in hist]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    cfg = result["config"]
    for ax, key, label in zip(axes, ("J", "J_content", "J_style"),
                              (f"J = {cfg['alpha']:g} J_content + {cfg['beta']:g} J_style", "J_content", "J_style")):
        values = [h[key] for h in hist]
        ax.plot(steps, values, lw=1.2)
        if min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("evaluation (forward + backward)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{cfg['optimizer']}, {len(hist)} evaluations, {result['seconds']:.1f} s")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    a = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_guarded("cnnfast style", lambda: _run(a),
                       usage_errors=(ValueError, TypeError, FileNotFoundError))


def _run(a: argparse.Namespace) -> int:
    import cnnfast
    from .transfer import load_image, run, save_image

    cfg = _config(a)
    if a.threads:
        cnnfast.set_num_threads(a.threads)
    content = load_image(a.content, size=cfg.size)
    style = load_image(a.style, shape=content.shape[1:])
    out = a.out or run_folder("style-")
    os.makedirs(out, exist_ok=True)
    if not a.quiet:
        print(f"cnnfast style: {a.content} in the style of {a.style}, {content.shape[2]}x{content.shape[1]} px, "
              f"{cfg.optimizer}, {cfg.steps} steps -> {out}", file=sys.stderr)
    result = run(content, style, cfg, log=(lambda line: None) if a.quiet else None)
    save_image(result["image"], os.path.join(out, "result.png"))
    _plots(out, content, style, result)
    init, final = result["initial"], result["final"]
    metrics = {
        "content": a.content if a.content not in SAMPLE_IMAGES or os.path.exists(a.content)
        else f"sklearn:{a.content}",
        "style": a.style if a.style not in SAMPLE_IMAGES or os.path.exists(a.style) else f"sklearn:{a.style}",
        "image_size": [int(content.shape[1]), int(content.shape[2])],
        "feature_network": f"random-weight VGG-like (width {cfg.width}, seed {cfg.seed}, avg pooling)",
        "initial": init, "final": final,
        "J": final["J"], "J_content": final["J_content"], "J_style": final["J_style"],
        "style_ratio": final["J_style"] / init["J_style"] if init["J_style"] > 0 else None,
        "steps": result["evaluations"], "seconds": round(result["seconds"], 3),
        "config": result["config"], "history": result["history"],
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps({"J": round(final["J"], 6), "J_content": round(final["J_content"], 6),
                      "J_style": round(final["J_style"], 6), "J_style_initial": round(init["J_style"], 6),
                      "steps": result["evaluations"], "seconds": round(result["seconds"], 2), "out": out}))
    return 0
