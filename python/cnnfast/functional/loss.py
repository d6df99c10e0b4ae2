"""Loss functions with torch.nn.functional's names, arguments and output shapes.

Every loss takes ``reduction`` in {'none', 'mean', 'sum'}: 'none' returns the
per-element (regression, binary) or per-sample (class losses) loss, the others a
0-d tensor. Forward and backward run in ``cnnfast._C``.

Non-finite logits (cross_entropy): a NaN anywhere in a sample's logits makes that
sample's loss and gradient NaN (as torch); a -inf logit for a non-target class
contributes probability 0 and leaves loss and gradient finite; a -inf target
logit gives an infinite loss; with label_smoothing > 0 any -inf logit makes the
loss +inf (the smoothing term averages every log-probability), as torch.
Class-index targets out of range (other than ignore_index) raise ValueError
naming ``target``, the valid range and the offending value.

Gradients: the regression losses (l1, mse, huber, smooth_l1) differentiate with
respect to input and target; the class and binary losses and triplet_margin_loss
differentiate with respect to their float inputs only (target gets no gradient).
Empty inputs are rejected with ValueError (torch returns NaN for 'mean').
"""
from __future__ import annotations

import numpy as np

from .._device import dispatch as _D
from ..autograd import Function
from ..tensor import Tensor, _unbroadcast
from ._util import as_dtype, check_tensor, contiguous

__all__ = ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "cross_entropy", "nll_loss",
           "binary_cross_entropy_with_logits", "binary_cross_entropy", "multi_margin_loss", "triplet_margin_loss"]


def _reduction(size_average, reduce, reduction: str) -> str:
    """torch's legacy size_average / reduce flags, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _data(t, name, dtype=None):
    """A Tensor's (or array's) data, as a NumPy array."""
    if t is None:
        return None
    if isinstance(t, Tensor):
        return t._array
    return as_dtype(t, dtype)


def _float_like(t, x, name):
    """A float operand (weight, pos_weight, probability target) in x's dtype."""
    a = _data(t, name)
    if a is None:
        return None
    if a.dtype != x.dtype:
        raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of input), got {a.dtype}")
    return contiguous(a)


def _index_target(target, name="target"):
    a = _data(target, name)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {a.dtype}")
    return contiguous(a.astype(np.int64, copy=False))


# ---- regression losses ---------------------------------------------------------------

def _pointwise(name):
    fwd, bwd = getattr(_D, f"{name}_forward"), getattr(_D, f"{name}_backward")

    class Op(Function):
        @staticmethod
        def forward(ctx, x, t, reduction, param):
            xs, ts = x.shape, t.shape
            if xs != ts:  # torch broadcasts (with a warning); the gradients are summed back below
                shape = np.broadcast_shapes(xs, ts)
                x, t = np.broadcast_to(x, shape), np.broadcast_to(t, shape)
            x, t = contiguous(x), contiguous(t)
            ctx.save_for_backward(x, t)
            ctx.args, ctx.shapes = (reduction, param), (xs, ts)
            return fwd(x, t, reduction, param)

        @staticmethod
        def backward(ctx, g):
            x, t = ctx.saved_tensors
            gx = bwd(contiguous(as_dtype(g, x.dtype)), x, t, *ctx.args)
            xs, ts = ctx.shapes
            gx_in = _unbroadcast(gx, xs) if ctx.needs_input_grad[0] else None
            gt = _unbroadcast(-gx, ts) if ctx.needs_input_grad[1] else None
            return gx_in, gt, None, None

    Op.__name__ = "".join(p.capitalize() for p in name.split("_"))
    return Op


_L1, _MSE, _Huber, _SmoothL1 = (_pointwise(n) for n in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"))


def _regression(op, input, target, reduction, param, weight, mean_by_weight=False):
    check_tensor(input, "input")
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.dtype))
    if target.dtype != input.dtype:
        raise TypeError(f"target: expected dtype {input.dtype} (the dtype of input), got {target.dtype}")
    if weight is None:
        return op.apply(input, target, reduction, float(param))
    # torch's elementwise weight (input's shape): weight * loss, then the reduction; for
    # l1 and mse 'mean' divides by sum(weight), for huber by the element count, as torch.
    weight = weight if isinstance(weight, Tensor) else Tensor(np.asarray(weight, dtype=input.dtype))
    if weight.shape != input.shape:
        raise ValueError(f"weight: expected the shape of input {input.shape}, got {weight.shape}")
    loss = op.apply(input, target, "none", float(param)) * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weight.sum() if mean_by_weight else loss.mean()


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """mean/sum/none of |input - target|. input, target: any shape (broadcast as torch)."""
    return _regression(_L1, input, target, _reduction(size_average, reduce, reduction), 0.0, weight, True)


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """mean/sum/none of (input - target)^2. input, target: any shape."""
    return _regression(_MSE, input, target, _reduction(size_average, reduce, reduction), 0.0, weight, True)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), d = input - target."""
    return _regression(_Huber, input, target, _reduction(None, None, reduction), delta, weight)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0 is L1)."""
    return _regression(_SmoothL1, input, target, _reduction(size_average, reduce, reduction), beta, None)


