"""cnnfast.onnx.load: PyTorch-exported CNNs and hand-built ONNX graphs, compared with PyTorch
and onnxruntime at 1e-4 relative on random inputs; gradients of imported models against
PyTorch's; clear errors for unsupported ops, malformed files and unsupported opsets; the CLI."""
import io
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnfast  # noqa: E402
from helpers import assert_close, assert_nontrivial, numerical_grad  # noqa: E402
import cnnfast.onnx as co  # noqa: E402
from cnnfast.onnx import UnsupportedOnnxError  # noqa: E402
from cnnfast.onnx.cli import main as cli_main  # noqa: E402

nn = torch.nn
F = torch.nn.functional
RTOL = 1e-4
R4 = ["n", "c", "h", "w"]  # an output of rank 4 whose sizes shape inference cannot tell


# ---- helpers ---------------------------------------------------------------------------------

def torch_onnx(model, *xs, opset=17, **kw) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(xs), f, dynamo=False, opset_version=opset, **kw)
    return f.getvalue()


def rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def assert_rel(got, ref, rtol=RTOL):
    assert np.abs(np.asarray(ref)).max() > 0, "a comparison of zeros tests nothing"
    err = rel_err(got, ref)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def run_cnnfast(data, *xs):
    m = co.load(data)
    with cnnfast.no_grad():
        out = m(*xs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def run_ort(data, *xs):
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), xs)})


