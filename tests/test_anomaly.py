"""NaN/Inf detection: autograd's anomaly mode (the first op whose forward or backward
output is non-finite raises, named) and the trainer, which stops on a non-finite loss or
weight without ever writing one to a checkpoint, keeps the last good checkpoint, and with
--detect-anomaly names the op that produced the first NaN/Inf."""
import os

import numpy as np
import pytest

import cnnfast
from cnnfast import autograd, nn
from cnnfast import functional as F
from cnnfast.autograd import Function, detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from cnnfast.cli import main as cli_main
from cnnfast.training import TrainConfig, train
from cnnfast.training import trainer as T
from cnnfast.training.checkpoint import load_checkpoint

HERE = os.path.basename(__file__)


def t(values, grad=False):
    return cnnfast.tensor(np.asarray(values, np.float32), requires_grad=grad)


class _PoisonGrad(Function):
    """Identity forward; its backward returns NaN (a stand-in for a broken kernel)."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g * np.float32(np.nan)


# ---- the mode itself -----------------------------------------------------------------------

def test_off_by_default_and_restored_by_the_context_managers():
    assert not is_anomaly_enabled()
    with detect_anomaly():
        assert is_anomaly_enabled()
        with set_detect_anomaly(False):
            assert not is_anomaly_enabled()
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()
    with pytest.raises(FloatingPointError), np.errstate(all="ignore"):
        with detect_anomaly():
            t([0.0]) / t([0.0])
    assert not is_anomaly_enabled()
    set_detect_anomaly(True)
    try:
        assert is_anomaly_enabled() and autograd.is_anomaly_check_nan_enabled()
    finally:
        set_detect_anomaly(False)
    assert not is_anomaly_enabled()


def test_without_the_mode_nan_passes_silently():
    with np.errstate(all="ignore"):
        y = t([0.0, 1.0]) / t([0.0, 1.0])
    assert np.isnan(y.data[0])


def test_forward_nan_names_the_op():
    with detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError, match=r"Function 'Div' returned nan values in its 0th output during "
                                                     r"forward; its inputs were all finite, so this op produced the "
                                                     rf"first non-finite value \(called from .*{HERE}:\d+"):
            t([0.0, 1.0]) / t([0.0, 1.0])


def test_forward_overflow_to_inf_names_the_op():
    with detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError, match="Function 'Mul' returned inf values in its 0th output"):
            t([3e38]) * t([10.0])


def test_forward_says_when_the_inputs_already_held_non_finite_values():
    lin = nn.Linear(3, 2)
    lin.weight.data[0, 0] = np.inf
    with detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(FloatingPointError, match=r"Function 'Linear' returned .* during forward; its input 1 "
                                                     r"already held non-finite values.*linear.py:\d+ in forward"):
            lin(t([[1.0, 2.0, 3.0]]))


def test_backward_inf_names_the_op_and_where_it_was_called():
    x = t([0.0, 4.0], grad=True)
    with detect_anomaly(), np.errstate(all="ignore"):
        y = (x ** 0.5).sum()  # forward is finite at 0, the gradient is not
        with pytest.raises(FloatingPointError, match=r"Function 'PowScalarBackward' returned inf values in its 0th "
                                                     r"output \(the gradient of forward input 0\) during backward; its "
                                                     r"incoming gradients were all finite.*forward op was called from "
                                                     rf".*{HERE}:\d+"):
            y.backward()


def test_backward_nan_inside_a_network_names_the_first_op_and_spares_the_leaves():
    cnnfast.manual_seed(0)
    conv, lin = nn.Conv2d(1, 2, 3), nn.Linear(8, 3)
    x = cnnfast.tensor(np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32))
    with detect_anomaly():
        h = _PoisonGrad.apply(F.relu(conv(x)))
        loss = lin(h.flatten(1)).sum()
        with pytest.raises(FloatingPointError, match="Function 'PoisonGradBackward' returned nan values.*incoming "
                                                     "gradients were all finite"):
            loss.backward()
    assert conv.weight.grad is None  # raised before anything reached the conv's weights
    h = _PoisonGrad.apply(F.relu(conv(x)))
    lin(h.flatten(1)).sum().backward()  # without the mode: NaN gradients, no error
    assert np.isnan(conv.weight.grad.data).all()


def test_check_nan_false_and_the_decorator_form():
    with detect_anomaly(check_nan=False), np.errstate(all="ignore"):
        assert np.isnan((t([0.0]) / t([0.0])).data).all()

    @detect_anomaly()
    def f():
        assert is_anomaly_enabled()
        return t([0.0]) / t([0.0])

    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="'Div'"):
        f()
    assert not is_anomaly_enabled()


def test_the_mode_does_not_change_results():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 7, 7)).astype(np.float32)
    y = rng.integers(0, 4, 3)

    def run(anomaly):
        cnnfast.manual_seed(3)
        m = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4))
        with set_detect_anomaly(anomaly):
            loss = F.cross_entropy(m(cnnfast.tensor(x)), cnnfast.tensor(y))
            loss.backward()
        return [loss.data] + [p.grad.data for p in m.parameters()]

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


# ---- the trainer ---------------------------------------------------------------------------

def cfg(**kw):
    base = dict(limit=48, epochs=2, batch_size=16, quiet=True, threads=2, prefetch=1, plots=False)
    base.update(kw)
    return TrainConfig(**base)


DIVERGING = dict(optimizer="sgd", lr=1e8, momentum=0.0)  # the weights overflow within the first epoch


def _files(out):
    return sorted(os.listdir(out))


def _assert_finite_checkpoint(path):
    weights, state = load_checkpoint(path)
    for k, a in weights.items():
        assert np.isfinite(a).all(), k
    return weights, state


def _initial_weights(seed=0):
    """The weights `train` starts from (it seeds before building the model)."""
    cnnfast.manual_seed(seed)
    model = T.build_model("lenet5", 10, (1, 32, 32), 0.0, None)
    return {k: v.data for k, v in model.state_dict().items()}


def test_diverging_run_names_the_op_and_keeps_the_start_weights(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(FloatingPointError) as e:
        train(cfg(out=out, detect_anomaly=True, **DIVERGING))
    msg = str(e.value)
    assert "training stopped at epoch 1, step " in msg
    assert "Function 'Conv' returned inf values in its 0th output during forward" in msg
    assert "its inputs were all finite, so this op produced the first non-finite value" in msg
    assert f"the last good checkpoint is {out}/last.ckpt (the weights this run started from)" in msg
    assert "lower --lr (now 1e+08)" in msg and "--detect-anomaly to name" not in msg
    assert _files(out) == ["last.ckpt"]  # no best.ckpt, no temporary files, no metrics
    weights, state = _assert_finite_checkpoint(os.path.join(out, "last.ckpt"))
    for k, a in _initial_weights().items():
        np.testing.assert_array_equal(weights[k], a, err_msg=k)
    assert state["epoch"] == -1 and state["history"]["train_loss"] == []
    assert not is_anomaly_enabled()  # the trainer restores the mode


def test_without_detect_anomaly_the_loss_check_stops_it(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=r"training stopped at epoch 1, step \d+: the loss became nan; rerun "
                                                 r"with --detect-anomaly to name the operation"):
        train(cfg(out=out, **DIVERGING))
    _assert_finite_checkpoint(os.path.join(out, "last.ckpt"))


def test_nan_in_a_later_epoch_keeps_the_previous_epochs_checkpoints(tmp_path, monkeypatch):
    """A loss that turns NaN at epoch 2 step 2 (injected): the stop happens before the
    update, last.ckpt and best.ckpt stay those of epoch 1, and nothing non-finite is written."""
    calls = {"n": 0}
    real = T._cross_entropy

    def poisoned(logits, y):
        calls["n"] += 1  # 1: the initial-loss check; 2-4: epoch 1; 5, 6: epoch 2
        loss = real(logits, y)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(T, "_cross_entropy", poisoned)
    out = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=rf"epoch 2, step 2: the loss became nan.*the last good checkpoint is "
                                                 rf"{out}/last.ckpt \(after epoch 1\)"):
        train(cfg(out=out, epochs=3))
    assert _files(out) == ["best.ckpt", "last.ckpt"]
    last, state = _assert_finite_checkpoint(os.path.join(out, "last.ckpt"))
    best, _ = _assert_finite_checkpoint(os.path.join(out, "best.ckpt"))
    assert state["epoch"] == 0 and len(state["history"]["train_loss"]) == 1
    for k in last:
        np.testing.assert_array_equal(last[k], best[k])


def test_a_weight_that_turns_non_finite_after_a_step_stops_the_run(tmp_path, monkeypatch):
    real = T.build_optimizer

    def overflowing(config, params):
        opt = real(config, params)
        step, count = opt.step, {"n": 0}

        def bad_step(*a, **k):
            step(*a, **k)
            count["n"] += 1
            if count["n"] == 2:
                params[0].data[0, 0, 0, 0] = np.inf

        opt.step = bad_step
        return opt

    monkeypatch.setattr(T, "build_optimizer", overflowing)
    out = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 2: parameter features.0.weight became non-finite "
                                                 r"after the optimizer step \(its gradient was finite, so the update "
                                                 r"itself overflowed\)"):
        train(cfg(out=out))
    _assert_finite_checkpoint(os.path.join(out, "last.ckpt"))


def test_without_an_output_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FloatingPointError, match="no checkpoint was written"):
        train(cfg(**DIVERGING))
    assert os.listdir(tmp_path) == []


def test_cli_detect_anomaly(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "--limit", "48", "--batch-size", "16", "--epochs", "2", "--optimizer", "sgd", "--lr", "1e8",
            "--momentum", "0", "--quiet", "--threads", "2", "--out", out]
    assert cli_main(argv + ["--detect-anomaly"]) == 1
    err = capsys.readouterr().err
    assert "cnnfast train: error: training stopped at epoch 1" in err
    assert "Function 'Conv' returned inf values in its 0th output during forward" in err
    assert os.path.exists(os.path.join(out, "last.ckpt"))


def test_a_resumed_run_that_diverges_points_to_the_checkpoint_it_resumed_from(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    train(cfg(out=out, epochs=3, stop_after=1))
    path = os.path.join(out, "last.ckpt")
    before = open(path, "rb").read()
    real = T._cross_entropy
    monkeypatch.setattr(T, "_cross_entropy", lambda logits, y: real(logits, y) * float("nan"))
    with pytest.raises(FloatingPointError, match=rf"epoch 2, step 1: .*nan.*the last good checkpoint is {path} "
                                                 r"\(the checkpoint this run resumed from\)"):
        train(cfg(resume=path, epochs=3))
    assert open(path, "rb").read() == before
