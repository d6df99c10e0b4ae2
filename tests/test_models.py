"""Architectures: parameter counts equal the published reference figures, state-dict
keys and shapes follow torchvision's layouts, forward shapes on small inputs."""
import functools

import numpy as np
import pytest

import cnnfast
from cnnfast import models as M


def n_params(model):
    return sum(int(p.numel()) for p in model.parameters())


@functools.lru_cache(maxsize=None)
def build(name):
    """Each 1000-class reference model is built once per session (VGG-16 is 550 MB)."""
    return M.get_model(name)


# torchvision's published parameter counts at 1000 classes (its model documentation), and
# for AlexNet the paper's 96-256-384-384-256 form with the two GPU towers merged, 227x227 input.
REFERENCE = {
    "alexnet": 62_378_344,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "googlenet": 6_624_904,
}
OTHER_TORCHVISION = {   # torchvision's published counts for the remaining variants
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248, "densenet169": 14_149_480, "densenet201": 20_013_928,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_parameter_counts(name):
    assert n_params(build(name)) == REFERENCE[name]


@pytest.mark.parametrize("name", ["densenet169", "densenet201"])
def test_densenet_variant_counts(name):
    assert n_params(M.get_model(name)) == OTHER_TORCHVISION[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in OTHER_TORCHVISION if n.startswith("vgg")])
def test_vgg_variant_counts(name):
    assert n_params(M.get_model(name)) == OTHER_TORCHVISION[name]


def test_lenet5_and_googlenet_aux_counts():
    # LeNet-5: (25+1)*6 + (150+1)*16 + (400+1)*120 + (120+1)*84 + (84+1)*10
    assert n_params(M.lenet5()) == 156 + 2416 + 48120 + 10164 + 850 == 61706
    assert n_params(M.lenet5(num_classes=5, in_channels=3)) == 61706 - 425 + 3 * 25 * 6 - 150
    # torchvision googlenet(aux_logits=True, init_weights=False): two InceptionAux heads
    assert n_params(M.googlenet(aux_logits=True)) == 13_004_888


def test_num_classes_changes_only_the_last_layer():
    m = M.resnet18(num_classes=10)
    assert n_params(m) == REFERENCE["resnet18"] - 513_000 + 5130


def _check(sd, expected):
    for key, shape in expected.items():
        assert key in sd, f"missing torchvision key {key}"
        assert tuple(sd[key].shape) == shape, key


def test_resnet_state_dict_follows_torchvision():
    sd = build("resnet18").state_dict()
    assert len(sd) == 122      # 20 convs, 20 BNs x 5 entries, fc weight + bias
    _check(sd, {"conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.running_mean": (64,),
                "bn1.running_var": (64,), "bn1.num_batches_tracked": (),
                "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.1.bn2.bias": (64,),
                "layer2.0.conv1.weight": (128, 64, 3, 3),
                "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                "layer2.0.downsample.1.running_var": (128,),
                "layer4.1.conv2.weight": (512, 512, 3, 3), "fc.weight": (1000, 512),
                "fc.bias": (1000,)})
    assert "conv1.bias" not in sd and "layer1.0.downsample.0.weight" not in sd
    sd50 = build("resnet50").state_dict()
    _check(sd50, {"layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.conv3.weight": (256, 64, 1, 1),
                  "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                  "layer2.0.conv2.weight": (128, 128, 3, 3), "layer4.2.bn3.weight": (2048,),
                  "fc.weight": (1000, 2048)})


def test_vgg16_state_dict_follows_torchvision():
    sd = build("vgg16").state_dict()
    assert len(sd) == 32
    _check(sd, {"features.0.weight": (64, 3, 3, 3), "features.2.weight": (64, 64, 3, 3),
                "features.5.weight": (128, 64, 3, 3), "features.28.weight": (512, 512, 3, 3),
                "features.28.bias": (512,), "classifier.0.weight": (4096, 25088),
                "classifier.3.weight": (4096, 4096), "classifier.6.weight": (1000, 4096),
                "classifier.6.bias": (1000,)})


def test_vgg11_bn_state_dict_follows_torchvision():
    sd = M.vgg11_bn(width=0.125, hidden=8).state_dict()
    # vgg11_bn: conv, bn, relu triples; pools shift the indices as in torchvision
    _check(sd, {"features.0.weight": (8, 3, 3, 3), "features.1.running_var": (8,),
                "features.4.weight": (16, 8, 3, 3), "features.25.weight": (64, 64, 3, 3),
                "features.26.num_batches_tracked": (), "classifier.0.weight": (8, 64 * 49)})


