"""Every architecture trains: a few optimizer steps on a fixed random batch at a small
input size lower the loss (narrow widths where the architecture has a width knob)."""
import numpy as np
import pytest

import cnnfast
import cnnfast.functional as F
from cnnfast import models as M
from cnnfast import optim


def _batch(shape, n, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = cnnfast.tensor(rng.standard_normal((n,) + shape).astype(np.float32))
    y = cnnfast.tensor((np.arange(n) % classes).astype(np.int64))
    return x, y


def _train(model, loss_of, steps, lr, opt="adam"):
    cnnfast.manual_seed(0)
    model.train()
    params = list(model.parameters())
    o = optim.Adam(params, lr=lr) if opt == "adam" else optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        o.zero_grad()
        loss = loss_of(model)
        loss.backward()
        for p in params:
            assert p.grad is None or np.isfinite(p.grad.numpy()).all()
        o.step()
        losses.append(float(loss.item()))
    return losses


CLASSIFIERS = [
    ("lenet5", lambda: M.lenet5(num_classes=4), (1, 32, 32), 8, 1e-2),
    ("alexnet", lambda: M.alexnet(num_classes=4, width=0.0625, hidden=32, dropout=0.0),
     (3, 67, 67), 4, 5e-3),
    ("vgg11", lambda: M.vgg11(num_classes=4, width=0.125, hidden=32, dropout=0.0),
     (3, 32, 32), 4, 3e-3),
    ("vgg16_bn", lambda: M.vgg16_bn(num_classes=4, width=0.0625, hidden=32, dropout=0.0),
     (3, 32, 32), 4, 3e-3),
    ("resnet18", lambda: M.resnet18(num_classes=4, base_width=8), (3, 32, 32), 4, 1e-2),
    ("resnet50", lambda: M.resnet50(num_classes=4, base_width=4), (3, 64, 64), 4, 1e-3),
    ("densenet121", lambda: M.densenet121(num_classes=4, growth_rate=4, num_init_features=8,
                                          bn_size=2), (3, 32, 32), 4, 1e-2),
    ("googlenet", lambda: M.googlenet(num_classes=4, dropout=0.0), (3, 32, 32), 4, 1e-3),
]


@pytest.mark.parametrize("name,builder,shape,n,lr", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_classifier_loss_goes_down(name, builder, shape, n, lr):
    model = builder()
    x, y = _batch(shape, n, 4)
    losses = _train(model, lambda m: F.cross_entropy(m(x), y), steps=10, lr=lr)
    assert losses[-1] < 0.85 * losses[0], losses


def test_googlenet_with_aux_heads_trains():
    model = M.googlenet(num_classes=3, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    x, y = _batch((3, 64, 64), 3, 3)

    def loss_of(m):
        out = m(x)
        return (F.cross_entropy(out.logits, y) + 0.3 * F.cross_entropy(out.aux_logits1, y)
                + 0.3 * F.cross_entropy(out.aux_logits2, y))

    losses = _train(model, loss_of, steps=5, lr=1e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    assert model.aux1.fc1.weight.grad is not None


def test_unet_segmentation_loss_goes_down():
    model = M.unet(in_channels=1, num_classes=3, base_width=4, depth=2)
    rng = np.random.default_rng(3)
    x = cnnfast.tensor(rng.standard_normal((2, 1, 16, 24)).astype(np.float32))
    # per-pixel class from the sign pattern of the input: learnable from local context
    target = ((x.numpy()[:, 0] > 0).astype(np.int64) + (x.numpy()[:, 0] > 1)).astype(np.int64)
    y = cnnfast.tensor(target)
    losses = _train(model, lambda m: F.cross_entropy(m(x), y), steps=8, lr=1e-2)
    assert losses[-1] < 0.8 * losses[0], losses


def test_siamese_triplet_training_separates_pairs():
    model = M.siamese(in_channels=1, embedding_dim=8, widths=(4, 8))
    rng = np.random.default_rng(4)
    base = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    a = cnnfast.tensor(base)
    p = cnnfast.tensor(base + 0.05 * rng.standard_normal(base.shape).astype(np.float32))
    n = cnnfast.tensor(rng.standard_normal(base.shape).astype(np.float32))

    def loss_of(m):
        ea, ep, en = m(a, p, n)
        return F.triplet_margin_loss(ea, ep, en, margin=1.0)

    losses = _train(model, loss_of, steps=8, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0], losses


def test_siamese_contrastive_training_pulls_pairs_together():
    model = M.siamese(in_channels=1, embedding_dim=8, widths=(4, 8))
    rng = np.random.default_rng(5)
    base = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    a = cnnfast.tensor(base)
    b = cnnfast.tensor(np.concatenate([base[:3] + 0.05, rng.standard_normal(base[3:].shape)
                                       .astype(np.float32)]))
    same = cnnfast.tensor(np.array([1, 1, 1, 0, 0, 0], np.float32))

    def loss_of(m):
        ea, eb = m(a, b)
        d2 = ((ea - eb) ** 2).sum(1)
        d = (d2 + 1e-9) ** 0.5
        margin = (1.0 - d).clamp(min=0.0)
        return (same * d2 + (1 - same) * margin * margin).mean()

    losses = _train(model, loss_of, steps=8, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0], losses
