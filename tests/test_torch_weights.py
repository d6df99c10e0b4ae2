"""cnnfast.utils.load_torch_state_dict: PyTorch weights load into the same-named cnnfast
architectures. torchvision is not installed here, so the torch networks are written out below
with torchvision's module names; the converted weights must reproduce torch's outputs."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnfast  # noqa: E402
from cnnfast.utils import load_torch_state_dict  # noqa: E402

tnn = torch.nn
RTOL = 1e-4


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_rel(got, ref, rtol=RTOL):
    assert got.shape == ref.shape
    assert np.abs(ref).max() > 0
    err = np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max()
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def one_liner(module):
    """The README's conversion: {k: v.numpy() for k, v in torch.load(p, map_location="cpu").items()}."""
    return {k: v.numpy() for k, v in module.state_dict().items()}


def randomize(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


# ---- torchvision's architectures, by hand ------------------------------------------------------

class BasicBlock(tnn.Module):
    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + idt)


class TorchResNet18(tnn.Module):
    def __init__(self, num_classes=1000, w=64):
        super().__init__()
        self.inplanes = w
        self.conv1 = tnn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(w)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(w, 1)
        self.layer2 = self._layer(2 * w, 2)
        self.layer3 = self._layer(4 * w, 2)
        self.layer4 = self._layer(8 * w, 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(8 * w, num_classes)

    def _layer(self, planes, stride):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = tnn.Sequential(tnn.Conv2d(self.inplanes, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes))
        blocks = [BasicBlock(self.inplanes, planes, stride, down), BasicBlock(planes, planes)]
        self.inplanes = planes
        return tnn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_vgg(cfg, batch_norm, num_classes, hidden):
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
            continue
        layers.append(tnn.Conv2d(c, v, 3, padding=1))
        if batch_norm:
            layers.append(tnn.BatchNorm2d(v))
        layers.append(tnn.ReLU(inplace=True))
        c = v

    class VGG(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(*layers)
            self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
            self.classifier = tnn.Sequential(tnn.Linear(c * 49, hidden), tnn.ReLU(True), tnn.Dropout(),
                                             tnn.Linear(hidden, hidden), tnn.ReLU(True), tnn.Dropout(),
                                             tnn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
    return VGG()


class TorchAlexNet(tnn.Module):
    """cnnfast's AlexNet (the paper's widths, LRN) in torchvision's naming scheme."""

    def __init__(self, c=(10, 26, 38, 38, 26), hidden=32, num_classes=5):
        super().__init__()
        lrn = lambda: tnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # noqa: E731
        self.features = tnn.Sequential(
            tnn.Conv2d(3, c[0], 11, 4), tnn.ReLU(), lrn(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(c[0], c[1], 5, padding=2), tnn.ReLU(), lrn(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(c[1], c[2], 3, padding=1), tnn.ReLU(), tnn.Conv2d(c[2], c[3], 3, padding=1), tnn.ReLU(),
            tnn.Conv2d(c[3], c[4], 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2))
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(tnn.Dropout(), tnn.Linear(c[4] * 36, hidden), tnn.ReLU(), tnn.Dropout(),
                                         tnn.Linear(hidden, hidden), tnn.ReLU(), tnn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchLeNet5(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(tnn.Conv2d(1, 6, 5), tnn.Tanh(), tnn.AvgPool2d(2, 2),
                                       tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2, 2))
        self.classifier = tnn.Sequential(tnn.Linear(400, 120), tnn.Tanh(), tnn.Linear(120, 84), tnn.Tanh(),
                                         tnn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


CASES = {
    "resnet18": (lambda: TorchResNet18(num_classes=7, w=8),
                 lambda: cnnfast.models.resnet18(num_classes=7, base_width=8), (2, 3, 40, 40)),
    "vgg11_bn": (lambda: torch_vgg([6, "M", 13, "M", 26, 26, "M", 51, 51, "M", 51, 51, "M"], True, 5, 16),
                 lambda: cnnfast.models.vgg11_bn(num_classes=5, width=0.1, hidden=16), (2, 3, 32, 32)),
    "vgg11": (lambda: torch_vgg([6, "M", 13, "M", 26, 26, "M", 51, 51, "M", 51, 51, "M"], False, 5, 16),
              lambda: cnnfast.models.vgg11(num_classes=5, width=0.1, hidden=16), (1, 3, 32, 32)),
    "alexnet": (TorchAlexNet, lambda: cnnfast.models.alexnet(num_classes=5, width=0.1, hidden=32), (1, 3, 99, 99)),
    "lenet5": (TorchLeNet5, lambda: cnnfast.models.lenet5(), (3, 1, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_weights_reproduce_torch_outputs(name):
    make_torch, make_cnnfast, shape = CASES[name]
    torch.manual_seed(0)
    tm = randomize(make_torch())
    cm = make_cnnfast()
    sd = one_liner(tm)
    assert {k: v.shape for k, v in cm.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    result = load_torch_state_dict(cm, sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    cm.eval()
    x = randn(*shape)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    with cnnfast.no_grad():
        got = cm(cnnfast.tensor(x)).numpy()
    assert_rel(got, ref)


def test_full_size_resnet18_has_torchvisions_keys_and_shapes():
    sd = TorchResNet18().state_dict()
    ours = cnnfast.models.resnet18().state_dict()
    assert list(ours) == list(sd)
    assert all(tuple(ours[k].shape) == tuple(sd[k].shape) for k in sd)
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == 11_689_512


def test_checkpoint_forms(tmp_path):
    torch.manual_seed(0)
    tm = randomize(TorchLeNet5())
    x = randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    path = tmp_path / "lenet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tm.state_dict().items()}, "epoch": 3}, path)
    ckpt = torch.load(path, map_location="cpu")
    npz = tmp_path / "lenet.npz"
    np.savez(npz, **one_liner(tm))
    for source in (ckpt, tm.state_dict(), str(npz)):  # wrapped + DataParallel prefix, torch tensors, a file
        cm = cnnfast.models.lenet5().eval()
        load_torch_state_dict(cm, source)
        with cnnfast.no_grad():
            assert_rel(cm(cnnfast.tensor(x)).numpy(), ref)


def test_float64_checkpoints_are_cast():
    tm = TorchLeNet5().double()
    cm = cnnfast.models.lenet5()
    load_torch_state_dict(cm, one_liner(tm))
    assert cm.features[0].weight.dtype == np.float32
    np.testing.assert_allclose(cm.features[0].weight.detach().numpy(), tm.features[0].weight.detach().numpy(),
                               rtol=1e-6)


def test_mismatches_are_named():
    sd = one_liner(TorchResNet18(num_classes=7, w=8))
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1.weight: copying a param with shape "
                                           r"\(8, 3, 7, 7\).*\(16, 3, 7, 7\)"):
        load_torch_state_dict(cnnfast.models.resnet18(num_classes=7, base_width=16), sd)
    partial = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    partial["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "fc.weight", "fc.bias"'):
        load_torch_state_dict(cnnfast.models.resnet18(num_classes=7, base_width=8), partial)
    result = load_torch_state_dict(cnnfast.models.resnet18(num_classes=7, base_width=8), partial, strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and result.unexpected_keys == ["extra.weight"]
    with pytest.raises(ValueError, match="must name an .npz"):
        load_torch_state_dict(cnnfast.models.lenet5(), "weights.pth")
    with pytest.raises(TypeError, match="expected a mapping"):
        load_torch_state_dict(cnnfast.models.lenet5(), [1, 2])
