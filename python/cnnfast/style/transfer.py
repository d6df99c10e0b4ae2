"""The style-transfer loop: optimise the pixels of a generated image G so that
J(G) = alpha J_content(C, G) + beta J_style(S, G) falls, with Adam or L-BFGS, on the
features of :class:`~cnnfast.style.features.FeatureNet`.

Images are (3, H, W) float32 arrays in [0, 1]. The optimised variable x is unbounded;
the costs see G = clamp(x, 0, 1), normalised with ImageNet's channel mean/std inside the
graph. So the saved picture is exactly the image whose costs are reported, and L-BFGS
optimises one fixed function (clipping x between steps would change it under the
optimiser's curvature history).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .. import optim
from ..autograd import no_grad
from ..tensor import Tensor
from .cost import content_cost, gram_matrix, layer_style_cost, total_variation
from .features import FeatureNet

SAMPLE_IMAGES = ("china.jpg", "flower.jpg")  # the photographs that ship with scikit-learn
DEFAULT_CONTENT, DEFAULT_STYLE = SAMPLE_IMAGES
_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


@dataclass
class StyleConfig:
    """Settings of one run (the CLI's options). ``steps`` counts loss evaluations (one forward
    and backward pass each) for both optimisers, so their budgets compare."""

    size: int = 128                       # longer side of the working images, in pixels
    steps: int = 200
    optimizer: str = "lbfgs"              # "lbfgs" (strong-Wolfe line search) or "adam"
    lr: Optional[float] = None            # default: 1 for L-BFGS, 0.02 for Adam
    alpha: float = 1.0                    # weight of J_content
    beta: float = 1e5                     # weight of J_style
    tv: float = 3.0                       # weight of the total-variation prior (outside J)
    content_layer: str = "relu3_1"
    style_layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    style_weights: Optional[Sequence[float]] = None   # lambda^[l]; default 1/L each
    init: str = "content"                 # start from the content image, or "noise"
    width: int = 16                       # channels of the first block (then 2x, 4x, 8x)
    seed: int = 0                         # feature-network weights and noise
    log_every: int = 25

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02


def load_image(source: str, size: Optional[int] = None, shape: Optional[tuple] = None) -> np.ndarray:
    """Read an image as a (3, H, W) float32 array in [0, 1].

    source: a file Pillow can read, or the name of a scikit-learn sample image
    (``china.jpg``, ``flower.jpg``). size: resize so the longer side is ``size``.
    shape: (H, W) to resize to exactly, after a centred crop to that aspect ratio."""
    from PIL import Image

    if source in SAMPLE_IMAGES and not os.path.exists(source):
        from sklearn.datasets import load_sample_image
        img = Image.fromarray(load_sample_image(source))
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"image not found: {source!r} (a file, or one of {', '.join(SAMPLE_IMAGES)})")
        try:
            img = Image.open(source)
            img.load()
        except Exception as exc:  # Pillow raises several types for unreadable files
            raise ValueError(f"cannot read image {source!r}: {exc}") from None
    img = img.convert("RGB")
    if shape is not None:
        h, w = shape
        W, H = img.size
        # Crop the largest centred box with the target's aspect ratio, so nothing is stretched.
        if W * h > H * w:
            cw = max(1, round(H * w / h))
            left = (W - cw) // 2
            img = img.crop((left, 0, left + cw, H))
        else:
            ch = max(1, round(W * h / w))
            top = (H - ch) // 2
            img = img.crop((0, top, W, top + ch))
        img = img.resize((w, h), Image.BICUBIC)
    elif size is not None:
        W, H = img.size
        scale = size / max(W, H)
        img = img.resize((max(1, round(W * scale)), max(1, round(H * scale))), Image.BICUBIC)
    return np.ascontiguousarray(np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0)


def save_image(img: np.ndarray, path: str) -> None:
    """Write a (3, H, W) array in [0, 1] as an 8-bit image."""
    from PIL import Image

    arr = (np.clip(img, 0, 1).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _check_image(img, name: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[0] != 3 or min(img.shape) < 1:
        raise ValueError(f"{name}: expected an RGB image array of shape (3, H, W), got shape {img.shape}")
    if img.dtype.kind != "f":
        raise TypeError(f"{name}: expected floating-point values in [0, 1], got dtype {img.dtype}")
    return np.ascontiguousarray(img, dtype=np.float32)


class StyleTransfer:
    """Holds the network, the targets (content activation, style Gram matrices) and the
    generated image; ``costs()`` evaluates J, J_content, J_style on the current image."""

    def __init__(self, content: np.ndarray, style: np.ndarray, cfg: StyleConfig):
        self.cfg = cfg
        content, style = _check_image(content, "content"), _check_image(style, "style")
        if cfg.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {cfg.optimizer!r}")
        if cfg.init not in ("content", "noise"):
            raise ValueError(f"init: expected 'content' or 'noise', got {cfg.init!r}")
        if not list(cfg.style_layers):
            raise ValueError("style_layers: expected at least one layer")
        self.weights = list(cfg.style_weights) if cfg.style_weights is not None else \
            [1.0 / len(cfg.style_layers)] * len(cfg.style_layers)
        if len(self.weights) != len(cfg.style_layers):
            raise ValueError(f"style_weights: expected {len(cfg.style_layers)} values (one per style layer), "
                             f"got {len(self.weights)}")
        self.net = FeatureNet(cfg.width, seed=cfg.seed)
        self.layers = list(dict.fromkeys([cfg.content_layer, *cfg.style_layers]))
        with no_grad():
            a_C = self.net(self._normalise(Tensor(content[None])), [cfg.content_layer])
            a_S = self.net(self._normalise(Tensor(style[None])), list(cfg.style_layers))
        self.a_C = a_C[cfg.content_layer].detach()
        self.gram_S = {name: gram_matrix(a_S[name]).detach() for name in cfg.style_layers}
        if cfg.init == "content":
            start = content.copy()
        else:
            start = np.random.default_rng(cfg.seed).uniform(0, 1, content.shape).astype(np.float32)
        self.image = Tensor(np.ascontiguousarray(start[None]), requires_grad=True)

    @staticmethod
    def _normalise(x: Tensor) -> Tensor:
        return (x - _MEAN) * (1.0 / _STD)

    def generated(self) -> Tensor:
        """G = clamp(x, 0, 1), (1, 3, H, W)."""
        return self.image.clamp(0.0, 1.0)

    def costs(self):
        """(J, J_content, J_style, per-layer style costs, TV) at the current image; Tensors with graphs.
        J is the sheet's alpha J_content + beta J_style; the objective is J + tv * TV."""
        g = self.generated()
        acts = self.net(self._normalise(g), self.layers)
        j_content = content_cost(self.a_C, acts[self.cfg.content_layer])
        per_layer = [layer_style_cost(None, acts[name], gram_S=self.gram_S[name]) for name in self.cfg.style_layers]
        j_style = per_layer[0] * self.weights[0]
        for lam, term in zip(self.weights[1:], per_layer[1:]):
            j_style = j_style + term * lam
        tv = total_variation(g)
        return j_content * self.cfg.alpha + j_style * self.cfg.beta, j_content, j_style, per_layer, tv


