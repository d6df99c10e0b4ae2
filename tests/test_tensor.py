"""Tensor: conversions that share memory, torch's names and semantics for arithmetic,
reductions and shape ops, with values and gradients checked against torch."""
import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import Tensor


def _pair(rng, *shape, dtype=np.float64):
    a = rng.standard_normal(shape).astype(dtype)
    return cnnfast.tensor(a.copy(), requires_grad=True), torch.tensor(a.copy(), requires_grad=True)


def test_sharing_and_conversion(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    t = cnnfast.from_numpy(a)
    u = cnnfast.as_tensor(a)
    c = cnnfast.tensor(a)  # copies, as torch.tensor
    a[0, 0] = 42.0
    assert t.numpy()[0, 0] == 42.0 and u.numpy()[0, 0] == 42.0 and c.numpy()[0, 0] != 42.0
    assert t.numpy() is a
    assert t.shape == (3, 4) and t.dtype == np.float32 and t.ndim == 2 and t.numel() == 12 and t.size(1) == 4
    assert cnnfast.tensor([1.0, 2.0]).dtype == np.float32  # Python floats: torch's default dtype
    assert cnnfast.tensor([1, 2]).dtype == np.int64
    assert cnnfast.tensor(3.5).item() == 3.5
    with pytest.raises(ValueError, match="only one element"):
        t.item()
    with pytest.raises(TypeError, match="numpy.ndarray"):
        cnnfast.from_numpy([1, 2])
    r = cnnfast.tensor(a, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        r.numpy()
    d = r.detach()
    assert not d.requires_grad and d.numpy() is r._array


def test_exports():
    for name in ["cat", "stack", "zeros", "ones", "zeros_like", "ones_like", "empty", "full", "arange", "randn",
                 "rand", "no_grad", "enable_grad", "set_grad_enabled", "manual_seed", "save", "load", "nn", "optim",
                 "functional", "Tensor", "tensor", "from_numpy", "where"]:
        assert hasattr(cnnfast, name), name
    assert cnnfast.zeros(2, 3).shape == (2, 3) and cnnfast.ones((4,))._array.sum() == 4
    assert cnnfast.full((2,), 1.5).dtype == np.float32


BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (b * b + 1)), ("rsub", lambda a, b: 2.0 - a * b), ("pow", lambda a, b: (a * a + 1) ** 1.5 * b),
    ("scalar_mix", lambda a, b: 3.0 * a - b / 2.0 + 1.0),
]


@pytest.mark.parametrize("name,fn", BINARY)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (3, 4)), ((3, 1), (1, 4)), ((5, 4), (4,))])
def test_broadcast_arithmetic_values_and_grads(name, fn, shapes, rng):
    a, ta = _pair(rng, *shapes[0])
    b, tb = _pair(rng, *shapes[1])
    y, ty = fn(a, b), fn(ta, tb)
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(a.grad._array, ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad._array, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


REDUCE_SHAPE = [
    ("sum", lambda x: x.sum()), ("sum_dim", lambda x: x.sum(1)), ("sum_keep", lambda x: x.sum((0, 2), keepdim=True)),
    ("mean", lambda x: x.mean()), ("mean_dim", lambda x: x.mean(-1)), ("max", lambda x: x.max()),
    ("max_dim", lambda x: x.max(1)[0]), ("max_keep", lambda x: x.max(2, keepdim=True)[0]),
    ("min_dim", lambda x: x.min(0)[0]), ("var", lambda x: x.var(1)), ("std", lambda x: x.std()),
    ("reshape", lambda x: x.reshape(6, 5)), ("view", lambda x: x.view(-1)), ("flatten", lambda x: x.flatten(1)),
    ("transpose", lambda x: x.transpose(0, 2)), ("permute", lambda x: x.permute(2, 0, 1)),
    ("T", lambda x: x.permute(1, 0, 2).reshape(3, 10).T), ("unsqueeze", lambda x: x.unsqueeze(1)),
    ("squeeze", lambda x: x[:, :1].squeeze(1)), ("index", lambda x: x[1, ::2, 1:4]),
    ("fancy_index", lambda x: x[[0, 1, 0], 2]), ("negative_index", lambda x: x[..., -1]),
    ("expand", lambda x: x[:, :1, :].expand(2, 4, 5)), ("exp_log", lambda x: (x.exp() + 1).log()),
    ("sqrt_abs", lambda x: (x.abs() + 0.1).sqrt()), ("clamp", lambda x: x.clamp(-0.5, 0.7)),
    ("neg", lambda x: -x), ("relu_sigmoid_tanh", lambda x: x.relu() + x.sigmoid() * x.tanh()),
    ("softmax", lambda x: x.softmax(1) * x.log_softmax(-1)), ("contiguous", lambda x: x.transpose(0, 1).contiguous()),
]


@pytest.mark.parametrize("name,fn", REDUCE_SHAPE)
def test_reductions_and_shape_ops(name, fn, rng):
    x, tx = _pair(rng, 2, 3, 5)
    y, ty = fn(x), fn(tx)
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad._array, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cat_stack_where_grads(rng):
    a, ta = _pair(rng, 2, 3)
    b, tb = _pair(rng, 2, 5)
    c, tc = _pair(rng, 2, 3)
    y = (cnnfast.cat([a, b], dim=1) ** 2).sum() + (cnnfast.stack([a, c], dim=-1) * 3).sum() \
        + cnnfast.where(a._array > 0, a, c).sum()
    ty = (torch.cat([ta, tb], dim=1) ** 2).sum() + (torch.stack([ta, tc], dim=-1) * 3).sum() \
        + torch.where(ta > 0, ta, tc).sum()
    y.backward()
    ty.backward()
    for ours, theirs in [(a, ta), (b, tb), (c, tc)]:
        np.testing.assert_allclose(ours.grad._array, theirs.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        cnnfast.cat([])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 3))])
