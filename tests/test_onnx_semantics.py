"""ONNX import semantics that once went silently wrong or failed at run time: Flatten with a
negative axis, BatchNormalization with read-only statistics, Dropout's training_mode input
and mask output, 8-bit integer MaxPool computed exactly, and a wider integer MaxPool
refused at load with the node named."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import cnnfast  # noqa: E402
import cnnfast.onnx as co  # noqa: E402
from cnnfast.onnx import UnsupportedOnnxError  # noqa: E402


def _model(nodes, inputs, outputs, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.mark.parametrize("axis,expect", [(-1, (24, 5)), (-2, (6, 20)), (-4, (1, 120)), (0, (1, 120)),
                                         (4, (120, 1)), (2, (6, 20))])
def test_flatten_axis(axis, expect):
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    m = co.load(_model([node], [_vi("x", TensorProto.FLOAT, [2, 3, 4, 5])], [_vi("y", TensorProto.FLOAT, list(expect))]))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = m(cnnfast.tensor(x)).numpy()
    assert y.shape == expect
    np.testing.assert_array_equal(y, x.reshape(expect))


def test_batch_norm_inference_reads_readonly_statistics():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "mean", "var"], ["y"], epsilon=1e-5)
    c = 3
    ins = [_vi("x", TensorProto.FLOAT, [2, c, 4, 5])] + [_vi(n, TensorProto.FLOAT, [c]) for n in
                                                         ("s", "b", "mean", "var")]
    m = co.load(_model([node], ins, [_vi("y", TensorProto.FLOAT, [2, c, 4, 5])]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, c, 4, 5)).astype(np.float32)
    s, b, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, c).astype(np.float32)
    for a in (s, b, mean, var):
        a.flags.writeable = False
    with cnnfast.no_grad():
        y = m(cnnfast.tensor(x), *(cnnfast.tensor(a) for a in (s, b, mean, var))).numpy()
    r = lambda a: a.reshape(1, c, 1, 1)  # noqa: E731
    ref = r(s) * (x - r(mean)) / np.sqrt(r(var) + 1e-5) + r(b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_batch_norm_kernel_still_refuses_readonly_statistics_in_training():
    x = np.ones((4, 2), np.float32)
    rm = np.zeros(2, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean"):
        cnnfast._C.batch_norm_forward(x, None, None, rm, np.ones(2, np.float32), True, 0.1, 1e-5)


def _dropout_model(with_mask, training_input=True):
    outs = ["y", "mask"] if with_mask else ["y"]
    node = helper.make_node("Dropout", ["x", "r", "t"] if training_input else ["x", "r"], outs)
    ins = [_vi("x", TensorProto.FLOAT, [4, 50]), _vi("r", TensorProto.FLOAT, [])]
    if training_input:
        ins.append(_vi("t", TensorProto.BOOL, []))
    o = [_vi("y", TensorProto.FLOAT, [4, 50])] + ([_vi("mask", TensorProto.BOOL, [4, 50])] if with_mask else [])
    return co.load(_model(nodes=[node], inputs=ins, outputs=o))


@pytest.mark.parametrize("with_mask", [False, True])
def test_dropout_training_mode_input_drops(with_mask):
    m = _dropout_model(with_mask)
    x = np.random.default_rng(2).uniform(1, 2, (4, 50)).astype(np.float32)
    out = m(cnnfast.tensor(x), cnnfast.tensor(np.float32(0.4)), np.array(True))
    y = (out[0] if with_mask else out).numpy()
    kept = y != 0
    assert 0 < kept.sum() < y.size, "training_mode=True must drop some values and keep others"
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-6)
    if with_mask:
        mask = out[1].numpy()
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, kept)


def test_dropout_training_mode_false_is_identity_with_true_mask():
    m = _dropout_model(True)
    m.train()  # the explicit input wins over the module's mode
    x = np.random.default_rng(3).standard_normal((4, 50)).astype(np.float32)
    y, mask = m(cnnfast.tensor(x), cnnfast.tensor(np.float32(0.5)), np.array(False))
    np.testing.assert_array_equal(y.numpy(), x)
    assert mask.numpy().dtype == bool and mask.numpy().all()


def test_dropout_mask_output_in_inference():
    m = _dropout_model(True, training_input=False)
    x = np.random.default_rng(4).standard_normal((4, 50)).astype(np.float32)
    y, mask = m(cnnfast.tensor(x), cnnfast.tensor(np.float32(0.5)))
    np.testing.assert_array_equal(y.numpy(), x)
    assert mask.numpy().dtype == bool and mask.numpy().all()


@pytest.mark.parametrize("dtype,np_dtype", [(TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8)])
def test_8bit_max_pool_runs_exactly(dtype, np_dtype):
    # 8-bit integers are exact in float32: pooled there and cast back (issue 20; once refused).
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool1", kernel_shape=[2, 2])
    data = _model([node], [_vi("x", dtype, [1, 1, 4, 4])], [_vi("y", dtype, [1, 1, 3, 3])])
    info = np.iinfo(np_dtype)
    x = np.random.default_rng(0).integers(info.min, info.max + 1, (1, 1, 4, 4)).astype(np_dtype)
    y = co.load(data)(x)
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    want = np.max(np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(2, 3)), axis=(-2, -1))
    assert y.dtype == np_dtype
    np.testing.assert_array_equal(y, want)


def test_wider_integer_max_pool_refused_at_load():
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool1", kernel_shape=[2, 2])
    data = _model([node], [_vi("x", TensorProto.INT32, [1, 1, 4, 4])], [_vi("y", TensorProto.INT32, [1, 1, 3, 3])])
    with pytest.raises(UnsupportedOnnxError, match=r"MaxPool.*pool1.*dtype"):
        co.load(data)


def test_max_pool_dtype_known_only_through_inference():
    # The pool reads a Cast's output, whose dtype only shape inference knows: int32 is
    # refused at load, uint8 runs.
    for to, ok in ((TensorProto.INT32, False), (TensorProto.UINT8, True)):
        cast = helper.make_node("Cast", ["x"], ["xi"], to=to)
        node = helper.make_node("MaxPool", ["xi"], ["y"], name="p", kernel_shape=[2, 2])
        data = _model([cast, node], [_vi("x", TensorProto.FLOAT, [1, 1, 4, 4])], [_vi("y", to, [1, 1, 3, 3])])
        if not ok:
            with pytest.raises(UnsupportedOnnxError, match="int32"):
                co.load(data)
            continue
        x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        with cnnfast.no_grad():
            y = co.load(data)(cnnfast.tensor(x))
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        np.testing.assert_array_equal(y, np.array([[[[5, 6, 7], [9, 10, 11], [13, 14, 15]]]], np.uint8))
