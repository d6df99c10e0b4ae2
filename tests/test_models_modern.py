"""Today's CNNs in cnnfast.models against torchvision's definitions (loaded from a wheel
on disk by tv_reference.py, no download): parameter counts, state-dict keys in order,
torch-made weights loaded into cnnfast giving torch's outputs within 1e-4 relative (random
BN statistics, small inputs), the loss going down in a few steps, and `cnnfast summary`.
The largest networks are marked slow."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnfast  # noqa: E402
import cnnfast.models as M  # noqa: E402
import tv_reference  # noqa: E402

# torchvision's parameter counts (default heads: 1000 classes, 21 for segmentation).
PARAMS = {
    "mobilenet_v2": 3504872, "mobilenet_v3_small": 2542856, "mobilenet_v3_large": 5483032,
    "efficientnet_b0": 5288548, "efficientnet_b1": 7794184, "efficientnet_b2": 9109994,
    "efficientnet_b3": 12233232, "efficientnet_b4": 19341616, "efficientnet_b5": 30389784,
    "efficientnet_b6": 43040704, "efficientnet_b7": 66347960,
    "shufflenet_v2_x0_5": 1366792, "shufflenet_v2_x1_0": 2278604, "shufflenet_v2_x1_5": 3503624,
    "shufflenet_v2_x2_0": 7393996, "squeezenet1_0": 1248424, "squeezenet1_1": 1235496,
    "resnext50_32x4d": 25028904, "resnext101_32x8d": 88791336, "wide_resnet50_2": 68883240,
    "wide_resnet101_2": 126886696, "convnext_tiny": 28589128, "convnext_small": 50223688,
    "fcn_resnet50": 32957013, "deeplabv3_resnet50": 39638869, "deeplabv3_mobilenet_v3_large": 11025477,
}
BIG = {"efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "resnext101_32x8d",
       "wide_resnet50_2", "wide_resnet101_2", "convnext_small", "deeplabv3_resnet50"}
FAST = [n for n in PARAMS if n not in BIG]


def _maybe_slow(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", _maybe_slow(PARAMS))
def test_parameter_count(name):
    assert _nparams(M.get_model(name)) == PARAMS[name]


def _tv():
    if tv_reference.load() is None:
        pytest.skip("no torchvision wheel on disk to read the reference definitions from")
    return tv_reference


def _random_state(ref, seed=0):
    """The torch model's parameters plus non-trivial BN statistics, as NumPy arrays."""
    g = np.random.default_rng(seed)
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    for k, v in sd.items():
        if k.endswith("running_var"):
            sd[k] = g.uniform(0.5, 1.5, v.shape).astype(np.float32)
        elif k.endswith("running_mean"):
            sd[k] = g.normal(0, 0.1, v.shape).astype(np.float32)
        elif k.endswith("layer_scale"):  # ConvNeXt's 1e-6 would hide the blocks from the comparison
            sd[k] = g.uniform(0.5, 1.0, v.shape).astype(np.float32)
    return sd


@pytest.mark.parametrize("name", _maybe_slow(PARAMS))
def test_torch_weights_load_and_outputs_match(name):
    tv = _tv()
    torch.manual_seed(0)
    ref = tv.build(name).eval()
    ours = M.get_model(name).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    sd = _random_state(ref)
    ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    size = 75 if name.startswith("squeezenet") else 64
    x = np.random.default_rng(1).standard_normal((2, 3, size, size - 5)).astype(np.float32)
    with torch.no_grad():
        yt = ref(torch.tensor(x))
    with cnnfast.no_grad():
        yc = ours(cnnfast.tensor(x))
    if isinstance(yt, dict):
        assert sorted(yt) == sorted(yc)
        yt, yc = yt["out"], yc["out"]
    yt, yc = yt.numpy(), yc.numpy()
    assert yt.shape == yc.shape
    assert np.abs(yt).max() > 0
    err = np.abs(yt - yc).max() / np.abs(yt).max()
    assert err < 1e-4, f"relative error {err:.3g}"


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1", "efficientnet_b0"])
def test_training_mode_matches_torch_gradients(name):
    """One training-mode forward/backward (batch statistics, dropout off) against torch."""
    tv = _tv()
    torch.manual_seed(0)  # the reference's weights, so the comparison does not depend on earlier tests
    ref = tv.build(name).train()
    ours = M.get_model(name).train()
    for m in list(ref.modules()) + list(ours.modules()):  # dropout and stochastic depth off: deterministic
        if hasattr(m, "p") and isinstance(getattr(m, "p"), float):
            m.p = 0.0
    sd = _random_state(ref)
    ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    x = np.random.default_rng(2).standard_normal((4, 3, 67, 67)).astype(np.float32)
    yt = ref(torch.tensor(x))
    yt.square().mean().backward()
    yc = ours(cnnfast.tensor(x))
    (yc * yc).mean().backward()
    np.testing.assert_allclose(yc.detach().numpy(), yt.detach().numpy(), rtol=1e-3, atol=1e-4)
    ours_p = dict(ours.named_parameters())
    # Norm-wise relative error per parameter: float32 rounding can flip a ReLU whose input is
    # ~1e-7 from zero, which moves single elements but not the gradient as a whole. A BN bias
    # feeding another BN has a gradient that is 0 up to rounding: such parameters are measured
    # against the largest gradient norm of the network instead of their own.
    top = max(float(np.linalg.norm(p.grad.numpy())) for p in ref.parameters())
    for k, p in ref.named_parameters():
        g, gt = ours_p[k].grad.numpy(), p.grad.numpy()
        scale = max(float(np.linalg.norm(gt)), 1e-3 * top)
        assert np.linalg.norm(g - gt) / scale < 1e-2, k


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "mobilenet_v2",
                                  pytest.param("convnext_tiny", marks=pytest.mark.slow),
                                  pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_loss_goes_down(name):
    cnnfast.manual_seed(0)
    model = M.get_model(name, num_classes=4).train()
    g = np.random.default_rng(3)
    x = cnnfast.tensor(g.standard_normal((8, 3, 32, 32)).astype(np.float32))
    y = cnnfast.tensor(g.integers(0, 4, 8))
    opt = cnnfast.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = cnnfast.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < losses[0] * 0.9, losses


def test_segmentation_output_and_aux():
    m = M.fcn_resnet50(num_classes=5, aux_loss=True).eval()
    with cnnfast.no_grad():
        out = m(cnnfast.tensor(np.random.default_rng(0).standard_normal((1, 3, 33, 47)).astype(np.float32)))
    assert sorted(out) == ["aux", "out"]
    assert out["out"].shape == (1, 5, 33, 47) and out["aux"].shape == (1, 5, 33, 47)


def test_registry_and_bad_arguments():
    for n in PARAMS:
        assert n in M.list_models()
    with pytest.raises(ValueError, match="version"):
        M.SqueezeNet("2_0")
    with pytest.raises(ValueError, match="stages_repeats"):
        M.ShuffleNetV2([4, 8], [24, 48, 96, 192, 1024])
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        M.resnet50(replace_stride_with_dilation=[True])
    with pytest.raises(ValueError, match="groups"):
        M.resnet18(groups=2)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "deeplabv3_mobilenet_v3_large"])
def test_cli_summary(name, capsys):
    from cnnfast.cli import main
    assert main(["summary", name]) in (0, None)
    out = capsys.readouterr().out
    assert f"{PARAMS[name]:,}" in out
