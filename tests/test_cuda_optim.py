"""CUDA fused optimizer updates (SGD, Adam/AdamW, Adagrad, RMSprop) against the CPU's
scalar path over several steps: the GPU kernels use unfused round-to-nearest
arithmetic in the CPU loop's order, so the results must be identical; bad input.
Marked gpu: skipped without a device."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C

pytestmark = pytest.mark.gpu

cu = _C.cuda


def dev(a):
    return cnnfast.cuda.to_device(np.ascontiguousarray(a))


@pytest.fixture
def scalar_cpu():
    before = cnnfast.simd_level()
    cnnfast.set_simd_level("scalar")
    yield
    cnnfast.set_simd_level(before)


def run(name, dtype, rng, states, kw, steps=4, n=1001, step_arg=False):
    p = rng.standard_normal(n).astype(dtype)
    cpu_state = [np.zeros(n, dtype) if s else None for s in states]
    gpu_p = dev(p)
    gpu_state = [dev(s) if s is not None else None for s in cpu_state]
    for k in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        extra = {"step": k} if step_arg else {}
        if name == "sgd_step":
            extra = {"first_step": k == 1}
        getattr(_C, name)(p, g, *cpu_state, **kw, **extra)
        getattr(cu, name)(gpu_p, dev(g), *gpu_state, **kw, **extra)
    assert np.array_equal(gpu_p.numpy(), p), f"max diff {np.max(np.abs(gpu_p.numpy() - p))}"
    for c, gs in zip(cpu_state, gpu_state):
        if c is not None:
            assert np.array_equal(gs.numpy(), c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
                                dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)])
def test_sgd_matches_cpu(kw, dtype, rng, scalar_cpu):
    run("sgd_step", dtype, rng, [kw.get("momentum", 0) != 0], kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(lr=1e-3), dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
                                dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)])
def test_adam_matches_cpu(kw, dtype, rng, scalar_cpu):
    run("adam_step", dtype, rng, [True, True, kw.get("amsgrad", False)], kw, step_arg=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adagrad_matches_cpu(dtype, rng, scalar_cpu):
    run("adagrad_step", dtype, rng, [True], dict(lr=0.1, lr_decay=0.01, weight_decay=0.05), step_arg=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("centered,momentum", [(False, 0.0), (True, 0.0), (True, 0.9), (False, 0.5)])
def test_rmsprop_matches_cpu(centered, momentum, dtype, rng, scalar_cpu):
    run("rmsprop_step", dtype, rng, [True, centered, momentum > 0],
        dict(lr=0.01, momentum=momentum, centered=centered, weight_decay=0.01))


def test_optim_bad_input():
    p = dev(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="momentum_buffer"):
        cu.sgd_step(p, p, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="grad: expected shape"):
        cu.sgd_step(p, dev(np.ones(4, np.float32)), None, lr=0.1)
    with pytest.raises(TypeError, match="grad"):
        cu.sgd_step(p, dev(np.ones(5)), None, lr=0.1)
    with pytest.raises(ValueError, match="step"):
        cu.adam_step(p, p, dev(np.zeros(5, np.float32)), dev(np.zeros(5, np.float32)), None, step=0, lr=0.1)
