"""The single-process pieces of the shared-memory gradient exchange (distributed/exchange.py):
the atomic counters, the one-pass average into every rank's slot, conv_backward's
grad_weight_out, and the autograd gradient sink that hands a leaf's destination to the op.
The multi-process behaviour is in test_distributed.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import _C
from cnnfast import functional as F
from cnnfast.tensor import Tensor


# ---- counters ------------------------------------------------------------------------------

def test_counters_add_load_and_store_atomically_in_place():
    c = np.zeros(3, np.int64)
    assert _C._shm_fetch_add(c, 1, 5) == 0
    assert _C._shm_fetch_add(c, 1, -2) == 5
    assert _C._shm_load(c, 1) == 3 and c[1] == 3
    _C._shm_store(c, 2, -7)
    assert c.tolist() == [0, 3, -7]


@pytest.mark.parametrize("bad, index, err, words", [
    (np.zeros(3, np.int32), 0, TypeError, "int64"),
    (np.zeros(3, np.float64), 0, TypeError, "int64"),
    (np.zeros(6, np.int64)[::2], 0, ValueError, "C-contiguous"),
    (np.zeros(3, np.int64), 3, ValueError, "index"),
    (np.zeros(3, np.int64), -1, ValueError, "index"),
])
def test_counters_refuse_bad_arrays_and_indices(bad, index, err, words):
    with pytest.raises(err, match=words):
        _C._shm_fetch_add(bad, index, 1)
    with pytest.raises(err, match=words):
        _C._shm_load(bad, index)


def test_counters_refuse_read_only_memory():
    c = np.zeros(2, np.int64)
    c.flags.writeable = False
    with pytest.raises(ValueError, match="read-only|writeable"):
        _C._shm_store(c, 0, 1)


# ---- the average ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 7, 1023, 1025, 70001])
def test_mean_into_slots_writes_the_rank_ordered_mean_everywhere(dtype, n, count):
    rng = np.random.default_rng(n * 100000 + count)
    grads = [rng.standard_normal(count).astype(dtype) for _ in range(n)]
    for me in range(n):
        slots = [g.copy() for g in grads]
        slots[me][:] = np.nan                       # this rank's term comes from own, not its slot
        _C._mean_into_slots(slots, [k != me for k in range(n)], grads[me].copy(), me, 1.0 / n)
        want = grads[0].copy()
        for g in grads[1:]:
            want = want + g                         # rank order, in the slots' dtype
        want = want * dtype(1.0 / n)
        for s in slots:
            np.testing.assert_array_equal(s, want)
        ref = np.mean(np.stack(grads).astype(np.float64), axis=0)
        np.testing.assert_allclose(slots[0], ref, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


def test_mean_into_slots_skips_ranks_without_a_gradient_and_takes_own_in_place():
    a, b, c = (np.full(5, v) for v in (1.0, 2.0, 4.0))
    slots = [a, b, c]
    _C._mean_into_slots(slots, [True, False, False], c, 2, 0.5)   # rank 1 had none; own is rank 2's slot
    for s in slots:
        np.testing.assert_array_equal(s, np.full(5, 2.5))
    slots = [np.full(3, 3.0), np.full(3, 9.0)]
    _C._mean_into_slots(slots, [False, True], None, 0, 0.5)        # only rank 1 contributed
    for s in slots:
        np.testing.assert_array_equal(s, np.full(3, 4.5))


def test_mean_into_slots_refuses_bad_input():
    s = [np.zeros(4), np.zeros(4)]
    with pytest.raises(ValueError, match="no rank contributes"):
        _C._mean_into_slots(s, [False, False], None, 0, 0.5)
    with pytest.raises(ValueError, match="flags"):
        _C._mean_into_slots(s, [True], None, 0, 0.5)
    with pytest.raises(ValueError, match="me"):
        _C._mean_into_slots(s, [True, True], None, 2, 0.5)
    with pytest.raises(ValueError, match="elements"):
        _C._mean_into_slots([np.zeros(4), np.zeros(5)], [True, True], None, 0, 0.5)
    with pytest.raises(TypeError, match="dtype"):
        _C._mean_into_slots([np.zeros(4), np.zeros(4, np.float32)], [True, True], None, 0, 0.5)
    with pytest.raises(TypeError, match="float32 or float64"):
        _C._mean_into_slots([np.zeros(4, np.int64)] * 1, [True], None, 0, 1.0)
    shared = np.zeros(8)
    with pytest.raises(ValueError, match="shares memory"):
        _C._mean_into_slots([shared[:4], shared[2:6]], [True, True], None, 0, 0.5)
    with pytest.raises(ValueError, match="own shares memory"):
        _C._mean_into_slots(s, [True, False], s[0], 1, 0.5)
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only|writeable"):
        _C._mean_into_slots([ro, np.zeros(4)], [True, True], None, 0, 0.5)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C._mean_into_slots([np.zeros(8)[::2], np.zeros(4)], [True, True], None, 0, 0.5)


# ---- conv_backward's grad_weight_out -------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [
    # (N, C, H, W), (K, C/g, kh, kw), stride, padding, dilation, groups
    ((1, 3, 7, 5), (5, 3, 3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),
    ((2, 4, 11, 13), (6, 2, 3, 2), (3, 2), [(0, 2), (1, 0)], (2, 1), 2),
    ((3, 64, 9, 9), (64, 64, 3, 3), (1, 1), [(1, 1), (1, 1)], (1, 1), 1),
    ((2, 6, 8, 8), (6, 1, 3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1), 6),
])
def test_conv_backward_writes_grad_weight_into_the_given_array(dtype, shape):
    xs, ws, stride, pads, dil, groups = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = _C.conv_forward(x, w, None, list(stride), pads, list(dil), groups)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ref = _C.conv_backward(gy, x, w, list(stride), pads, list(dil), groups, need_input=True, need_bias=True)
    out = np.full(ws, np.nan, dtype)
    got = _C.conv_backward(gy, x, w, list(stride), pads, list(dil), groups, need_input=True, need_bias=True,
                           grad_weight_out=out)
    assert got[1] is out
    np.testing.assert_array_equal(out, ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    tw = torch.nn.grad.conv2d_weight(torch.from_numpy(padded), ws, torch.from_numpy(gy).double(), stride=stride,
                                     dilation=dil, groups=groups)
    np.testing.assert_allclose(out, tw.numpy(), rtol=1e-4, atol=1e-3 if dtype == np.float32 else 1e-10)


def test_conv_backward_refuses_a_bad_grad_weight_out():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    gy = np.ones((1, 3, 3, 3))
    args = (gy, x, w, [1, 1], [(0, 0), (0, 0)], [1, 1], 1)
    with pytest.raises(ValueError, match="shape"):
        _C.conv_backward(*args, grad_weight_out=np.zeros((3, 2, 3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        _C.conv_backward(*args, grad_weight_out=np.zeros((3, 2, 3, 3), np.float32))
    ro = np.zeros((3, 2, 3, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only|writeable"):
        _C.conv_backward(*args, grad_weight_out=ro)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.conv_backward(*args, grad_weight_out=np.zeros((3, 2, 3, 6))[..., ::2])
    with pytest.raises(ValueError, match="grad_weight_out"):
        _C.conv_backward(*args, grad_weight_out=w)                 # the weight itself
    with pytest.raises(ValueError, match="need_weight"):
        _C.conv_backward(*args, need_weight=False, grad_weight_out=np.zeros((3, 2, 3, 3)))


# ---- the autograd gradient sink ------------------------------------------------------------

def _sinks(*params):
    """Give each parameter a sink handing out a NaN-filled array; returns what was handed."""
    handed = {}

    def make(p):
        def sink(t):
            a = np.full(t.shape, np.nan, t.dtype)
            handed.setdefault(id(t), []).append(a)
            return a
        return sink
    for p in params:
        p._grad_sink = make(p)
        p.register_post_accumulate_grad_hook(lambda t: None)   # the engine tracks hooked leaves' uses
    return handed


def _torch_grads(conv_w, conv_b, x, twice):
    w = torch.tensor(conv_w, requires_grad=True)
    b = torch.tensor(conv_b, requires_grad=True)
    h = torch.nn.functional.conv2d(torch.tensor(x), w, b, padding=1)
    if twice:
        h = torch.nn.functional.conv2d(h.relu(), w, b, padding=1)
    h.square().sum().backward()
    return w.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("twice", [False, True])
def test_the_sink_takes_a_once_used_weight_gradient_without_a_copy(twice):
    cnnfast.manual_seed(0)
    conv = cnnfast.nn.Conv2d(3, 3, 3, padding=1).double()
    handed = _sinks(conv.weight, conv.bias)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 7))
    h = conv(cnnfast.tensor(x))
    if twice:
        h = conv(h.relu())
    h.square().sum().backward()
    want_w, want_b = _torch_grads(conv.weight.detach().numpy(), conv.bias.detach().numpy(), x, twice)
    np.testing.assert_allclose(conv.weight.grad.numpy(), want_w, rtol=1e-10)
    np.testing.assert_allclose(conv.bias.grad.numpy(), want_b, rtol=1e-10)
    if twice:   # two consumers: no destination offered (it would be overwritten by the second)
        assert id(conv.weight) not in handed
    else:
        assert conv.weight.grad._array is handed[id(conv.weight)][0]
        # The bias kernel has no destination argument: its gradient is its own array.
        assert conv.bias.grad._array is not handed[id(conv.bias)][0]


def test_the_sink_is_not_offered_onto_an_existing_gradient():
    cnnfast.manual_seed(0)
    conv = cnnfast.nn.Conv2d(2, 2, 3).double()
    handed = _sinks(conv.weight)
    x = cnnfast.tensor(np.random.default_rng(2).standard_normal((1, 2, 5, 5)))
    conv(x).sum().backward()
    first = conv.weight.grad.numpy().copy()
    conv(x).sum().backward()                                   # accumulates
    assert len(handed[id(conv.weight)]) == 1
    np.testing.assert_allclose(conv.weight.grad.numpy(), 2 * first, rtol=1e-12)


def test_a_sink_that_declines_leaves_the_normal_path():
    conv = cnnfast.nn.Conv2d(2, 2, 3).double()
    conv.weight._grad_sink = lambda t: None
    conv.weight.register_post_accumulate_grad_hook(lambda t: None)
    x = cnnfast.tensor(np.random.default_rng(3).standard_normal((1, 2, 4, 4)))
    conv(x).sum().backward()
    w = torch.tensor(conv.weight.detach().numpy(), requires_grad=True)
    torch.nn.functional.conv2d(torch.tensor(x.numpy()), w, torch.tensor(conv.bias.detach().numpy())).sum().backward()
    np.testing.assert_allclose(conv.weight.grad.numpy(), w.grad.numpy(), rtol=1e-12)
    assert isinstance(conv.weight.grad, Tensor)
