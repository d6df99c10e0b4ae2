"""Each torch idiom that training scripts use, run on torch and on cnnfast side by side:
the same result, or (where cnnfast differs on purpose) a clear error naming the
difference. Every probe takes the library as ``lib`` and returns plain Python values."""
import warnings

import numpy as np
import pytest

import cnnfast

torch = pytest.importorskip("torch")


def _probe(fn):
    return fn(torch), fn(cnnfast)


def _same(fn, approx=False):
    theirs, ours = _probe(fn)
    if approx:
        np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float), rtol=1e-5,
                                   atol=1e-6)
    else:
        assert ours == theirs


LOGITS = [[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.3, 0.7, 0.5], [0.2, 0.1, 0.6]]


# ---- the five silent differences -----------------------------------------------------------

def test_data_max_gives_indices():
    def f(lib):
        out = lib.tensor(LOGITS, requires_grad=True) * 1.0
        d = out.data
        return d.max(1)[1].tolist(), d.requires_grad, type(d).__name__ == "Tensor"
    _same(f)


def test_data_shares_storage_and_is_detached():
    def f(lib):
        w = lib.nn.Linear(3, 2).weight
        w.data.fill_(0.5)
        w.data.normal_(0.0, 0.02)
        d = w.data
        d.mul_(0)
        return float(w.sum()), w.requires_grad, d.requires_grad, d.grad_fn is None, w.data.cpu().shape == (2, 3)
    _same(f)


def test_data_assignment_replaces_values():
    def f(lib):
        p = lib.nn.Parameter(lib.zeros(3))
        p.data = lib.ones(3) * 2
        return p.tolist(), p.requires_grad
    _same(f)


def test_tensor_copies_and_from_numpy_as_tensor_share():
    def f(lib):
        a = np.ones(3, np.float32)
        t = lib.tensor(a)
        t /= 2
        s = lib.from_numpy(a)
        s *= 3
        u = lib.as_tensor(a)
        u += 1
        return a.tolist(), t.tolist()
    _same(f)


def test_shuffle_follows_manual_seed_and_generator():
    def f(lib):
        ds = lib.utils.data.TensorDataset(lib.arange(20))

        def order(**kw):
            return [b[0].tolist() for b in lib.utils.data.DataLoader(ds, batch_size=5, shuffle=True, **kw)]
        lib.manual_seed(0)
        a = order()
        lib.manual_seed(0)
        b = order()
        lib.manual_seed(1)
        c = order()
        g1, g2 = lib.Generator().manual_seed(7), lib.Generator().manual_seed(7)
        epoch1, epoch2 = order(generator=g1), order(generator=g1)
        return a == b, a != c, sorted(sum(a, [])) == list(range(20)), epoch1 == order(generator=g2), epoch1 != epoch2
    theirs, ours = _probe(f)
    assert ours == theirs == (True, True, True, True, True)


def test_collate_fn_is_called_for_every_batch():
    def f(lib):
        calls = []

        def collate(batch):
            calls.append(len(batch))
            return lib.utils.data.default_collate(batch)
        ds = lib.utils.data.TensorDataset(lib.arange(10), lib.arange(10) * 2)
        batches = list(lib.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate))
        return calls, [[t.tolist() for t in b] for b in batches]
    _same(f)


@pytest.mark.parametrize("make", ["F.relu", "nn.ReLU", "nn.LeakyReLU", "F.leaky_relu", "F.elu", "nn.Dropout0"])
def test_inplace_is_honoured(make):
    def f(lib):
        F, nn = lib.nn.functional, lib.nn
        op = {"F.relu": lambda x: F.relu(x, inplace=True), "nn.ReLU": nn.ReLU(inplace=True),
              "nn.LeakyReLU": nn.LeakyReLU(0.2, inplace=True),
              "F.leaky_relu": lambda x: F.leaky_relu(x, 0.1, inplace=True),
              "F.elu": lambda x: F.elu(x, inplace=True), "nn.Dropout0": nn.Dropout(0.0, inplace=True)}[make]
        x = lib.tensor([-1.0, 2.0, -3.0])
        y = op(x)
        # Recorded in a graph too: the gradient goes through the in-place op.
        w = lib.tensor([-1.0, 2.0, -3.0], requires_grad=True)
        h = w * 2
        op(h)
        h.sum().backward()
        return y is x, [round(v, 6) for v in x.tolist()], [round(v, 6) for v in w.grad.tolist()]
    _same(f)


# ---- torch's autograd rules for in-place ops ---------------------------------------------------

def _raises(fn, lib, exc=RuntimeError):
    try:
        fn(lib)
    except exc as e:
        return str(e)
    return None


