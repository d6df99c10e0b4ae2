"""The device layer on a real GPU: the CUDA primitives under DeviceArray against NumPy,
Tensor/Module moves, DLPack and __cuda_array_interface__ with torch, and training on the
GPU against the same run on the CPU. tests/test_device.py checks the same plumbing on
any machine through a stand-in backend; these need a CUDA device (pytest -m gpu)."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C, _device, nn
from cnnfast import functional as F

from test_device import CUDA_KERNELS, _small_resnet, _train

pytestmark = pytest.mark.gpu


def test_the_cuda_binding_has_every_kernel_the_stand_in_allows():
    missing = sorted(k for k in CUDA_KERNELS if not hasattr(_C.cuda, k))
    assert not missing, missing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_primitives_equal_numpy(dtype, rng):
    a = rng.standard_normal((7, 13)).astype(dtype)
    b = (rng.standard_normal((7, 13)) + 3).astype(dtype)
    da, db = (cnnfast.tensor(v).cuda()._array for v in (a, b))
    for got, want in [(da + db, a + b), (da - db, a - b), (da * db, a * b), (da / db, a / b),
                      (da * 0.37, a * dtype(0.37)), (2.5 - da, dtype(2.5) - a), (1.5 / db, dtype(1.5) / b),
                      (-da, -a)]:
        assert got.dtype == want.dtype and np.array_equal(got.get(), want)  # one IEEE op: bit for bit
    assert np.allclose(da.sum().get(), a.sum(dtype=np.float64), rtol=1e-6)
    c = da.copy()
    c += db
    assert np.array_equal(c.get(), a + b) and np.array_equal(da.get(), a)
    c.fill(2.0)
    assert np.array_equal(c.get(), np.full_like(a, 2))
    v = da.reshape(13, 7)
    assert v.shape == (13, 7) and np.array_equal(v.get(), a.reshape(13, 7))
    assert np.array_equal(da.astype(np.int64).get(), a.astype(np.int64))
    bad = a.copy()
    bad[3, 4], bad[0, 0] = np.nan, np.inf
    bad_d = cnnfast.tensor(bad).cuda()._array
    assert not bad_d.all_finite() and bad_d.backend.count_nonfinite(bad_d.handle) == 2
    assert da.all_finite()


def test_tensor_round_trip_and_numpy_refusal(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    t = cnnfast.tensor(a).cuda()
    assert t.is_cuda and t.device == cnnfast.device("cuda:0")
    assert np.array_equal(t.cpu().numpy(), a)
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        t.numpy()


def test_dlpack_and_cuda_array_interface_with_torch(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((4, 5)).astype(np.float32)
    t = cnnfast.tensor(a).cuda()
    via_dlpack = torch.from_dlpack(t)
    assert via_dlpack.is_cuda and np.array_equal(via_dlpack.cpu().numpy(), a)
    via_cai = torch.as_tensor(t, device="cuda")
    assert np.array_equal(via_cai.cpu().numpy(), a)
    back = cnnfast.from_dlpack(torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3))
    assert back.is_cuda and np.array_equal(back.cpu().numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_module_moves_parameters_and_buffers():
    m = _small_resnet().cuda()
    assert all(p.is_cuda for p in m.parameters()) and all(b.is_cuda for b in m.buffers())
    m.cpu()
    assert not any(p.is_cuda for p in m.parameters())


def test_mixed_devices_raise():
    with pytest.raises(RuntimeError, match="same device"):
        F.linear(cnnfast.ones(2, 3).cuda(), cnnfast.ones(4, 3))


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_training_on_the_gpu_matches_the_cpu(rng, opt_name):
    """Three steps of a small residual network: every kernel is checked against the CPU's
    elsewhere, so the runs must agree to float32 rounding (not bit for bit: the GPU
    convolutions sum in another order)."""
    xs = [rng.standard_normal((8, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    ys = [rng.integers(0, 5, 8) for _ in range(3)]
    runs = {}
    for device in ("cpu", "cuda"):
        cnnfast.manual_seed(3)
        model = _small_resnet().to(device).train()
        opt = (cnnfast.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "SGD"
               else cnnfast.optim.Adam(model.parameters(), lr=1e-3))
        losses = _train(model, opt, xs, ys, device)
        runs[device] = losses, {k: v.cpu().numpy() for k, v in model.state_dict().items()}
    assert np.allclose(runs["cpu"][0], runs["cuda"][0], rtol=1e-4, atol=1e-5)
    for k, v in runs["cpu"][1].items():
        assert np.allclose(v, runs["cuda"][1][k], rtol=1e-3, atol=1e-4), k


def test_trainer_on_the_gpu():
    from cnnfast.training import TrainConfig, train

    m = train(TrainConfig(device="cuda", limit=64, epochs=1, batch_size=16, quiet=True))
    assert 0.0 <= m["test_accuracy"] <= 1.0 and np.isfinite(m["test_loss"])
    assert cnnfast.accelerator.is_available()
    assert _device.resolve("auto") == cnnfast.device("cuda")


def test_nn_module_to_cuda_keeps_parameter_identity():
    lin = nn.Linear(3, 2)
    before = list(lin.parameters())
    lin.cuda()
    assert [id(p) for p in lin.parameters()] == [id(p) for p in before]


def test_gan_demo_on_the_gpu(tmp_path):
    import json

    from cnnfast.gan.demo import main as gan_main

    assert gan_main(["--quick", "--epochs", "1", "--samples", "50", "--quiet", "--device", "cuda",
                     "--out", str(tmp_path)]) == 0
    m = json.load(open(tmp_path / "metrics.json"))
    assert np.isfinite(m["step_d_loss"]).all() and np.isfinite(m["step_g_loss"]).all()
