"""Independent answers (PyTorch in float64, or NumPy) for the fuzz cases of fuzz_specs.py
whose builder carries none: normalisation, losses, optimizer steps, dropout masks at
p = 0 and 1, and soft-NMS.

Each reference takes the call's keyword arguments and returns the expected observed values
in fuzz_specs.observed's order: the kernel's returned arrays, then the arrays it writes in
place. A None entry is not compared (a value the reference cannot derive independently,
such as the saved statistics of an evaluation-mode batch norm).
"""
import numpy as np
import torch
import torch.nn.functional as TF
from torch.optim.adadelta import adadelta as torch_adadelta
from torch.optim.adagrad import adagrad as torch_adagrad
from torch.optim.adam import adam as torch_adam
from torch.optim.rmsprop import rmsprop as torch_rmsprop
from torch.optim.sgd import sgd as torch_sgd

F64 = np.float64


def _t(a, grad=False):
    """float64 torch tensor of an array (None stays None)."""
    if a is None:
        return None
    a = np.asarray(a)
    t = torch.from_numpy(a.astype(F64) if a.dtype.kind == "f" else a.copy())
    return t.requires_grad_(True) if grad else t


def _np(t):
    return None if t is None else t.detach().numpy()


def _backward(fn, args, wrt, grad_output="grad_output"):
    """Gradients of fn(**tensors) against ``wrt`` (argument names) for grad_output; an
    argument that is None yields None."""
    ts = {k: _t(v, k in wrt and v is not None) for k, v in args.items() if isinstance(v, np.ndarray) or v is None}
    out = fn(ts)
    out.backward(_t(args[grad_output]))
    return [None if ts.get(k) is None else _np(ts[k].grad) for k in wrt]


# ---- normalisation ----------------------------------------------------------------


def _stat_dims(x):
    return [0] + list(range(2, x.ndim))


def batch_norm_forward(a):
    x = _t(a["input"])
    rm, rv = _t(a["running_mean"]), _t(a["running_var"])
    y = TF.batch_norm(x, rm, rv, _t(a["weight"]), _t(a["bias"]), a["training"], a["momentum"], a["eps"])
    saved = [None, None]
    if a["training"]:
        dims = _stat_dims(x)
        saved = [_np(x.mean(dims)), _np(1 / torch.sqrt(x.var(dims, unbiased=False) + a["eps"]))]
    # The running statistics are outputs only when training updates them (inference only reads them).
    return [_np(y)] + saved + ([_np(v) for v in (rm, rv) if v is not None] if a["training"] else [])


def batch_norm_backward(a):
    def fn(t):
        x, w = t["input"], t["weight"]
        if a["training"]:
            dims, shape = _stat_dims(x), (1, -1) + (1,) * (x.ndim - 2)
            xhat = (x - x.mean(dims).reshape(shape)) / torch.sqrt(x.var(dims, unbiased=False).reshape(shape) + 1e-5)
        else:  # evaluation: the saved statistics are constants
            shape = (1, -1) + (1,) * (x.ndim - 2)
            xhat = (x - t["save_mean"].reshape(shape)) * t["save_rstd"].reshape(shape)
        t["bias"] = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
        return xhat * (w.reshape(shape) if w is not None else 1) + t["bias"].reshape(shape)

    args = dict(a, bias=None)
    gx, gw = _backward(fn, args, ["input", "weight"])
    x, g = a["input"].astype(F64), a["grad_output"].astype(F64)
    return [gx, gw, g.sum(axis=tuple(_stat_dims(x)))]


def _group_stats(x, groups, eps):
    xx = x.reshape(x.shape[0], groups, -1)
    return _np(xx.mean(-1)), _np(1 / torch.sqrt(xx.var(-1, unbiased=False) + eps))


def _group_norm(x, groups, eps=1e-5):
    """Written out: torch's group_norm refuses groups of one value, which the kernel accepts."""
    xx = x.reshape(x.shape[0], groups, -1)
    xhat = (xx - xx.mean(-1, keepdim=True)) / torch.sqrt(xx.var(-1, unbiased=False, keepdim=True) + eps)
    return xhat.reshape(x.shape)