def graph(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    """A model from (name, shape) inputs/outputs (float32 unless the shape is (name, shape, dtype))."""
    def vi(spec):
        name, shape, *dt = spec
        return helper.make_tensor_value_info(name, dt[0] if dt else TensorProto.FLOAT, shape)
    g = helper.make_graph(nodes, "g", [vi(i) for i in inputs], [vi(o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 18 else 9
    if any(o[1] is None for o in outputs):  # let ONNX's shape inference declare the output shapes
        m = onnx.shape_inference.infer_shapes(m)
    return m.SerializeToString()


def vs_ort(data, *xs, rtol=RTOL):
    got, ref = run_cnnfast(data, *xs), run_ort(data, *xs)
    for g, r in zip(got, ref):
        assert_rel(g, r, rtol)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def vs_torch(model, *xs, opset=17, rtol=RTOL):
    model.eval()
    data = torch_onnx(model, *[torch.from_numpy(x) for x in xs], opset=opset)
    with torch.no_grad():
        ref = model(*[torch.from_numpy(x) for x in xs])
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = run_cnnfast(data, *xs)
    for g, r in zip(got, ref):
        assert_rel(g, r.numpy(), rtol)
    return data


def randomize_norm_stats(model):
    """Non-trivial running statistics and affine parameters, so batch norm is really tested."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)):
            with torch.no_grad():
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


# ---- PyTorch-exported networks ------------------------------------------------------------------

class LeNet5(nn.Module):
    def __init__(self, classic=True):
        super().__init__()
        act, pool = (nn.Tanh, nn.AvgPool2d) if classic else (nn.ReLU, nn.MaxPool2d)
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5), act(), pool(2, 2), nn.Conv2d(6, 16, 5), act(), pool(2, 2))
        self.classifier = nn.Sequential(nn.Linear(400, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + idt)


class ResNet18(nn.Module):
    """ResNet-18's shape (7x7/2 stem, max-pool, 4 stages of 2 basic blocks, global pool, FC), narrow."""

    def __init__(self, w=8, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], w
        for i, c in enumerate([w, 2 * w, 4 * w, 8 * w]):
            layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * w, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = F.adaptive_avg_pool2d(self.layers(x), 1)
        return self.fc(torch.flatten(x, 1))


class ConvZoo(nn.Module):
    """Grouped, depthwise and dilated convolutions, asymmetric padding (a Pad node), 1-D and 3-D."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.strided = nn.Conv2d(8, 6, (3, 2), stride=(3, 1), padding=(1, 0), dilation=(1, 2))
        self.c1 = nn.Conv1d(6, 4, 3, padding=1, dilation=1)

    def forward(self, x):
        x = F.pad(x, (1, 2, 0, 3))  # left, right, top, bottom: asymmetric
        x = F.relu(self.grouped(x))
        x = self.depthwise(x)
        x = F.pad(x, (2, 1, 1, 0), mode="reflect")
        x = F.leaky_relu(self.strided(x), 0.2)
        x = F.pad(x, (1, 1, 2, 2), mode="replicate")
        return self.c1(x.flatten(2))


class TransposedZoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.t1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(6, 4, 4, stride=3, padding=2, groups=2, dilation=2, output_padding=1)
        self.t3 = nn.ConvTranspose1d(4, 3, 5, stride=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        x = F.elu(self.t1(x))
        x = self.up(self.t2(x))
        return torch.sigmoid(self.t3(x.mean(3)))


class NormZoo(nn.Module):
    """Every norm, each where torch cannot fold it into a convolution."""

    def __init__(self, lrn_size=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.gn = nn.GroupNorm(4, 8)
        self.ln = nn.LayerNorm([8, 6, 7])
        self.ln_last = nn.LayerNorm(7)
        self.lrn = nn.LocalResponseNorm(lrn_size, alpha=1e-2, beta=0.75, k=2.0)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc = nn.Linear(8 * 6 * 7, 5)

    def forward(self, x):
        x = self.bn(F.relu(self.conv(x)))
        x = self.gn(self.inorm(x))
        x = self.ln_last(self.ln(x))
        x = self.lrn(x)
        return F.log_softmax(self.bn1d(self.fc(x.flatten(1))), dim=1)


class MobileBlock(nn.Module):
    """Depthwise-separable blocks with the activations of MobileNet v1-v3 (ReLU6 is a Clip)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Hardswish(), nn.Conv2d(8, 12, 1), nn.PReLU(12))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(12, 4, 1), nn.PReLU(), nn.Conv2d(4, 12, 1),
                                nn.Hardsigmoid())
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = self.dw(self.stem(x))
        x = x * self.se(x)
        return self.head(x.mean((2, 3)))


class PoolZoo(nn.Module):
    def forward(self, x):
        a = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        b = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        c = F.avg_pool2d(x, (2, 3), (2, 2), (1, 1), count_include_pad=True)
        d = F.max_pool2d(x, 2, 1, dilation=2)
        g = F.adaptive_max_pool2d(x, 1) + F.adaptive_avg_pool2d(x, 1)
        out = torch.cat([a.flatten(1), b.flatten(1), c.flatten(1), d.flatten(1), g.flatten(1)], 1)
        return torch.softmax(out * 0.5 - 0.1, dim=1) / 2.0


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("classic", [True, False])
def test_lenet5_matches_torch(opset, classic):
    torch.manual_seed(0)
    vs_torch(LeNet5(classic), randn(3, 1, 32, 32), opset=opset)


@pytest.mark.parametrize("opset", [17])
def test_resnet18_shaped_network_matches_torch(opset):
    torch.manual_seed(0)
    vs_torch(randomize_norm_stats(ResNet18()), randn(2, 3, 40, 37), opset=opset)


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_grouped_dilated_asymmetric_convolutions_match_torch(opset):
    torch.manual_seed(0)
    vs_torch(ConvZoo(), randn(2, 4, 11, 13), opset=opset)


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_transposed_convolutions_and_upsampling_match_torch(opset):
    torch.manual_seed(0)
    vs_torch(TransposedZoo(), randn(1, 4, 5, 7), opset=opset)


@pytest.mark.parametrize("opset,lrn_size", [(13, 5), (17, 4), (18, 5), (20, 4)])
def test_every_norm_matches_torch(opset, lrn_size):
    torch.manual_seed(0)
    vs_torch(randomize_norm_stats(NormZoo(lrn_size)), randn(3, 3, 6, 7), opset=opset)


@pytest.mark.parametrize("opset", [13, 17])
def test_mobilenet_style_block_matches_torch(opset):
    torch.manual_seed(0)
    model = MobileBlock()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)
    vs_torch(model, randn(2, 3, 15, 14) * 3, opset=opset)


@pytest.mark.parametrize("opset", [13, 20])
def test_pooling_and_activations_match_torch(opset):
    vs_torch(PoolZoo(), randn(2, 3, 10, 11), opset=opset)


def test_batch_size_follows_the_input():
    torch.manual_seed(0)
    model = LeNet5().eval()
    data = torch_onnx(model, torch.zeros(2, 1, 32, 32), input_names=["x"], dynamic_axes={"x": {0: "n"}})
    x = randn(5, 1, 32, 32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert_rel(run_cnnfast(data, x)[0], ref)


def test_gradients_of_an_imported_model_match_torch():
    """Initializers become Parameters: backward through the imported graph gives torch's gradients."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, groups=1)
            self.ln = nn.LayerNorm([4, 4, 4])
            self.fc = nn.Linear(64, 5)

        def forward(self, x):
            return self.fc(torch.tanh(self.ln(self.conv(x))).flatten(1))

    net = randomize_norm_stats(Net())
    x = randn(2, 3, 7, 8)
    data = torch_onnx(net, torch.from_numpy(x), opset=17)
    r = randn(2, 5, seed=1)
    xt = torch.from_numpy(x).requires_grad_(True)
    (net(xt) * torch.from_numpy(r)).sum().backward()

    m = co.load(data)
    xc = cnnfast.tensor(x, requires_grad=True)
    (m(xc) * cnnfast.tensor(r)).sum().backward()
    assert_rel(xc.grad.numpy(), xt.grad.numpy())
    params = dict(m.named_parameters())
    checked = 0
    for name, p in net.named_parameters():
        key = next(k for k, v in m.onnx_names.items() if v == name)
        assert_rel(params[key].grad.numpy(), p.grad.numpy())
        checked += 1
    assert checked == 6


def test_imported_model_fine_tunes():
    torch.manual_seed(0)
    model = LeNet5(classic=False)
    m = co.load(torch_onnx(model, torch.zeros(8, 1, 32, 32)))
    assert len(list(m.parameters())) == 10
    x = cnnfast.tensor(randn(8, 1, 32, 32))
    y = cnnfast.tensor(np.arange(8) % 10)
    opt = cnnfast.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    losses = []
    for _ in range(30):
        loss = cnnfast.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # The state dict round-trips through the sanitized initializer names.
    sd = m.state_dict()
    assert set(sd) == set(m.onnx_names)
    assert m.onnx_names["features_0_weight"] == "features.0.weight"


def test_batch_norm_follows_train_and_eval():
    x = randn(4, 3, 5, 5)
    inits = [("s", np.ones(3, np.float32)), ("b", np.zeros(3, np.float32)),
             ("m", np.full(3, 0.5, np.float32)), ("v", np.full(3, 4.0, np.float32))]
    data = graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-5)],
                 [("x", [4, 3, 5, 5])], [("y", [4, 3, 5, 5])], inits)
    m = co.load(data)
    assert not m.training
    assert_rel(m(x).detach().numpy(), (x - 0.5) / np.sqrt(4.0 + 1e-5))
    m.train()
    y = m(x).detach().numpy()
    assert np.abs(y.mean(axis=(0, 2, 3))).max() < 1e-5  # batch statistics in training mode
    assert not np.allclose(m.state_dict()["m"].numpy(), 0.5)  # running mean updated


# ---- hand-built graphs against onnxruntime --------------------------------------------------------

@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("size", [(9, 10), (8, 7)])
def test_conv_auto_pad(auto_pad, size):
    w = randn(6, 2, 4, 3, seed=1)
    data = graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad=auto_pad, strides=[2, 3], group=2)],
                 [("x", [1, 4, *size])], [("y", None)], [("w", w), ("b", randn(6, seed=2))])
    vs_ort(data, randn(1, 4, *size))


@pytest.mark.parametrize("opset", [13, 20])
def test_conv_explicit_asymmetric_pads_dilation_groups(opset):
    data = graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 0, 2, 3], dilations=[2, 1], group=3,
                                   strides=[1, 2], kernel_shape=[3, 3])],
                 [("x", [2, 6, 7, 9])], [("y", None)], [("w", randn(9, 2, 3, 3, seed=1))], opset=opset)
    vs_ort(data, randn(2, 6, 7, 9))


def test_conv_1d_and_3d():
    data = graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 2])],
                 [("x", [2, 3, 11])], [("y", None)], [("w", randn(4, 3, 3, seed=1))])
    vs_ort(data, randn(2, 3, 11))
    data = graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 1, 1, 0, 1], strides=[1, 2, 1])],
                 [("x", [1, 2, 5, 6, 5])], [("y", None)], [("w", randn(3, 2, 2, 3, 2, seed=1))])
    vs_ort(data, randn(1, 2, 5, 6, 5))


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2], pads=[1, 0, 0, 1]),
    dict(strides=[2, 3], output_padding=[1, 2], pads=[1, 1, 1, 1], dilations=[1, 2]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(strides=[3, 2], output_shape=[16, 11]),
    dict(strides=[3, 2], output_shape=[14, 12]),
    dict(strides=[2, 2], output_shape=[10, 12], auto_pad="SAME_UPPER"),
    dict(strides=[4, 2], auto_pad="SAME_LOWER"),  # stride above the kernel: the natural size, not in*stride
    dict(strides=[2, 2], group=2),
])
def test_conv_transpose_attributes(attrs):
    cin = 4
    w = randn(cin, 3, 3, 3, seed=1)
    data = graph([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)],
                 [("x", [2, cin, 5, 6])], [("y", None)], [("w", w), ("b", randn(3 * attrs.get("group", 1), seed=2))])
    vs_ort(data, randn(2, cin, 5, 6))


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1]),
    dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0], ceil_mode=1),
    dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3, 3], strides=[2, 3], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[1, 1], auto_pad="VALID"),
    dict(kernel_shape=[3, 2], strides=[3, 3], auto_pad="VALID", ceil_mode=1),
])
@pytest.mark.parametrize("pool", ["MaxPool", "AveragePool", "AveragePoolIncl"])
def test_pooling_pads_ceil_mode_count_include_pad(attrs, pool):
    extra = {}
    if pool == "AveragePoolIncl":
        pool, extra = "AveragePool", dict(count_include_pad=1)
    data = graph([helper.make_node(pool, ["x"], ["y"], **attrs, **extra)],
                 [("x", [2, 3, 9, 8])], [("y", None)])
    vs_ort(data, randn(2, 3, 9, 8))


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 1], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 0])])
def test_max_pool_indices_and_max_unpool(attrs):
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], **attrs)
    unpool = helper.make_node("MaxUnpool", ["p", "i", "shape"], ["u"], kernel_shape=attrs["kernel_shape"],
                              strides=attrs["strides"], pads=attrs["pads"])
    data = graph([pool, helper.make_node("Shape", ["x"], ["shape"]), unpool], [("x", [2, 3, 9, 10])],
                 [("p", R4), ("i", R4, TensorProto.INT64), ("u", R4)])
    x = randn(2, 3, 9, 10)
    got, ref = run_cnnfast(data, x), run_ort(data, x)
    assert_rel(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert_rel(got[2], ref[2])


def test_max_unpool_default_output_size():
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i"], ["u"], kernel_shape=[2, 2], strides=[2, 2])
    data = graph([pool, unpool], [("x", [1, 2, 6, 8])], [("u", R4)])
    vs_ort(data, randn(1, 2, 6, 8))


def lrn_reference(x, size, alpha, beta, bias):
    """ONNX's LRN: the window of channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    out = np.empty_like(x, dtype=np.float64)
    C = x.shape[1]
    for c in range(C):
        lo, hi = max(0, c - (size - 1) // 2), min(C - 1, c + -(-(size - 1) // 2))
        sq = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(1)
        out[:, c] = x[:, c] / (bias + alpha / size * sq) ** beta
    return out


@pytest.mark.parametrize("size", [3, 4, 5, 6])
def test_lrn_odd_and_even_sizes(size):
    data = graph([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.05, beta=0.6, bias=1.5)],
                 [("x", [2, 7, 3, 4])], [("y", None)])
    x = randn(2, 7, 3, 4) * 2
    assert_rel(run_cnnfast(data, x)[0], lrn_reference(x, size, 0.05, 0.6, 1.5))
    if size % 2:  # onnxruntime implements odd sizes only
        vs_ort(data, x)


@pytest.mark.parametrize("opset", [18, 20])
def test_group_normalization(opset):
    data = graph([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-3)],
                 [("x", [2, 6, 4, 5])], [("y", [2, 6, 4, 5])],
                 [("s", np.array([0.5, 1.5, 2.0], np.float32)), ("b", np.array([0.1, -0.2, 0.3], np.float32))],
                 opset=opset)
    vs_ort(data, randn(2, 6, 4, 5))


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_layer_normalization(axis):
    shape = [2, 3, 4, 5]
    norm = shape[axis:]
    data = graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=axis, epsilon=1e-4)],
                 [("x", shape)], [("y", None)], [("s", randn(*norm, seed=1)), ("b", randn(*norm, seed=2))])
    vs_ort(data, randn(*shape))


