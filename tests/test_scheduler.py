"""LR schedules: the learning-rate sequence of each scheduler equals torch's."""
import math

import numpy as np
import pytest
import torch

from cnnfast import nn, optim
from cnnfast.optim import lr_scheduler as ours_sched

tsched = torch.optim.lr_scheduler


def _optimizers(opt="SGD", groups=2, **kw):
    ps = [nn.Parameter(np.zeros(2, np.float32)) for _ in range(groups)]
    tps = [torch.zeros(2, requires_grad=True) for _ in range(groups)]
    lrs = [0.1, 0.03][:groups]
    o = getattr(optim, opt)([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)], **kw)
    t = getattr(torch.optim, opt)([{"params": [p], "lr": lr} for p, lr in zip(tps, lrs)], **kw)
    return o, t


def _lambda(epoch):
    return 0.95 ** epoch


SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5), 12),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3), 12),
    ("ExponentialLR", dict(gamma=0.9), 10),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001), 30),
    ("LinearLR", dict(start_factor=0.1, total_iters=4), 10),
    ("ConstantLR", dict(factor=0.5, total_iters=3), 8),
    ("LambdaLR", dict(lr_lambda=_lambda), 10),
    ("OneCycleLR", dict(max_lr=[1.0, 0.5], total_steps=20), 19),
    ("OneCycleLR", dict(max_lr=0.8, total_steps=15, anneal_strategy="linear", three_phase=True), 14),
]


def _run(o, t, make_ours, make_theirs, steps, metric=None):
    s, ts = make_ours(o), make_theirs(t)
    seq, tseq = [s.get_last_lr()], [ts.get_last_lr()]
    for i in range(steps):
        o.step()
        t.step()
        if metric is None:
            s.step()
            ts.step()
        else:
            s.step(metric(i))
            ts.step(metric(i))
        seq.append(list(s.get_last_lr()))
        tseq.append(list(ts.get_last_lr()))
    return s, ts, seq, tseq


@pytest.mark.parametrize("name,kwargs,steps", SCHEDULERS)
def test_sequence_equals_torch(name, kwargs, steps):
    opt = "SGD"
    o, t = _optimizers(opt, momentum=0.9)
    s, ts, seq, tseq = _run(o, t, lambda o: getattr(ours_sched, name)(o, **kwargs),
                            lambda t: getattr(tsched, name)(t, **kwargs), steps)
    assert seq == tseq
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in t.param_groups]
    if name == "OneCycleLR":
        assert [g["momentum"] for g in o.param_groups] == [g["momentum"] for g in t.param_groups]


def test_onecycle_cycles_adam_beta1():
    o, t = _optimizers("Adam")
    _, _, seq, tseq = _run(o, t, lambda o: ours_sched.OneCycleLR(o, max_lr=0.1, total_steps=10),
                           lambda t: tsched.OneCycleLR(t, max_lr=0.1, total_steps=10), 9)
    assert seq == tseq
    assert [g["betas"] for g in o.param_groups] == [tuple(g["betas"]) for g in t.param_groups]


def test_sequential_warmup_then_cosine():
    o, t = _optimizers()

    def ours(o):
        return ours_sched.SequentialLR(o, [ours_sched.LinearLR(o, start_factor=0.2, total_iters=3),
                                           ours_sched.CosineAnnealingLR(o, T_max=6)], milestones=[3])

    def theirs(t):
        return tsched.SequentialLR(t, [tsched.LinearLR(t, start_factor=0.2, total_iters=3),
                                       tsched.CosineAnnealingLR(t, T_max=6)], milestones=[3])

    _, _, seq, tseq = _run(o, t, ours, theirs, 12)
    assert seq == tseq


@pytest.mark.parametrize("kwargs", [dict(patience=2, factor=0.5), dict(mode="max", patience=1, cooldown=2,
                                                                      threshold_mode="abs", min_lr=0.01)])
def test_reduce_on_plateau_equals_torch(kwargs):
    o, t = _optimizers()
    metrics = [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.5, 0.6, 0.6, 0.6, 0.7, 0.6, 0.6, 0.6, 0.6]
    _, _, seq, tseq = _run(o, t, lambda o: ours_sched.ReduceLROnPlateau(o, **kwargs),
                           lambda t: tsched.ReduceLROnPlateau(t, **kwargs), len(metrics), metric=lambda i: metrics[i])
    assert seq == tseq
    assert seq[-1] != seq[0]


def test_state_dict_resume_matches_uninterrupted():
    o, _ = _optimizers()
    s = ours_sched.CosineAnnealingLR(o, T_max=10)
    full = []
    for _ in range(8):
        o.step()
        s.step()
        full.append(s.get_last_lr())
    o2, _ = _optimizers()
    s2 = ours_sched.CosineAnnealingLR(o2, T_max=10)
    for _ in range(4):
        o2.step()
        s2.step()
    osd, ssd = o2.state_dict(), s2.state_dict()
    o3, _ = _optimizers()
    o3.load_state_dict(osd)
    s3 = ours_sched.CosineAnnealingLR(o3, T_max=10)
    s3.load_state_dict(ssd)
    resumed = full[:4]
    for _ in range(4):
        o3.step()
        s3.step()
        resumed.append(s3.get_last_lr())
    assert resumed == full
    assert "optimizer" not in ssd


def test_closed_form_epoch_argument_matches_torch():
    o, t = _optimizers()
    s, ts = ours_sched.StepLR(o, step_size=2, gamma=0.5), tsched.StepLR(t, step_size=2, gamma=0.5)
    s.step(5)
    with pytest.warns(UserWarning):
        ts.step(5)
    assert s.get_last_lr() == ts.get_last_lr()


def test_errors():
    o, _ = _optimizers()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        ours_sched.StepLR(object(), step_size=1)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        ours_sched.ReduceLROnPlateau(o, factor=1.5)
    with pytest.raises(KeyError, match="initial_lr"):
        ours_sched.StepLR(o, step_size=1, last_epoch=3)
    with pytest.raises(ValueError, match="total_steps"):
        ours_sched.OneCycleLR(o, max_lr=0.1)
    s = ours_sched.OneCycleLR(o, max_lr=0.1, total_steps=2)
    s.step()
    s.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        s.step()
    assert math.isfinite(s.get_last_lr()[0])
