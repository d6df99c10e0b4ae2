"""Weights from PyTorch models with torchvision's ResNet / GoogLeNet / DenseNet module
trees load into cnnfast's models as they are, and both give the same outputs (eval mode).
torchvision is not installed, so its layouts are written out here in plain torch.nn."""
import numpy as np
import pytest
import torch
import torch.nn as tnn

import cnnfast
from cnnfast import models as M


class _TBasic(tnn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, planes, 1, stride, bias=False),
                                             tnn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + idt)


class _TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, out, 1, stride, bias=False),
                                             tnn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + idt)


class _TResNet(tnn.Module):
    """torchvision.models.ResNet's module tree, written out (torchvision is not installed)."""

    def __init__(self, block, layers, width, classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("name,block,layers", [("resnet18", _TBasic, [2, 2, 2, 2]),
                                               ("resnet50", _TBottleneck, [3, 4, 6, 3])])
def test_torch_resnet_weights_load_and_agree(name, block, layers):
    torch.manual_seed(0)
    ref = _TResNet(block, layers, width=8, classes=5)
    with torch.no_grad():   # non-trivial BN statistics so the running buffers matter
        for m in ref.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    ref.eval()
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    model = M.get_model(name, num_classes=5, base_width=8)
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd)
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 45, 45)).astype(np.float32)
    with cnnfast.no_grad():
        got = model(cnnfast.tensor(x)).numpy()
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def _load_and_compare(ref, model, shape, rtol=1e-3, atol=1e-4):
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd)
    model.eval()
    x = np.random.default_rng(1).standard_normal((2,) + shape).astype(np.float32)
    with cnnfast.no_grad():
        got = model(cnnfast.tensor(x)).numpy()
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


class _TBasicConv(tnn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class _TInception(tnn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = _TBasicConv(cin, c1, kernel_size=1)
        self.branch2 = tnn.Sequential(_TBasicConv(cin, c3r, kernel_size=1),
                                      _TBasicConv(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = tnn.Sequential(_TBasicConv(cin, c5r, kernel_size=1),
                                      _TBasicConv(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                      _TBasicConv(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class _TGoogLeNet(tnn.Module):
    """torchvision.models.GoogLeNet (aux_logits=False, transform_input=False), written out."""

    CFG = [("inception3a", 192, 64, 96, 128, 16, 32, 32),
           ("inception3b", 256, 128, 128, 192, 32, 96, 64),
           ("inception4a", 480, 192, 96, 208, 16, 48, 64),
           ("inception4b", 512, 160, 112, 224, 24, 64, 64),
           ("inception4c", 512, 128, 128, 256, 24, 64, 64),
           ("inception4d", 512, 112, 144, 288, 32, 64, 64),
           ("inception4e", 528, 256, 160, 320, 32, 128, 128),
           ("inception5a", 832, 256, 160, 320, 32, 128, 128),
           ("inception5b", 832, 384, 192, 384, 48, 128, 128)]

    def __init__(self, classes):
        super().__init__()
        self.conv1 = _TBasicConv(3, 64, kernel_size=7, stride=2, padding=3)
        self.conv2 = _TBasicConv(64, 64, kernel_size=1)
        self.conv3 = _TBasicConv(64, 192, kernel_size=3, padding=1)
        for name, *args in self.CFG:
            setattr(self, name, _TInception(*args))
        self.fc = tnn.Linear(1024, classes)

    def forward(self, x):
        pool = lambda t, k=3: tnn.functional.max_pool2d(t, k, 2, ceil_mode=True)  # noqa: E731
        x = pool(self.conv1(x))
        x = pool(self.conv3(self.conv2(x)))
        x = pool(self.inception3b(self.inception3a(x)))
        for n in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, "inception" + n)(x)
        x = pool(x, 2)
        x = self.inception5b(self.inception5a(x))
        return self.fc(x.mean((2, 3)))


def test_torch_googlenet_weights_load_and_agree():
    torch.manual_seed(1)
    # 61x61: odd sizes exercise the ceil-mode pooling of every stage
    _load_and_compare(_TGoogLeNet(6), M.googlenet(num_classes=6), (3, 61, 61))


class _TDenseLayer(tnn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = tnn.BatchNorm2d(cin)
        self.conv1 = tnn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = tnn.BatchNorm2d(bn_size * growth)
        self.conv2 = tnn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats):
        x = torch.cat(feats, 1)
        return self.conv2(torch.relu(self.norm2(self.conv1(torch.relu(self.norm1(x))))))


class _TDenseBlock(tnn.ModuleDict):
    def __init__(self, n, cin, growth, bn_size):
        super().__init__()
        for i in range(n):
            self[f"denselayer{i + 1}"] = _TDenseLayer(cin + i * growth, growth, bn_size)

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class _TDenseNet(tnn.Module):
    """torchvision.models.DenseNet's module tree (features.*, classifier), written out."""

    def __init__(self, growth, blocks, init, bn_size, classes):
        super().__init__()
        f = tnn.Sequential()
        f.add_module("conv0", tnn.Conv2d(3, init, 7, 2, 3, bias=False))
        f.add_module("norm0", tnn.BatchNorm2d(init))
        f.add_module("relu0", tnn.ReLU())
        f.add_module("pool0", tnn.MaxPool2d(3, 2, 1))
        c = init
        for i, n in enumerate(blocks):
            f.add_module(f"denseblock{i + 1}", _TDenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                t = tnn.Sequential()
                t.add_module("norm", tnn.BatchNorm2d(c))
                t.add_module("relu", tnn.ReLU())
                t.add_module("conv", tnn.Conv2d(c, c // 2, 1, bias=False))
                t.add_module("pool", tnn.AvgPool2d(2, 2))
                f.add_module(f"transition{i + 1}", t)
                c //= 2
        f.add_module("norm5", tnn.BatchNorm2d(c))
        self.features = f
        self.classifier = tnn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)).mean((2, 3)))


def test_torch_densenet121_weights_load_and_agree():
    torch.manual_seed(2)
    ref = _TDenseNet(4, (6, 12, 24, 16), 8, 2, 5)
    model = M.densenet121(num_classes=5, growth_rate=4, num_init_features=8, bn_size=2)
    _load_and_compare(ref, model, (3, 45, 45))
