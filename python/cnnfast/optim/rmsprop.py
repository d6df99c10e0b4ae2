"""RMSprop (Hinton), optionally centered and with momentum."""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from .optimizer import Optimizer, _check_lr


class RMSprop(Optimizer):
    """torch.optim.RMSprop: g = grad + weight_decay * p, v = alpha v + (1 - alpha) g^2;
    centered: m = lerp(m, g, 1 - alpha), avg = sqrt(v - m^2) + eps, else sqrt(v) + eps;
    with momentum: buf = momentum buf + g / avg, p -= lr buf; else p -= lr g / avg.
    State: ``step``, ``square_avg`` (+ ``momentum_buffer``, ``grad_avg``)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, *, maximize: bool = False):
        _check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _init_state(self, group, param, state):
        state["step"] = 0
        state["square_avg"] = np.zeros_like(param._array)
        if group["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(param._array)
        if group["centered"]:
            state["grad_avg"] = np.zeros_like(param._array)

    def _update(self, group, param, grad, state):
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = np.zeros_like(param)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = np.zeros_like(param)
        state["step"] += 1
        _D.rmsprop_step(param, grad, state["square_avg"], state.get("grad_avg") if group["centered"] else None,
                        state.get("momentum_buffer") if group["momentum"] > 0 else None, lr=group["lr"],
                        alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                        momentum=group["momentum"], centered=group["centered"], maximize=group["maximize"])
