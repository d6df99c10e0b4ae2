"""Neural-style-transfer costs, with the CS-230 sheet's formulas (differentiable on
cnnfast Tensors).

For a layer l with activation a of nC channels over an nH x nW grid:

* style (Gram) matrix  G_kk' = sum_ij a_ijk a_ijk'  — an (nC, nC) matrix, computed as
  A A^T with A the (nC, nH*nW) unrolled activation;
* content cost          J_content(C, G) = 1/2 ||a(C) - a(G)||^2;
* layer style cost      J_style^[l](S, G) = 1/(2 nH nW nC)^2 ||G(S) - G(G)||_F^2;
* style cost over layers J_style(S, G) = sum_l lambda^[l] J_style^[l](S, G);
* total cost            J(G) = alpha J_content(C, G) + beta J_style(S, G).

Activations are (nC, nH, nW) or batched (N, nC, nH, nW), cnnfast's NCHW layout; a
batched cost is the sum of the per-image costs. The content/style image's side may be
a Tensor or a NumPy array; it is treated as a constant.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..autograd import Function
from ..tensor import Tensor


class _Gram(Function):
    """(..., C, M) -> (..., C, C) = A A^T; the gradient (g + g^T) A is one matmul, not two."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.matmul(a, np.swapaxes(a, -1, -2))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return np.matmul(g + np.swapaxes(g, -1, -2), a)


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    raise TypeError(f"{name}: expected a Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_activation(a: Tensor, name: str) -> None:
    if a.ndim not in (3, 4):
        raise ValueError(f"{name}: expected an activation of shape (nC, nH, nW) or (N, nC, nH, nW), "
                         f"got shape {tuple(a.shape)}")
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point activation, got dtype {a.dtype}")
    if 0 in a.shape:
        raise ValueError(f"{name}: expected non-empty dimensions, got shape {tuple(a.shape)}")


def gram_matrix(a) -> Tensor:
    """Style matrix of an activation: a (nC, nH, nW) -> G (nC, nC), or (N, nC, nH, nW) -> (N, nC, nC),
    with G_kk' = sum over positions of a_k * a_k' (no normalisation; the style cost divides)."""
    a = _as_tensor(a, "a")
    _check_activation(a, "a")
    unrolled = a.reshape(*a.shape[:-2], a.shape[-2] * a.shape[-1])
    return _Gram.apply(unrolled)


def content_cost(a_C, a_G) -> Tensor:
    """J_content(C, G) = 1/2 sum (a_C - a_G)^2, a scalar Tensor; a_C, a_G: (nC, nH, nW) or (N, nC, nH, nW)."""
    a_C, a_G = _as_tensor(a_C, "a_C"), _as_tensor(a_G, "a_G")
    _check_activation(a_G, "a_G")
    if tuple(a_C.shape) != tuple(a_G.shape):
        raise ValueError(f"a_C: expected the shape of a_G {tuple(a_G.shape)}, got {tuple(a_C.shape)}")
    diff = a_G - a_C.detach()
    return (diff * diff).sum() * 0.5


def layer_style_cost(a_S, a_G, gram_S=None) -> Tensor:
    """J_style^[l](S, G) = ||G(S) - G(G)||_F^2 / (2 nH nW nC)^2, a scalar Tensor.

    a_S, a_G: (nC, nH, nW) or (N, nC, nH, nW) with the same nC (nH, nW come from a_G: the
    style image may have another size). ``gram_S`` replaces ``a_S`` by its precomputed
    Gram matrix (pass ``a_S=None``)."""
    a_G = _as_tensor(a_G, "a_G")
    _check_activation(a_G, "a_G")
    if gram_S is None:
        a_S = _as_tensor(a_S, "a_S")
        _check_activation(a_S, "a_S")
        gram_S = gram_matrix(a_S.detach())
    gram_S = _as_tensor(gram_S, "gram_S").detach()
    gram_G = gram_matrix(a_G)
    if tuple(gram_S.shape) != tuple(gram_G.shape):
        raise ValueError(f"style: expected a Gram matrix of shape {tuple(gram_G.shape)} (nC of a_G), "
                         f"got {tuple(gram_S.shape)}")
    n_C, n_H, n_W = a_G.shape[-3:]
    diff = gram_G - gram_S
    return (diff * diff).sum() * (1.0 / (2.0 * n_H * n_W * n_C) ** 2)


def style_cost(a_S: Sequence, a_G: Sequence, weights: Sequence[float] | None = None) -> Tensor:
    """J_style(S, G) = sum_l lambda^[l] J_style^[l](S, G) over matching lists of activations.
    ``weights`` (the lambda^[l]) default to 1/L each, so the costs of different layer counts compare."""
    a_S, a_G = list(a_S), list(a_G)
    if len(a_S) != len(a_G) or not a_G:
        raise ValueError(f"a_S, a_G: expected two non-empty lists of equal length, got {len(a_S)} and {len(a_G)}")
    if weights is None:
        weights = [1.0 / len(a_G)] * len(a_G)
    weights = list(weights)
    if len(weights) != len(a_G):
        raise ValueError(f"weights: expected {len(a_G)} layer weights, got {len(weights)}")
    total = None
    for lam, s, g in zip(weights, a_S, a_G):
        term = layer_style_cost(s, g) * float(lam)
        total = term if total is None else total + term
    return total


def total_variation(image) -> Tensor:
    """TV(x) = sum of squared differences between vertically and horizontally adjacent pixels,
    a scalar Tensor; image: (C, H, W) or (N, C, H, W). Not part of the sheet's J: an optional
    smoothness prior (Mahendran & Vedaldi 2015) that the transfer adds with its own weight."""
    x = _as_tensor(image, "image")
    _check_activation(x, "image")
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    return (dy * dy).sum() + (dx * dx).sum()


def total_cost(J_content, J_style, alpha: float = 10.0, beta: float = 40.0):
    """J(G) = alpha J_content + beta J_style."""
    return J_content * alpha + J_style * beta
