"""``SyncBatchNorm``: batch normalisation whose training statistics are those of the global
batch (every rank's samples), exactly: the result equals ``BatchNorm`` on one process that
sees the concatenated batch, up to float rounding.

Forward: each rank computes, per channel, its count n_r, mean m_r and sum of squared
deviations M2_r (float64); one all-gather of (n_r, m_r, M2_r) and Chan's pairwise
combination give the global mean and variance without the cancellation of
E[x^2] - E[x]^2. Backward: with xhat = (x - mean) * invstd and S1 = sum(dy), S2 =
sum(dy * xhat) summed over every rank's samples (one all-reduce),

    dx = weight * invstd * (dy - S1 / N - xhat * S2 / N),

which is this rank's share of the global batch's input gradient (DistributedDataParallel
then averages the parameter gradients over ranks). dweight and dbias are this rank's
sums; DDP's averaging makes them the global ones. Gradient contract: activation
gradients are written, parameter gradients returned for the engine to accumulate.
In eval mode, or in a world of one process, it is the plain ``BatchNorm`` computation.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..nn.modules.normalization import _BatchNorm
from ..tensor import Tensor

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class _SyncBatchNormFn(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, comm):
        # x: (N, C, *spatial); weight, bias, running stats: (C,)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        n_local = x.size // c if c else 0
        mean_l = x.mean(axis=axes, dtype=np.float64) if n_local else np.zeros(c)
        shape = (1, c) + (1,) * (x.ndim - 2)
        m2_l = np.square(x - mean_l.reshape(shape), dtype=np.float64).sum(axis=axes) if n_local else np.zeros(c)
        parts = comm.allgather(np.concatenate([[float(n_local)], mean_l, m2_l]))
        counts, means, m2s = parts[:, 0], parts[:, 1:1 + c], parts[:, 1 + c:]
        total = counts.sum()
        if total <= 1:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks in training, "
                             f"got input of size {list(x.shape)} on this rank and {int(total)} in all")
        mean = (counts[:, None] * means).sum(axis=0) / total
        m2 = (m2s + counts[:, None] * np.square(means - mean)).sum(axis=0)
        var = m2 / total
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = ((x - mean.reshape(shape)) * invstd.reshape(shape)).astype(x.dtype, copy=False)
        y = xhat if weight is None else xhat * weight.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * m2 / (total - 1)).astype(running_var.dtype)
        ctx.save_for_backward(xhat, weight, invstd.astype(x.dtype))
        ctx.total, ctx.comm, ctx.has_bias = total, comm, bias is not None
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xhat, weight, invstd = ctx.saved_tensors
        c = g.shape[1]
        axes = (0,) + tuple(range(2, g.ndim))
        shape = (1, c) + (1,) * (g.ndim - 2)
        sum_dy = g.sum(axis=axes, dtype=np.float64)
        sum_dy_xhat = (g * xhat).sum(axis=axes, dtype=np.float64)
        sums = np.concatenate([sum_dy, sum_dy_xhat])
        ctx.comm.allreduce(sums, "sum")
        s1, s2 = sums[:c] / ctx.total, sums[c:] / ctx.total
        scale = invstd if weight is None else invstd * weight
        gx = (g - s1.reshape(shape).astype(g.dtype) - xhat * s2.reshape(shape).astype(g.dtype)) * scale.reshape(shape)
        gw = sum_dy_xhat.astype(g.dtype) if weight is not None else None
        gb = sum_dy.astype(g.dtype) if ctx.has_bias else None
        return gx, gw, gb, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, *) with statistics of the batch of every rank together.

    Same arguments, parameters and buffers as ``BatchNorm2d`` (so state dicts load either
    way), plus ``comm`` (default: the job's communicator, taken at the first forward)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, comm=None, **kw):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, **kw)
        self.comm = comm

    def _check_input_dim(self, input) -> None:
        if input.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {input.ndim}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(f"input: expected {self.num_features} channels (dimension 1), got shape "
                             f"{tuple(input.shape)}")

    def forward(self, input):
        if self.comm is None:
            from . import get_communicator
            self.comm = get_communicator()
        if not self.training or self.comm.size == 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked._array[...] += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked._array)
        track = self.track_running_stats and self.running_mean is not None
        for t, name in ((self.weight, "weight"), (self.bias, "bias")):
            if t is not None and t.dtype != input.dtype:
                raise TypeError(f"{name}: dtype {t.dtype} differs from input dtype {input.dtype}")
        x = input if isinstance(input, Tensor) else Tensor(input)
        return _SyncBatchNormFn.apply(x, self.weight, self.bias, self.running_mean._array if track else None,
                                      self.running_var._array if track else None, factor, self.eps, self.comm)


def convert_sync_batchnorm(module, comm=None):
    """Replace every BatchNorm1d/2d/3d in ``module`` by a SyncBatchNorm holding the same
    parameters and buffers (the objects themselves, so optimizers built before still
    update them); returns the module (a new one when ``module`` itself is a BatchNorm)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, comm=comm)
        for name in ("weight", "bias"):
            if name in module._parameters:
                new._parameters[name] = module._parameters[name]
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if name in module._buffers:
                new._buffers[name] = module._buffers[name]
        new.train(module.training)
        return new
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = convert_sync_batchnorm(child, comm)
    return module

