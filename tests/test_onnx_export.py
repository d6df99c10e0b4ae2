"""cnnfast.onnx.export: cnnfast models written as ONNX run in onnxruntime with the same outputs
(1e-4 relative on random inputs), for every architecture in cnnfast.models and every op the
exporter knows; dynamic batch; PyTorch -> ONNX -> cnnfast -> ONNX round trip; clear errors."""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cnnfast  # noqa: E402
import cnnfast.functional as F  # noqa: E402
import cnnfast.onnx as co  # noqa: E402
from cnnfast import nn  # noqa: E402
from cnnfast.onnx import ExportError  # noqa: E402

RTOL = 1e-4


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_rel(got, ref, rtol=RTOL):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.abs(ref).max() > 0, "a comparison of zeros tests nothing"
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def cnnfast_out(model, *xs):
    with cnnfast.no_grad():
        out = model(*[cnnfast.tensor(x) for x in xs])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def ort_out(path, *xs):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), xs)})


def export_and_compare(model, xs, tmp_path, opset=17, **kw):
    model.eval()
    path = tmp_path / "m.onnx"
    proto = co.export(model, xs if len(xs) > 1 else xs[0], path, opset=opset, **kw)
    for g, r in zip(ort_out(path, *xs), cnnfast_out(model, *xs)):
        assert_rel(g, r)
    return proto, path


def perturb_norm_stats(model):
    rng = np.random.default_rng(3)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.data[...] = rng.normal(0, 0.2, b.shape)
        elif name.endswith("running_var"):
            b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    for name, p in model.named_parameters():
        if "bn" in name or "norm" in name or name.startswith("features.1."):
            p.data[...] = p.data + rng.normal(0, 0.1, p.shape).astype(p.dtype)
    return model


# ---- whole architectures ---------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 17, 20])
def test_lenet5(tmp_path, opset):
    cnnfast.manual_seed(0)
    export_and_compare(cnnfast.models.lenet5(), [randn(3, 1, 32, 32)], tmp_path, opset)


@pytest.mark.parametrize("opset", [13, 20])
def test_resnet18(tmp_path, opset):
    cnnfast.manual_seed(0)
    model = perturb_norm_stats(cnnfast.models.resnet18(num_classes=7, base_width=8))
    proto, _ = export_and_compare(model, [randn(2, 3, 37, 40)], tmp_path, opset)
    # Initializers keep the state-dict names; nodes are named after the module that ran them.
    init_names = {i.name for i in proto.graph.initializer}
    assert {"conv1.weight", "layer1.0.bn1.running_mean", "fc.bias"} <= init_names
    assert any(n.name.startswith("layer2.0.downsample.0/Conv") for n in proto.graph.node)


@pytest.mark.parametrize("name,kw,shape", [
    ("alexnet", dict(num_classes=5, width=0.1, hidden=32), (1, 3, 80, 80)),
    ("vgg11_bn", dict(num_classes=5, width=0.1, hidden=16), (2, 3, 32, 32)),
    ("googlenet", dict(num_classes=5), (1, 3, 48, 48)),
    ("unet", dict(base_width=4, depth=2), (2, 1, 16, 20)),
])
def test_other_architectures(tmp_path, name, kw, shape):
    cnnfast.manual_seed(0)
    export_and_compare(cnnfast.models.get_model(name, **kw), [randn(*shape)], tmp_path)


def test_densenet(tmp_path):
    cnnfast.manual_seed(0)
    model = cnnfast.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=5)
    export_and_compare(perturb_norm_stats(model), [randn(2, 3, 32, 32)], tmp_path)


def test_two_inputs_two_outputs(tmp_path):
    cnnfast.manual_seed(0)
    model = cnnfast.models.siamese(embedding_dim=8, widths=(4, 4, 4))
    proto, _ = export_and_compare(model, [randn(2, 1, 32, 32), randn(2, 1, 32, 32, seed=1)], tmp_path,
                                  input_names=["a", "b"], output_names=["ea", "eb"])
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == ["ea", "eb"]


def test_dynamic_batch(tmp_path):
    cnnfast.manual_seed(0)
    model = perturb_norm_stats(cnnfast.models.resnet18(num_classes=4, base_width=4)).eval()
    path = tmp_path / "r.onnx"
    co.export(model, randn(2, 3, 32, 32), path)
    x = randn(5, 3, 32, 32, seed=2)
    assert_rel(ort_out(path, x)[0], cnnfast_out(model, x)[0])
    co.export(model, randn(2, 3, 32, 32), path, dynamic_batch=False)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 32]


def test_mode_is_restored_and_model_untouched(tmp_path):
    cnnfast.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    co.export(model, randn(2, 1, 6, 6), tmp_path / "m.onnx")
    assert model.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    model.eval()
    assert_rel(ort_out(tmp_path / "m.onnx", randn(3, 1, 6, 6))[0], cnnfast_out(model, randn(3, 1, 6, 6))[0])


# ---- every op family ---------------------------------------------------------------------------

class OpZoo(nn.Module):
    def __init__(self, lrn_size):
        super().__init__()
        self.grouped = nn.Conv2d(4, 6, 3, padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2)
        self.strided = nn.Conv2d(6, 6, (2, 3), stride=(2, 3), padding="same")
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm([8, 10])
        self.lrn = nn.LocalResponseNorm(lrn_size, alpha=0.01, k=1.5)
        self.conv1d = nn.Conv1d(4, 3, 3, padding=2, dilation=2)
        self.fc = nn.Linear(5, 3)
        self.bn1d = nn.BatchNorm1d(3)

    def forward(self, x):
        x = F.leaky_relu(self.grouped(x), 0.1)
        x = F.elu(self.strided(x))
        x = self.bn(F.silu(self.up(x)))
        x = self.lrn(self.ln(self.gn(self.inorm(x))))
        p, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        x = x + F.max_unpool2d(p, idx, 2, 2, output_size=x.shape[2:])
        a = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        b = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        c = F.adaptive_avg_pool2d(x, (3, 5))                 # uneven windows
        g = F.adaptive_max_pool2d(x, 1) * F.adaptive_avg_pool2d(x, 1)
        s = F.sigmoid(a) + F.tanh(b) - c.mean(dim=(2, 3), keepdim=True) + g
        s = s.flatten(2)                                     # (N, 4, L)
        s = self.conv1d(s)                                   # (N, 3, L')
        t = s[:, :, 1:6]                                     # slice
        t = t * 2.0 - t.abs() / 3.0 + (-t).exp().clamp(max=2.0) + (t * t + 1.0).log()
        u = self.fc(t) ** 2                                  # linear on a 3-D input (MatMul path)
        v = cnnfast.cat([u, u.permute(0, 2, 1)[:, ::-1, :]], 1)  # (N, 6, 3), a reversed slice
        w = cnnfast.stack([v.sum(1), v.max(2).values.reshape(v.shape[0], 2, 3).sum(1)], 1)
        w = w.reshape(w.shape[0], -1) + v[:, 0, :].expand(2, 3).reshape(-1, 1)[:w.shape[0]].reshape(w.shape[0], 1)
        w = self.bn1d(w.reshape(w.shape[0], 3, 2).sum(2))
        w = cnnfast.where(np.array([True, False, True]), w, w @ np.eye(3, dtype=np.float32)[::-1].copy())
        return F.softmax(w, dim=1), F.log_softmax(w / 2.0, dim=-1), x[0:1, 1]


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("lrn_size", [3, 4])
def test_every_op_family(tmp_path, opset, lrn_size):
    cnnfast.manual_seed(0)
    model = perturb_norm_stats(OpZoo(lrn_size))
    export_and_compare(model, [randn(2, 4, 11, 13)], tmp_path, opset, dynamic_batch=False)


def test_conv_padding_forms_and_3d(tmp_path):
    cnnfast.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, (2, 3, 3), padding=((0, 1), (1, 1), (2, 0))), nn.ReLU(),
                          nn.MaxPool3d(2, ceil_mode=True), nn.Conv3d(3, 2, 1, padding="valid"),
                          nn.AvgPool3d(2, padding=1, count_include_pad=False))
    export_and_compare(model, [randn(2, 2, 5, 6, 7)], tmp_path)


# ---- round trip and errors ---------------------------------------------------------------------------

def test_torch_to_onnx_to_cnnfast_to_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    torch.manual_seed(0)
    net = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.GroupNorm(2, 4), tnn.ReLU(),
                         tnn.Upsample(scale_factor=2), tnn.ZeroPad2d((1, 0, 2, 1)), tnn.Conv2d(4, 2, 3),
                         tnn.Flatten(), tnn.Linear(2 * 11 * 11, 3)).eval()
    x = randn(2, 3, 5, 6)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.from_numpy(x), f, dynamo=False, opset_version=17)
    imported = co.load(f.getvalue())
    path = tmp_path / "again.onnx"
    co.export(imported, x, path, dynamic_batch=False)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert_rel(ort_out(path, x)[0], ref)


def test_divisor_override_is_refused(tmp_path):
    model = nn.Sequential(nn.AvgPool2d(2, divisor_override=3))
    with pytest.raises(ExportError, match="divisor_override"):
        co.export(model, randn(1, 1, 4, 4), tmp_path / "m.onnx")
    assert issubclass(ExportError, NotImplementedError)


def test_value_computed_outside_cnnfast_ops_is_caught(tmp_path):
    class Sneaky(nn.Module):
        def forward(self, x):
            scale = float(np.abs(x.data).max())  # input-dependent, invisible to the trace
            return x * scale

    with pytest.raises(ExportError, match="export check failed"):
        co.export(Sneaky(), randn(2, 3), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unbatched_input_needs_a_static_first_dimension(tmp_path):
    cnnfast.manual_seed(0)
    model = nn.Conv2d(3, 2, 3)  # takes (C, H, W): the first dimension is channels, not a batch
    with pytest.raises(ExportError, match="dynamic_batch=False"):
        co.export(model, randn(3, 5, 5), tmp_path / "m.onnx")
    co.export(model, randn(3, 5, 5), tmp_path / "m.onnx", dynamic_batch=False)
    x = randn(3, 5, 5, seed=1)
    assert_rel(ort_out(tmp_path / "m.onnx", x)[0], cnnfast_out(model, x)[0])


def test_batch_statistics_cannot_be_exported(tmp_path):
    model = nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ExportError, match="batch statistics"):
        co.export(model, randn(2, 2, 3, 3), tmp_path / "m.onnx")


def test_bad_arguments(tmp_path):
    model = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="opset: expected 13 to 20, got 21"):
        co.export(model, randn(1, 2), tmp_path / "m.onnx", opset=21)
    with pytest.raises(TypeError, match="example_input\\[0\\]: expected a float array"):
        co.export(model, np.zeros((1, 2), np.int64), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="output_names: expected 1 names"):
        co.export(model, randn(1, 2), tmp_path / "m.onnx", output_names=["a", "b"])