def run(content: np.ndarray, style: np.ndarray, cfg: StyleConfig,
        log: Optional[Callable[[str], None]] = None) -> dict:
    """Optimise the generated image. Returns {"image": (3, H, W) array, "history": [...],
    "initial": {...}, "final": {...}, "evaluations", "seconds"}; ``log`` receives a
    progress line every ``cfg.log_every`` evaluations."""
    if log is None:
        def log(line):
            print(line, file=sys.stderr, flush=True)
    st = StyleTransfer(content, style, cfg)
    history: list[dict] = []
    t0 = time.perf_counter()

    def evaluate():
        st.image.grad = None
        J, jc, js, _, tv = st.costs()
        objective = J + tv * cfg.tv if cfg.tv else J
        objective.backward()
        rec = {"eval": len(history) + 1, "J": float(J.item()), "J_content": float(jc.item()),
               "J_style": float(js.item()), "TV": float(tv.item())}
        history.append(rec)
        if rec["eval"] % cfg.log_every == 0 or rec["eval"] == cfg.steps:
            log(f"step {rec['eval']:>4}/{cfg.steps}  J {rec['J']:.4e}  J_content {rec['J_content']:.4e}  "
                f"J_style {rec['J_style']:.4e}  {time.perf_counter() - t0:6.1f}s")
        return objective

    def snapshot() -> dict:
        with no_grad():
            J, jc, js, per_layer, tv = st.costs()
        return {"J": float(J.item()), "J_content": float(jc.item()), "J_style": float(js.item()),
                "TV": float(tv.item()), "objective": float(J.item()) + cfg.tv * float(tv.item()),
                "J_style_per_layer": {n: float(v.item()) for n, v in zip(cfg.style_layers, per_layer)}}

    initial = snapshot()
    lr = cfg.resolved_lr()
    if cfg.optimizer == "adam":
        opt = optim.Adam([st.image], lr=lr)
        for _ in range(cfg.steps):
            evaluate()
            opt.step()
    else:
        opt = optim.LBFGS([st.image], lr=lr, max_iter=cfg.steps, max_eval=cfg.steps, history_size=20,
                          line_search_fn="strong_wolfe")
        opt.step(evaluate)
    seconds = time.perf_counter() - t0
    final = snapshot()
    return {"image": st.generated()._array[0].copy(), "history": history, "initial": initial, "final": final,
            "evaluations": len(history), "seconds": seconds, "config": _config_dict(cfg)}


def _config_dict(cfg: StyleConfig) -> dict:
    d = asdict(cfg)
    d["style_layers"] = list(cfg.style_layers)
    d["lr"] = cfg.resolved_lr()
    return d
