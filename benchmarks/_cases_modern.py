"""bench_ops cases for the ops of today's CNNs (issue 20): GELU (exact, tanh), Hardswish,
Hardsigmoid, ReLU6, Mish, Softplus, erf on (N, 64, 56, 56); bilinear x2 upsampling of
(N, 64, 28, 28) (a segmentation head), nearest x2, bicubic x2 of (N, 16, 28, 28) and
channel_shuffle on (N, 116, 28, 28) (ShuffleNetV2); forward and forward+backward, cnnfast
vs PyTorch (N = 32, or 8 under --quick)."""
import os

import numpy as np
import torch
import torch.nn.functional as TF

import cnnfast.functional as F
from _op_callables import op_callables

QUICK = os.environ.get("CNNFAST_BENCH_QUICK") == "1"
N = 8 if QUICK else 32
_rng = np.random.default_rng(2)


def _cases(name, x, ours, ref):
    y_shape = ref(torch.tensor(x[:1])).shape[1:]
    gy = _rng.standard_normal((x.shape[0],) + tuple(y_shape)).astype(np.float32)
    fwd_ours, fwd_ref, both_ours, both_ref = op_callables(x, gy, ours, ref)
    n_in, n_out = x.size * 4, gy.size * 4
    tag = "x".join(str(s) for s in x.shape)
    return [
        dict(name=f"{name} fwd {tag}", bytes=n_in + n_out, cnnfast=fwd_ours, torch=fwd_ref),
        # backward reads grad_output and the input, writes grad_input
        dict(name=f"{name} fwd+bwd {tag}", bytes=3 * n_in + 2 * n_out, cnnfast=both_ours, torch=both_ref),
    ]


_x = _rng.standard_normal((N, 64, 56, 56)).astype(np.float32)
_m = _rng.standard_normal((N, 64, 28, 28)).astype(np.float32)
_s = _rng.standard_normal((N, 16, 28, 28)).astype(np.float32)
_sh = _rng.standard_normal((N, 116, 28, 28)).astype(np.float32)
CASES = (
    _cases("gelu", _x, F.gelu, TF.gelu)
    + _cases("gelu_tanh", _x, lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh"))
    + _cases("hardswish", _x, F.hardswish, TF.hardswish)
    + _cases("hardsigmoid", _x, F.hardsigmoid, TF.hardsigmoid)
    + _cases("relu6", _x, F.relu6, TF.relu6)
    + _cases("mish", _x, F.mish, TF.mish)
    + _cases("softplus", _x, F.softplus, TF.softplus)
    + _cases("erf", _x, F.erf, torch.erf)
    + _cases("upsample bilinear x2", _m, lambda t: F.interpolate(t, scale_factor=2, mode="bilinear"),
             lambda t: TF.interpolate(t, scale_factor=2, mode="bilinear"))
    + _cases("upsample nearest x2", _m, lambda t: F.interpolate(t, scale_factor=2),
             lambda t: TF.interpolate(t, scale_factor=2))
    + _cases("upsample bicubic x2", _s, lambda t: F.interpolate(t, scale_factor=2, mode="bicubic"),
             lambda t: TF.interpolate(t, scale_factor=2, mode="bicubic"))
    + _cases("channel_shuffle(2)", _sh, lambda t: F.channel_shuffle(t, 2), lambda t: TF.channel_shuffle(t, 2))
)
