"""ONNX import of today's CNNs: torchvision's convnext_tiny (exact GELU exported as Erf),
fcn_resnet50 and deeplabv3_mobilenet_v3_large (bilinear Resize), regnet_x/y_400mf and
inception_v3, built from torchvision's
definitions (tv_reference.py) and exported by torch.onnx.export, load and match PyTorch
within 1e-4 relative; and the new converters (Gelu, Erf, Mish, Softplus, HardSwish,
DepthToSpace/SpaceToDepth, Resize linear/cubic in every coordinate mode) against
onnxruntime."""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402

import cnnfast  # noqa: E402
import cnnfast.onnx as co  # noqa: E402
import tv_reference  # noqa: E402


def _export(model, x, opset=17):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.tensor(x),), f, dynamo=False, opset_version=opset)
    return f.getvalue()


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(b).max() > 0
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", ["convnext_tiny", "fcn_resnet50", "deeplabv3_mobilenet_v3_large", "regnet_y_400mf",
                                  pytest.param("regnet_x_400mf", marks=pytest.mark.slow),
                                  pytest.param("inception_v3", marks=pytest.mark.slow)])
def test_torchvision_export_loads_and_matches(name):
    if tv_reference.load() is None:
        pytest.skip("no torchvision wheel on disk to read the reference definitions from")
    ref = tv_reference.build(name).eval()
    g = np.random.default_rng(0)
    with torch.no_grad():
        for k, v in ref.state_dict().items():  # non-trivial BN statistics and layer scales
            if k.endswith("running_var"):
                v.copy_(torch.tensor(g.uniform(0.5, 1.5, v.shape)))
            elif k.endswith("running_mean"):
                v.copy_(torch.tensor(g.normal(0, 0.1, v.shape)))
            elif k.endswith("layer_scale"):
                v.copy_(torch.tensor(g.uniform(0.5, 1.0, v.shape)))
    x = g.standard_normal((1, 3) + ((80, 112) if name == "inception_v3" else (64, 96))).astype(np.float32)
    data = _export(ref, x)
    m = co.load(data)
    with torch.no_grad():
        yt = ref(torch.tensor(x))
    yt = (yt["out"] if isinstance(yt, dict) else yt).numpy()
    with cnnfast.no_grad():
        yc = m(cnnfast.tensor(x))
    yc = (yc[0] if isinstance(yc, tuple) else yc).numpy()
    assert _rel(yc, yt) < 1e-4


def _one_node(op_type, x, attrs=None, extra_inputs=(), opset=20):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    names = ["x"]
    inits = []
    for i, v in enumerate(extra_inputs):
        n = f"in{i}"
        names.append(n if v is not None else "")
        if v is not None:
            inits.append(onnx.numpy_helper.from_array(np.asarray(v), n))
    node = helper.make_node(op_type, names, ["y"], name="n0", **(attrs or {}))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(x.ndim)])
    g = helper.make_graph([node], "g", inputs, [out], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with cnnfast.no_grad():
        got = co.load(data)(cnnfast.tensor(x)).numpy()
    return got, ref


@pytest.mark.parametrize("op_type,attrs", [("Erf", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
                                           ("Mish", {}), ("Softplus", {}), ("HardSwish", {})])
def test_activation_converters(op_type, attrs):
    x = (np.random.default_rng(1).standard_normal((2, 3, 5, 7)) * 3).astype(np.float32)
    got, ref = _one_node(op_type, x, attrs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op_type,attrs", [("DepthToSpace", {"blocksize": 2}),
                                           ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}),
                                           ("SpaceToDepth", {"blocksize": 2})])
def test_depth_space_converters(op_type, attrs):
    x = np.random.default_rng(2).standard_normal((2, 8, 6, 4)).astype(np.float32)
    got, ref = _one_node(op_type, x, attrs)
    np.testing.assert_array_equal(got, ref)


COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("how", ["scales_up", "scales_down", "sizes"])
def test_resize_linear_cubic_matches_onnxruntime(mode, coord, how):
    # Scales that give integral output lengths: where scale * length is not an integer,
    # onnxruntime's align_corners uses the floored length and ONNX's reference (which
    # cnnfast follows; see test_onnx_node_cases.py) the fractional one.
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 8)).astype(np.float32)
    scales = {"scales_up": [1, 1, 2.0, 1.5], "scales_down": [1, 1, 0.6, 0.5]}.get(how)
    extra = [None, np.array(scales, np.float32)] if scales else [None, None, np.array([1, 2, 9, 4], np.int64)]
    got, ref = _one_node("Resize", x, {"mode": mode, "coordinate_transformation_mode": coord}, extra, opset=19)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_resize_cubic_exclude_outside_and_coeff():
    x = np.random.default_rng(4).standard_normal((1, 1, 6, 6)).astype(np.float32)
    got, ref = _one_node("Resize", x, {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
                         [None, np.array([1, 1, 1.7, 0.8], np.float32)], opset=19)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_resize_crop_without_roi_refused_naming_the_node():
    x = np.zeros((1, 1, 4, 4), np.float32)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="rz", mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=[onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()
    with pytest.raises(co.UnsupportedOnnxError, match="rz.*tf_crop_and_resize"):
        co.load(data)
    del x


EXPORTED = ["mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1", "efficientnet_b0",
            "deeplabv3_mobilenet_v3_large",
            pytest.param("convnext_tiny", marks=pytest.mark.slow), pytest.param("fcn_resnet50", marks=pytest.mark.slow),
            pytest.param("resnext50_32x4d", marks=pytest.mark.slow), "regnet_y_400mf", "regnet_x_400mf",
            pytest.param("inception_v3", marks=pytest.mark.slow)]


def _ort_vs_cnnfast(model, x, tmp_path):
    path = str(tmp_path / "m.onnx")
    co.export(model, x, path)
    with cnnfast.no_grad():
        y = model(cnnfast.tensor(x))
    y = (y["out"] if isinstance(y, dict) else y).numpy()
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    yo = s.run(None, {s.get_inputs()[0].name: x})[0]
    assert _rel(yo, y) < 1e-4


@pytest.mark.parametrize("name", EXPORTED)
def test_models_export_to_onnxruntime(name, tmp_path):
    cnnfast.manual_seed(0)
    model = cnnfast.models.get_model(name, num_classes=7).eval()
    size = 80 if name == "inception_v3" else 64
    x = np.random.default_rng(5).standard_normal((2, 3, size, size)).astype(np.float32)
    _ort_vs_cnnfast(model, x, tmp_path)


def test_unet_bilinear_exports_to_onnxruntime(tmp_path):
    cnnfast.manual_seed(0)
    model = cnnfast.models.unet(in_channels=3, num_classes=3, base_width=8, depth=3, bilinear=True).eval()
    x = np.random.default_rng(7).standard_normal((2, 3, 24, 40)).astype(np.float32)
    _ort_vs_cnnfast(model, x, tmp_path)


class _Ops(cnnfast.nn.Module):
    """Every new op once, so their emitters run in onnxruntime."""

    def forward(self, x):
        import cnnfast.functional as F
        y = F.gelu(x) + F.gelu(x, approximate="tanh") + F.hardswish(x) + F.hardsigmoid(x) + F.relu6(x)
        y = y + F.mish(x) + F.softplus(x, 2.0, 3.0) + F.erf(x)
        y = F.interpolate(y, scale_factor=(1.5, 2), mode="bicubic", align_corners=True)
        y = F.interpolate(y, size=(5, 9), mode="bilinear") + F.interpolate(y, size=(5, 9), mode="nearest-exact")
        y = F.channel_shuffle(F.pixel_unshuffle(F.pixel_shuffle(y, 2), 2), 2)
        return F.layer_norm2d(y)


def test_new_ops_export_to_onnxruntime(tmp_path):
    x = (np.random.default_rng(6).standard_normal((2, 8, 5, 6)) * 3).astype(np.float32)
    _ort_vs_cnnfast(_Ops(), x, tmp_path)


def _maxpool_model(x, elem, attrs, opset=13):
    inputs = [helper.make_tensor_value_info("x", elem, list(x.shape))]
    dims = [f"d{k}" for k in range(x.ndim)]
    outs = [helper.make_tensor_value_info("y", elem, dims), helper.make_tensor_value_info("i", TensorProto.INT64, dims)]
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", **attrs)
    g = helper.make_graph([node], "g", inputs, outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


@pytest.mark.parametrize("shape,attrs", [
    ((2, 3, 7, 11), dict(kernel_shape=[3, 2], strides=[2, 3], storage_order=1)),
    ((1, 2, 8, 5), dict(kernel_shape=[2, 3], pads=[1, 0, 0, 2], storage_order=1)),
    ((2, 3, 7, 11), dict(kernel_shape=[3, 2], strides=[2, 3], storage_order=0)),
    ((1, 2, 5, 6, 7), dict(kernel_shape=[2, 3, 2], strides=[2, 1, 3], storage_order=1)),
])
def test_maxpool_indices_both_storage_orders_match_onnxruntime(shape, attrs):
    """storage_order=1: indices of each plane's column-major layout (first spatial axis fastest),
    offset by the plane as in row-major; onnxruntime and ONNX's reference agree on it."""
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    data = _maxpool_model(x, TensorProto.FLOAT, attrs)
    if len(shape) == 5:  # onnxruntime's MaxPool has no 3-D column-major indices: ONNX's reference then
        from onnx.reference import ReferenceEvaluator
        y_ref, i_ref = ReferenceEvaluator(data).run(None, {"x": x})
    else:
        y_ref, i_ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with cnnfast.no_grad():
        y, i = co.load(data)(cnnfast.tensor(x))
    np.testing.assert_array_equal(y.numpy(), y_ref)
    np.testing.assert_array_equal(np.asarray(i), i_ref)


@pytest.mark.parametrize("dtype,elem", [(np.uint8, TensorProto.UINT8), (np.int8, TensorProto.INT8)])
def test_maxpool_8bit_integers(dtype, elem):
    info = np.iinfo(dtype)
    x = np.random.default_rng(9).integers(info.min, info.max + 1, (2, 3, 6, 7)).astype(dtype)
    data = _maxpool_model(x, elem, dict(kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 1]))
    y_ref, i_ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    y, i = co.load(data)(x)
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    # Ties (likely among 8-bit values) may pick either position; the values there must agree.
    np.testing.assert_array_equal(x.ravel()[np.asarray(i)], x.ravel()[i_ref])


def test_maxpool_bad_storage_order_refused_at_load():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(co.UnsupportedOnnxError, match="storage_order.*MaxPool|MaxPool.*storage_order"):
        co.load(_maxpool_model(x, TensorProto.FLOAT, dict(kernel_shape=[2, 2], storage_order=2)))


@pytest.mark.parametrize("mode,coord,exclude", [("linear", "half_pixel", 0), ("cubic", "half_pixel", 0),
                                                ("linear", "align_corners", 0), ("cubic", "pytorch_half_pixel", 1),
                                                ("linear", "asymmetric", 1)])
@pytest.mark.parametrize("scales", [(0.37, 0.6), (0.5, 1.5)])
def test_resize_antialias_matches_onnx_reference(mode, coord, exclude, scales):
    """antialias=1: downsampling stretches the filter by 1/scale (ONNX's reference defines it);
    upsampling axes are plain interpolation."""
    from onnx.reference import ReferenceEvaluator
    x = np.random.default_rng(11).standard_normal((2, 3, 13, 11)).astype(np.float32)
    attrs = {"mode": mode, "antialias": 1, "coordinate_transformation_mode": coord, "exclude_outside": exclude}
    node_scales = np.array((1.0, 1.0) + scales, np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", **attrs)
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=[onnx.numpy_helper.from_array(node_scales, "s")])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    want = ReferenceEvaluator(data).run(None, {"x": x})[0]
    with cnnfast.no_grad():
        got = co.load(data)(cnnfast.tensor(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resize_antialias_nearest_refused_at_load():
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", mode="nearest", antialias=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=[onnx.numpy_helper.from_array(np.array([1, 1, .5, .5], np.float32), "s")])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    with pytest.raises(co.UnsupportedOnnxError, match="Resize.*antialias"):
        co.load(data)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("roi,sizes", [((0.1, 0.25, 0.8, 0.9), (5, 4)), ((-0.2, 0.3, 1.3, 0.7), (7, 1)),
                                       ((0.0, 0.0, 1.0, 1.0), (13, 11))])
def test_resize_tf_crop_and_resize_matches_onnx_reference(mode, roi, sizes):
    """roi crops each spatial axis to [start, end] (fractions); outputs whose source falls
    outside the input take extrapolation_value; the gradient flows to the input."""
    from onnx.reference import ReferenceEvaluator
    x = np.random.default_rng(12).standard_normal((2, 3, 13, 11)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], name="r", mode=mode, axes=[2, 3],
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-4.5)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=[onnx.numpy_helper.from_array(np.array(roi, np.float32), "roi"),
                                       onnx.numpy_helper.from_array(np.array(sizes, np.int64), "sizes")])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    want = ReferenceEvaluator(data).run(None, {"x": x})[0]
    xc = cnnfast.tensor(x, requires_grad=True)
    got = co.load(data)(xc)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert np.abs(xc.grad.numpy()).sum() > 0


def test_resize_tf_crop_and_resize_nearest_refused_at_load():
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], name="r", mode="nearest",
                            coordinate_transformation_mode="tf_crop_and_resize")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])],
                          initializer=[onnx.numpy_helper.from_array(np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32),
                                                                    "roi"),
                                       onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "sizes")])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    with pytest.raises(co.UnsupportedOnnxError, match="Resize.*tf_crop_and_resize"):
        co.load(data)
