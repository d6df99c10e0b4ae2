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
    "regnet_y_400mf": 4344144, "regnet_y_800mf": 6432512, "regnet_y_1_6gf": 11202430, "regnet_y_3_2gf": 19436338,
    "regnet_y_8gf": 39381472, "regnet_y_16gf": 83590140, "regnet_y_32gf": 145046770, "regnet_y_128gf": 644812894,
    "regnet_x_400mf": 5495976, "regnet_x_800mf": 7259656, "regnet_x_1_6gf": 9190136, "regnet_x_3_2gf": 15296552,
    "regnet_x_8gf": 39572648, "regnet_x_16gf": 54278536, "regnet_x_32gf": 107811560,
    "inception_v3": 27161264,
}
BIG = {"efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "resnext101_32x8d",
       "wide_resnet50_2", "wide_resnet101_2", "convnext_small", "deeplabv3_resnet50",
       "regnet_y_1_6gf", "regnet_x_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf", "regnet_x_3_2gf",
       "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf"}
# 2.6 GB of weights per copy: torch's and cnnfast's side by side would need some 8 GB, so
# its state-dict names and shapes are compared against torch's model on the meta device.
HUGE = {"regnet_y_128gf"}
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


def _input_size(name):
    """(H, W), small but past each network's smallest input, W != H."""
    size = {"squeezenet1_0": 75, "squeezenet1_1": 75, "inception_v3": 80}.get(name, 64)
    return size, size - 5


@pytest.mark.parametrize("name", _maybe_slow(n for n in PARAMS if n not in HUGE))
def test_torch_weights_load_and_outputs_match(name):
    tv = _tv()
    torch.manual_seed(0)
    ref = tv.build(name).eval()
    ours = M.get_model(name).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    sd = _random_state(ref)
    ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    x = np.random.default_rng(1).standard_normal((2, 3) + _input_size(name)).astype(np.float32)
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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_state_dict_names_and_shapes(name):
    """The keys and shapes of torchvision's model built on the meta device (no memory)."""
    tv = _tv()
    reg = tv.load()["regnet"]
    settings = __import__("cnnfast.models.regnet", fromlist=["_SETTINGS"])._SETTINGS[name]
    depth, w_0, w_a, w_m, gw, se = settings
    # The stage plan is computed on the CPU (it calls .tolist()); only the weights go to meta.
    params = reg.BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m, group_width=gw, se_ratio=se)
    with torch.device("meta"):
        ref = reg.RegNet(params)
    assert sum(p.numel() for p in ref.parameters()) == PARAMS[name]
    ours = M.get_model(name)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]


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


@pytest.mark.parametrize("name", [pytest.param("regnet_y_400mf", marks=pytest.mark.slow), "regnet_x_400mf"])
def test_training_mode_gradients_against_float64_torch(name):
    """RegNet's last stage normalises over 3x3 maps of a batch of 4 in training mode, so its
    float32 gradients are ill-conditioned: torch's own float32 gradients are ~1% from the
    float64 ones. cnnfast's must be as close to float64 torch as torch's float32 are (x4)."""
    tv = _tv()
    torch.manual_seed(0)
    refs = [tv.build(name).train(), tv.build(name).train().double()]
    ours = M.get_model(name).train()
    sd = _random_state(refs[0])
    for r in refs:
        r.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    x = np.random.default_rng(2).standard_normal((4, 3, 67, 67))
    for r in refs:
        yt = r(torch.tensor(x).to(next(r.parameters()).dtype))
        yt.square().mean().backward()
    yc = ours(cnnfast.tensor(x.astype(np.float32)))
    (yc * yc).mean().backward()
    np.testing.assert_allclose(yc.detach().numpy(), yt.detach().numpy(), rtol=1e-3, atol=1e-4)
    ours_p, p32 = dict(ours.named_parameters()), dict(refs[0].named_parameters())
    d_ours = d_torch = total = 0.0
    for k, p in refs[1].named_parameters():
        g64 = p.grad.numpy()
        d_ours += float(np.sum((ours_p[k].grad.numpy() - g64) ** 2))
        d_torch += float(np.sum((p32[k].grad.numpy() - g64) ** 2))
        total += float(np.sum(g64 ** 2))
    assert d_ours > 0 and d_torch > 0
    assert (d_ours / total) ** 0.5 < 4 * (d_torch / total) ** 0.5 + 1e-4, ((d_ours / total) ** 0.5,
                                                                          (d_torch / total) ** 0.5)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "mobilenet_v2", "regnet_x_400mf",
                                  "regnet_y_400mf", "inception_v3",
                                  pytest.param("convnext_tiny", marks=pytest.mark.slow),
                                  pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_loss_goes_down(name):
    cnnfast.manual_seed(0)
    # Inception's auxiliary head needs a 299x299 input; without it 75x75 is enough.
    kw = {"aux_logits": False} if name == "inception_v3" else {}
    model = M.get_model(name, num_classes=4, **kw).train()
    g = np.random.default_rng(3)
    size = 75 if name == "inception_v3" else 32
    x = cnnfast.tensor(g.standard_normal((8, 3, size, size)).astype(np.float32))
    y = cnnfast.tensor(g.integers(0, 4, 8))
    _assert_loss_goes_down(model, x, y, steps=6, lr=1e-3)