def test_inplace_on_leaf_that_requires_grad_raises():
    def f(lib):
        w = lib.ones(3, requires_grad=True)
        w.add_(1)
    theirs, ours = _raises(f, torch), _raises(f, cnnfast)
    assert theirs and ours and "leaf Variable that requires grad" in ours


def test_inplace_change_of_saved_tensor_raises_at_backward():
    def f(lib):
        x = lib.ones(3, requires_grad=True)
        y = x.sigmoid()
        y.mul_(2)
        y.sum().backward()
    theirs, ours = _raises(f, torch), _raises(f, cnnfast)
    assert theirs and ours and "modified by an inplace operation" in ours


def test_inplace_change_through_a_view_raises_at_backward():
    def f(lib):
        x = lib.ones(2, 3, requires_grad=True)
        y = x.exp()
        y.view(-1)[0:2].detach().zero_() if lib is torch else y.detach().view(-1).zero_()
        y.sum().backward()
    theirs, ours = _raises(f, torch), _raises(f, cnnfast)
    assert theirs and ours and "modified by an inplace operation" in ours


def test_optimizer_step_between_forward_and_backward_raises():
    def f(lib):
        m = lib.nn.Linear(3, 1)
        loss = m(lib.ones(2, 3, requires_grad=True)).sum()
        opt = lib.optim.SGD(m.parameters(), lr=0.1)
        loss.backward(retain_graph=True)
        opt.step()
        loss.backward()
    theirs, ours = _raises(f, torch), _raises(f, cnnfast)
    assert theirs and ours


def test_inplace_add_on_non_leaf_records_the_graph():
    def f(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        out = x * 3
        out += x
        out.relu_()
        out = out * 2  # torch forbids mul_ here (relu_ saved its result); cnnfast would allow it
        out.sum().backward()
        return x.grad.tolist(), out.tolist()
    _same(f)


def test_deliberate_difference_inplace_on_view_of_non_leaf_is_refused_clearly():
    x = cnnfast.ones(2, 3, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="view of a tensor that requires grad is not supported by cnnfast"):
        x[0].add_(1)
    with pytest.raises(RuntimeError, match="not supported by cnnfast"):
        x[0] = 5.0


# ---- surface: tensors, reductions, formatting ----------------------------------------------

def test_index_and_format_of_0d_tensors():
    def f(lib):
        names = ["a", "b", "c"]
        t = lib.tensor(2)
        return names[t], f"{lib.tensor(3.14159):.2f}", "{:6.3f}".format(lib.tensor(1.5)), \
            [names[i] for i in lib.tensor([0, 2])]
    _same(f)


def test_dtype_aliases():
    def f(lib):
        x = lib.tensor([1, 2])
        return (x.dtype == lib.long, x.float().dtype == lib.float, x.double().dtype == lib.double,
                x.int().dtype == lib.int, lib.zeros(2, dtype=lib.long).tolist(),
                lib.tensor([1.5]).dtype == lib.float32)
    _same(f)


def test_top_level_reductions_and_comparisons():
    def f(lib):
        x = lib.tensor(LOGITS)
        v, i = lib.max(x, 1)
        vk, ik = lib.max(x, dim=0, keepdim=True)
        return (v.tolist(), i.tolist(), vk.tolist(), ik.tolist(), lib.argmax(x, dim=1).tolist(),
                lib.argmin(x, 1).tolist(), float(lib.sum(x)), lib.sum(x, dim=0).tolist(), float(lib.mean(x)),
                lib.softmax(x, dim=1).tolist(), lib.log_softmax(x, 1).tolist(), lib.eq(i, 1).tolist(),
                lib.max(x, lib.full_like(x, 0.5)).tolist(), float(lib.min(x)), lib.min(x, 1)[1].tolist(),
                lib.topk(x, 2, dim=1)[1].tolist(), lib.gt(x, 0.5).tolist())
    theirs, ours = _probe(f)
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(np.asarray(b, float), np.asarray(a, float), rtol=1e-6, atol=1e-7)


def test_tensor_methods_used_by_training_scripts():
    def f(lib):
        x = lib.tensor(LOGITS)
        target = lib.tensor([1, 0, 2, 2])
        _, pred = x.topk(2, 1, True, True)
        pred = pred.t()
        hit = pred.eq(target.view(1, -1).expand_as(pred))
        top1 = hit[:1].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / 4)
        am = x.argmax(dim=1, keepdim=True)
        y = x.mul(2).add(1).div(4).sub(0.25)
        return (top1.tolist(), am.eq(target.view_as(am)).sum().item(), y.tolist(), x.t().shape == (3, 4),
                x.relu_().tolist(), x.ne(0).all().item(), (x.data == x).all().item())
    theirs, ours = _probe(f)
    assert ours[0] == theirs[0] and ours[1] == theirs[1] and ours[3:] == theirs[3:]
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-6)


