"""bench_ops cases: activations on a CNN activation tensor (N, 64, 56, 56) and
softmax over 1000 classes on (N*64, 1000), forward alone and forward+backward,
cnnfast vs PyTorch (N = 32, or 8 under --quick)."""
import os

import numpy as np
import torch
import torch.nn.functional as TF

import cnnfast.functional as F
from _op_callables import op_callables

QUICK = os.environ.get("CNNFAST_BENCH_QUICK") == "1"
N = 8 if QUICK else 32
_rng = np.random.default_rng(1)


def _cases(name, x, ours, ref):
    gy = _rng.standard_normal(x.shape).astype(np.float32)
    fwd_ours, fwd_ref, both_ours, both_ref = op_callables(x, gy, ours, ref)

    n = x.size * 4
    tag = "x".join(str(s) for s in x.shape)
    return [
        dict(name=f"{name} fwd {tag}", bytes=2 * n, cnnfast=fwd_ours, torch=fwd_ref),
        # forward: read x, write y; backward: read grad_output and the saved tensor, write grad_input
        dict(name=f"{name} fwd+bwd {tag}", bytes=5 * n, cnnfast=both_ours, torch=both_ref),
    ]


_x = _rng.standard_normal((N, 64, 56, 56)).astype(np.float32)
_logits = (_rng.standard_normal((N * 64, 1000)) * 3).astype(np.float32)
CASES = (
    _cases("relu", _x, F.relu, TF.relu)
    + _cases("sigmoid", _x, F.sigmoid, torch.sigmoid)
    + _cases("tanh", _x, F.tanh, torch.tanh)
    + _cases("silu", _x, F.silu, TF.silu)
    + _cases("softmax(1000)", _logits, lambda t: F.softmax(t, dim=1), lambda t: TF.softmax(t, dim=1))
)
