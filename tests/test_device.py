"""The device layer (cnnfast._device) checked on machines with no GPU, through a stand-in
"cuda" backend: its arrays live in host memory, wrapped so that nothing can use them as
NumPy arrays, and its kernels are the CPU kernels, restricted to the names the CUDA
binding provides. Everything above the kernels (Tensor.to, Module.cuda, functional
dispatch, autograd, optimizers, checkpoints, the CLI's --device) runs as on a GPU; a
training run on the stand-in must then equal the CPU run bit for bit. The real GPU runs
the same checks against the CUDA kernels in tests/test_device_gpu.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import _C, _device, nn
from cnnfast import functional as F

# The kernels csrc/bind/bind_cuda*.cpp registers (tests/test_device_gpu.py checks this list
# against the CUDA build), so code that reaches for anything else fails here already.
CUDA_KERNELS = frozenset(
    [f"{a}_{d}" for a in ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "softmax", "log_softmax")
     for d in ("forward", "backward")]
    + [f"{op}{n}d_{d}" for op in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "max_unpool")
       for n in (1, 2, 3) for d in ("forward", "backward")]
    + [f"{op}_{d}" for op in ("conv", "conv_transpose", "linear", "batch_norm", "group_norm", "instance_norm",
                              "layer_norm", "local_response_norm", "cross_entropy", "nll_loss",
                              "binary_cross_entropy", "binary_cross_entropy_with_logits", "multi_margin_loss",
                              "triplet_margin_loss", "l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss",
                              "dropout", "feature_dropout")
       for d in ("forward", "backward")]
    + ["gemm", "dropout_mask", "sgd_step", "adam_step", "adagrad_step", "rmsprop_step"])


class _Buf:
    """The stand-in's native array: host memory that is deliberately not an ndarray."""

    def __init__(self, a):
        self.a = a
        self.shape, self.dtype, self.device = a.shape, a.dtype, 0


class _StandInKernels:
    def __getattr__(self, name):
        if name not in CUDA_KERNELS:
            raise AttributeError(name)
        fn = getattr(_C, name)

        def unwrap(v):
            if isinstance(v, _Buf):
                return v.a
            assert not (isinstance(v, np.ndarray) and v.ndim > 0), f"{name}: a host array reached a device kernel"
            return v

        def wrap(r):
            if isinstance(r, np.ndarray):
                return _Buf(r)
            return tuple(wrap(x) for x in r) if isinstance(r, tuple) else r

        return lambda *a, **k: wrap(fn(*map(unwrap, a), **{n: unwrap(v) for n, v in k.items()}))


class StandIn(_device.Backend):
    type = "cuda"
    native = _Buf
    kernels = _StandInKernels()

    def __init__(self):
        self.transfers = 0

    def device_count(self):
        return 1

    def unavailable_reason(self):
        return ""

    def from_numpy(self, a, index):
        self.transfers += 1
        return _Buf(a.copy())

    def to_numpy(self, h):
        self.transfers += 1
        return h.a.copy()

    def empty(self, shape, dtype, index):
        return _Buf(np.full(shape, np.nan, dtype))  # poisoned: an unwritten element shows up

    def reshape(self, h, shape):
        return _Buf(h.a.reshape(shape))

    def copy(self, h, out=None):
        if out is None:
            return _Buf(h.a.copy())
        out.a[...] = h.a
        return out

    def fill(self, h, value):
        h.a[...] = value

    def binary(self, op, a, b, out=None):
        x, y = a.a, (b.a if isinstance(b, _Buf) else np.asarray(b).astype(a.a.dtype))
        f = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
             "rsub": lambda p, q, out=None: np.subtract(q, p, out=out),
             "rdiv": lambda p, q, out=None: np.divide(q, p, out=out)}[op]
        if out is None:
            return _Buf(np.asarray(f(x, y), dtype=x.dtype))
        f(x, y, out=out.a)
        return out

    def sum(self, h):
        return _Buf(np.asarray(h.a.sum(dtype=h.a.dtype)))

    def count_nonfinite(self, h):
        return int((~np.isfinite(h.a)).sum())

    def cast(self, h, dtype):
        return _Buf(h.a.astype(dtype))


