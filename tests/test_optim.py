"""Optimizers: fused C++ updates against torch.optim's single-tensor implementations,
state dicts, param groups, freezing, and the kernels' argument checks."""
import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import nn, optim
from conftest import SIMD_LEVELS as SIMD

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-8)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, centered=True, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
    ("Adadelta", dict(lr=0.1, maximize=True)),
]


def _pair(name, kwargs, shapes, dtype, rng):
    ours = [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    theirs = [torch.tensor(p._array.copy(), requires_grad=True) for p in ours]
    return ours, theirs, getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, foreach=False,
                                                                                          **kwargs)


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_over_steps(name, kwargs, dtype, rng, simd):
    shapes = [(13,), (7, 5), (3, 2, 3, 3), (37, 11)]  # SIMD tails and a body
    ours, theirs, o, t = _pair(name, kwargs, shapes, dtype, rng)
    for _ in range(25):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = cnnfast.tensor(g.copy())
            tp.grad = torch.tensor(g.copy())
        o.step()
        t.step()
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p._array, tp.detach().numpy(), **tol)
    # The state dict has torch's keys.
    ours_state, torch_state = o.state_dict()["state"], t.state_dict()["state"]
    assert sorted(ours_state) == sorted(torch_state)
    for k in torch_state:
        assert set(ours_state[k]) == set(torch_state[k])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta"])
def test_defaults_match_torch(name):
    p = nn.Parameter(np.zeros(3, np.float32))
    ours = getattr(optim, name)([p]).defaults
    theirs = getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)]).defaults
    for k, v in ours.items():
        assert theirs[k] == v, k


_THREADS_SCRIPT = """
import sys
import numpy as np
import cnnfast
from cnnfast import nn, optim
# A multi-chunk parallel_for before the first resize: the pool must survive being rebuilt after real work.
nn.Conv2d(3, 8, 3)(cnnfast.randn(4, 3, 32, 32)).sum()
n = 300_001  # several chunks of the optimizer kernel's grain
results = []
for threads in (1, 2, 1):
    cnnfast.set_num_threads(threads)
    p = nn.Parameter(np.linspace(-1, 1, n, dtype=np.float32))
    o = optim.Adam([p], lr=0.1, amsgrad=True, weight_decay=0.01)
    for k in range(3):
        p.grad = cnnfast.tensor(np.sin(np.arange(n, dtype=np.float32) * (k + 1)))
        o.step()
    results.append(p._array.copy())
print(all(np.array_equal(results[0], r) for r in results[1:]))
"""


