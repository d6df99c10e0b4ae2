"""Adagrad: per-element learning rates from the running sum of squared gradients."""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from .optimizer import Optimizer, _check_lr


class Adagrad(Optimizer):
    """torch.optim.Adagrad: g = grad + weight_decay * p, sum += g^2,
    p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps).
    State: ``step``, ``sum`` (starting at initial_accumulator_value)."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *, maximize: bool = False):
        _check_lr(lr)
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)
        # torch creates Adagrad's state eagerly, so a state dict taken before the first step has it.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(group, p, self.state[p])

    def _init_state(self, group, param, state):
        state["step"] = 0
        state["sum"] = np.full_like(param._array, group["initial_accumulator_value"])

    def _update(self, group, param, grad, state):
        state["step"] += 1
        _D.adagrad_step(param, grad, state["sum"], step=state["step"], lr=group["lr"], lr_decay=group["lr_decay"],
                        weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])