def test_instance_normalization():
    data = graph([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
                 [("x", [2, 3, 5, 4])], [("y", None)], [("s", randn(3, seed=1)), ("b", randn(3, seed=2))])
    vs_ort(data, randn(2, 3, 5, 4))


@pytest.mark.parametrize("attrs,b_shape,c_shape", [
    (dict(transB=1), (4, 6), (4,)),
    (dict(transA=1, alpha=0.5, beta=2.0), (6, 4), (1, 4)),
    (dict(transA=1, transB=1, beta=0.3), (4, 6), (3, 4)),
    (dict(alpha=1.5), (6, 4), ()),
])
def test_gemm_attributes(attrs, b_shape, c_shape):
    a_shape = (6, 3) if attrs.get("transA") else (3, 6)
    data = graph([helper.make_node("Gemm", ["a", "b", "c"], ["y"], **attrs)], [("a", list(a_shape))],
                 [("y", None)], [("b", randn(*b_shape, seed=1)), ("c", np.asarray(randn(*c_shape, seed=2)))])
    vs_ort(data, randn(*a_shape))


def test_matmul_batched_and_2d():
    data = graph([helper.make_node("MatMul", ["a", "w"], ["t"]), helper.make_node("MatMul", ["t", "v"], ["y"])],
                 [("a", [2, 3, 4, 5])], [("y", None)], [("w", randn(5, 6, seed=1)), ("v", randn(2, 3, 6, 2, seed=2))])
    vs_ort(data, randn(2, 3, 4, 5))


@pytest.mark.parametrize("coord,nearest,scales,sizes", [
    ("asymmetric", "floor", [1, 1, 2, 2], None),
    ("half_pixel", "round_prefer_floor", [1, 1, 1.5, 0.6], None),
    ("align_corners", "round_prefer_ceil", None, [2, 3, 7, 4]),
    ("pytorch_half_pixel", "ceil", None, [2, 3, 1, 11]),
    ("asymmetric", "round_prefer_ceil", [1, 1, 3, 2.5], None),
    ("half_pixel_symmetric", "round_prefer_floor", [1, 1, 1.7, 2.3], None),
])
def test_resize_nearest_modes(coord, nearest, scales, sizes):
    inputs = ["x", "", "scales"] if scales else ["x", "", "", "sizes"]
    inits = [("scales", np.array(scales, np.float32))] if scales else [("sizes", np.array(sizes, np.int64))]
    data = graph([helper.make_node("Resize", inputs, ["y"], mode="nearest", coordinate_transformation_mode=coord,
                                   nearest_mode=nearest)],
                 [("x", [2, 3, 5, 6])], [("y", None)], inits, opset=19)
    vs_ort(data, randn(2, 3, 5, 6))


@pytest.mark.parametrize("mode,pads,opset", [
    ("constant", [0, 0, 1, 2, 0, 0, 3, 0], 13),
    ("reflect", [0, 0, 2, 1, 0, 0, 1, 3], 13),
    ("edge", [0, 1, 1, 0, 0, 0, 2, 2], 17),
    ("constant", [0, 0, -1, 2, 0, 0, 1, -2], 13),
    ("wrap", [0, 0, 2, 1, 0, 0, 3, 2], 19),
])
def test_pad_modes(mode, pads, opset):
    data = graph([helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)], [("x", [2, 3, 5, 6])], [("y", None)],
                 [("p", np.array(pads, np.int64)), ("v", np.array(0.7 if mode == "constant" else 0, np.float32))],
                 opset=opset)
    vs_ort(data, randn(2, 3, 5, 6))