def group_norm_forward(a):
    x = _t(a["input"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = _group_norm(x, a["num_groups"], a["eps"])
    if a["weight"] is not None:
        y = y * _t(a["weight"]).reshape(shape)
    if a["bias"] is not None:
        y = y + _t(a["bias"]).reshape(shape)
    return [_np(y), *_group_stats(x, a["num_groups"], a["eps"])]


def _affine_grads(a, normalize):
    """(grad_input, grad_weight, grad_bias) of y = normalize(x) * w + b, weight optional."""
    def fn(t):
        shape = (1, -1) + (1,) * (t["input"].ndim - 2)
        w = t["weight"]
        return normalize(t["input"]) * (w.reshape(shape) if w is not None else 1)

    gx, gw = _backward(fn, a, ["input", "weight"])
    g = a["grad_output"].astype(F64)
    return [gx, gw, g.sum(axis=tuple(_stat_dims(g)))]


def group_norm_backward(a):
    return _affine_grads(a, lambda x: _group_norm(x, a["num_groups"]))


def instance_norm_forward(a):
    x = _t(a["input"])
    rm, rv = _t(a["running_mean"]), _t(a["running_var"])
    y = TF.instance_norm(x, rm, rv, _t(a["weight"]), _t(a["bias"]), True, a["momentum"], a["eps"])
    mean, rstd = _group_stats(x, x.shape[1], a["eps"])
    return [_np(y), mean, rstd] + [_np(v) for v in (rm, rv) if v is not None]


def instance_norm_backward(a):
    return _affine_grads(a, lambda x: TF.instance_norm(x, eps=1e-5))


def layer_norm_backward(a):
    nd = a["normalized_ndim"]
    shape = a["input"].shape[a["input"].ndim - nd:]

    def fn(t):
        w = t["weight"]
        return TF.layer_norm(t["input"], shape, eps=1e-5) * (w.reshape(shape) if w is not None else 1)

    (gx,) = _backward(fn, a, ["input"])
    # grad_weight = sum(g * xhat) and grad_bias = sum(g) do not depend on the weight.
    g = a["grad_output"].astype(F64).reshape(-1, int(np.prod(shape)))
    xx = a["input"].astype(F64).reshape(g.shape)
    xhat = (xx - xx.mean(1, keepdims=True)) / np.sqrt(xx.var(1, keepdims=True) + 1e-5)
    if not a.get("need_param_grads", True):
        return [gx, np.zeros(g.shape[1]), np.zeros(g.shape[1])]
    return [gx, (g * xhat).sum(0), g.sum(0)]


def local_response_norm_forward(a):
    x, size = a["input"].astype(F64), a["size"]
    sq = np.pad(x * x, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    y = TF.local_response_norm(_t(x), size, a["alpha"], a["beta"], a["k"])
    return [_np(y), a["k"] + a["alpha"] / size * window]


def local_response_norm_backward(a):
    # The spec's forward used k = 1.
    return _backward(lambda t: TF.local_response_norm(t["input"], a["size"], a["alpha"], a["beta"], 1.0), a,
                     ["input"])


# ---- losses ---------------------------------------------------------------------

_POINTWISE = {
    "l1_loss": lambda x, y, a: TF.l1_loss(x, y, reduction=a["reduction"]),
    "mse_loss": lambda x, y, a: TF.mse_loss(x, y, reduction=a["reduction"]),
    "huber_loss": lambda x, y, a: TF.huber_loss(x, y, reduction=a["reduction"], delta=a["delta"]),
    "smooth_l1_loss": lambda x, y, a: TF.smooth_l1_loss(x, y, reduction=a["reduction"], beta=a["beta"]),
}


def pointwise_backward(name):
    return lambda a: _backward(lambda t: _POINTWISE[name](t["input"], t["target"], a), a, ["input"])


def _ce(t, a):
    target = t["target"]
    # torch refuses an ignore_index with class-probability targets, where it has no meaning.
    ignore = a["ignore_index"] if not target.is_floating_point() else -100
    return TF.cross_entropy(t["input"], target, t["weight"], ignore_index=ignore,
                            reduction=a["reduction"], label_smoothing=a["label_smoothing"])


def cross_entropy_forward(a):
    t = {k: _t(a[k]) for k in ("input", "target", "weight")}
    return [_np(_ce(t, a)), _np(torch.logsumexp(t["input"], 1))]


def cross_entropy_backward(a):
    return _backward(lambda t: _ce(t, a), a, ["input"])


def _nll(t, a):
    return TF.nll_loss(t["input"], t["target"], t["weight"], ignore_index=a["ignore_index"], reduction=a["reduction"])


def nll_loss_forward(a):
    return [_np(_nll({k: _t(a[k]) for k in ("input", "target", "weight")}, a))]


def nll_loss_backward(a):
    return _backward(lambda t: _nll(t, a), a, ["input"])


def _bce(t, a, logits):
    if logits:
        return TF.binary_cross_entropy_with_logits(t["input"], t["target"], t["weight"], reduction=a["reduction"],
                                                   pos_weight=t["pos_weight"])
    w = t["weight"]
    return TF.binary_cross_entropy(t["input"], t["target"], None if w is None else w.expand_as(t["input"]),
                                   reduction=a["reduction"])


def bce_forward(logits):
    keys = ("input", "target", "weight") + (("pos_weight",) if logits else ())
    return lambda a: [_np(_bce({k: _t(a[k]) for k in keys}, a, logits))]


def bce_backward(logits):
    return lambda a: _backward(lambda t: _bce(t, a, logits), a, ["input"])


def _multi_margin(t, a):
    return TF.multi_margin_loss(t["input"], t["target"], a["p"], a["margin"], t["weight"], reduction=a["reduction"])


def multi_margin_loss_forward(a):
    return [_np(_multi_margin({k: _t(a[k]) for k in ("input", "target", "weight")}, a))]


def multi_margin_loss_backward(a):
    return _backward(lambda t: _multi_margin(t, a), a, ["input"])


def _triplet(t, a):
    """torch's formula written out (its function refuses margin 0, which the kernel accepts):
    d(u, v) = ||u - v + eps||_p, loss = max(d(a, p) - d(a, n) + margin, 0), with swap
    d(a, n) = min(d(a, n), d(p, n))."""
    def d(u, v):
        return torch.linalg.vector_norm(u - v + a["eps"], ord=a["p"], dim=-1)

    d_an = d(t["anchor"], t["negative"])
    if a["swap"]:
        d_an = torch.minimum(d_an, d(t["positive"], t["negative"]))
    loss = torch.clamp(d(t["anchor"], t["positive"]) - d_an + a["margin"], min=0)
    return loss if a["reduction"] == "none" else (loss.mean() if a["reduction"] == "mean" else loss.sum())


def triplet_margin_loss_forward(a):
    return [_np(_triplet({k: _t(a[k]) for k in ("anchor", "positive", "negative")}, a))]


def triplet_margin_loss_backward(a):
    return _backward(lambda t: _triplet(t, a), a, ["anchor", "positive", "negative"])


# ---- optimizer steps: torch.optim's single-tensor functional forms ------------------


def _state(a, k):
    return None if a.get(k) is None else _t(a[k])


def sgd_step(a):
    p, g, buf = _t(a["param"]), _t(a["grad"]), _state(a, "momentum_buffer")
    bufs = [None if a["first_step"] else buf]
    torch_sgd([p], [g], bufs, foreach=False, weight_decay=a["weight_decay"], momentum=a["momentum"],
                        lr=a["lr"], dampening=a["dampening"], nesterov=a["nesterov"], maximize=a["maximize"])
    # Without momentum torch neither reads nor writes the buffer; the kernel leaves it as it was.
    new_buf = bufs[0] if a["momentum"] else buf
    return [None, _np(p)] + ([_np(new_buf)] if a.get("momentum_buffer") is not None else [])


def _step(a):
    return [torch.tensor(float(a["step"] - 1), dtype=torch.float64)]  # torch counts up before the update


def adam_step(a):
    p, g, m, v = _t(a["param"]), _t(a["grad"]), _t(a["exp_avg"]), _t(a["exp_avg_sq"])
    vmax = _state(a, "max_exp_avg_sq")
    torch_adam([p], [g], [m], [v], [vmax] if vmax is not None else [], _step(a), foreach=False,
                          decoupled_weight_decay=a["decoupled_weight_decay"], amsgrad=a["amsgrad"],
                          beta1=a["beta1"], beta2=a["beta2"], lr=a["lr"], weight_decay=a["weight_decay"],
                          eps=a["eps"], maximize=a["maximize"])
    return [None] + [_np(t) for t in (p, m, v, vmax) if t is not None]


def adagrad_step(a):
    p, g, s = _t(a["param"]), _t(a["grad"]), _t(a["state_sum"])
    torch_adagrad([p], [g], [s], _step(a), foreach=False, lr=a["lr"], weight_decay=a["weight_decay"],
                                lr_decay=a["lr_decay"], eps=a["eps"], maximize=a["maximize"])
    return [None, _np(p), _np(s)]


def adadelta_step(a):
    p, g, sq, acc = _t(a["param"]), _t(a["grad"]), _t(a["square_avg"]), _t(a["acc_delta"])
    torch_adadelta([p], [g], [sq], [acc], [torch.tensor(0.0, dtype=torch.float64)], foreach=False, lr=a["lr"],
                   rho=a["rho"], eps=a["eps"], weight_decay=a["weight_decay"], maximize=a["maximize"])
    return [None, _np(p), _np(sq), _np(acc)]


def rmsprop_step(a):
    p, g, sq = _t(a["param"]), _t(a["grad"]), _t(a["square_avg"])
    ga, mb = _state(a, "grad_avg"), _state(a, "momentum_buffer")
    torch_rmsprop([p], [g], [sq], [ga], [mb], [torch.tensor(0.0, dtype=torch.float64)],
                                foreach=False, maximize=a["maximize"], lr=a["lr"], alpha=a["alpha"], eps=a["eps"],
                                weight_decay=a["weight_decay"], momentum=a["momentum"], centered=a["centered"])
    return [None] + [_np(t) for t in (p, sq, ga, mb) if t is not None]


# ---- dropout masks and soft-NMS -------------------------------------------------------


def dropout_mask(a):
    # At p = 0 every position is kept and at p = 1 none; other p are random draws.
    if a["p"] in (0.0, 1.0):
        return [np.full(a["n"], 1 if a["p"] == 0 else 0, np.uint8)]
    return [None]


def _iou_matrix(b):
    b = b.astype(F64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    union = area[:, None] + area[None, :] - iw * ih
    return np.divide(iw * ih, union, out=np.zeros_like(union), where=union > 0)


def soft_nms_forward(a):
    """Soft-NMS written out: pick the highest current score (lower index on ties), decay the
    others of its label, drop what falls below score_threshold."""
    scores = a["scores"].astype(F64).copy()
    iou, labels = _iou_matrix(a["boxes"]), a["labels"]
    alive = scores >= a["score_threshold"]
    keep = []
    while alive.any():
        i = int(np.flatnonzero(alive)[np.argmax(scores[alive])])
        keep.append(i)
        alive[i] = False
        same = alive if labels is None else alive & (labels == labels[i])
        if a["method"] == "linear":
            decay = np.where(iou[i] >= a["iou_threshold"], 1 - iou[i], 1.0)
        else:
            decay = np.exp(-iou[i] ** 2 / a["sigma"])
        scores = np.where(same, scores * decay, scores)
        alive &= scores >= a["score_threshold"]
    return [np.array(keep, np.int64), None]


REFS = {
    "batch_norm_forward": batch_norm_forward, "batch_norm_backward": batch_norm_backward,
    "group_norm_forward": group_norm_forward, "group_norm_backward": group_norm_backward,
    "instance_norm_forward": instance_norm_forward, "instance_norm_backward": instance_norm_backward,
    "layer_norm_backward": layer_norm_backward,
    "local_response_norm_forward": local_response_norm_forward,
    "local_response_norm_backward": local_response_norm_backward,
    "cross_entropy_forward": cross_entropy_forward, "cross_entropy_backward": cross_entropy_backward,
    "nll_loss_forward": nll_loss_forward, "nll_loss_backward": nll_loss_backward,
    "binary_cross_entropy_forward": bce_forward(False), "binary_cross_entropy_backward": bce_backward(False),
    "binary_cross_entropy_with_logits_forward": bce_forward(True),
    "binary_cross_entropy_with_logits_backward": bce_backward(True),
    "multi_margin_loss_forward": multi_margin_loss_forward, "multi_margin_loss_backward": multi_margin_loss_backward,
    "triplet_margin_loss_forward": triplet_margin_loss_forward,
    "triplet_margin_loss_backward": triplet_margin_loss_backward,
    "sgd_step": sgd_step, "adam_step": adam_step, "adagrad_step": adagrad_step, "rmsprop_step": rmsprop_step,
    "adadelta_step": adadelta_step,
    "dropout_mask": dropout_mask, "soft_nms_forward": soft_nms_forward,
}
REFS.update({f"{n}_backward": pointwise_backward(n) for n in _POINTWISE})
