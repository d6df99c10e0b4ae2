"""Neural style transfer: Gram matrix and costs against PyTorch, hand-computed cases from
the CS-230 formulas and float64 finite differences; the feature network against torch;
the `cnnfast style --quick` demo end to end."""
import json
import os

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast.style import cost
from cnnfast.style.features import FeatureNet, layer_names, reflect_pad2d
from cnnfast.style.cli import main
from cnnfast.style.transfer import StyleConfig, StyleTransfer, load_image

from helpers import assert_close, assert_nontrivial, numerical_grad


def _torch_gram(a):
    flat = a.reshape(*a.shape[:-2], -1)
    return flat @ flat.transpose(-1, -2)


def _torch_layer_style(a_S, a_G):
    n_C, n_H, n_W = a_G.shape[-3:]
    return ((_torch_gram(a_S) - _torch_gram(a_G)) ** 2).sum() / (2.0 * n_H * n_W * n_C) ** 2


# ---- Gram matrix --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 5, 7), (2, 4, 3, 5), (1, 13, 1, 17)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gram_values_and_grads_match_torch(shape, dtype, tol, rng):
    a = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[:-3] + (shape[-3], shape[-3])).astype(dtype)
    x = cnnfast.tensor(a.copy(), requires_grad=True)
    G = cost.gram_matrix(x)
    (G * cnnfast.tensor(w)).sum().backward()
    xt = torch.tensor(a, requires_grad=True)
    Gt = _torch_gram(xt)
    (Gt * torch.tensor(w)).sum().backward()
    assert G.shape == tuple(Gt.shape)
    assert G.dtype == dtype
    assert_close(G.detach().numpy(), Gt.detach().numpy(), rtol=tol, atol=tol, what="Gram")
    assert_nontrivial(xt.grad.numpy())
    assert_close(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol, what="d Gram / d a")


def test_gram_hand_computed():
    # two channels of 2x2: k1 = [[1,0],[0,1]], k2 = [[0,1],[1,0]] -> G = [[2,0],[0,2]]
    a = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], np.float64)
    assert_close(cost.gram_matrix(a).numpy(), [[2, 0], [0, 2]])
    # k1 = [[1,2],[3,4]], k2 = [[1,1],[0,0]] -> G = [[30, 3], [3, 2]]
    b = np.array([[[1, 2], [3, 4]], [[1, 1], [0, 0]]], np.float64)
    assert_close(cost.gram_matrix(b).numpy(), [[30, 3], [3, 2]])


def test_gram_grad_finite_differences(rng):
    a = rng.standard_normal((3, 2, 3))
    w = rng.standard_normal((3, 3))
    x = cnnfast.tensor(a.copy(), requires_grad=True)
    (cost.gram_matrix(x) * cnnfast.tensor(w)).sum().backward()
    (num,) = numerical_grad(lambda v: np.sum(cost.gram_matrix(v).numpy() * w), [a.copy()], 1.0)
    assert_close(x.grad.numpy(), num, rtol=1e-6, atol=1e-8, what="Gram FD")


# ---- costs: hand-computed cases from the sheet's formulas -----------------------------------
# Style: nC = 1, 2x2. a_S = [[1,2],[3,4]] -> G_S = 1+4+9+16 = 30; a_G = [[0,1],[1,0]] -> G_G = 2.
# J = (30 - 2)^2 / (2*2*2*1)^2 = 784 / 64 = 12.25.
A_S = np.array([[[1.0, 2.0], [3.0, 4.0]]])
A_G = np.array([[[0.0, 1.0], [1.0, 0.0]]])
# Two channels: G_S = [[2,0],[0,2]], G_G = [[2,1],[1,1]] (k1 = [[1,1],[0,0]], k2 = [[1,0],[0,0]]);
# ||G_S - G_G||^2 = 0 + 1 + 1 + 1 = 3, normaliser (2*2*2*2)^2 = 256 -> 3/256 = 0.01171875.
B_S = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
B_G = np.array([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])


