"""Checkpoints: round trips of nested state, bit-identical resumed training, rejection
of truncated/tampered files, atomic saves that survive a crash mid-write, and a
format that never unpickles."""
import os
import subprocess
import sys
import textwrap
from collections import Counter, OrderedDict

import numpy as np
import pytest

import cnnfast
from cnnfast import nn, optim
from cnnfast import functional as F
from cnnfast.serialization import CheckpointError



def test_round_trip_of_nested_objects(tmp_path):
    obj = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f64_view": np.arange(12.0).reshape(3, 4).T,
        "i64": np.array([1, -2], np.int64), "u8": np.array([255], np.uint8), "bool": np.array([True, False]),
        "empty": np.zeros((0, 3)), "scalar0d": np.array(2.5), "npscalar": np.float32(1.5),
        "tensor": cnnfast.tensor(np.ones(3, np.float32)), "param": nn.Parameter(np.ones(2, np.float32)),
        "ints": [1, 2**70, -3], "floats": (0.1, float("inf"), float("nan")), "s": "ünïcode", "none": None,
        "flag": True, 5: "int key", (1, 2): "tuple key",
        "nested": OrderedDict(a=[{"b": np.zeros(1)}]), "counter": Counter({3: 2}),
    }
    path = tmp_path / "ck.cnf"
    cnnfast.save(obj, path)
    back = cnnfast.load(path)
    assert list(back) == list(obj)
    for k in ("f32", "f64_view", "i64", "u8", "bool", "empty", "scalar0d"):
        assert back[k].dtype == obj[k].dtype and back[k].shape == obj[k].shape
        np.testing.assert_array_equal(back[k], obj[k])
    assert isinstance(back["npscalar"], np.float32) and back["npscalar"] == 1.5
    assert isinstance(back["tensor"], cnnfast.Tensor) and isinstance(back["param"], nn.Parameter)
    assert back["param"].requires_grad
    assert back["ints"] == obj["ints"] and back["floats"][:2] == (0.1, float("inf")) and np.isnan(back["floats"][2])
    assert isinstance(back["floats"], tuple) and back["s"] == obj["s"] and back["none"] is None
    assert back["flag"] is True and back[5] == "int key" and back[(1, 2)] == "tuple key"
    assert isinstance(back["nested"], OrderedDict) and isinstance(back["counter"], Counter)
    assert back["counter"] == Counter({3: 2})


def test_file_objects(tmp_path):
    import io

    buf = io.BytesIO()
    cnnfast.save({"a": np.ones(2)}, buf)
    buf.seek(0)
    np.testing.assert_array_equal(cnnfast.load(buf)["a"], np.ones(2))


