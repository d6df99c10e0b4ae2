"""bench_ops cases: pooling (max, average, adaptive/global) and dropout on CNN
activation shapes, forward alone and forward+backward, cnnfast vs PyTorch.

Shapes (N = 32, or 8 under --quick): ResNet stem max-pool 3x3/2 p1 and VGG
2x2/2 on (N, 64, 56, 56); DenseNet-transition avg-pool 2x2/2 and Inception
3x3/1 p1; AlexNet's adaptive 6x6 on (N, 256, 13, 13); ResNet's global average
pool on (N, 512, 7, 7); dropout p=0.5 on (N, 64, 56, 56) and AlexNet's
(N, 4096) classifier input; dropout2d on (N, 64, 56, 56).
"""
import os

import numpy as np
import torch.nn.functional as TF

import cnnfast
import cnnfast.functional as F
from _op_callables import op_callables

QUICK = os.environ.get("CNNFAST_BENCH_QUICK") == "1"
N = 8 if QUICK else 32
_rng = np.random.default_rng(0)
_inputs: dict = {}


def _input(shape):
    if shape not in _inputs:
        _inputs[shape] = _rng.standard_normal(shape).astype(np.float32)
    return _inputs[shape]


def _cases(name, shape, ours, ref, out_numel_bytes_extra=0):
    """Forward (no graph) and forward+backward cases of one op on one input shape."""
    x = _input(shape)
    with cnnfast.no_grad():
        y = ours(cnnfast.tensor(x))
    out_shape = y.shape
    n_in, n_out = x.size * 4, int(np.prod(out_shape)) * 4
    gy = _rng.standard_normal(out_shape).astype(np.float32)
    fwd_ours, fwd_ref, both_ours, both_ref = op_callables(x, gy, ours, ref)

    extra = out_numel_bytes_extra * (n_out // 4)
    fwd_bytes = n_in + n_out
    # Backward reads grad_output (and indices) and writes grad_input.
    both_bytes = fwd_bytes + extra + n_out + extra + n_in
    tag = "x".join(str(s) for s in shape)
    return [
        dict(name=f"{name} fwd {tag}", bytes=fwd_bytes, cnnfast=fwd_ours, torch=fwd_ref),
        dict(name=f"{name} fwd+bwd {tag}", bytes=both_bytes, cnnfast=both_ours, torch=both_ref),
    ]


S56 = (N, 64, 56, 56)
CASES = (
    _cases("max_pool2d 3x3/2 p1", S56, lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1), 8)
    + _cases("max_pool2d 2x2/2", S56, lambda t: F.max_pool2d(t, 2), lambda t: TF.max_pool2d(t, 2), 8)
    + _cases("avg_pool2d 2x2/2", S56, lambda t: F.avg_pool2d(t, 2), lambda t: TF.avg_pool2d(t, 2))
    + _cases("avg_pool2d 3x3/1 p1", (N, 64, 28, 28), lambda t: F.avg_pool2d(t, 3, 1, 1),
             lambda t: TF.avg_pool2d(t, 3, 1, 1))
    + _cases("adaptive_avg_pool2d 6x6", (N, 256, 13, 13), lambda t: F.adaptive_avg_pool2d(t, 6),
             lambda t: TF.adaptive_avg_pool2d(t, 6))
    + _cases("adaptive_max_pool2d 6x6", (N, 256, 13, 13), lambda t: F.adaptive_max_pool2d(t, 6),
             lambda t: TF.adaptive_max_pool2d(t, 6), 8)
    + _cases("global avg pool", (N, 512, 7, 7), lambda t: F.adaptive_avg_pool2d(t, 1),
             lambda t: TF.adaptive_avg_pool2d(t, 1))
    + _cases("dropout p=0.5", S56, lambda t: F.dropout(t, 0.5), lambda t: TF.dropout(t, 0.5))
    + _cases("dropout p=0.5", (N, 4096), lambda t: F.dropout(t, 0.5), lambda t: TF.dropout(t, 0.5))
    + _cases("dropout2d p=0.5", S56, lambda t: F.dropout2d(t, 0.5), lambda t: TF.dropout2d(t, 0.5))
)