def test_pad_with_axes_input_opset18():
    data = graph([helper.make_node("Pad", ["x", "p", "", "axes"], ["y"], mode="reflect")], [("x", [2, 3, 5, 6])],
                 [("y", None)], [("p", np.array([1, 2, 2, 1], np.int64)), ("axes", np.array([-1, 2], np.int64))],
                 opset=18)
    vs_ort(data, randn(2, 3, 5, 6))


def test_shape_ops_reshape_flatten_transpose_concat():
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r"]),                  # 0 copies, -1 infers
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Flatten", ["x"], ["f"], axis=2),
        helper.make_node("Reshape", ["f", "s2"], ["f2"]),
        helper.make_node("Concat", ["t", "f2"], ["c"], axis=1),
        helper.make_node("Shape", ["c"], ["sh"]),
        helper.make_node("Gather", ["sh", "scalar0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["s3"], axis=0),
        helper.make_node("Reshape", ["c", "s3"], ["y"]),
        helper.make_node("Softmax", ["y"], ["z"], axis=0),
    ]
    inits = [("s1", np.array([0, 3, -1], np.int64)), ("s2", np.array([2, -1, 3], np.int64)),
             ("zero", np.array([0], np.int64)), ("scalar0", np.array(0, np.int64)),
             ("minus1", np.array([-1], np.int64))]
    data = graph(nodes, [("x", [2, 3, 4, 5])], [("z", ["a", "b"])], inits)
    vs_ort(data, randn(2, 3, 4, 5))


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_opset_dependent_inputs_reduce_squeeze_dropout_clip(opset):
    """ReduceMean's axes (attribute before 18, input from 18), Squeeze/Unsqueeze axes and Dropout's ratio inputs."""
    if opset < 18:
        red = helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1)
    else:
        red = helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1)
    nodes = [red,
             helper.make_node("Squeeze", ["m", "axes"], ["s"]),
             helper.make_node("Unsqueeze", ["s", "one"], ["u"]),
             helper.make_node("Dropout", ["u", "ratio"], ["d"]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["c"]),
             helper.make_node("Sub", ["x", "c"], ["xc"]),
             helper.make_node("Pow", ["xc", "two"], ["p"]),
             helper.make_node("ReduceSum", ["p", "axes"], ["y"], keepdims=0),
             helper.make_node("Sqrt", ["y"], ["z"])]
    inits = [("axes", np.array([2, 3], np.int64)), ("one", np.array([2, 3], np.int64)),
             ("ratio", np.array(0.3, np.float32)), ("lo", np.array(-0.2, np.float32)),
             ("hi", np.array(0.25, np.float32)), ("two", np.array(2.0, np.float32))]
    vs_ort(graph(nodes, [("x", [2, 3, 4, 5])], [("z", [2, 3])], inits, opset=opset), randn(2, 3, 4, 5))


@pytest.mark.parametrize("op,attrs", [("Relu", {}), ("LeakyRelu", dict(alpha=0.3)), ("Elu", dict(alpha=0.7)),
                                      ("Sigmoid", {}), ("Tanh", {}), ("Softmax", dict(axis=1)),
                                      ("LogSoftmax", {}), ("Identity", {}), ("Dropout", {})])
def test_activations(op, attrs):
    data = graph([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", [2, 3, 4, 5])], [("y", None)])
    vs_ort(data, randn(2, 3, 4, 5) * 3)


def test_arithmetic_broadcasting_and_global_pools():
    nodes = [helper.make_node("Add", ["x", "a"], ["t1"]), helper.make_node("Mul", ["t1", "m"], ["t2"]),
             helper.make_node("Div", ["t2", "d"], ["t3"]), helper.make_node("Sub", ["k", "t3"], ["t4"]),
             helper.make_node("GlobalAveragePool", ["t4"], ["g1"]), helper.make_node("GlobalMaxPool", ["t4"], ["g2"]),
             helper.make_node("Add", ["g1", "g2"], ["y"])]
    inits = [("a", randn(3, 1, 1, seed=1)), ("m", randn(5, seed=2)), ("d", np.float32(1.5) + np.abs(randn(4, 1))),
             ("k", np.array(0.5, np.float32))]
    vs_ort(graph(nodes, [("x", [2, 3, 4, 5])], [("y", None)], inits), randn(2, 3, 4, 5))


# ---- gradients through the converters that are not plain cnnfast.functional calls ------------------

D = TensorProto.DOUBLE
FD_CASES = {
    "pad_reflect": ([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
                    [("p", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64))]),
    "pad_edge_crop": ([helper.make_node("Pad", ["x", "p"], ["y"], mode="edge")],
                      [("p", np.array([0, 0, -1, 2, 0, 1, 1, -2], np.int64))]),
    "resize_nearest": ([helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="nearest",
                                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                       [("s", np.array([1, 2, 7, 8], np.int64))]),
    "max_pool_asymmetric": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 0, 2, 1], ceil_mode=1)], []),
    "avg_pool_asymmetric": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2],
                                              pads=[0, 1, 1, 0], count_include_pad=0)], []),
    "lrn_even": ([helper.make_node("LRN", ["x"], ["y"], size=2, alpha=0.5, beta=0.75, bias=1.0)], []),
    "group_norm_per_group": ([helper.make_node("GroupNormalization", ["x", "sc", "b"], ["y"], num_groups=1)],
                             [("sc", np.array([1.5])), ("b", np.array([0.3]))]),
    "gemm_transposed": ([helper.make_node("Flatten", ["x"], ["f"]),
                         helper.make_node("Gemm", ["f", "w", "c"], ["y"], transA=0, transB=0, alpha=0.7, beta=1.3)],
                        [("w", np.random.default_rng(5).standard_normal((40, 3))), ("c", np.array([0.1, 0.2, 0.3]))]),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_gradients_match_finite_differences(case):
    nodes, inits = FD_CASES[case]
    opset = 18 if case == "group_norm_per_group" else 17
    out_shape = [1, 2, 4, 5] if case == "group_norm_per_group" else None
    data = graph(nodes, [("x", [1, 2, 4, 5], D)], [("y", out_shape, D)], inits, opset=opset)
    m = co.load(data)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 4, 5))
    xt = cnnfast.tensor(x.copy(), requires_grad=True)
    y = m(xt)
    g = rng.standard_normal(y.shape)
    y.backward(cnnfast.tensor(g))

    def f(*_):
        with cnnfast.no_grad():
            return m(x).numpy()

    (num,) = numerical_grad(f, [x], g)
    assert_nontrivial(num)
    assert_close(xt.grad.numpy(), num, rtol=1e-5, atol=1e-7, what=f"{case}: input")
    for name, p in m.named_parameters():
        (num,) = numerical_grad(f, [p._array], g)
        assert_nontrivial(num)
        assert_close(p.grad.numpy(), num, rtol=1e-5, atol=1e-7, what=f"{case}: {name}")