@pytest.fixture
def dev():
    backend = StandIn()
    prev = _device.register_backend("cuda", backend)
    yield backend
    _device.register_backend("cuda", prev)
    backend._namespace = None


def test_tensor_moves_and_reports_its_device(dev, rng):
    a = rng.standard_normal((3, 5)).astype(np.float32)
    t = cnnfast.tensor(a)
    before = dev.transfers
    g = t.to("cuda")
    assert dev.transfers == before + 1  # one copy per move
    assert g.device == cnnfast.device("cuda", 0) and g.is_cuda and not t.is_cuda
    assert str(g.device) == "cuda:0" and "device='cuda:0'" in repr(g)
    assert g.to("cuda") is g and g.cuda() is g and t.cpu() is t
    back = g.cpu()
    assert back.device == cnnfast.device("cpu") and np.array_equal(back.numpy(), a)
    assert np.array_equal(t.cuda(0).cpu().numpy(), a)
    assert np.array_equal(cnnfast.zeros(2, 3, device="cuda").cpu().numpy(), np.zeros((2, 3), np.float32))
    assert cnnfast.ones(4, device="cuda", requires_grad=True).is_leaf
    d = g.to("cuda", cnnfast.float64)
    assert d.dtype == np.float64 and d.is_cuda and np.allclose(d.cpu().numpy(), a)


def test_numpy_of_a_device_tensor_raises_naming_cpu(dev):
    g = cnnfast.ones(3).cuda()
    with pytest.raises(TypeError, match=r"cuda:0 device type tensor to numpy.*Tensor\.cpu\(\)"):
        g.numpy()
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        np.asarray(g)
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        np.exp(g._array)
    assert g.sum().item() == 3.0 and g.tolist() == [1.0, 1.0, 1.0]


def test_to_is_differentiable_across_devices(dev, rng):
    x = cnnfast.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    y = x.cuda() * 3.0 + 1.0
    (y.sum() * 2.0).backward()
    assert x.grad.device.type == "cpu" and np.array_equal(x.grad.numpy(), np.full((2, 3), 6, np.float32))


def test_mixed_devices_are_refused_with_torchs_message(dev, rng):
    x = cnnfast.tensor(rng.standard_normal((1, 2, 5, 5)).astype(np.float32)).cuda()
    w = cnnfast.tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*cuda:0 and cpu"):
        F.conv2d(x, w)
    with pytest.raises(RuntimeError, match="same device"):
        F.linear(cnnfast.ones(2, 3), cnnfast.ones(4, 3).cuda())
    with pytest.raises(TypeError, match="move both to one device"):
        x + cnnfast.ones(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match="cannot create this on cuda|same device|move"):
        F.cross_entropy(cnnfast.ones(2, 3).cuda(), cnnfast.tensor([0, 1]))


def test_ops_without_a_device_kernel_say_so(dev):
    x = cnnfast.ones(1, 1, 4, 4).cuda()
    with pytest.raises(NotImplementedError, match=r"no cuda kernel yet.*\.cpu\(\)"):
        F.interpolate(x, scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="no broadcasting"):
        x._array + cnnfast.ones(1, 1, 1, 4).cuda()._array


def _small_resnet():
    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + x)

    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), Block(8), nn.Dropout(0.25), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5))


def _train(model, opt, xs, ys, device):
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = F.cross_entropy(model(cnnfast.tensor(x).to(device)), cnnfast.tensor(y).to(device))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_training_on_the_device_equals_the_cpu_run(dev, rng, opt_name):
    xs = [rng.standard_normal((4, 3, 12, 12)).astype(np.float32) for _ in range(3)]
    ys = [rng.integers(0, 5, 4) for _ in range(3)]
    runs = {}
    for device in ("cpu", "cuda"):
        cnnfast.manual_seed(7)
        model = _small_resnet()
        make = {"SGD": lambda p: cnnfast.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
                "Adam": lambda p: cnnfast.optim.Adam(p, lr=1e-3)}[opt_name]
        opt = make(model.parameters())  # built before the move: the Parameters stay the same objects
        model.to(device)
        assert all(p.device.type == device for p in model.parameters())
        assert all(b.device.type == device for b in model.buffers())
        model.train()
        losses = _train(model, opt, xs, ys, device)
        state = [v for s in opt.state.values() for v in s.values() if hasattr(v, "shape") and v.ndim > 0]
        assert state and all(_device.device_of(v).type == device for v in state)
        runs[device] = (losses, {k: v.cpu().numpy() for k, v in model.state_dict().items()})
    assert runs["cpu"][0] == runs["cuda"][0]
    for k, v in runs["cpu"][1].items():
        assert np.array_equal(v, runs["cuda"][1][k]), k