# ---- class losses --------------------------------------------------------------------

class _CrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, label_smoothing):
        x = contiguous(x)
        loss, lse = _D.cross_entropy_forward(x, target, weight, ignore_index, reduction, label_smoothing)
        ctx.save_for_backward(x, target, weight, lse)
        ctx.args = (ignore_index, reduction, label_smoothing)
        return loss

    @staticmethod
    def backward(ctx, g):
        x, target, weight, lse = ctx.saved_tensors
        gx = _D.cross_entropy_backward(contiguous(as_dtype(g, x.dtype)), x, target, lse, weight, *ctx.args)
        return gx, None, None, None, None, None


def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """Cross-entropy from logits, computed as logsumexp(x) - x[target] (stable).

    input: (N, C) or (N, C, d1, ...) or (C,); target: class indices (N,) / (N, d1, ...) / (),
    or class probabilities of input's shape (float). weight: (C,) class weights.
    'mean' divides by the summed weight of the non-ignored targets (by N*d1*... for
    probability targets). label_smoothing mixes the target with the uniform distribution.
    """
    check_tensor(input, "input")
    reduction = _reduction(size_average, reduce, reduction)
    t = _data(target, "target")
    prob = t.dtype.kind == "f"
    t = _float_like(t, input._array, "target") if prob else _index_target(t)
    w = _float_like(weight, input._array, "weight")
    x = input
    unbatched = input.ndim == 1
    if unbatched:
        x = input.reshape(1, -1)
        t = t.reshape(1, -1) if prob else t.reshape(1)
    loss = _CrossEntropy.apply(x, t, w, int(ignore_index), reduction, float(label_smoothing))
    return loss.reshape(()) if unbatched and reduction == "none" else loss


class _NLL(Function):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        x = contiguous(x)
        ctx.save_for_backward(x, target, weight)
        ctx.args = (ignore_index, reduction)
        return _D.nll_loss_forward(x, target, weight, ignore_index, reduction)

    @staticmethod
    def backward(ctx, g):
        x, target, weight = ctx.saved_tensors
        gx = _D.nll_loss_backward(contiguous(as_dtype(g, x.dtype)), x, target, weight, *ctx.args)
        return gx, None, None, None, None