def _assert_loss_goes_down(model, x, y, steps, lr):
    """Adam on cross-entropy for `steps` steps: the last loss at least 10% below the first."""
    opt = cnnfast.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
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
    from cnnfast.models.regnet import BlockParams
    for bad in (dict(w_0=12), dict(w_m=1.0), dict(w_a=-1.0)):
        with pytest.raises(ValueError, match="RegNet settings"):
            BlockParams.from_init_params(**dict(dict(depth=8, w_0=16, w_a=8.0, w_m=2.0, group_width=8), **bad))
    with pytest.raises(ValueError, match="divisible"):
        M.unet(base_width=4, depth=3, bilinear=True)(cnnfast.tensor(np.zeros((1, 1, 12, 16), np.float32)))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "deeplabv3_mobilenet_v3_large",
                                  "regnet_y_400mf", "regnet_x_400mf", "inception_v3"])
def test_cli_summary(name, capsys):
    from cnnfast.cli import main
    assert main(["summary", name]) in (0, None)
    out = capsys.readouterr().out
    assert f"{PARAMS[name]:,}" in out


@pytest.mark.slow
def test_inception_v3_modes_aux_and_transform_input():
    """Training mode returns (logits, aux_logits) equal to torchvision's (dropout off; the
    auxiliary head needs the full 299x299 input), eval mode the logits; transform_input
    rescales as torchvision's; the loss of logits + 0.4 aux backpropagates; aux_logits=False
    drops the head. Batch statistics of a batch of 2 on 8x8 maps make float32 training mode
    ill-conditioned, so cnnfast is held to float64 torch as closely as float32 torch is (x4)."""
    tv = _tv()
    torch.manual_seed(0)
    refs = [tv.build("inception_v3"), tv.build("inception_v3").double()]
    ours = M.inception_v3(transform_input=True, dropout=0.0)
    sd = _random_state(refs[0])
    for r in refs:
        r.transform_input = True
        r.dropout.p = 0.0
        r.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
        r.train()
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    ours.train()
    x = np.random.default_rng(4).standard_normal((2, 3, 299, 299))
    out_t = [r(torch.tensor(x).to(next(r.parameters()).dtype)) for r in refs]
    out_c = ours(cnnfast.tensor(x.astype(np.float32)))
    assert isinstance(out_c, M.InceptionOutputs)

    def within(ours_v, t32, t64, what):
        d_ours, d_t = np.linalg.norm(ours_v - t64), np.linalg.norm(t32 - t64)
        assert d_ours > 0 and d_ours < 4 * d_t + 1e-5 * np.linalg.norm(t64), (what, d_ours, d_t)

    for k in range(2):
        a, b32, b64 = out_c[k].detach().numpy(), out_t[0][k].detach().numpy(), out_t[1][k].detach().numpy()
        assert a.shape == b64.shape == (2, 1000)
        within(a, b32, b64, ("logits", "aux")[k])
    for r, o in zip(refs, out_t):
        (o.logits.square().mean() + 0.4 * o.aux_logits.square().mean()).backward()
    ((out_c.logits * out_c.logits).mean() + 0.4 * (out_c.aux_logits * out_c.aux_logits).mean()).backward()
    p32, p64, pc = (dict(refs[0].named_parameters()), dict(refs[1].named_parameters()),
                    dict(ours.named_parameters()))
    for k in ("fc.weight", "AuxLogits.fc.weight", "Mixed_6e.branch_pool.conv.weight", "Conv2d_1a_3x3.conv.weight"):
        within(pc[k].grad.numpy(), p32[k].grad.numpy(), p64[k].grad.numpy(), k)
    ours.eval()
    with cnnfast.no_grad():
        assert ours(cnnfast.tensor(x.astype(np.float32))).shape == (2, 1000)
    no_aux = M.inception_v3(aux_logits=False, num_classes=10)
    assert _nparams(no_aux) == 23834568 - 2048 * 990 - 990
    assert not any(k.startswith("AuxLogits") for k in no_aux.state_dict())
    with pytest.raises(ValueError, match="inception_blocks"):
        M.Inception3(inception_blocks=[None] * 6)