def test_eval_and_no_grad_on_the_device(dev, rng):
    model = _small_resnet().cuda().eval()
    x = cnnfast.tensor(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    with cnnfast.no_grad():
        y = model(x.cuda())
    assert y.is_cuda and not y.requires_grad
    ref = model.cpu()(x)
    assert np.array_equal(y.cpu().detach().numpy(), ref.detach().numpy())


def test_checkpoints_of_device_tensors_hold_host_data(dev, tmp_path, rng):
    model = _small_resnet().cuda()
    opt = cnnfast.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = cnnfast.tensor(rng.standard_normal((2, 3, 12, 12)).astype(np.float32)).cuda()
    F.cross_entropy(model(x), cnnfast.tensor([1, 2]).cuda()).backward()
    opt.step()
    path = tmp_path / "ck.cnnfast"
    cnnfast.save({"model": model.state_dict(), "opt": opt.state_dict()}, str(path))
    ck = cnnfast.load(str(path))
    for k, v in ck["model"].items():
        assert v.device.type == "cpu" and np.array_equal(v.numpy(), model.state_dict()[k].cpu().numpy()), k
    fresh = _small_resnet().cuda()
    fresh.load_state_dict(ck["model"])
    assert all(p.is_cuda for p in fresh.parameters())
    opt2 = cnnfast.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ck["opt"])
    bufs = [s["momentum_buffer"] for s in opt2.state.values()]
    assert bufs and all(_device.device_of(b).type == "cuda" for b in bufs)


def test_anomaly_mode_checks_device_outputs(dev):
    x = cnnfast.tensor([1.0, float("nan")], requires_grad=True)
    with cnnfast.autograd.detect_anomaly():
        with pytest.raises(FloatingPointError, match="nan or inf"):
            F.relu(x.cuda() * 1.0)


def test_dlpack_and_cuda_array_interface_pass_through(dev):
    g = cnnfast.ones(2).cuda()
    with pytest.raises(AttributeError):
        g.__cuda_array_interface__  # the stand-in's buffers have none: the tensor forwards the native array's
    with pytest.raises(AttributeError, match="not a CUDA device"):
        cnnfast.ones(2).__cuda_array_interface__


def test_without_a_backend_the_device_is_refused_clearly():
    if cnnfast.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cnnfast.ones(2).cuda()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        nn.Linear(2, 2).to("cuda")
    assert not cnnfast.accelerator.is_available() and cnnfast.accelerator.current_accelerator() is None


def test_accelerator_follows_the_backend(dev):
    assert cnnfast.accelerator.is_available()
    assert cnnfast.accelerator.current_accelerator() == cnnfast.device("cuda")


def test_gpu_marker_fails_rather_than_skips_without_a_device(tmp_path):
    if cnnfast.cuda.is_available():
        pytest.skip("a CUDA device is present")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(cnnfast.__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                        os.path.join(here, "test_device_gpu.py")], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(here), timeout=300)
    assert r.returncode != 0, r.stdout
    assert "asked for the GPU suite" in r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu and not slow",
                        os.path.join(here, "test_device_gpu.py")], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(here), timeout=300)
    assert r.returncode in (0, 5), r.stdout  # nothing selected is fine when the GPU suite was not asked for


def test_trainer_runs_on_the_device_and_matches_the_cpu(dev, tmp_path):
    from cnnfast.training import TrainConfig, train

    base = dict(limit=48, epochs=1, batch_size=16, quiet=True, threads=2, prefetch=1, optimizer="sgd")
    cpu = train(TrainConfig(device="cpu", **base))
    moved = dev.transfers
    gpu = train(TrainConfig(device="cuda", out=str(tmp_path), **base))
    assert dev.transfers > moved  # the batches did travel
    for k in ("test_accuracy", "test_loss", "best_val_acc", "initial_loss"):
        assert cpu[k] == gpu[k], k
    assert cpu["history"]["train_loss"] == gpu["history"]["train_loss"]
    from cnnfast.training.checkpoint import load_checkpoint

    weights, _ = load_checkpoint(str(tmp_path / "last.ckpt"))  # written from device weights, as host data
    assert weights and all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in weights.values())
    auto = train(TrainConfig(device="auto", **base))  # the stand-in answers, so auto picks it
    assert auto["test_loss"] == cpu["test_loss"]