def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities: -weight[t] * input[n, t].

    input: (N, C) or (N, C, d1, ...) or (C,); target: (N,) / (N, d1, ...) / () class indices.
    """
    check_tensor(input, "input")
    reduction = _reduction(size_average, reduce, reduction)
    t = _index_target(target)
    w = _float_like(weight, input._array, "weight")
    x = input
    unbatched = input.ndim == 1
    if unbatched:
        x, t = input.reshape(1, -1), t.reshape(1)
    loss = _NLL.apply(x, t, w, int(ignore_index), reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def _periodic(w, shape):
    """A weight the kernel can index as w[i % w.size]: trailing-dims shaped, else broadcast out."""
    if w is None:
        return None
    s = w.shape
    while s and s[0] == 1:
        s = s[1:]
    if len(s) <= len(shape) and tuple(shape[len(shape) - len(s):]) == tuple(s):
        return w
    return np.ascontiguousarray(np.broadcast_to(w, shape))


class _BCE(Function):
    @staticmethod
    def forward(ctx, x, t, weight, pos_weight, reduction, logits):
        x = contiguous(x)
        ctx.save_for_backward(x, t, weight, pos_weight)
        ctx.reduction, ctx.logits = reduction, logits
        if logits:
            return _D.binary_cross_entropy_with_logits_forward(x, t, weight, pos_weight, reduction)
        return _D.binary_cross_entropy_forward(x, t, weight, reduction)

    @staticmethod
    def backward(ctx, g):
        x, t, weight, pos_weight = ctx.saved_tensors
        g = contiguous(as_dtype(g, x.dtype))
        if ctx.logits:
            gx = _D.binary_cross_entropy_with_logits_backward(g, x, t, weight, pos_weight, ctx.reduction)
        else:
            gx = _D.binary_cross_entropy_backward(g, x, t, weight, ctx.reduction)
        return gx, None, None, None, None, None


def _bce(input, target, weight, pos_weight, reduction, logits):
    check_tensor(input, "input")
    t = _float_like(target, input._array, "target")
    if t.shape != input.shape:
        raise ValueError(f"target: expected the shape of input {input.shape}, got {t.shape}")
    w = _periodic(_float_like(weight, input._array, "weight"), input.shape)
    pw = _periodic(_float_like(pos_weight, input._array, "pos_weight"), input.shape)
    return _BCE.apply(input, t, w, pw, reduction, logits)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction: str = "mean", pos_weight=None):
    """BCE on logits in the softplus form (no overflow for any finite logit).

    loss = weight * ((1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)); input, target: same shape;
    weight, pos_weight broadcast against input (pos_weight usually (C,) on the last dim).
    """
    return _bce(input, target, weight, pos_weight, _reduction(size_average, reduce, reduction), True)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
    """BCE on probabilities in [0, 1] (ValueError otherwise); the logs are clamped at -100 as torch."""
    return _bce(input, target, weight, None, _reduction(size_average, reduce, reduction), False)


class _MultiMargin(Function):
    @staticmethod
    def forward(ctx, x, target, p, margin, weight, reduction):
        x = contiguous(x)
        ctx.save_for_backward(x, target, weight)
        ctx.args = (p, margin)
        ctx.reduction = reduction
        return _D.multi_margin_loss_forward(x, target, p, margin, weight, reduction)

    @staticmethod
    def backward(ctx, g):
        x, target, weight = ctx.saved_tensors
        gx = _D.multi_margin_loss_backward(contiguous(as_dtype(g, x.dtype)), x, target, *ctx.args, weight,
                                           ctx.reduction)
        return gx, None, None, None, None, None


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None, size_average=None, reduce=None,
                      reduction: str = "mean"):
    """Multi-class hinge: sum_{c != y} weight[y] * max(0, margin - x[y] + x[c])^p / C per sample.

    input: (N, C) or (C,); target: (N,) or () class indices; p: 1 or 2.
    """
    check_tensor(input, "input")
    reduction = _reduction(size_average, reduce, reduction)
    t = _index_target(target)
    w = _float_like(weight, input._array, "weight")
    x = input
    unbatched = input.ndim == 1
    if unbatched:
        x, t = input.reshape(1, -1), t.reshape(1)
    loss = _MultiMargin.apply(x, t, int(p), float(margin), w, reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


class _Triplet(Function):
    @staticmethod
    def forward(ctx, a, pos, neg, margin, p, eps, swap, reduction):
        a, pos, neg = contiguous(a), contiguous(pos), contiguous(neg)
        ctx.save_for_backward(a, pos, neg)
        ctx.args = (margin, p, eps, swap, reduction)
        return _D.triplet_margin_loss_forward(a, pos, neg, *ctx.args)

    @staticmethod
    def backward(ctx, g):
        a, pos, neg = ctx.saved_tensors
        ga, gp, gn = _D.triplet_margin_loss_backward(contiguous(as_dtype(g, a.dtype)), a, pos, neg, *ctx.args)
        return ga, gp, gn, None, None, None, None, None


def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, size_average=None, reduce=None, reduction: str = "mean"):
    """max(d(a, p) - d(a, n) + margin, 0) with d(u, v) = ||u - v + eps||_p per row.

    anchor, positive, negative: (N, D) or (D,). swap uses min(d(a, n), d(p, n)) as the negative distance.
    """
    for t, name in ((anchor, "anchor"), (positive, "positive"), (negative, "negative")):
        check_tensor(t, name)
    reduction = _reduction(size_average, reduce, reduction)
    unbatched = anchor.ndim == 1
    if unbatched:
        anchor, positive, negative = (t.reshape(1, -1) for t in (anchor, positive, negative))
    loss = _Triplet.apply(anchor, positive, negative, float(margin), float(p), float(eps), bool(swap), reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss
