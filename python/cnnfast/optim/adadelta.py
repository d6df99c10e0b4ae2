"""Adadelta (Zeiler, 2012): per-coordinate steps from running RMS of gradients and of
past steps, so the default lr=1.0 works without tuning."""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from .optimizer import Optimizer, _check_lr


class Adadelta(Optimizer):
    """torch.optim.Adadelta: g = grad + weight_decay * p; v = rho v + (1 - rho) g^2;
    delta = sqrt(u + eps) / sqrt(v + eps) * g; u = rho u + (1 - rho) delta^2; p -= lr delta.
    State: ``step``, ``square_avg`` (v), ``acc_delta`` (u). One fused kernel per parameter."""

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False, differentiable: bool = False):
        _check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise ValueError("differentiable=True: cnnfast's optimizer steps are fused kernels outside autograd")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _init_state(self, group, param, state):
        state["step"] = 0
        state["square_avg"] = np.zeros_like(param._array)
        state["acc_delta"] = np.zeros_like(param._array)

    def _update(self, group, param, grad, state):
        state["step"] += 1
        _D.adadelta_step(param, grad, state["square_avg"], state["acc_delta"], lr=group["lr"], rho=group["rho"],
                         eps=group["eps"], weight_decay=group["weight_decay"], maximize=group["maximize"])