def test_trainer_says_no_device_is_present():
    if cnnfast.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from cnnfast.training import TrainConfig, train

    with pytest.raises(ValueError, match="--device cuda: .*CUDA is not available"):
        train(TrainConfig(device="cuda", limit=16, epochs=1, quiet=True))
    with pytest.raises(ValueError, match="expected cpu, cuda, cuda:N or auto"):
        train(TrainConfig(device="tpu", limit=16, epochs=1, quiet=True))
    r = subprocess.run([sys.executable, "-m", "cnnfast", "train", "--device", "cuda", "--limit", "16", "--epochs", "1",
                        "--quiet"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__))))
    assert r.returncode != 0 and "CUDA is not available" in r.stderr and "Traceback" not in r.stderr
    from cnnfast.gan.demo import main as gan_main

    assert gan_main(["--quick", "--device", "cuda", "--quiet", "--out", "/nonexistent/never-written"]) == 2


@pytest.mark.parametrize("expr, asked", [("gpu", True), ("gpu and not slow", True), ("(gpu)", True),
                                         ("not gpu", False), ("not slow", False), ("", False),
                                         ("slow or gpu", True), ("not gpu and not slow", False)])
def test_which_marker_expressions_ask_for_the_gpu_suite(expr, asked):
    from conftest import _gpu_requested

    class Config:
        def getoption(self, name, default=None):
            return expr

    assert _gpu_requested(Config()) is asked


def test_gan_demo_trains_on_the_device_as_on_the_cpu(dev, tmp_path):
    import json

    from cnnfast.gan.demo import main as gan_main

    args = ["--quick", "--epochs", "1", "--samples", "50", "--quiet", "--threads", "2"]
    for device in ("cpu", "cuda"):
        assert gan_main(args + ["--device", device, "--out", str(tmp_path / device)]) == 0
    cpu, gpu = (json.load(open(tmp_path / d / "metrics.json")) for d in ("cpu", "cuda"))
    assert cpu["step_d_loss"] == gpu["step_d_loss"] and cpu["step_g_loss"] == gpu["step_g_loss"]
    assert cpu["final"] == gpu["final"]


def test_initialisers_and_in_place_fills_work_on_device_tensors(dev):
    lin, ref = nn.Linear(4, 3).cuda(), nn.Linear(4, 3)
    cnnfast.manual_seed(5)
    nn.init.normal_(lin.weight, 0.0, 0.02)
    nn.init.zeros_(lin.bias)
    cnnfast.manual_seed(5)
    nn.init.normal_(ref.weight, 0.0, 0.02)
    assert lin.weight.is_cuda and np.array_equal(lin.weight.detach().cpu().numpy(), ref.weight.detach().numpy())
    assert not lin.bias.detach().cpu().numpy().any()
    with pytest.raises(TypeError, match="move it there first"):
        lin.weight.data._array[...] = np.ones((2, 2), np.float32)


def test_dlpack_on_the_cpu_shares_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = cnnfast.from_dlpack(a)
    assert t.device.type == "cpu" and np.shares_memory(t.numpy(), a)
    back = np.from_dlpack(t)
    assert np.shares_memory(back, a) and back.shape == (2, 3)


def test_eval_of_a_checkpoint_on_the_device_equals_the_cpu(dev, tmp_path):
    from cnnfast.training import TrainConfig, evaluate_checkpoint, train

    train(TrainConfig(limit=48, epochs=1, batch_size=16, quiet=True, threads=2, prefetch=1, out=str(tmp_path)))
    cpu = evaluate_checkpoint(str(tmp_path / "last.ckpt"))
    gpu = evaluate_checkpoint(str(tmp_path / "last.ckpt"), device="cuda")
    assert cpu["loss"] == gpu["loss"] and cpu["acc"] == gpu["acc"]
    assert np.array_equal(cpu["confusion_matrix"], gpu["confusion_matrix"])
