"""Gradient clipping with torch's semantics (``torch.nn.utils.clip_grad_norm_``)."""
from __future__ import annotations

import numpy as np

from ...tensor import Tensor


def _params(parameters) -> list:
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scales all gradients in place so their joint norm is at most max_norm; returns the
    norm before clipping. scale = max_norm / (norm + 1e-6), applied only when < 1."""
    grads = [p.grad._array for p in _params(parameters) if p.grad is not None]
    if not grads:
        return Tensor(np.array(0.0, np.float32))
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = max(float(np.max(np.abs(g))) for g in grads)
    else:
        total = float(np.sum([np.sum(np.abs(g.astype(np.float64)) ** norm_type) for g in grads]) ** (1.0 / norm_type))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped.")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor(np.array(total, dtype=grads[0].dtype))


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamps every gradient element into [-clip_value, clip_value] in place."""
    for p in _params(parameters):
        if p.grad is not None:
            np.clip(p.grad._array, -clip_value, clip_value, out=p.grad._array)


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated (a copy)."""
    return Tensor(np.concatenate([p._array.reshape(-1) for p in parameters]))


def vector_to_parameters(vec, parameters) -> None:
    """Copies consecutive slices of vec into the parameters."""
    v = vec._array if isinstance(vec, Tensor) else np.asarray(vec)
    i = 0
    for p in parameters:
        n = p._array.size
        p._array[...] = v[i:i + n].reshape(p.shape)
        i += n
