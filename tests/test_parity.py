"""End-to-end checks of the whole layer stack: float64 finite-difference gradients
through a small residual CNN, and step-by-step training parity with PyTorch for every
optimizer with a learning-rate schedule (weights copied from torch, float32).

The model is written once against the shared API and instantiated with either
``cnnfast.nn`` or ``torch.nn``: the same code runs on both libraries."""
import numpy as np
import pytest
import torch

import cnnfast
from helpers import assert_close, assert_nontrivial, numerical_grad


def make_cnn(lib, classes=5):
    nn_ = lib.nn
    F = lib.nn.functional

    class SmallResNet(nn_.Module):
        """conv-BN-ReLU-maxpool, a residual conv-BN block, a 1x1 branch concatenated on
        channels, dropout, avg-pool, linear."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn_.Conv2d(3, 6, 3, padding=1, bias=False)  # a bias before BN cancels out
            self.bn1 = nn_.BatchNorm2d(6)
            self.pool = nn_.MaxPool2d(2)
            self.conv2 = nn_.Conv2d(6, 6, 3, padding=1, bias=False)
            self.bn2 = nn_.BatchNorm2d(6)
            self.branch = nn_.Conv2d(6, 3, 1)
            self.drop = nn_.Dropout(0.5)
            self.avg = nn_.AvgPool2d(2)
            self.fc = nn_.Linear(9 * 2 * 2, classes)

        def forward(self, x):
            x = self.pool(F.relu(self.bn1(self.conv1(x))))
            r = F.relu(self.bn2(self.conv2(x)) + x)
            y = lib.cat([r, self.branch(x)], 1)
            y = self.avg(self.drop(y))
            return self.fc(y.flatten(1))

    return SmallResNet()


def make_mlp(lib):
    nn_ = lib.nn
    return nn_.Sequential(nn_.Linear(12, 16), nn_.ReLU(), nn_.Linear(16, 16), nn_.ReLU(), nn_.Linear(16, 4))


def _copy(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})


def test_small_cnn_gradients_by_finite_differences(rng):
    """Every parameter and the input, through conv, BN (batch statistics), ReLU, max-pool,
    a residual add, concatenation, dropout in eval mode, avg-pool, linear, cross-entropy."""
    model = make_cnn(cnnfast, classes=3).double()
    model.train()
    model.drop.eval()
    for p in model.parameters():  # away from the default init so BN's affine terms matter too
        p._array[...] = rng.standard_normal(p.shape) * 0.5
    x0 = rng.standard_normal((2, 3, 8, 8))
    target = cnnfast.tensor(np.array([2, 0]))

    def loss_of(x):
        return cnnfast.functional.cross_entropy(model(x), target)

    x = cnnfast.tensor(x0.copy(), requires_grad=True)
    model.zero_grad()
    loss_of(x).backward()
    params = list(model.parameters())
    arrays = [x0] + [p._array for p in params]

    def f(*_):
        with cnnfast.no_grad():
            return loss_of(cnnfast.tensor(x0))._array

    numeric = numerical_grad(f, arrays, np.ones(()), eps=1e-6)
    assert_nontrivial(*numeric)
    assert_close(x.grad._array, numeric[0], rtol=1e-5, atol=1e-8, what="input")
    for (name, p), n in zip(model.named_parameters(), numeric[1:]):
        assert_close(p.grad._array, n, rtol=1e-5, atol=1e-8, what=name)


OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), "StepLR", dict(step_size=5, gamma=0.5)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, weight_decay=1e-4, initial_accumulator_value=0.1),
     "ExponentialLR", dict(gamma=0.95)),
    ("RMSprop", dict(lr=1e-3, alpha=0.95, momentum=0.9, centered=True, weight_decay=1e-4),
     "CosineAnnealingLR", dict(T_max=10, eta_min=1e-4)),
    ("Adam", dict(lr=2e-3, betas=(0.9, 0.99), weight_decay=1e-4), "OneCycleLR", dict(max_lr=5e-3, total_steps=20)),
    ("AdamW", dict(lr=2e-3, weight_decay=0.05, amsgrad=True), "LinearLR", dict(start_factor=0.2, total_iters=8)),
]


def _train_pair(make, x0, t0, opt_name, opt_kw, sched_name, sched_kw, steps=20):
    torch.manual_seed(0)
    theirs = make(torch)
    ours = make(cnnfast)
    _copy(ours, theirs)
    for m in (ours, theirs):
        m.train()
        if hasattr(m, "drop"):
            m.drop.eval()
    topt = getattr(torch.optim, opt_name)(theirs.parameters(), foreach=False, **opt_kw)
    oopt = getattr(cnnfast.optim, opt_name)(ours.parameters(), **opt_kw)
    tsched = getattr(torch.optim.lr_scheduler, sched_name)(topt, **sched_kw)
    osched = getattr(cnnfast.optim.lr_scheduler, sched_name)(oopt, **sched_kw)
    tl, ol = [], []
    for _ in range(steps):
        for model, opt, sched, lib, losses in ((theirs, topt, tsched, torch, tl), (ours, oopt, osched, cnnfast, ol)):
            opt.zero_grad()
            x = lib.tensor(x0) if lib is torch else cnnfast.tensor(x0)
            loss = lib.nn.functional.cross_entropy(model(x), lib.tensor(t0))
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    return ours, theirs, np.array(ol), np.array(tl)


@pytest.mark.parametrize("opt_name,opt_kw,sched_name,sched_kw", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_mlp_training_matches_torch(opt_name, opt_kw, sched_name, sched_kw, rng):
    x0 = rng.standard_normal((16, 12)).astype(np.float32)
    t0 = rng.integers(0, 4, 16)
    ours, theirs, ol, tl = _train_pair(make_mlp, x0, t0, opt_name, opt_kw, sched_name, sched_kw)
    np.testing.assert_allclose(ol, tl, rtol=1e-4)
    assert tl[-1] < tl[0]  # it trained
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p._array, tp.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=n)


@pytest.mark.parametrize("opt_name,opt_kw,sched_name,sched_kw", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_cnn_training_matches_torch(opt_name, opt_kw, sched_name, sched_kw, rng):
    x0 = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    t0 = rng.integers(0, 5, 8)
    ours, theirs, ol, tl = _train_pair(make_cnn, x0, t0, opt_name, opt_kw, sched_name, sched_kw)
    np.testing.assert_allclose(ol, tl, rtol=1e-4)
    assert tl[-1] < tl[0]
    for (n, b), (_, tb) in zip(ours.named_buffers(), theirs.named_buffers()):
        np.testing.assert_allclose(b._array, tb.numpy(), rtol=1e-3, atol=1e-4, err_msg=n)
