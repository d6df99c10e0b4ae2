"""CUDA backend: device arrays, the caching allocator, and every GPU kernel compared
with its CPU twin on odd shapes. Marked gpu: skipped where no device is present
(run on a GPU machine with `python -m pytest -m gpu`)."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

pytestmark = pytest.mark.gpu


def test_device_is_visible():
    assert cnnfast.cuda.device_count() >= 1
    assert cnnfast.cuda.get_device_name(0)


def test_round_trip_and_interfaces(rng):
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    d = cnnfast.cuda.to_device(x)
    assert d.shape == x.shape and d.dtype == np.float32
    assert np.array_equal(d.numpy(), x)
    cai = d.__cuda_array_interface__
    assert cai["shape"] == x.shape and cai["typestr"] == "<f4" and cai["version"] == 3
    assert d.__dlpack_device__() == (2, 0)


def test_torch_tensors_pass_in_and_out_without_copies(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    t = torch.randn(4, 33, device="cuda")
    y = _C.cuda.relu_forward(t)  # in through __cuda_array_interface__ / DLPack
    back = torch.from_dlpack(y)  # out through DLPack, no copy
    assert back.data_ptr() == y.data_ptr
    assert torch.equal(back, torch.relu(t))
    view = cnnfast.cuda.as_device_array(t)
    assert view.data_ptr == t.data_ptr()


ELEMENTWISE = [("relu", "x", {}), ("leaky_relu", "x", {"negative_slope": 0.2}), ("elu", "x", {"alpha": 0.7}),
               ("sigmoid", "output", {}), ("tanh", "output", {}), ("silu", "x", {})]


@pytest.mark.parametrize("name,saved,kw", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 1, 17), (70001,)])
def test_activation_matches_cpu(name, saved, kw, dtype, shape, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    y_cpu = getattr(_C, f"{name}_forward")(x, **kw)
    g_cpu = getattr(_C, f"{name}_backward")(gy, x if saved == "x" else y_cpu, **kw)
    xd, gd = cnnfast.cuda.to_device(x), cnnfast.cuda.to_device(gy)
    y_gpu = getattr(_C.cuda, f"{name}_forward")(xd, **kw)
    g_gpu = getattr(_C.cuda, f"{name}_backward")(gd, xd if saved == "x" else cnnfast.cuda.to_device(y_cpu), **kw)
    assert_close(y_gpu.numpy(), y_cpu, rtol=1e-5, atol=1e-6)
    assert_close(g_gpu.numpy(), g_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,axis", [((1, 1), -1), ((5, 1000), 1), ((2, 3, 5, 7), 1), ((3, 11, 2), 0)])
def test_softmax_matches_cpu(log, shape, axis, rng):
    name = "log_softmax" if log else "softmax"
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    y_cpu = getattr(_C, f"{name}_forward")(x, axis)
    g_cpu = getattr(_C, f"{name}_backward")(gy, y_cpu, axis)
    y_gpu = getattr(_C.cuda, f"{name}_forward")(cnnfast.cuda.to_device(x), axis)
    g_gpu = getattr(_C.cuda, f"{name}_backward")(cnnfast.cuda.to_device(gy), y_gpu, axis)
    assert_close(y_gpu.numpy(), y_cpu, rtol=1e-5, atol=1e-6)
    assert_close(g_gpu.numpy(), g_cpu, rtol=1e-5, atol=1e-6)


def test_caching_allocator_reuses_blocks():
    x = cnnfast.cuda.to_device(np.ones(1 << 20, np.float32))
    _C.cuda.relu_forward(x)
    cnnfast.cuda.synchronize()
    reserved = cnnfast.cuda.memory_reserved()
    for _ in range(50):
        _C.cuda.relu_forward(x)
    cnnfast.cuda.synchronize()
    assert cnnfast.cuda.memory_reserved() == reserved
    assert cnnfast.cuda.memory_allocated() >= x.nbytes


def test_bad_input_names_the_argument(rng):
    # One binding serves both devices: a NumPy array runs on the CPU, anything else is refused.
    assert np.array_equal(_C.cuda.relu_forward(np.array([-1.0, 2.0], np.float32)), [0.0, 2.0])
    with pytest.raises(TypeError, match="x: expected a NumPy array or a CUDA array"):
        _C.cuda.relu_forward([1.0, 2.0])
    with pytest.raises(TypeError, match="x: expected a CUDA array like grad_output"):
        _C.cuda.relu_backward(cnnfast.cuda.to_device(np.ones(3, np.float32)), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.cuda.relu_forward(cnnfast.cuda.to_device(np.ones(3, np.int64)))
    a, b = cnnfast.cuda.to_device(np.ones(3, np.float32)), cnnfast.cuda.to_device(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="shape"):
        _C.cuda.relu_backward(a, b)