def test_densenet121_state_dict_follows_torchvision():
    sd = build("densenet121").state_dict()
    _check(sd, {"features.conv0.weight": (64, 3, 7, 7), "features.norm0.running_mean": (64,),
                "features.denseblock1.denselayer1.norm1.weight": (64,),
                "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
                "features.denseblock1.denselayer1.norm2.weight": (128,),
                "features.denseblock1.denselayer1.conv2.weight": (32, 128, 3, 3),
                "features.denseblock1.denselayer6.conv1.weight": (128, 224, 1, 1),
                "features.transition1.norm.weight": (256,),
                "features.transition1.conv.weight": (128, 256, 1, 1),
                "features.transition3.conv.weight": (512, 1024, 1, 1),
                "features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
                "features.norm5.weight": (1024,), "classifier.weight": (1000, 1024),
                "classifier.bias": (1000,)})
    assert not any(k.startswith("features.transition4") for k in sd)


def test_googlenet_state_dict_follows_torchvision():
    sd = build("googlenet").state_dict()
    _check(sd, {"conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.running_var": (64,),
                "conv2.conv.weight": (64, 64, 1, 1), "conv3.conv.weight": (192, 64, 3, 3),
                "inception3a.branch1.conv.weight": (64, 192, 1, 1),
                "inception3a.branch2.0.conv.weight": (96, 192, 1, 1),
                "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
                "inception3a.branch3.0.conv.weight": (16, 192, 1, 1),
                "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
                "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),
                "inception4e.branch2.1.bn.weight": (320,),
                "inception5b.branch4.1.bn.bias": (128,), "fc.weight": (1000, 1024)})
    assert not any("conv.bias" in k for k in sd)   # BasicConv2d convs carry no bias
    assert not any(k.startswith("aux") for k in sd)
    sda = M.googlenet(aux_logits=True).state_dict()
    _check(sda, {"aux1.conv.conv.weight": (128, 512, 1, 1), "aux1.fc1.weight": (1024, 2048),
                 "aux2.conv.conv.weight": (128, 528, 1, 1), "aux2.fc2.weight": (1000, 1024)})


def test_googlenet_uses_torchvision_bn_eps():
    g = build("googlenet")
    assert g.conv1.bn.eps == 0.001 and g.inception4a.branch3[1].bn.eps == 0.001


def test_alexnet_state_dict_follows_torchvision_names():
    sd = build("alexnet").state_dict()
    # torchvision's names (features.N / classifier.N); the seed's widths 96-256-384-384-256;
    # the LRN layers shift the later feature indices.
    assert list(sd) == ["features.0.weight", "features.0.bias", "features.4.weight",
                        "features.4.bias", "features.8.weight", "features.8.bias",
                        "features.10.weight", "features.10.bias", "features.12.weight",
                        "features.12.bias", "classifier.1.weight", "classifier.1.bias",
                        "classifier.4.weight", "classifier.4.bias", "classifier.6.weight",
                        "classifier.6.bias"]
    _check(sd, {"features.0.weight": (96, 3, 11, 11), "features.4.weight": (256, 96, 5, 5),
                "features.8.weight": (384, 256, 3, 3), "features.10.weight": (384, 384, 3, 3),
                "features.12.weight": (256, 384, 3, 3), "classifier.1.weight": (4096, 9216),
                "classifier.4.weight": (4096, 4096), "classifier.6.weight": (1000, 4096)})
    lrn = build("alexnet").features[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    # Without LRN the feature indices are torchvision's own (0, 3, 6, 8, 10).
    keys = list(M.alexnet(lrn=False, width=0.05, hidden=8).state_dict())
    assert keys[:10:2] == [f"features.{i}.weight" for i in (0, 3, 6, 8, 10)]


def test_state_dict_round_trip_loads_as_is():
    a = M.resnet18(num_classes=7, base_width=4)
    b = M.resnet18(num_classes=7, base_width=4)
    sd = {k: np.array(v.numpy() if hasattr(v, "numpy") else v) for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v.numpy() if hasattr(v, "numpy") else v), sd[k])