# ---- errors ------------------------------------------------------------------------------------

def test_unsupported_op_names_the_op_and_the_node():
    data = graph([helper.make_node("Relu", ["x"], ["r"], name="first"),
                  helper.make_node("Selu", ["r"], ["y"], name="my_selu")], [("x", [1, 2])], [("y", None)])
    with pytest.raises(UnsupportedOnnxError, match=r"unsupported ONNX op 'Selu' at node 'my_selu' \(supported: .*Conv"):
        co.load(data)
    assert issubclass(UnsupportedOnnxError, NotImplementedError)


def test_unsupported_attribute_values_fail_at_load():
    resize = graph([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="area", name="up")],
                   [("x", [1, 1, 2, 2])], [("y", None)], [("s", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(UnsupportedOnnxError, match=r"'Resize' at node 'up': mode 'area'"):
        co.load(resize)
    crop = graph([helper.make_node("Resize", ["x", "", "s"], ["y"], coordinate_transformation_mode="tf_crop_and_resize",
                                   name="crop")], [("x", [1, 1, 2, 2])], [("y", None)],
                 [("s", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(UnsupportedOnnxError, match="tf_crop_and_resize"):
        co.load(crop)


def test_batchnorm_training_mode_matches_onnx_reference():
    """training_mode=1: batch statistics, and the running statistics blended with the biased
    batch variance come out as outputs (issue 20; it used to be refused)."""
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(3)
    inits = [("s", rng.uniform(0.5, 1.5, 3).astype(np.float32)), ("b", rng.normal(0, 1, 3).astype(np.float32)),
             ("m", rng.normal(0, 1, 3).astype(np.float32)), ("v", rng.uniform(0.5, 1.5, 3).astype(np.float32))]
    bn = graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                                 momentum=0.8, epsilon=1e-3, name="bn")],
               [("x", [2, 3, 5, 7])], [("y", None), ("rm", None), ("rv", None)], inits)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32) * 2 + 1
    want = ReferenceEvaluator(bn).run(None, {"x": x})
    with cnnfast.no_grad():
        got = co.load(bn)(cnnfast.tensor(x))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy() if hasattr(g, "numpy") else np.asarray(g), w, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want[2], inits[3][1])  # the statistics really moved


