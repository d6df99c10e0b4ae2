"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from .optimizer import Optimizer, _check_lr


class SGD(Optimizer):
    """torch.optim.SGD: with g = grad + weight_decay * p,
    buf = g on the first step, else momentum * buf + (1 - dampening) * g;
    p -= lr * (g + momentum * buf if nesterov else buf) (plain g without momentum).
    State per parameter: ``momentum_buffer`` (absent without momentum)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        _check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _init_state(self, group, param, state):
        pass  # the momentum buffer is created on the first step, and only with momentum (as torch)

    def _update(self, group, param, grad, state):
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        first = False
        if momentum != 0 and buf is None:
            buf = np.empty_like(param)
            state["momentum_buffer"] = buf
            first = True
        _D.sgd_step(param, grad, buf if momentum != 0 else None, lr=group["lr"], momentum=momentum,
                    dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                    maximize=group["maximize"], first_step=first)