def test_softmax_without_dim_warns_and_picks_dim_as_torch():
    def f(lib):
        x = lib.tensor(LOGITS)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            y = lib.nn.functional.softmax(x)
            z = lib.nn.functional.log_softmax(x)
        return any("Implicit dimension choice" in str(m.message) for m in w), y.tolist(), z.tolist()
    theirs, ours = _probe(f)
    assert ours[0] and theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-6)


def test_iterating_a_batch_and_comparing_elements():
    def f(lib):
        labels, preds = lib.tensor([1, 2, 3]), lib.tensor([1, 0, 3])
        return [bool(a == b) for a, b in zip(labels, preds)], [int(v) for v in labels]
    _same(f)


# ---- devices, accelerator, backends -------------------------------------------------------------

def test_cpu_device_everywhere():
    def f(lib):
        device = lib.device("cpu")
        x = lib.zeros(2, 3, device=device, dtype=lib.float64)
        y = lib.randn(2, device="cpu")
        m = lib.nn.Linear(3, 1).to(device)
        z = x.to(device, non_blocking=True).to("cpu").to(device, lib.float32)
        return (str(device), x.is_cuda, x.device == device, z.dtype == lib.float32, x.cpu().shape == (2, 3),
                str(m.weight.device), y.shape == (2,), lib.ones(2, device=device).to(x).dtype == lib.float64,
                repr(lib.device("cuda", 0)), str(lib.device("cuda:1")))
    _same(f)


@pytest.mark.skipif(torch.cuda.is_available(), reason="compares the no-GPU behaviour")
def test_moving_to_cuda_without_a_device_raises():
    def f(lib):
        lib.ones(2).to(lib.device("cuda"))
    theirs = _raises(f, torch, (RuntimeError, AssertionError))
    ours = _raises(f, cnnfast)
    assert theirs and ours and "CUDA is not available" in ours
    assert _raises(lambda lib: lib.nn.Linear(2, 2).cuda(), cnnfast)
    assert _raises(lambda lib: lib.zeros(2, device="cuda"), cnnfast)


def test_accelerator_and_backend_flags():
    def f(lib):
        lib.backends.cudnn.benchmark = True
        lib.backends.cudnn.deterministic = True
        flags = (lib.backends.cudnn.benchmark, lib.backends.cudnn.deterministic, lib.backends.mps.is_available())
        lib.backends.cudnn.benchmark = False
        lib.backends.cudnn.deterministic = False
        return flags, lib.accelerator.is_available(), lib.accelerator.current_accelerator()
    if torch.accelerator.is_available():
        pytest.skip("compares the no-accelerator behaviour")
    _same(f)


# ---- utils.data ---------------------------------------------------------------------------------

def test_dataloader_options():
    def f(lib):
        D = lib.utils.data
        ds = D.TensorDataset(lib.arange(10).float(), lib.arange(10))
        lens = [len(D.DataLoader(ds, batch_size=3, drop_last=d)) for d in (False, True)]
        seq = [b[1].tolist() for b in D.DataLoader(ds, batch_size=3, num_workers=2, pin_memory=True)]
        bs = [b[1].tolist() for b in D.DataLoader(ds, batch_sampler=D.BatchSampler(D.SequentialSampler(ds), 4,
                                                                                     False))]
        sub = [b[1].tolist() for b in D.DataLoader(D.Subset(ds, [5, 1, 7]), batch_size=2)]
        one = [b[1].tolist() for b in D.DataLoader(ds, batch_size=None, sampler=[3, 4])]
        lib.manual_seed(3)
        parts = D.random_split(ds, [0.7, 0.3])
        idx = sorted(parts[0].indices + parts[1].indices)
        picked = sorted(sum((b[1].tolist() for b in D.DataLoader(ds, sampler=D.SubsetRandomSampler([2, 4, 6]),
                                                                  batch_size=2)), []))
        kinds = [type(t).__name__ == "Tensor" for t in next(iter(D.DataLoader(ds, batch_size=2)))]
        return lens, seq, bs, sub, one, [len(p) for p in parts], idx == list(range(10)), picked, kinds
    _same(f)


def test_default_collate_types():
    def f(lib):
        c = lib.utils.data.default_collate
        ints, floats = c([1, 2]), c([1.0, 2.5])
        d = c([{"x": np.ones(2, np.float32), "n": "a"}, {"x": np.zeros(2, np.float32), "n": "b"}])
        return (ints.dtype == lib.int64, floats.dtype == lib.float64, d["x"].shape == (2, 2), d["n"],
                [t.tolist() for t in c([(1, 2.0), (3, 4.0)])])
    _same(f)