def _forward(model, shape, batch=2):
    model.eval()
    x = cnnfast.tensor(np.random.default_rng(0).standard_normal((batch,) + shape)
                       .astype(np.float32))
    with cnnfast.no_grad():
        return model(x)


@pytest.mark.parametrize("builder,shape,out", [
    (lambda: M.lenet5(), (1, 32, 32), (2, 10)),
    (lambda: M.lenet5(num_classes=3, in_channels=3, activation="relu", pool="max"),
     (3, 32, 32), (2, 3)),
    (lambda: M.alexnet(num_classes=11, width=0.1, hidden=32), (3, 227, 227), (2, 11)),
    (lambda: M.alexnet(num_classes=5, width=0.1, hidden=16), (3, 99, 71), (2, 5)),
    (lambda: M.vgg16(num_classes=4, width=0.0625, hidden=16), (3, 32, 32), (2, 4)),
    (lambda: M.vgg19_bn(num_classes=4, width=0.0625, hidden=16), (3, 37, 45), (2, 4)),
    (lambda: M.resnet18(num_classes=6, base_width=8), (3, 64, 64), (2, 6)),
    (lambda: M.resnet50(num_classes=6, base_width=4), (3, 33, 47), (2, 6)),
    (lambda: M.densenet121(num_classes=3, growth_rate=4, num_init_features=8, bn_size=2),
     (3, 32, 32), (2, 3)),
    (lambda: M.googlenet(num_classes=9), (3, 32, 32), (2, 9)),
])
def test_classifier_forward_shapes(builder, shape, out):
    y = _forward(builder(), shape)
    assert tuple(y.shape) == out
    assert np.isfinite(y.numpy()).all()


def test_googlenet_aux_outputs_in_training_only():
    g = M.googlenet(num_classes=5, aux_logits=True)
    x = cnnfast.tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32))
    g.train()
    with cnnfast.no_grad():
        out = g(x)
    assert isinstance(out, M.GoogLeNetOutputs)
    assert [tuple(o.shape) for o in out] == [(2, 5)] * 3
    assert tuple(_forward(g, (3, 64, 64)).shape) == (2, 5)


@pytest.mark.parametrize("h,w,depth", [(32, 48, 3), (16, 16, 4), (8, 24, 1)])
def test_unet_output_has_input_size(h, w, depth):
    m = M.unet(in_channels=3, num_classes=4, base_width=4, depth=depth)
    assert tuple(_forward(m, (3, h, w)).shape) == (2, 4, h, w)


def test_unet_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="divisible"):
        _forward(M.unet(base_width=2, depth=3), (1, 20, 16))
    with pytest.raises(ValueError, match="depth"):
        M.unet(depth=0)


def test_siamese_shares_weights():
    m = M.siamese(in_channels=1, embedding_dim=16, widths=(4, 8))
    m.eval()
    rng = np.random.default_rng(2)
    a = cnnfast.tensor(rng.standard_normal((3, 1, 28, 28)).astype(np.float32))
    b = cnnfast.tensor(rng.standard_normal((3, 1, 28, 28)).astype(np.float32))
    with cnnfast.no_grad():
        ea, eb = m(a, b)
        ea2 = m(a)
        ba, bb, ba2 = m(b, a, b)
    assert tuple(ea.shape) == tuple(eb.shape) == (3, 16)
    np.testing.assert_allclose(ea.numpy(), ea2.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bb.numpy(), ea.numpy(), rtol=1e-6)    # same weights either side
    np.testing.assert_allclose(ba.numpy(), ba2.numpy(), rtol=1e-6)
    n = M.siamese(embedding_dim=8, widths=(4,), normalize=True)
    n.eval()
    with cnnfast.no_grad():
        e = n(a).numpy()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)


def test_registry():
    names = M.list_models()
    for n in ["lenet5", "alexnet", "vgg11", "vgg16_bn", "vgg19", "googlenet", "resnet18",
              "resnet152", "densenet121", "densenet201", "unet", "siamese"]:
        assert n in names
    assert isinstance(M.get_model("ResNet18", num_classes=3, base_width=2), M.ResNet)
    assert M.default_input_shape("alexnet") == (3, 227, 227)
    with pytest.raises(ValueError, match="name: expected one of"):
        M.get_model("resnet17")
    with pytest.raises(ValueError, match="input_size"):
        M.lenet5(input_size=12)
    with pytest.raises(ValueError, match="activation"):
        M.lenet5(activation="gelu")