def test_threaded_update_is_thread_count_independent():
    # In a subprocess: switching thread counts rebuilds the C++ pool, and a crash there
    # must fail this test, not take the whole session down.
    import os
    import subprocess
    import sys

    # The child imports cnnfast from wherever this process did (installed or source tree).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit code {r.returncode} (a negative code is a signal): {r.stderr[-2000:]}"
    assert r.stdout.strip() == "True"


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("name,kwargs", [c for c in CASES if c[0] != "SGD" or "momentum" in c[1]])
def test_every_level_agrees_with_scalar(name, kwargs, level, rng):
    if level not in SIMD:
        pytest.skip(f"no {level} on this CPU")
    # Sizes with every vector tail (1..31 after 8- and 16-lane bodies) and one past
    # the 2^15 threading grain.
    shapes = [(n,) for n in range(1, 32)] + [(9, 7), (1001,), (40_009,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(4)]
    results = {}
    before = cnnfast.simd_level()
    try:
        for lvl in ("scalar", level):
            cnnfast.set_simd_level(lvl)
            ps = [nn.Parameter(a.copy()) for a in init]
            o = getattr(optim, name)(ps, **kwargs)
            for gs in grads:
                for p, g in zip(ps, gs):
                    p.grad = cnnfast.tensor(g.copy())
                o.step()
            results[lvl] = [p._array for p in ps]
    finally:
        cnnfast.set_simd_level(before)
    for a, b, start in zip(results["scalar"], results[level], init):
        assert not np.array_equal(b, start), "the optimizer did not move the parameter"
        # Same operations in the same order; only FMA contraction may move the last bits.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_large_tensor_matches_torch(rng):
    n = 100_003
    ours, theirs, o, t = _pair("RMSprop", dict(lr=0.01, momentum=0.9, centered=True), [(n,)], np.float32, rng)
    for _ in range(3):
        g = rng.standard_normal(n).astype(np.float32)
        ours[0].grad = cnnfast.tensor(g.copy())
        theirs[0].grad = torch.tensor(g)
        o.step()
        t.step()
    np.testing.assert_allclose(ours[0]._array, theirs[0].detach().numpy(), rtol=2e-5, atol=2e-6)


def test_param_groups_and_add_param_group(rng):
    a = nn.Parameter(np.ones(3, np.float32))
    b = nn.Parameter(np.ones(3, np.float32))
    o = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert o.param_groups[0]["lr"] == 0.1 and o.param_groups[1]["lr"] == 0.5
    a.grad = cnnfast.ones(3)
    b.grad = cnnfast.ones(3)
    o.step()
    np.testing.assert_allclose(a._array, 0.9)
    np.testing.assert_allclose(b._array, 0.5)
    c = nn.Parameter(np.ones(2, np.float32))
    o.add_param_group({"params": c, "momentum": 0.9})
    assert o.param_groups[2]["lr"] == 0.1 and o.param_groups[2]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one parameter group"):
        o.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.Adam([a], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([a], lr=0.1, nesterov=True)


def test_zero_grad_and_frozen_parameters(rng):
    model = nn.Sequential(nn.Flatten(), nn.Flatten())  # a container without parameters is fine
    assert list(model.parameters()) == []
    w = nn.Parameter(rng.standard_normal((4, 3)).astype(np.float32))
    frozen = nn.Parameter(rng.standard_normal(3).astype(np.float32))
    frozen.requires_grad_(False)
    before = frozen._array.copy()
    o = optim.Adam([w, frozen], lr=0.1)
    x = cnnfast.tensor(rng.standard_normal((5, 4)).astype(np.float32))
    for _ in range(3):
        o.zero_grad()
        loss = ((x @ w + frozen) ** 2).mean()
        loss.backward()
        assert frozen.grad is None
        o.step()
    np.testing.assert_array_equal(frozen._array, before)
    o.zero_grad(set_to_none=False)
    assert w.grad is not None and not w.grad._array.any()
    o.zero_grad()
    assert w.grad is None


def test_closure_is_called_with_grad_enabled(rng):
    w = nn.Parameter(np.array([2.0], np.float32))
    o = optim.SGD([w], lr=0.25)

    def closure():
        o.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with cnnfast.no_grad():
        loss = o.step(closure)
    assert loss.item() == 4.0
    np.testing.assert_allclose(w._array, [1.0])


@pytest.mark.parametrize("name,kwargs", [c for c in CASES if not c[1].get("maximize")])
def test_state_dict_round_trip_continues_identically(name, kwargs, rng):
    shapes = [(6,), (2, 3)]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(8)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def run(split):
        ps = [nn.Parameter(a.copy()) for a in init]
        o = getattr(optim, name)(ps, **kwargs)
        for i, gs in enumerate(grads):
            if i == split:
                sd = o.state_dict()
                ps2 = [nn.Parameter(p._array.copy()) for p in ps]
                o = getattr(optim, name)(ps2, **kwargs)
                o.load_state_dict(sd)
                ps = ps2
            for p, g in zip(ps, gs):
                p.grad = cnnfast.tensor(g.copy())
            o.step()
        return [p._array for p in ps]

    for a, b in zip(run(None), run(4)):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_checks_group_sizes():
    a = nn.Parameter(np.ones(3, np.float32))
    b = nn.Parameter(np.ones(3, np.float32))
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.SGD([a], lr=0.1).load_state_dict(sd)


def test_accepts_torch_state_dict_layout():
    """A state dict from torch (tensors, tensor 'step') loads into ours and continues."""
    tp = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    t = torch.optim.Adam([tp], lr=0.1, foreach=False)
    tp.grad = torch.tensor([0.5, 0.5, -1.0])
    t.step()
    p = nn.Parameter(tp.detach().numpy().copy())
    o = optim.Adam([p], lr=0.1)
    o.load_state_dict(t.state_dict())
    p.grad = cnnfast.tensor(np.array([0.1, -0.2, 0.3], np.float32))
    tp.grad = torch.tensor([0.1, -0.2, 0.3])
    o.step()
    t.step()
    np.testing.assert_allclose(p._array, tp.detach().numpy(), rtol=1e-6)


class TestKernelArguments:
    def test_dtype_mismatch(self):
        p = np.zeros(4, np.float32)
        with pytest.raises(TypeError, match="grad: expected dtype float32"):
            cnnfast._C.sgd_step(p, np.zeros(4, np.float64), None, lr=0.1)

    def test_shape_mismatch(self):
        p = np.zeros(4, np.float32)
        with pytest.raises(ValueError, match=r"exp_avg: expected shape \(4,\), got \(5,\)"):
            cnnfast._C.adam_step(p, np.zeros(4, np.float32), np.zeros(5, np.float32), np.zeros(4, np.float32),
                                 None, step=1, lr=0.1)

    def test_read_only_param(self):
        p = np.zeros(4, np.float32)
        p.flags.writeable = False
        with pytest.raises(ValueError, match="param: expected a writeable array"):
            cnnfast._C.adagrad_step(p, np.zeros(4, np.float32), np.zeros(4, np.float32), step=1, lr=0.1)

    def test_non_contiguous(self):
        p = np.zeros((4, 4), np.float32).T
        with pytest.raises(ValueError, match="param: expected a C-contiguous array"):
            cnnfast._C.rmsprop_step(p, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), None, None,
                                    lr=0.1)

    def test_missing_required_state(self):
        p = np.zeros(4, np.float32)
        g = np.zeros(4, np.float32)
        with pytest.raises(ValueError, match="momentum_buffer: expected an array"):
            cnnfast._C.sgd_step(p, g, None, lr=0.1, momentum=0.9)
        with pytest.raises(ValueError, match="max_exp_avg_sq: expected an array"):
            cnnfast._C.adam_step(p, g, np.zeros(4, np.float32), np.zeros(4, np.float32), None, step=1, lr=0.1,
                                 amsgrad=True)
        with pytest.raises(ValueError, match="grad_avg: expected an array"):
            cnnfast._C.rmsprop_step(p, g, np.zeros(4, np.float32), None, None, lr=0.1, centered=True)

    def test_bad_step_and_types(self):
        p = np.zeros(4, np.float32)
        g = np.zeros(4, np.float32)
        with pytest.raises(ValueError, match="step: expected an integer >= 1, got 0"):
            cnnfast._C.adagrad_step(p, g, np.zeros(4, np.float32), step=0, lr=0.1)
        with pytest.raises(TypeError, match="param: expected a float32 or float64 array, got dtype int64"):
            cnnfast._C.sgd_step(np.zeros(4, np.int64), g, None, lr=0.1)
        with pytest.raises(TypeError, match="momentum_buffer: expected a NumPy array or None"):
            cnnfast._C.sgd_step(p, g, [0.0] * 4, lr=0.1, momentum=0.9)