def test_unknown_domain_is_refused():
    node = helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft", name="fc")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOnnxError, match="com.microsoft.FusedConv' at node 'fc'"):
        co.load(m)


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff\xfe" * 10, b"not an onnx file at all"])
def test_malformed_file_names_the_file(tmp_path, content):
    p = tmp_path / "broken.onnx"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.onnx: malformed ONNX model"):
        co.load(p)


def test_truncated_and_invalid_graphs(tmp_path):
    good = graph([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 2])], [("y", None)],
                 [("w", randn(64, 64))])
    p = tmp_path / "cut.onnx"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.onnx: malformed ONNX model"):
        co.load(p)
    dangling = graph([helper.make_node("Relu", ["nowhere"], ["y"])], [("x", [1, 2])], [("y", None)])
    with pytest.raises(ValueError, match="malformed ONNX model"):
        co.load(dangling)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        co.load(tmp_path / "missing.onnx")


@pytest.mark.parametrize("opset", [12, 21])
def test_opset_outside_13_to_20_is_refused(opset):
    data = graph([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 2])], [("y", None)], opset=opset)
    with pytest.raises(ValueError, match=f"opset {opset} is not supported .*13 to 20"):
        co.load(data)


def _external_model(tmp_path, location):
    w = randn(4, 3)
    tensor = numpy_helper.from_array(w, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        e = tensor.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [tensor])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w


