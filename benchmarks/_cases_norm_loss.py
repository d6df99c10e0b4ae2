"""Benchmark cases for the normalisation and loss kernels, read by benchmarks/bench_ops.py.

Each case is dict(name, bytes, cnnfast, torch): two zero-argument callables doing
the same work (forward, or forward + backward through each library's autograd)
on the same data, and the bytes a memory-bound kernel must at least move (inputs
read once, outputs written once), for GB/s. Activations: (N, 64, 56, 56) float32
with N = 32, or 8 under bench_ops --quick (CNNFAST_BENCH_QUICK=1).
"""
import os

import numpy as np
import torch
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F

_rng = np.random.default_rng(0)
QUICK = os.environ.get("CNNFAST_BENCH_QUICK") == "1"
_N, _C, _H, _W = (8 if QUICK else 32), 64, 56, 56
_X = _rng.standard_normal((_N, _C, _H, _W), dtype=np.float32)
_GY = _rng.standard_normal(_X.shape, dtype=np.float32)
_XB = _X.nbytes
_WC = _rng.uniform(0.5, 1.5, _C).astype(np.float32)
_BC = _rng.standard_normal(_C).astype(np.float32)
_WL = _rng.uniform(0.5, 1.5, (_C, _H, _W)).astype(np.float32)
_BL = _rng.standard_normal((_C, _H, _W)).astype(np.float32)

_tx, _tgy = torch.from_numpy(_X), torch.from_numpy(_GY)


def _pair(name, nbytes, ours, theirs, params_c=(), params_t=()):
    """Forward and forward+backward cases of one op.

    ours(x, *params) / theirs(x, *params) build the output from a cnnfast / torch tensor."""
    cw = [cnnfast.tensor(p) for p in params_c]
    tw = [torch.from_numpy(p.copy()) for p in params_t]
    # Both sides' inputs are built once, outside the timed calls: cnnfast.tensor copies
    # its array (2 ms for this 25 MB tensor), torch.from_numpy shares it.
    cx, cxg = cnnfast.tensor(_X), cnnfast.tensor(_X, requires_grad=True)

    def c_fwd():
        with cnnfast.no_grad():
            ours(cx, *cw)

    def t_fwd():
        with torch.no_grad():
            theirs(_tx, *tw)

    cwg = [cnnfast.tensor(p, requires_grad=True) for p in params_c]
    twg = [torch.from_numpy(p.copy()).requires_grad_() for p in params_t]

    def c_fb():
        for p in cwg:
            p.grad = None
        cxg.grad = None
        ours(cxg, *cwg).backward(_GY)

    def t_fb():
        for p in twg:
            p.grad = None
        x = _tx.detach().requires_grad_()
        theirs(x, *twg).backward(_tgy)

    return [dict(name=f"{name} fwd", bytes=2 * nbytes, cnnfast=c_fwd, torch=t_fwd),
            dict(name=f"{name} fwd+bwd", bytes=5 * nbytes, cnnfast=c_fb, torch=t_fb)]


_rm_c, _rv_c = cnnfast.tensor(np.zeros(_C, np.float32)), cnnfast.tensor(np.ones(_C, np.float32))
_rm_t, _rv_t = torch.zeros(_C), torch.ones(_C)

CASES = []
_S = f"{_N}x{_C}x{_H}x{_W}"
CASES += _pair(f"batch_norm train {_S}", _XB,
               lambda x, w, b: F.batch_norm(x, _rm_c, _rv_c, w, b, training=True),
               lambda x, w, b: TF.batch_norm(x, _rm_t, _rv_t, w, b, training=True), (_WC, _BC), (_WC, _BC))
CASES += _pair(f"batch_norm eval {_S}", _XB,
               lambda x, w, b: F.batch_norm(x, _rm_c, _rv_c, w, b, training=False),
               lambda x, w, b: TF.batch_norm(x, _rm_t, _rv_t, w, b, training=False), (_WC, _BC), (_WC, _BC))
CASES += _pair(f"layer_norm (64,56,56) {_S}", _XB,
               lambda x, w, b: F.layer_norm(x, (_C, _H, _W), w, b),
               lambda x, w, b: TF.layer_norm(x, (_C, _H, _W), w, b), (_WL, _BL), (_WL, _BL))
CASES += _pair(f"group_norm G=32 {_S}", _XB,
               lambda x, w, b: F.group_norm(x, 32, w, b),
               lambda x, w, b: TF.group_norm(x, 32, w, b), (_WC, _BC), (_WC, _BC))
CASES += _pair(f"instance_norm affine {_S}", _XB,
               lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
               lambda x, w, b: TF.instance_norm(x, weight=w, bias=b), (_WC, _BC), (_WC, _BC))
CASES += _pair(f"local_response_norm 5 {_S}", _XB,
               lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
               lambda x: TF.local_response_norm(x, 5, 1e-4, 0.75, 2.0))

# ---- losses ------------------------------------------------------------------------
_B = 64 if QUICK else 256
_LOGITS = _rng.standard_normal((_B, 1000), dtype=np.float32)
_TGT = _rng.integers(0, 1000, _B)
_tl, _tt = torch.from_numpy(_LOGITS), torch.from_numpy(_TGT)


def _loss_pair(name, nbytes, ours, theirs, a, b):
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ca, cag = cnnfast.tensor(a), cnnfast.tensor(a, requires_grad=True)  # built once, as ta is

    def c_fwd():
        with cnnfast.no_grad():
            ours(ca, b)

    def t_fwd():
        with torch.no_grad():
            theirs(ta, tb)

    def c_fb():
        cag.grad = None
        ours(cag, b).backward()

    def t_fb():
        x = ta.detach().requires_grad_()
        theirs(x, tb).backward()

    return [dict(name=f"{name} fwd", bytes=nbytes, cnnfast=c_fwd, torch=t_fwd),
            dict(name=f"{name} fwd+bwd", bytes=3 * nbytes, cnnfast=c_fb, torch=t_fb)]


CASES += _loss_pair(f"cross_entropy {_B}x1000", _LOGITS.nbytes, lambda x, t: F.cross_entropy(x, t),
                    lambda x, t: TF.cross_entropy(x, t), _LOGITS, _TGT)
CASES += _loss_pair(f"cross_entropy ls=0.1 {_B}x1000", _LOGITS.nbytes,
                    lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
                    lambda x, t: TF.cross_entropy(x, t, label_smoothing=0.1), _LOGITS, _TGT)
_LEN = 1 << (21 if QUICK else 23)
_P = _rng.standard_normal(_LEN, dtype=np.float32)
_Q = _rng.standard_normal(_LEN, dtype=np.float32)
CASES += _loss_pair(f"mse_loss {_LEN >> 20}M", 2 * _P.nbytes, lambda x, t: F.mse_loss(x, t),
                    lambda x, t: TF.mse_loss(x, t), _P, _Q)
CASES += _loss_pair(f"l1_loss {_LEN >> 20}M", 2 * _P.nbytes, lambda x, t: F.l1_loss(x, t),
                    lambda x, t: TF.l1_loss(x, t), _P, _Q)