def test_matmul_broadcast_grads(sa, sb, rng):
    a, ta = _pair(rng, *sa)
    b, tb = _pair(rng, *sb)
    y, ty = a @ b, ta @ tb
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-12)
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(a.grad._array, ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad._array, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_matmul_vector_and_batched(rng):
    a, ta = _pair(rng, 2, 3, 4)
    v, tv = _pair(rng, 4)
    (a @ v).sum().backward()
    (ta @ tv).sum().backward()
    np.testing.assert_allclose(a.grad._array, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v.grad._array, tv.grad.numpy(), rtol=1e-12)


def test_gradients_accumulate_and_no_grad(rng):
    x, tx = _pair(rng, 4)
    for _ in range(3):
        (x * x).sum().backward()
        (tx * tx).sum().backward()
    np.testing.assert_allclose(x.grad._array, tx.grad.numpy())
    with cnnfast.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None

    @cnnfast.no_grad()
    def f(t):
        return t * 3

    assert f(x).grad_fn is None
    with cnnfast.set_grad_enabled(False):
        assert not cnnfast.is_grad_enabled()
    assert cnnfast.is_grad_enabled()


def test_int_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        cnnfast.tensor([1, 2], requires_grad=True)


def test_inplace_on_requires_grad_is_refused(rng):
    x, _ = _pair(rng, 3)
    with pytest.raises(RuntimeError, match="in-place"):
        x += 1
    with cnnfast.no_grad():
        x += 1  # allowed when not recording, as an optimizer update
    y = cnnfast.zeros(3)
    y.add_(cnnfast.ones(3), alpha=2).mul_(3)
    np.testing.assert_array_equal(y._array, [6, 6, 6])


def test_repr_and_comparisons():
    t = cnnfast.tensor([1.0, 2.0], requires_grad=True)
    assert "requires_grad=True" in repr(t)
    assert "grad_fn=<MulBackward>" in repr(t * 2)
    assert (t.detach() > 1.5).tolist() == [False, True]
    assert isinstance(t * 2, Tensor)


def test_max_min_with_dim_return_values_and_indices(rng):
    x, tx = _pair(rng, 3, 5)
    out, tout = x.max(dim=1), tx.max(dim=1)
    np.testing.assert_array_equal(out.indices._array, tout.indices.numpy())
    np.testing.assert_allclose(out.values._array, tout.values.detach().numpy())
    vals, idx = x.min(0, keepdim=True)
    assert vals.shape == (1, 5) and idx.shape == (1, 5)
    np.testing.assert_array_equal(idx._array, tx.min(0, keepdim=True).indices.numpy())
    assert x.view(x.size(0), -1).shape == (3, 5) and x.mean((0, 1)).shape == ()
