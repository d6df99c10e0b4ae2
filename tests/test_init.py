"""nn.init: torch's gains, fans and distributions (bounds and standard deviations),
deterministic initialisers compared exactly, reproducibility under manual_seed."""
import math

import numpy as np
import pytest
import torch

import cnnfast
from cnnfast import nn
from cnnfast.nn import init


@pytest.mark.parametrize("nl,param", [("linear", None), ("conv2d", None), ("conv_transpose3d", None),
                                      ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                                      ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)])
def test_calculate_gain_matches_torch(nl, param):
    assert init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param), rel=1e-15)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("softplus")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "x")


@pytest.mark.parametrize("shape", [(3, 5), (4, 3, 2), (8, 4, 3, 3), (2, 6, 3, 1, 2)])
def test_fans_match_torch(shape):
    ours = init._calculate_fan_in_and_fan_out(cnnfast.zeros(*shape))
    assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(cnnfast.zeros(5))


SHAPE = (256, 64, 3, 3)  # fan_in 576, fan_out 2304; 147,456 samples pin a std to ~0.4 %
FAN_IN, FAN_OUT = 64 * 9, 256 * 9


def _std_close(a, expected, rel=0.02):
    assert abs(a.std() - expected) < rel * expected, (a.std(), expected)
    assert abs(a.mean()) < 0.02 * expected


def test_kaiming_normal_relu_std_is_sqrt_2_over_fan_in():
    w = init.kaiming_normal_(cnnfast.empty(*SHAPE), mode="fan_in", nonlinearity="relu")
    _std_close(w._array, math.sqrt(2.0 / FAN_IN))
    w = init.kaiming_normal_(cnnfast.empty(*SHAPE), mode="fan_out", nonlinearity="relu")
    _std_close(w._array, math.sqrt(2.0 / FAN_OUT))
    w = init.kaiming_normal_(cnnfast.empty(*SHAPE), a=0.1)  # leaky_relu by default, as torch
    _std_close(w._array, math.sqrt(2.0 / (1 + 0.01)) / math.sqrt(FAN_IN))


def test_kaiming_uniform_bound():
    w = init.kaiming_uniform_(cnnfast.empty(*SHAPE), nonlinearity="relu")._array
    bound = math.sqrt(6.0 / FAN_IN)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    _std_close(w, bound / math.sqrt(3))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(cnnfast.empty(3, 3), mode="fan_avg")


def test_xavier():
    w = init.xavier_uniform_(cnnfast.empty(*SHAPE), gain=init.calculate_gain("tanh"))._array
    bound = 5 / 3 * math.sqrt(6.0 / (FAN_IN + FAN_OUT))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = init.xavier_normal_(cnnfast.empty(*SHAPE))._array
    _std_close(w, math.sqrt(2.0 / (FAN_IN + FAN_OUT)))


def test_simple_fills_and_in_place():
    t = cnnfast.empty(3, 4)
    assert init.zeros_(t) is t and not t._array.any()
    assert (init.ones_(t)._array == 1).all()
    assert (init.constant_(t, 0.25)._array == 0.25).all()
    u = init.uniform_(cnnfast.empty(10000), -2, 3)._array
    assert u.min() >= -2 and u.max() < 3 and abs(u.mean() - 0.5) < 0.05
    n = init.normal_(cnnfast.empty(10000), 1.0, 0.5)._array
    assert abs(n.mean() - 1.0) < 0.03 and abs(n.std() - 0.5) < 0.02
    tn = init.trunc_normal_(cnnfast.empty(10000), std=2.0, a=-1.0, b=1.5)._array
    assert tn.min() >= -1.0 and tn.max() <= 1.5
    arr = np.zeros((2, 3), np.float64)
    assert init.ones_(arr) is arr and (arr == 1).all()
    p = nn.Parameter(np.zeros((3, 3), np.float32))
    init.kaiming_uniform_(p)
    assert p.requires_grad and p.grad_fn is None and p._array.dtype == np.float32 and p._array.any()


def test_deterministic_initialisers_equal_torch():
    np.testing.assert_array_equal(init.eye_(cnnfast.empty(3, 5))._array, torch.nn.init.eye_(torch.empty(3, 5)).numpy())
    ours = init.dirac_(cnnfast.empty(4, 2, 3, 3), groups=2)._array
    theirs = torch.nn.init.dirac_(torch.empty(4, 2, 3, 3), groups=2).numpy()
    np.testing.assert_array_equal(ours, theirs)
    q = init.orthogonal_(cnnfast.empty(6, 4), gain=2.0)._array.astype(np.float64)
    np.testing.assert_allclose(q.T @ q, 4 * np.eye(4), atol=1e-5)


def test_manual_seed_and_generator_reproducibility():
    cnnfast.manual_seed(11)
    a = init.kaiming_normal_(cnnfast.empty(5, 5))._array.copy()
    cnnfast.manual_seed(11)
    b = init.kaiming_normal_(cnnfast.empty(5, 5))._array.copy()
    np.testing.assert_array_equal(a, b)
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(init.xavier_uniform_(cnnfast.empty(4, 4), generator=g1)._array,
                                  init.xavier_uniform_(cnnfast.empty(4, 4), generator=g2)._array)
    state = cnnfast.get_rng_state()
    c = init.normal_(cnnfast.empty(6))._array.copy()
    cnnfast.set_rng_state(state)
    np.testing.assert_array_equal(init.normal_(cnnfast.empty(6))._array, c)


def test_bad_argument():
    with pytest.raises(TypeError, match="expected a cnnfast.Tensor or numpy.ndarray"):
        init.zeros_([1, 2])