def test_unsupported_types_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"obj\['f'\]: objects of type function cannot be saved"):
        cnnfast.save({"f": lambda: 0}, tmp_path / "x")
    with pytest.raises(TypeError, match="dtype object cannot be saved"):
        cnnfast.save(np.array([None]), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert os.listdir(tmp_path) == []


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ck.cnf"
    cnnfast.save({"w": np.arange(100, dtype=np.float32), "meta": {"epoch": 3}}, path)
    return path


def test_truncated_file_is_rejected(saved):
    data = saved.read_bytes()
    for cut in (5, 20, len(data) // 2, len(data) - 1):
        saved.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|not a cnnfast checkpoint"):
            cnnfast.load(saved)


def test_tampered_file_is_rejected(saved):
    data = bytearray(saved.read_bytes())
    for pos in (30, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        saved.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            cnnfast.load(saved)
    saved.write_bytes(bytes(data) + b"\0")
    with pytest.raises(CheckpointError, match="longer than its header says"):
        cnnfast.load(saved)
    saved.write_bytes(b"PK\x03\x04" + bytes(data[4:]))
    with pytest.raises(CheckpointError, match="not a cnnfast checkpoint"):
        cnnfast.load(saved)
    assert issubclass(CheckpointError, ValueError)


def test_never_unpickles(saved, monkeypatch):
    import pickle

    def boom(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(np, "load", boom)
    assert cnnfast.load(saved)["meta"] == {"epoch": 3}


@pytest.mark.parametrize("crash_at", ["write", "replace"])
def test_crash_mid_save_keeps_the_old_file(saved, crash_at):
    """A process killed while saving (mid-write, or after writing but before the rename)
    leaves the previous checkpoint intact and loadable."""
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        import cnnfast, cnnfast.serialization as S
        if {crash_at!r} == "write":
            real = S._write
            def dying_write(f, header, arrays):
                f.write(header[: len(header) // 2])
                f.flush()
                os._exit(3)
            S._write = dying_write
        else:
            os.replace = lambda *a: os._exit(3)
        cnnfast.save({{"w": np.zeros(100, np.float32)}}, sys.argv[1])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", script, str(saved)], env=env, capture_output=True)
    assert r.returncode == 3, r.stderr.decode()
    back = cnnfast.load(saved)
    np.testing.assert_array_equal(back["w"], np.arange(100, dtype=np.float32))
    assert back["meta"] == {"epoch": 3}


def test_exception_during_save_cleans_up(saved, monkeypatch):
    import cnnfast.serialization as S

    def failing(f, header, arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(S, "_write", failing)
    with pytest.raises(OSError, match="disk full"):
        cnnfast.save({"w": np.zeros(3)}, saved)
    assert sorted(os.listdir(saved.parent)) == [saved.name]
    assert cnnfast.load(saved)["meta"] == {"epoch": 3}


def _train(model_params, state, steps, rng_data, start=0):
    """A small model from Parameters and functional ops (with dropout and BN buffers)."""
    w1, b1, w2, bn = model_params
    opt, sched = state
    for i in range(start, start + steps):
        x = cnnfast.tensor(rng_data[i % len(rng_data)][0])
        y = cnnfast.tensor(rng_data[i % len(rng_data)][1])
        opt.zero_grad()
        h = F.dropout(F.relu(x @ w1 + b1), 0.3, training=True)
        h = bn(h)
        loss = ((h @ w2 - y) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()


def _fresh(seed):
    cnnfast.manual_seed(seed)
    w1 = nn.Parameter(cnnfast.randn(5, 6)._array * 0.5)
    b1 = nn.Parameter(np.zeros(6, np.float32))
    w2 = nn.Parameter(cnnfast.randn(6, 2)._array * 0.5)
    bn = nn.BatchNorm1d(6)
    params = [w1, b1, w2] + list(bn.parameters())
    opt = optim.AdamW(params, lr=0.01, amsgrad=True)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=40)
    return [w1, b1, w2, bn], (opt, sched)


def test_save_load_continue_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32))
            for _ in range(5)]
    # Uninterrupted run.
    params, state = _fresh(1)
    _train(params, state, 30, data)
    reference = [p._array.copy() for p in params[:3]] + [v._array.copy() for v in params[3].state_dict().values()]
    # Interrupted: 12 steps, checkpoint everything, rebuild from scratch, resume.
    params, state = _fresh(1)
    _train(params, state, 12, data)
    path = tmp_path / "resume.cnf"
    cnnfast.save({"w": [p for p in params[:3]], "bn": params[3].state_dict(), "opt": state[0].state_dict(),
                  "sched": state[1].state_dict(), "rng": cnnfast.get_rng_state(), "step": 12}, path)
    cnnfast.manual_seed(999)  # a fresh process would start elsewhere
    params2, state2 = _fresh(2)
    ck = cnnfast.load(path)
    for p, saved in zip(params2[:3], ck["w"]):
        p._array[...] = saved._array
    params2[3].load_state_dict(ck["bn"])
    state2[0].load_state_dict(ck["opt"])
    state2[1].load_state_dict(ck["sched"])
    cnnfast.set_rng_state(ck["rng"])
    _train(params2, state2, 30 - ck["step"], data, start=ck["step"])
    resumed = [p._array for p in params2[:3]] + [v._array for v in params2[3].state_dict().values()]
    for a, b in zip(reference, resumed):
        np.testing.assert_array_equal(a, b)


def test_model_state_dict_round_trip(tmp_path):
    m = nn.Sequential(nn.BatchNorm1d(3), nn.LayerNorm(3))
    m[0].running_mean._array[...] = [1, 2, 3]
    m[0].num_batches_tracked._array[...] = 7
    cnnfast.save(m.state_dict(), tmp_path / "m.cnf")
    m2 = nn.Sequential(nn.BatchNorm1d(3), nn.LayerNorm(3))
    m2.load_state_dict(cnnfast.load(tmp_path / "m.cnf"))
    np.testing.assert_array_equal(m2[0].running_mean._array, [1, 2, 3])
    assert m2[0].num_batches_tracked._array.shape == () and int(m2[0].num_batches_tracked._array) == 7


@pytest.mark.parametrize("make", [
    lambda o: optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=12),
    lambda o: optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
    lambda o: optim.lr_scheduler.MultiStepLR(o, milestones=[2, 4, 4]),
    lambda o: optim.lr_scheduler.SequentialLR(o, [optim.lr_scheduler.LinearLR(o, total_iters=2),
                                                  optim.lr_scheduler.ExponentialLR(o, gamma=0.9)], milestones=[2]),
], ids=["OneCycleLR", "ReduceLROnPlateau", "MultiStepLR", "SequentialLR"])
def test_scheduler_state_survives_a_checkpoint(make, tmp_path):
    def fresh():
        o = optim.SGD([nn.Parameter(np.zeros(2, np.float32))], lr=0.05, momentum=0.9)
        return o, make(o)

    def advance(o, s, n):
        lrs = []
        for i in range(n):
            o.step()
            s.step(1.0) if isinstance(s, optim.lr_scheduler.ReduceLROnPlateau) else s.step()
            lrs.append(s.get_last_lr())
        return lrs

    o, s = fresh()
    full = advance(o, s, 10)
    o, s = fresh()
    head = advance(o, s, 4)
    cnnfast.save({"opt": o.state_dict(), "sched": s.state_dict()}, tmp_path / "s.cnf")
    o2, s2 = fresh()
    ck = cnnfast.load(tmp_path / "s.cnf")
    o2.load_state_dict(ck["opt"])
    s2.load_state_dict(ck["sched"])
    assert head + advance(o2, s2, 6) == full