def test_external_data_is_read_only_from_the_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    m, w = _external_model(tmp_path, "weights.bin")
    (folder / "weights.bin").write_bytes(w.tobytes())
    (folder / "m.onnx").write_bytes(m.SerializeToString())
    x = randn(2, 4)
    assert_rel(co.load(folder / "m.onnx")(x).detach().numpy(), x @ w)

    (tmp_path / "secret.bin").write_bytes(w.tobytes())
    m2, _ = _external_model(tmp_path, "../secret.bin")
    (folder / "escape.onnx").write_bytes(m2.SerializeToString())
    with pytest.raises(ValueError, match="outside the model's folder"):
        co.load(folder / "escape.onnx")
    with pytest.raises(ValueError, match="external file"):
        co.load(m.SerializeToString())


def test_wrong_input_dtype_and_shape():
    m = co.load(graph([helper.make_node("Relu", ["x"], ["y"])], [("x", ["n", 3])], [("y", None)]))
    with pytest.raises(TypeError, match="input 'x': expected dtype float32, got float64"):
        m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="input 'x': expected size 3 at dimension 1"):
        m(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="missing input"):
        m()


def test_runtime_error_names_the_node():
    data = graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")], [("x", [2, 3])],
                 [("y", [4, "k"])], [("s", np.array([4, -1], np.int64))])
    with pytest.raises(ValueError, match="node 'bad_reshape' \\(Reshape\\)"):
        co.load(data)(randn(2, 3))


# ---- the command line ------------------------------------------------------------------------------

def test_cli_summary_and_check(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "lenet.onnx"
    path.write_bytes(torch_onnx(LeNet5().eval(), torch.zeros(1, 1, 32, 32)))
    assert cli_main([str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "opset: 17" in out and "parameters: 61,706" in out and "Conv x2" in out and "1x6x28x28" in out
    assert cli_main([str(path), "--check", "1,1,32,32"]) == 0
    assert "match" in capsys.readouterr().out


def test_cnnfast_command_routes_import(tmp_path, capsys):
    from cnnfast.cli import main as cnnfast_main
    path = tmp_path / "relu.onnx"
    path.write_bytes(graph([helper.make_node("Relu", ["x"], ["y"])], [("x", ["n", 3])], [("y", None)]))
    assert cnnfast_main(["import", str(path), "--summary"]) == 0
    assert "Relu x1" in capsys.readouterr().out
    assert cnnfast_main(["import", "--help"]) == 0
    assert "--check INPUT_SHAPE" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert cli_main([str(bad)]) == 2
    assert "bad.onnx: malformed ONNX model" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "none.onnx")]) == 2
    good = tmp_path / "relu.onnx"
    good.write_bytes(graph([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3])], [("y", None)]))
    assert cli_main([str(good), "--check", "1,x"]) == 2
    assert "--check" in capsys.readouterr().err
    assert cli_main([str(good), "--check", "1,4"]) == 2
    assert cli_main([]) == 2
    assert os.path.exists(good)


@pytest.mark.parametrize("opset", [13, 18])
def test_split_sizes_input_and_num_outputs(opset):
    if opset == 18:
        split = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)
        inits = []
    else:
        split = helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)
        inits = [("s", np.array([1, 3, 3], np.int64))]
    nodes = [split, helper.make_node("Concat", ["c", "a", "b"], ["y"], axis=1)]
    vs_ort(graph(nodes, [("x", [2, 7, 3])], [("y", [2, 7, 3])], inits, opset=opset), randn(2, 7, 3))