# A refused constructor must not leave an object whose __del__ raises.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_dataloader_argument_errors_match_torch():
    for kw in (dict(sampler=[0, 1], shuffle=True), dict(batch_sampler=[[0]], batch_size=2),
               dict(num_workers=-1), dict(persistent_workers=True)):
        def f(lib):
            lib.utils.data.DataLoader(lib.utils.data.TensorDataset(lib.arange(4)), **kw)
        assert _raises(f, torch, ValueError) and _raises(f, cnnfast, ValueError), kw


def test_worker_threads_overlap_and_see_worker_info():
    D = cnnfast.utils.data
    seen = []

    class Slow(D.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            seen.append(D.get_worker_info().id)
            return cnnfast.tensor([float(i)])

    batches = [b.tolist() for b in D.DataLoader(Slow(), batch_size=2, num_workers=2,
                                                 worker_init_fn=lambda wid: None)]
    assert batches == [[[0.0], [1.0]], [[2.0], [3.0]], [[4.0], [5.0]], [[6.0], [7.0]]]
    assert set(seen) <= {0, 1} and D.get_worker_info() is None


# ---- optim, serialization, image utils ------------------------------------------------------------

def test_adadelta_with_steplr_matches_torch():
    def f(lib):
        lib.manual_seed(0)
        w = lib.nn.Parameter(lib.tensor([[1.0, -2.0, 0.5]]))
        opt = lib.optim.Adadelta([w], lr=1.0, weight_decay=0.01)
        sched = lib.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        for _ in range(4):
            opt.zero_grad()
            ((w * lib.tensor([[1.0, 2.0, 3.0]])) ** 2).sum().backward()
            opt.step()
            sched.step()
        return w.tolist(), opt.param_groups[0]["lr"]
    theirs, ours = _probe(f)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    assert ours[1] == pytest.approx(theirs[1])


def test_adadelta_kernel_rejects_bad_state():
    p, g = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="acc_delta"):
        cnnfast._C.adadelta_step(p, g, np.zeros(4, np.float32), np.zeros(3, np.float32))
    with pytest.raises((TypeError, ValueError), match="square_avg"):
        cnnfast._C.adadelta_step(p, g, np.zeros(4, np.float64), np.zeros(4, np.float32))


def test_save_under_torch_names_says_it_is_cnnfast_format(tmp_path):
    with pytest.warns(UserWarning, match="cnnfast's own pickle-free checkpoint format"):
        cnnfast.save({"w": cnnfast.ones(2)}, tmp_path / "model.pth")
    assert cnnfast.load(tmp_path / "model.pth", weights_only=True)["w"].tolist() == [1.0, 1.0]
    torch.save({"w": torch.ones(2)}, tmp_path / "real.pt")
    with pytest.raises(ValueError, match="torch.save file.*load_torch_state_dict"):
        cnnfast.load(tmp_path / "real.pt")


def test_make_grid_layout(tmp_path):
    imgs = np.arange(5 * 1 * 2 * 3, dtype=np.float32).reshape(5, 1, 2, 3)
    g = cnnfast.utils.make_grid(cnnfast.tensor(imgs), nrow=2, padding=1, pad_value=-1)
    assert g.shape == (3, 3 * 3 + 1, 2 * 4 + 1)
    a = g.numpy()
    np.testing.assert_array_equal(a[0, 1:3, 1:4], imgs[0, 0])
    np.testing.assert_array_equal(a[2, 1:3, 5:8], imgs[1, 0])
    np.testing.assert_array_equal(a[1, 7:9, 1:4], imgs[4, 0])
    assert (a[:, 7:9, 5:8] == -1).all() and (a[:, 0, :] == -1).all()
    n = cnnfast.utils.make_grid(cnnfast.tensor(imgs), normalize=True).numpy()
    assert n.min() == 0.0 and n.max() == 1.0
    cnnfast.utils.save_image(cnnfast.tensor(imgs), tmp_path / "g.png", nrow=2, normalize=True)
    from PIL import Image

    with Image.open(tmp_path / "g.png") as im:
        assert im.size == (2 * 5 + 2, 3 * 4 + 2) and im.mode == "RGB"


def test_inference_mode_and_default_dtype():
    def f(lib):
        x = lib.ones(2, requires_grad=True)
        with lib.inference_mode():
            y = x * 2

        @lib.inference_mode()
        def g(t):
            return t * 3
        lib.cuda.manual_seed(0)
        lib.cuda.manual_seed_all(0)
        return y.requires_grad, g(x).requires_grad, lib.get_default_dtype() == lib.float32
    _same(f)
    with pytest.raises(NotImplementedError, match="fixed at float32"):
        cnnfast.set_default_dtype(cnnfast.float64)
