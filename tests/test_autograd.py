"""The autograd engine: deep graphs without recursion, graph release after backward,
retain_graph, hooks, multi-output functions, finite-difference checks, and a training
loop whose memory stays flat."""
import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import cnnfast
from cnnfast import nn
from cnnfast import functional as F
from cnnfast.autograd import Function
from helpers import assert_close, assert_nontrivial, numerical_grad


def test_200_layer_chain_backpropagates(rng):
    x = cnnfast.tensor(rng.standard_normal((4, 8)), requires_grad=True)
    ws = [cnnfast.tensor(np.eye(8) + 0.01 * rng.standard_normal((8, 8)), requires_grad=True) for _ in range(200)]
    h = x
    for w in ws:
        h = F.tanh(h @ w) + h * 0.5
    h.sum().backward()
    assert all(w.grad is not None for w in ws)
    assert np.isfinite(x.grad.data).all()


def test_very_deep_chain_beyond_recursion_limit():
    depth = sys.getrecursionlimit() * 3
    x = cnnfast.tensor(np.ones(3), requires_grad=True)
    h = x
    for _ in range(depth):
        h = h * 1.0001
    h.sum().backward()
    np.testing.assert_allclose(x.grad.data, 1.0001 ** depth)


def test_deep_module_stack_backpropagates(rng):
    model = nn.Sequential(*[nn.Sequential(nn.Tanh()) for _ in range(300)])
    x = cnnfast.tensor(rng.standard_normal((2, 5)), requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and len(list(model.modules())) == 601


def test_graph_is_freed_after_backward(rng):
    x = cnnfast.tensor(rng.standard_normal(5), requires_grad=True)
    y = (x * x).exp()
    node = y.grad_fn
    y.sum().backward()
    assert node.ctx.saved_tensors == ()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.sum().backward()


def test_retain_graph_allows_second_backward(rng):
    x = cnnfast.tensor(rng.standard_normal(5), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 4 * x.data)


def test_intermediate_tensors_are_collectable_after_backward(rng):
    x = cnnfast.tensor(rng.standard_normal(100), requires_grad=True)
    mid = x * 2
    ref = weakref.ref(mid)
    loss = (mid.exp()).sum()
    del mid
    loss.backward()
    del loss
    gc.collect()
    assert ref() is None


def test_shared_input_and_diamond_graph(rng):
    x = cnnfast.tensor(rng.standard_normal(3), requires_grad=True)
    a = x * 2
    b = a * a
    c = a + b
    c.sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 + 8 * x.data)  # c = a + a^2, a = 2x


def test_multi_output_function_and_unused_output(rng):
    class Split(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 * 2 + g2 * 3

    x = cnnfast.tensor(rng.standard_normal(4), requires_grad=True)
    a, b = Split.apply(x)
    a.sum().backward()  # b's gradient is filled with zeros
    np.testing.assert_allclose(x.grad.data, 2.0)


def test_hooks_and_retain_grad(rng):
    x = cnnfast.tensor(rng.standard_normal(3), requires_grad=True)
    y = x * 2
    y.retain_grad()
    seen = []
    y.register_hook(lambda g: seen.append(g.copy()))
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad.data, 2 * y.data)
    np.testing.assert_allclose(seen[0], 2 * y.data)


def test_wrong_gradient_shape_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return np.ones(7)

    x = cnnfast.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="shape"):
        Bad.apply(x).backward()


def test_backward_needs_scalar_or_gradient():
    x = cnnfast.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        cnnfast.tensor(np.ones(3)).sum().backward()


def test_composed_graph_finite_differences(rng):
    a0 = rng.standard_normal((3, 4))
    b0 = rng.standard_normal((4, 2))

    def f(a, b):
        h = np.tanh(a @ b)
        return np.concatenate([h, h * h], 1).mean(0)

    a = cnnfast.tensor(a0.copy(), requires_grad=True)
    b = cnnfast.tensor(b0.copy(), requires_grad=True)
    h = F.tanh(a @ b)
    y = cnnfast.cat([h, h * h], 1).mean(0)
    go = rng.standard_normal(4)
    y.backward(go)
    na, nb = numerical_grad(f, [a0, b0], go)
    assert_nontrivial(na, nb)
    assert_close(a.grad.data, na, rtol=1e-6, atol=1e-8)
    assert_close(b.grad.data, nb, rtol=1e-6, atol=1e-8)


def test_training_loop_memory_is_stable(rng):
    """1,000 steps of a small MLP (Linear, ReLU, Dropout in train mode, cross-entropy,
    Adam): no graph, saved array or optimizer temporary survives a step."""
    cnnfast.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    opt = cnnfast.optim.Adam(model.parameters(), lr=1e-3)
    x = cnnfast.tensor(rng.standard_normal((32, 8)).astype(np.float32))
    y = cnnfast.tensor(rng.integers(0, 3, 32))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(100):
            step()
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(900):
            last = step()
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(last)
    # A leaked graph per step would hold at least the activations (32x16 floats, 2 KB) per step: ~2 MB.
    assert end - base < 100_000, f"memory grew by {end - base} bytes over 900 steps"


def test_last_nodes_leaf_gradient_is_kept_not_copied():
    # The gradient the last node hands a leaf becomes .grad without a copy: peak memory
    # of relu forward+backward is the output plus the gradient (a copy made it 3x).
    import tracemalloc

    import cnnfast.functional as F

    x = cnnfast.tensor(np.linspace(-1, 1, 1 << 20, dtype=np.float32), requires_grad=True)
    g = np.ones(1 << 20, np.float32)
    tracemalloc.start()
    try:
        F.relu(x).backward(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * g.nbytes
    assert np.array_equal(np.asarray(x.grad.data), np.where(np.asarray(x.data) > 0, 1.0, 0.0))


def test_leaf_gradients_never_alias_each_other_or_the_callers_arrays():
    # .grad takes over a freshly computed gradient without a copy; it must never
    # share memory with the caller's gradient, another leaf's .grad, or live data.
    import cnnfast.functional as F

    a = cnnfast.tensor(np.ones(5, np.float32), requires_grad=True)
    b = cnnfast.tensor(np.ones(5, np.float32), requires_grad=True)
    (a + b).sum().backward()  # Add hands one array to both inputs
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data += 1
    assert np.array_equal(b.grad.data, np.ones(5, np.float32))

    x = cnnfast.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    g = np.full((3, 4), 2.0, np.float32)
    F.relu(x).backward(g)
    assert not np.shares_memory(x.grad.data, g)
    (x + 0.0).backward(g)  # identity backward returns the caller's array itself
    assert not np.shares_memory(x.grad.data, g)
    assert np.array_equal(x.grad.data, np.where(x.data > 0, 2.0, 0.0) + 2.0)

    w = cnnfast.tensor(np.ones(4, np.float32), requires_grad=True)
    y = w * 3.0
    y.sum().backward()
    w.grad.data[:] = -7
    assert np.array_equal(y.data, np.full(4, 3.0, np.float32))
