"""Weights from a PyTorch model with torchvision's ResNet layout load into cnnfast's
ResNet as they are, and both give the same outputs (eval mode)."""
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