def test_layer_style_cost_hand_computed():
    assert cost.layer_style_cost(A_S, A_G).item() == pytest.approx(12.25, rel=1e-14)
    assert cost.layer_style_cost(B_S, B_G).item() == pytest.approx(0.01171875, rel=1e-14)
    # Same cost from a precomputed style Gram matrix.
    assert cost.layer_style_cost(None, B_G, gram_S=np.array([[2.0, 0], [0, 2]])).item() == \
        pytest.approx(0.01171875, rel=1e-14)


def test_content_cost_hand_computed():
    # 1/2 * ((1-0)^2 + (2-1)^2 + (3-1)^2 + (4-0)^2) = 1/2 * 22 = 11
    assert cost.content_cost(A_S, A_G).item() == pytest.approx(11.0, rel=1e-14)


def test_style_cost_weights_and_total_hand_computed():
    J_style = cost.style_cost([A_S, B_S], [A_G, B_G], weights=[0.25, 0.75])
    assert J_style.item() == pytest.approx(0.25 * 12.25 + 0.75 * 0.01171875, rel=1e-14)
    assert cost.style_cost([A_S, B_S], [A_G, B_G]).item() == pytest.approx((12.25 + 0.01171875) / 2, rel=1e-14)
    J = cost.total_cost(cost.content_cost(A_S, A_G), cost.layer_style_cost(A_S, A_G), alpha=10, beta=40)
    assert J.item() == pytest.approx(10 * 11 + 40 * 12.25, rel=1e-14)   # 600


def test_total_variation_hand_computed():
    # vertical: (3-1)^2 + (4-2)^2 = 8; horizontal: (2-1)^2 + (4-3)^2 = 2
    assert cost.total_variation(A_S).item() == pytest.approx(10.0, rel=1e-14)


# ---- gradients: torch and float64 finite differences --------------------------------------
@pytest.mark.parametrize("shape_S,shape_G", [((3, 4, 5), (3, 4, 5)), ((1, 2, 3, 7), (1, 2, 5, 3))])
def test_layer_style_cost_grad_matches_torch_and_fd(shape_S, shape_G, rng):
    a_S, a_G = rng.standard_normal(shape_S), rng.standard_normal(shape_G)
    x = cnnfast.tensor(a_G.copy(), requires_grad=True)
    J = cost.layer_style_cost(a_S, x)
    J.backward()
    xt = torch.tensor(a_G, requires_grad=True)
    Jt = _torch_layer_style(torch.tensor(a_S), xt)
    Jt.backward()
    assert J.item() == pytest.approx(Jt.item(), rel=1e-12)
    assert_nontrivial(xt.grad.numpy())
    assert_close(x.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12, what="style grad vs torch")
    (num,) = numerical_grad(lambda v: np.asarray(cost.layer_style_cost(a_S, v).item()), [a_G.copy()], 1.0)
    assert_close(x.grad.numpy(), num, rtol=1e-6, atol=1e-9, what="style grad FD")


def test_content_and_style_cost_grads_fd(rng):
    a_C, a_G = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 3))
    b_S, b_G = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    x = cnnfast.tensor(a_G.copy(), requires_grad=True)
    y = cnnfast.tensor(b_G.copy(), requires_grad=True)

    def J_of(u, v):
        return cost.total_cost(cost.content_cost(a_C, u), cost.style_cost([a_C, b_S], [u, v], weights=[0.3, 0.7]),
                               alpha=2.0, beta=5.0)

    J_of(x, y).backward()
    nx, ny = numerical_grad(lambda u, v: np.asarray(J_of(u, v).item()), [a_G.copy(), b_G.copy()], 1.0)
    assert_nontrivial(nx, ny)
    assert_close(x.grad.numpy(), nx, rtol=1e-6, atol=1e-8, what="dJ/da_G")
    assert_close(y.grad.numpy(), ny, rtol=1e-6, atol=1e-8, what="dJ/db_G")
    # content cost's gradient is a_G - a_C exactly
    z = cnnfast.tensor(a_G.copy(), requires_grad=True)
    cost.content_cost(a_C, z).backward()
    assert_close(z.grad.numpy(), a_G - a_C, rtol=1e-14, atol=1e-14)


