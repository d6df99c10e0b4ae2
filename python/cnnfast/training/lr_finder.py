"""Learning-rate range test (``cnnfast train --find-lr``).

Train from the initial weights while the learning rate grows geometrically from
``start_lr`` to ``end_lr`` over ``num_steps`` batches, recording an exponentially
smoothed loss; stop early once the loss exceeds ``diverge`` times its minimum. The
suggestion is the rate where the smoothed loss falls fastest (steepest negative slope
against log lr), a rate at which "the loss drops significantly within ~100 iterations"
(CS231n). The model and optimizer are restored afterwards.
"""
from __future__ import annotations

import math

import numpy as np


def find_lr(model, optimizer, loader, loss_fn, start_lr: float = 1e-6, end_lr: float = 1.0, num_steps: int = 100,
            smooth: float = 0.9, diverge: float = 4.0) -> dict:
    """Returns {"lrs": [...], "losses": [...] (smoothed), "raw": [...], "suggestion": float}.

    ``loss_fn(model, x, y) -> scalar Tensor``; ``loader`` yields (x, y) and is cycled
    when it has fewer than ``num_steps`` batches.
    """
    import cnnfast

    if not (0 < start_lr < end_lr):
        raise ValueError(f"start_lr, end_lr: expected 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    saved_model = {k: np.array(v._array, copy=True) for k, v in model.state_dict().items()}
    saved_opt = optimizer.state_dict()
    saved_lrs = [g["lr"] for g in optimizer.param_groups]
    rng_state = cnnfast.get_rng_state()
    factor = (end_lr / start_lr) ** (1.0 / max(num_steps - 1, 1))
    lrs, raw, smoothed = [], [], []
    avg, best = 0.0, math.inf
    step = 0
    model.train()
    try:
        while step < num_steps:
            for x, y in loader:
                lr = start_lr * factor ** step
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss = loss_fn(model, x, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                value = float(loss.item())
                if not math.isfinite(value):
                    step = num_steps
                    break
                avg = smooth * avg + (1 - smooth) * value
                s = avg / (1 - smooth ** (step + 1))
                lrs.append(lr)
                raw.append(value)
                smoothed.append(s)
                best = min(best, s)
                step += 1
                if step >= num_steps or s > diverge * best:
                    step = num_steps
                    break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        for g, lr in zip(optimizer.param_groups, saved_lrs):
            g["lr"] = lr
        cnnfast.set_rng_state(rng_state)
    return {"lrs": lrs, "losses": smoothed, "raw": raw, "suggestion": suggest_lr(lrs, smoothed)}


def suggest_lr(lrs, losses) -> float:
    """The rate of the steepest descent of ``losses`` against log(lr), taken before the
    minimum (past it the loss is diverging); ``nan`` with fewer than 3 points."""
    if len(lrs) < 3:
        return float("nan")
    lrs = np.asarray(lrs, float)
    losses = np.asarray(losses, float)
    stop = int(np.argmin(losses)) + 1
    if stop < 3:
        return float(lrs[max(stop - 1, 0)] / 10)
    slope = np.gradient(losses[:stop], np.log(lrs[:stop]))
    return float(lrs[int(np.argmin(slope))])
