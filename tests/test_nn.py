"""nn.Module machinery and every layer module against torch.nn: constructor
arguments, attribute and state-dict names, repr, default initialisation, forward
values and gradients with torch's weights loaded by key, train/eval behaviour."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import nn

# (class name, constructor args, kwargs, input shape or None for no forward check)
LAYERS = [
    ("Linear", (5, 3), {}, (4, 5)),
    ("Linear", (5, 3), {"bias": False}, (2, 3, 5)),
    ("Conv1d", (2, 4, 3), {"stride": 2, "padding": 1}, (2, 2, 9)),
    ("Conv2d", (3, 4, 3), {"padding": 1, "dilation": 2, "bias": False}, (2, 3, 7, 6)),
    ("Conv2d", (4, 6, (3, 2)), {"stride": (2, 1), "groups": 2}, (1, 4, 7, 5)),
    ("Conv2d", (2, 3, 3), {"padding": "same"}, (1, 2, 5, 5)),
    ("Conv3d", (2, 3, 2), {"padding": 1}, (1, 2, 3, 4, 3)),
    ("ConvTranspose1d", (3, 2, 3), {"stride": 2, "output_padding": 1}, (2, 3, 5)),
    ("ConvTranspose2d", (4, 2, 3), {"stride": 2, "padding": 1, "groups": 2}, (1, 4, 3, 4)),
    ("ConvTranspose3d", (2, 2, 2), {"stride": 2}, (1, 2, 2, 3, 2)),
    ("MaxPool1d", (3,), {"stride": 2}, (2, 3, 9)),
    ("MaxPool2d", (2,), {}, (2, 3, 6, 5)),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (1, 2, 7, 6)),
    ("MaxPool3d", (2,), {}, (1, 2, 4, 4, 3)),
    ("AvgPool1d", (3,), {"stride": 2, "padding": 1}, (2, 3, 8)),
    ("AvgPool2d", (2,), {"count_include_pad": False, "padding": 1}, (2, 3, 5, 5)),
    ("AvgPool3d", (2,), {}, (1, 2, 4, 4, 4)),
    ("AdaptiveAvgPool1d", (3,), {}, (2, 3, 7)),
    ("AdaptiveAvgPool2d", ((2, 3),), {}, (2, 3, 7, 5)),
    ("AdaptiveAvgPool3d", (1,), {}, (1, 2, 3, 4, 5)),
    ("AdaptiveMaxPool1d", (4,), {}, (2, 3, 9)),
    ("AdaptiveMaxPool2d", (2,), {}, (2, 3, 5, 7)),
    ("AdaptiveMaxPool3d", (2,), {}, (1, 2, 4, 5, 3)),
    ("BatchNorm1d", (3,), {}, (4, 3)),
    ("BatchNorm1d", (3,), {"affine": False}, (4, 3, 5)),
    ("BatchNorm2d", (3,), {"momentum": 0.3}, (2, 3, 4, 5)),
    ("BatchNorm2d", (3,), {"momentum": None}, (2, 3, 4, 5)),
    ("BatchNorm3d", (2,), {}, (2, 2, 3, 2, 3)),
    ("InstanceNorm1d", (3,), {"affine": True}, (2, 3, 7)),
    ("InstanceNorm2d", (3,), {}, (2, 3, 4, 5)),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4, 5)),
    ("InstanceNorm3d", (2,), {}, (2, 2, 3, 3, 2)),
    ("LayerNorm", ((4, 5),), {}, (2, 3, 4, 5)),
    ("LayerNorm", (5,), {"elementwise_affine": False}, (3, 5)),
    ("GroupNorm", (2, 4), {}, (2, 4, 3, 3)),
    ("LocalResponseNorm", (3,), {"alpha": 0.01}, (2, 5, 3, 3)),
    ("Dropout", (0.3,), {}, None),
    ("Dropout1d", (), {}, None),
    ("Dropout2d", (0.2,), {}, None),
    ("Dropout3d", (), {"inplace": False}, None),
    ("ReLU", (), {}, (3, 4)),
    ("LeakyReLU", (0.2,), {}, (3, 4)),
    ("ELU", (), {"alpha": 0.5}, (3, 4)),
    ("Sigmoid", (), {}, (3, 4)),
    ("Tanh", (), {}, (3, 4)),
    ("SiLU", (), {}, (3, 4)),
    ("Softmax", (1,), {}, (3, 4)),
    ("LogSoftmax", (-1,), {}, (2, 3, 4)),
    ("Identity", (), {}, (3, 2)),
    ("Flatten", (), {}, (2, 3, 4)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6)),
]


def _ids(case):
    return f"{case[0]}-{case[1]}-{sorted(case[2].items())}"


def _copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS, ids=[_ids(c) for c in LAYERS])
def test_layer_matches_torch_structure(name, args, kwargs, shape):
    ours = getattr(nn, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    osd, tsd = ours.state_dict(), theirs.state_dict()
    assert list(osd.keys()) == list(tsd.keys())
    for k in tsd:
        assert tuple(osd[k].shape) == tuple(tsd[k].shape), k
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert (getattr(ours, attr, None) is None) == (getattr(theirs, attr, None) is None), attr


@pytest.mark.parametrize("name,args,kwargs,shape", [c for c in LAYERS if c[3] is not None],
                         ids=[_ids(c) for c in LAYERS if c[3] is not None])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_forward_backward_matches_torch(name, args, kwargs, shape, mode, rng):
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    ours = getattr(nn, name)(*args, **kwargs).double()
    # Non-trivial affine parameters and running statistics, so eval mode tests something.
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape)))
        if getattr(theirs, "running_var", None) is not None:
            theirs.running_mean.copy_(torch.tensor(rng.standard_normal(theirs.running_mean.shape)))
            theirs.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, theirs.running_var.shape)))
    _copy_from_torch(ours, theirs)
    getattr(ours, mode)()
    getattr(theirs, mode)()
    x0 = rng.standard_normal(shape)
    x = cnnfast.tensor(x0.copy(), requires_grad=True)
    tx = torch.tensor(x0.copy(), requires_grad=True)
    y, ty = ours(x), theirs(tx)
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-9, atol=1e-10)
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad._array, tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad._array, tp.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=n)
    for (n, b), (_, tb) in zip(ours.named_buffers(), theirs.named_buffers()):
        np.testing.assert_allclose(b._array, tb.numpy(), rtol=1e-10, atol=1e-12, err_msg=n)


def test_pool_return_indices_and_unpool_match_torch(rng):
    x0 = rng.standard_normal((2, 3, 6, 4))
    pool, tpool = nn.MaxPool2d(2, return_indices=True), torch.nn.MaxPool2d(2, return_indices=True)
    (y, idx), (ty, tidx) = pool(cnnfast.tensor(x0)), tpool(torch.tensor(x0))
    np.testing.assert_array_equal(idx._array, tidx.numpy())
    out = nn.MaxUnpool2d(2)(y, idx)
    np.testing.assert_allclose(out._array, torch.nn.MaxUnpool2d(2)(ty, tidx).numpy())
    assert nn.MaxUnpool2d(2)(y, idx, output_size=(7, 5)).shape == (2, 3, 7, 5)


def test_conv_transpose_output_size_matches_torch(rng):
    m, t = nn.ConvTranspose2d(2, 3, 3, stride=2), torch.nn.ConvTranspose2d(2, 3, 3, stride=2)
    _copy_from_torch(m, t)
    x0 = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    y = m(cnnfast.tensor(x0), output_size=(10, 10))
    ty = t(torch.tensor(x0), output_size=(10, 10))
    assert y.shape == tuple(ty.shape) == (1, 3, 10, 10)
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="output_size"):
        m(cnnfast.tensor(x0), output_size=(20, 20))


LOSSES = [
    ("L1Loss", {}, "regression"), ("MSELoss", {"reduction": "sum"}, "regression"),
    ("HuberLoss", {"delta": 0.5}, "regression"), ("SmoothL1Loss", {"beta": 0.5, "reduction": "none"}, "regression"),
    ("CrossEntropyLoss", {}, "class"), ("CrossEntropyLoss", {"label_smoothing": 0.1, "ignore_index": 1}, "class"),
    ("CrossEntropyLoss", {"weight": [0.2, 1.0, 2.0, 0.5]}, "class"), ("NLLLoss", {"reduction": "sum"}, "logprob"),
    ("BCEWithLogitsLoss", {"pos_weight": [1.0, 2.0, 0.5, 1.5]}, "binary_logits"),
    ("BCELoss", {}, "binary_prob"), ("MultiMarginLoss", {"p": 2, "margin": 0.5}, "class"),
    ("TripletMarginLoss", {"margin": 0.7}, "triplet"),
]


@pytest.mark.parametrize("name,kwargs,kind", LOSSES, ids=[f"{c[0]}-{sorted(c[1])}" for c in LOSSES])
def test_loss_modules_match_torch(name, kwargs, kind, rng):
    tkw = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v for k, v in kwargs.items()}
    okw = {k: cnnfast.tensor(np.array(v, np.float64)) if isinstance(v, list) else v for k, v in kwargs.items()}
    ours, theirs = getattr(nn, name)(**okw), getattr(torch.nn, name)(**tkw)
    assert list(ours.state_dict().keys()) == list(theirs.state_dict().keys())
    n, c = 5, 4
    if kind == "triplet":
        xs = [rng.standard_normal((n, 6)) for _ in range(3)]
        ins = [cnnfast.tensor(a.copy(), requires_grad=True) for a in xs]
        tins = [torch.tensor(a.copy(), requires_grad=True) for a in xs]
        y, ty = ours(*ins), theirs(*tins)
    else:
        x0 = rng.standard_normal((n, c))
        if kind == "regression":
            t0 = rng.standard_normal((n, c))
        elif kind in ("class", "logprob"):
            t0 = rng.integers(0, c, n)
            if kind == "logprob":
                x0 = x0 - np.log(np.exp(x0).sum(1, keepdims=True))
        elif kind == "binary_logits":
            t0 = rng.uniform(0, 1, (n, c))
        else:
            x0 = 1 / (1 + np.exp(-x0))
            t0 = rng.uniform(0, 1, (n, c))
        ins = [cnnfast.tensor(x0.copy(), requires_grad=True)]
        tins = [torch.tensor(x0.copy(), requires_grad=True)]
        y, ty = ours(ins[0], cnnfast.tensor(t0)), theirs(tins[0], torch.tensor(t0))
    np.testing.assert_allclose(y._array, ty.detach().numpy(), rtol=1e-9, atol=1e-12)
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    for a, ta in zip(ins, tins):
        np.testing.assert_allclose(a.grad._array, ta.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_loss_reduction_is_checked():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")
    assert nn.L1Loss(size_average=False).reduction == "sum"
    assert nn.L1Loss(reduce=False).reduction == "none"


# ---- default initialisation -----------------------------------------------------------------

@pytest.mark.parametrize("layer,fan_in", [(lambda: nn.Linear(50, 400), 50), (lambda: nn.Conv2d(6, 200, 3), 54),
                                          (lambda: nn.ConvTranspose2d(6, 20, 3, groups=2), 90),
                                          (lambda: nn.Conv1d(4, 100, 5, groups=2), 10)])
def test_default_init_is_torch_uniform_bound(layer, fan_in):
    cnnfast.manual_seed(3)
    m = layer()
    bound = 1 / math.sqrt(fan_in)
    w, b = m.weight._array, m.bias._array
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-bound, bound): std = bound / sqrt(3), and the range is actually used.
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(w).max() > 0.95 * bound
    assert w.dtype == np.float32


def test_manual_seed_makes_init_reproducible():
    cnnfast.manual_seed(7)
    a = nn.Conv2d(3, 4, 3).state_dict()
    cnnfast.manual_seed(7)
    b = nn.Conv2d(3, 4, 3).state_dict()
    c = nn.Conv2d(3, 4, 3).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k]._array, b[k]._array)
    assert not np.array_equal(a["weight"]._array, c["weight"]._array)


def test_norm_defaults():
    bn = nn.BatchNorm2d(3)
    assert (bn.weight._array == 1).all() and (bn.bias._array == 0).all()
    assert (bn.running_mean._array == 0).all() and (bn.running_var._array == 1).all()
    assert bn.num_batches_tracked._array.dtype == np.int64 and bn.num_batches_tracked.shape == ()


# ---- Module machinery ----------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.register_buffer("scale", cnnfast.ones(3))
        self.register_buffer("cache", cnnfast.zeros(2), persistent=False)
        self.heads = nn.ModuleList([nn.Linear(3, 2), nn.Linear(3, 1)])
        self.extra = nn.ModuleDict({"a": nn.ReLU(), "b": nn.Sequential(OrderedDict(fc=nn.Linear(2, 2)))})
        self.plain = 5


class TBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("cache", torch.zeros(2), persistent=False)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)])
        self.extra = torch.nn.ModuleDict({"a": torch.nn.ReLU(),
                                          "b": torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(2, 2)))})
        self.plain = 5


def test_module_traversal_matches_torch():
    m, t = Block(), TBlock()
    assert list(m.state_dict().keys()) == list(t.state_dict().keys())
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in t.named_buffers()]
    assert [n for n, _ in m.named_modules()] == [n for n, _ in t.named_modules()]
    assert [n for n, _ in m.named_children()] == [n for n, _ in t.named_children()]
    assert repr(m).replace("Block", "X") == repr(t).replace("TBlock", "X")
    assert len(list(m.children())) == 4 and len(list(m.modules())) == len(list(t.modules()))
    assert m.get_submodule("extra.b.fc") is m.extra["b"].fc
    assert m.plain == 5


def test_shared_module_parameters_counted_once():
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    tlin = torch.nn.Linear(3, 3)
    tseq = torch.nn.Sequential(tlin, torch.nn.ReLU(), tlin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict().keys()) == list(tseq.state_dict().keys())
    assert [n for n, _ in seq.named_modules()] == [n for n, _ in tseq.named_modules()]


def test_load_state_dict_errors_list_every_problem():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = {k: v._array.copy() for k, v in m.state_dict().items()}
    sd["1.weight"] = np.zeros((3, 3), np.float32)
    del sd["0.bias"]
    sd["2.weight"] = np.zeros(1)
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(sd)
    msg = str(e.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "2.weight"' in msg
    assert "size mismatch for 1.weight: copying a param with shape (3, 3)" in msg
    sd["1.weight"] = np.ones((2, 4), np.float64)
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["0.bias"] and res.unexpected_keys == ["2.weight"]
    assert m[1].weight.dtype == np.float32 and (m[1].weight._array == 1).all()


def test_load_state_dict_copies_in_place_so_optimizers_keep_their_parameters():
    m = nn.Linear(2, 2)
    w = m.weight
    m.load_state_dict({"weight": np.eye(2), "bias": np.zeros(2)})
    assert m.weight is w and (w._array == np.eye(2)).all()


def test_train_eval_freeze_zero_grad_apply_to():
    m = Block()
    assert m.training and m.bn.training
    m.eval()
    assert not m.training and not m.bn.training and not m.extra["b"].fc.training
    m.train()
    assert m.heads[1].training
    m.conv.requires_grad_(False)
    assert not m.conv.weight.requires_grad and m.bn.weight.requires_grad
    m.requires_grad_(True)
    for p in m.parameters():
        p.grad = cnnfast.ones(*p.shape)
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad._array.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    order = []
    m.apply(lambda mod: order.append(type(mod).__name__))
    assert order[-1] == "Block" and order.count("Linear") == 3
    w = m.conv.weight
    m.double()
    assert m.conv.weight is w and w.dtype == np.float64 and m.bn.running_mean.dtype == np.float64
    assert m.bn.num_batches_tracked.dtype == np.int64


def test_frozen_layer_keeps_parameters_through_training(rng):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model[0].requires_grad_(False)
    frozen = {k: v._array.copy() for k, v in model[0].state_dict().items()}
    head = model[2].weight._array.copy()
    opt = cnnfast.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x = cnnfast.tensor(rng.standard_normal((6, 4)).astype(np.float32))
    for _ in range(3):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
    for k, v in model[0].state_dict().items():
        np.testing.assert_array_equal(v._array, frozen[k])
    assert not np.array_equal(model[2].weight._array, head)


def test_forward_hooks_and_call():
    m = nn.Linear(2, 2)
    calls = []
    h = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    pre = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    y = m(cnnfast.ones(3, 2))
    np.testing.assert_allclose(y._array, np.broadcast_to(m.bias._array, (3, 2)))
    h.remove()
    pre.remove()
    m(cnnfast.ones(1, 2))
    assert calls == [(3, 2)]


def test_registration_rules():
    m = nn.Module()
    m.p = nn.Parameter(np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="cannot assign"):
        m.p = cnnfast.zeros(2)
    m.register_buffer("b", None)
    assert "b" in dict(m._buffers) and m.b is None
    with pytest.raises(KeyError, match="attribute 'p' already exists"):
        m.register_buffer("p", cnnfast.zeros(1))
    with pytest.raises(KeyError, match='contain "."'):
        m.register_parameter("a.b", None)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        m.nope
    del m.p
    assert list(m.parameters()) == []
    with pytest.raises(NotImplementedError, match="forward"):
        m(1)


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    seq.append(nn.Sigmoid())
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    seq.insert(1, nn.Tanh())
    assert isinstance(seq[1], nn.Tanh) and len(seq) == 4
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml += [nn.Linear(1, 2)]
    ml.insert(0, nn.ReLU())
    assert [type(x).__name__ for x in ml] == ["ReLU", "Linear", "Linear"]
    md = nn.ModuleDict({"x": nn.ReLU()})
    md["y"] = nn.Linear(1, 1)
    assert list(md.keys()) == ["x", "y"] and "y" in md and len(md) == 2
    assert md.pop("x").__class__ is nn.ReLU
    pl = nn.ParameterList([np.zeros(2, np.float32), nn.Parameter(np.ones(1, np.float32))])
    assert len(list(pl.parameters())) == 2 and pl[1]._array[0] == 1
    with pytest.raises(IndexError):
        seq[10]


def test_dropout_train_eval_and_seed():
    x = cnnfast.ones(1000)
    d = nn.Dropout(0.5)
    cnnfast.manual_seed(1)
    a = d(x)._array.copy()
    cnnfast.manual_seed(1)
    b = d(x)._array.copy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 2.0} and 300 < (a == 0).sum() < 700
    d.eval()
    np.testing.assert_array_equal(d(x)._array, x._array)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_batchnorm_bad_rank():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(cnnfast.ones(2, 3, 4))


def test_swish_alias_and_nn_functional():
    assert nn.Swish is nn.SiLU
    import cnnfast.nn.functional as F
    assert F.relu is cnnfast.functional.relu


def test_deepcopy_gives_an_independent_model():
    import copy

    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    m2 = copy.deepcopy(m)
    assert isinstance(m2[0].weight, nn.Parameter) and m2[0].weight.requires_grad
    assert m2[0].weight is not m[0].weight and m2[1].running_mean is not m[1].running_mean
    np.testing.assert_array_equal(m2[0].weight._array, m[0].weight._array)
    m2[0].weight._array[...] = 0
    assert m[0].weight._array.any()
    assert repr(m2) == repr(m)


def test_old_batchnorm_checkpoint_without_num_batches_tracked_loads():
    bn = nn.BatchNorm2d(2)
    bn.num_batches_tracked._array[...] = 5
    old = {"weight": np.ones(2), "bias": np.zeros(2), "running_mean": np.ones(2), "running_var": np.ones(2)}
    bn.load_state_dict(old)
    assert int(bn.num_batches_tracked._array) == 0 and "num_batches_tracked" not in old