def test_style_cost_through_feature_net_fd(rng):
    net = FeatureNet(base_width=2, blocks=(1, 1), seed=3, dtype=np.float64)
    img_S, img_G = rng.uniform(size=(1, 3, 6, 6)), rng.uniform(size=(1, 3, 6, 6))
    layers = ["relu1_1", "relu2_1"]
    acts_S = net(cnnfast.tensor(img_S), layers)

    def J_of(g):
        acts = net(g if isinstance(g, cnnfast.Tensor) else cnnfast.tensor(g), layers)
        return cost.style_cost([acts_S[n] for n in layers], [acts[n] for n in layers])

    x = cnnfast.tensor(img_G.copy(), requires_grad=True)
    J_of(x).backward()
    (num,) = numerical_grad(lambda g: np.asarray(J_of(g).item()), [img_G.copy()], 1.0, eps=1e-6)
    assert_nontrivial(num)
    assert_close(x.grad.numpy(), num, rtol=1e-5, atol=1e-9, what="style cost through the network")


def test_feature_net_matches_torch(rng):
    net = FeatureNet(base_width=4, seed=1)
    x = rng.uniform(size=(1, 3, 19, 23)).astype(np.float32)
    names = ["relu1_1", "relu2_2", "pool2", "relu4_1"]
    ours = net(cnnfast.tensor(x), names)
    t = torch.tensor(x)
    ref = {}
    for name in net.names:
        m = getattr(net, name)
        if name.startswith("conv"):
            t = torch.nn.functional.pad(t, (1, 1, 1, 1), mode="reflect")
            t = torch.nn.functional.conv2d(t, torch.tensor(m.weight._array), torch.tensor(m.bias._array))
        elif name.startswith("relu"):
            t = torch.relu(t)
        else:
            t = torch.nn.functional.avg_pool2d(t, 2)
        ref[name] = t
    for name in names:
        assert_close(ours[name].numpy(), ref[name].numpy(), rtol=1e-4, atol=1e-5, what=name)
    assert ours["relu4_1"].shape == (1, 32, 2, 2)
    assert all(not p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("shape,pad", [((1, 2, 3, 5), 1), ((2, 1, 7, 4), 3)])
def test_reflect_pad_matches_torch(shape, pad, rng):
    a = rng.standard_normal(shape)
    w = rng.standard_normal((shape[0], shape[1], shape[2] + 2 * pad, shape[3] + 2 * pad))
    x = cnnfast.tensor(a.copy(), requires_grad=True)
    y = reflect_pad2d(x, pad)
    (y * cnnfast.tensor(w)).sum().backward()
    xt = torch.tensor(a, requires_grad=True)
    yt = torch.nn.functional.pad(xt, (pad,) * 4, mode="reflect")
    (yt * torch.tensor(w)).sum().backward()
    assert_close(y.detach().numpy(), yt.detach().numpy(), rtol=0, atol=0, what="reflect pad")
    assert_close(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="reflect pad grad")
    with pytest.raises(ValueError, match="reflect padding 3 needs H and W > 3"):
        reflect_pad2d(cnnfast.tensor(np.ones((1, 1, 3, 8))), 3)


# ---- bad input -----------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match=r"a: expected an activation of shape"):
        cost.gram_matrix(np.ones((4, 4)))
    with pytest.raises(TypeError, match="a: expected a floating-point"):
        cost.gram_matrix(np.ones((1, 2, 2), np.int64))
    with pytest.raises(TypeError, match="a: expected a Tensor or numpy.ndarray"):
        cost.gram_matrix([[1.0]])
    with pytest.raises(ValueError, match=r"a_C: expected the shape of a_G \(1, 2, 2\), got \(1, 2, 3\)"):
        cost.content_cost(np.ones((1, 2, 3)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match=r"expected a Gram matrix of shape \(2, 2\)"):
        cost.layer_style_cost(np.ones((3, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="weights: expected 2 layer weights, got 1"):
        cost.style_cost([A_S, B_S], [A_G, B_G], weights=[1.0])
    with pytest.raises(ValueError, match="equal length"):
        cost.style_cost([A_S], [A_G, B_G])
    with pytest.raises(ValueError, match="non-empty"):
        cost.gram_matrix(np.ones((0, 2, 2)))
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureNet(2)(cnnfast.tensor(np.ones((1, 3, 4, 4), np.float32)), ["relu9_9"])
    content = np.full((3, 4, 4), 0.5, np.float32)
    with pytest.raises(ValueError, match="optimizer"):
        StyleTransfer(content, content, StyleConfig(optimizer="sgd", width=2))
    with pytest.raises(ValueError, match=r"style: expected an RGB image array of shape \(3, H, W\), got shape \(4, "):
        StyleTransfer(content, content[0], StyleConfig(width=2))
    with pytest.raises(TypeError, match="content: expected floating-point"):
        StyleTransfer((content * 255).astype(np.uint8), content, StyleConfig(width=2))
    with pytest.raises(ValueError, match="style_weights: expected 4 values"):
        StyleTransfer(content, content, StyleConfig(style_weights=[1.0], width=2))


def test_layer_names_follow_vgg():
    names = layer_names()
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-1] == "relu4_1" and "pool4" not in names


def test_load_image_samples_and_shapes(tmp_path):
    c = load_image("china.jpg", size=40)
    assert c.shape == (3, 27, 40) and c.dtype == np.float32
    assert 0.0 <= c.min() and c.max() <= 1.0 and c.std() > 0.05
    s = load_image("flower.jpg", shape=(27, 40))
    assert s.shape == (3, 27, 40)
    from PIL import Image
    path = tmp_path / "tall.png"
    Image.fromarray(np.zeros((50, 20, 3), np.uint8)).save(path)
    assert load_image(str(path), shape=(10, 10)).shape == (3, 10, 10)
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(str(bad))


# ---- the demo --------------------------------------------------------------------------------
# The quick setting starts from the content image, where J_content = 0 and all of J is style, so
# the optimiser's first business is J_style. Measured final/initial J_style: about 0.001 with
# L-BFGS and 0.011 with Adam (40 evaluations). 0.1 leaves a 10-100x margin for rounding, thread
# counts and SIMD paths, yet fails on a wrong gradient sign, a broken line search or a style
# target taken from the wrong image (all of which leave the ratio near or above 1).
QUICK_STYLE_RATIO = 0.1


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_quick_demo_writes_outputs_and_lowers_style_cost(tmp_path, capsys, optimizer):
    out = tmp_path / "run"
    assert main(["--quick", "--optimizer", optimizer, "--out", str(out), "--log-every", "20"]) == 0
    for name in ("result.png", "comparison.png", "loss.png", "metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    init, final = m["initial"], m["final"]
    assert init["J_content"] == 0.0 and init["J_style"] > 0
    assert final["J_style"] < QUICK_STYLE_RATIO * init["J_style"], (final["J_style"], init["J_style"])
    assert m["style_ratio"] == pytest.approx(final["J_style"] / init["J_style"])
    alpha, beta = m["config"]["alpha"], m["config"]["beta"]
    assert m["J"] == pytest.approx(alpha * m["J_content"] + beta * m["J_style"], rel=1e-5)
    assert final["J_style"] == pytest.approx(sum(w * v for w, v in zip(
        [1 / 4] * 4, final["J_style_per_layer"].values())), rel=1e-5)
    assert m["steps"] >= 10 and len(m["history"]) == m["steps"]
    assert m["content"] == "sklearn:china.jpg"
    err = capsys.readouterr().err
    assert "step   20/40" in err
    from PIL import Image
    assert Image.open(out / "result.png").size == (32, 21)


def test_cli_bad_input(tmp_path, capsys):
    assert main([str(tmp_path / "nope.jpg"), "--quick", "--out", str(tmp_path / "a")]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["--quick", "--content-layer", "relu7_1", "--out", str(tmp_path / "b")]) == 2
    assert "unknown layer 'relu7_1'" in capsys.readouterr().err
    assert main(["--quick", "--style-weights", "1,2", "--out", str(tmp_path / "c")]) == 2
    assert "expected 4 values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--steps", "0"])
    assert not os.path.exists(tmp_path / "b")