class _TorchDoubleConv(torch.nn.Module):
    def __init__(self, cin, cout, mid):
        super().__init__()
        self.block = torch.nn.Sequential(
            torch.nn.Conv2d(cin, mid, 3, padding=1, bias=False), torch.nn.BatchNorm2d(mid), torch.nn.ReLU(),
            torch.nn.Conv2d(mid, cout, 3, padding=1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())

    def forward(self, x):
        return self.block(x)


class _TorchUNetBilinear(torch.nn.Module):
    """The common bilinear U-Net written with torch.nn under cnnfast's module names: widths
    64-128-256-512-512 down, each up level bilinear x2 (align_corners) -> concat the skip ->
    DoubleConv with the middle width in / 2."""

    def __init__(self, cin, classes, w=64):
        super().__init__()
        ws = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.inc = _TorchDoubleConv(cin, w, w)
        for i in range(4):
            down = torch.nn.Module()
            down.pool, down.conv = torch.nn.MaxPool2d(2), _TorchDoubleConv(ws[i], ws[i + 1], ws[i + 1])
            setattr(self, f"down{i + 1}", down)
        for i, (c, out) in enumerate([(16 * w, 4 * w), (8 * w, 2 * w), (4 * w, w), (2 * w, w)]):
            up = torch.nn.Module()
            up.conv = _TorchDoubleConv(c, out, c // 2)
            setattr(self, f"up{i + 1}", up)
        self.outc = torch.nn.Conv2d(w, classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for i in range(4):
            d = getattr(self, f"down{i + 1}")
            skips.append(d.conv(d.pool(skips[-1])))
        y = skips.pop()
        for i in range(4):
            y = torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
            y = getattr(self, f"up{i + 1}").conv(torch.cat([skips.pop(), y], 1))
        return self.outc(y)


@pytest.mark.parametrize("cin,count", [(3, 17263042), (1, 17261890)])
def test_unet_bilinear_matches_torch_reference(cin, count):
    torch.manual_seed(0)
    ref = _TorchUNetBilinear(cin, 2).eval()
    ours = M.unet(in_channels=cin, num_classes=2, bilinear=True).eval()
    assert _nparams(ours) == _nparams(ref) == count
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    sd = _random_state(ref)
    ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    ours.load_state_dict({k: cnnfast.tensor(v) for k, v in sd.items()})
    x = np.random.default_rng(5).standard_normal((1, cin, 32, 48)).astype(np.float32)
    with torch.no_grad():
        yt = ref(torch.tensor(x)).numpy()
    with cnnfast.no_grad():
        yc = ours(cnnfast.tensor(x)).numpy()
    assert yc.shape == yt.shape == (1, 2, 32, 48)
    assert np.abs(yt - yc).max() / np.abs(yt).max() < 1e-4


def test_unet_bilinear_trains():
    cnnfast.manual_seed(0)
    model = M.unet(in_channels=3, num_classes=3, base_width=8, depth=3, bilinear=True).train()
    g = np.random.default_rng(6)
    x = cnnfast.tensor(g.standard_normal((2, 3, 16, 24)).astype(np.float32))
    y = cnnfast.tensor(g.integers(0, 3, (2, 16, 24)))
    _assert_loss_goes_down(model, x, y, steps=8, lr=3e-3)


@pytest.mark.parametrize("builder,shape", [
    (lambda: M.unet(in_channels=3, base_width=4, depth=3, bilinear=True), (3, 24, 40)),
    (lambda: M.regnet_y_400mf(num_classes=5), (3, 45, 37)),
])
def test_summary_shape_only_equals_computed(builder, shape):
    """The summary's shape formulas agree with a real forward through the new blocks
    (bilinear Upsample, grouped convs with squeeze-excitation)."""
    from cnnfast.utils.summary import summary
    m = builder()
    real, meta = summary(m, shape, run=True), summary(m, shape, run=False)
    assert [(r.name, r.output_shape, r.params, r.macs) for r in real.layers] == \
        [(r.name, r.output_shape, r.params, r.macs) for r in meta.layers]
    assert sum(r.params for r in real.layers) == _nparams(m)
