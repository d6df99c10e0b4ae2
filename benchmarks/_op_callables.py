"""The four callables a bench_ops case times for one op on one input: forward alone
(no graph) and forward+backward through autograd from a leaf, in cnnfast and PyTorch.
Shared by the _cases_*.py files whose op maps one tensor to one tensor."""
import numpy as np
import torch

import cnnfast


def op_callables(x: np.ndarray, gy: np.ndarray, ours, ref):
    """x: the input; gy: the gradient fed to backward (the output's shape).
    Returns (fwd_ours, fwd_ref, both_ours, both_ref)."""
    tx_plain, tt_plain = cnnfast.tensor(x), torch.from_numpy(x)
    tx = cnnfast.tensor(x, requires_grad=True)
    tt = torch.from_numpy(x.copy()).requires_grad_(True)
    gy_t = torch.from_numpy(gy)

    def fwd_ours():
        with cnnfast.no_grad():
            ours(tx_plain)

    def fwd_ref():
        with torch.no_grad():
            ref(tt_plain)

    def both_ours():
        tx.grad = None
        ours(tx).backward(gy)

    def both_ref():
        tt.grad = None
        ref(tt).backward(gy_t)

    return fwd_ours, fwd_ref, both_ours, both_ref
