"""CS-230 shape formulas: output size, paddings, receptive field, parameter counts,
checked against PyTorch layers and against direct enumeration."""
import itertools

import pytest
import torch

from cnnfast.utils import shapes as S


def test_two_stacked_3x3_convs_see_5x5():
    assert S.receptive_field([(3, 1), (3, 1)]) == 5
    assert S.receptive_field([(3, 1)] * 3) == 7
    assert S.receptive_field([]) == 1


def test_receptive_field_formula_with_strides():
    # R = 1 + (11-1) + (3-1)*4 + (5-1)*8 = 51 (AlexNet conv1 -> pool1 -> conv2)
    assert S.receptive_field([(11, 4), (3, 2), (5, 1)]) == 51
    # dilation 2 turns a 3x3 into a 5x5 span
    assert S.receptive_field([(3, 1, 2)]) == 5


def _brute_receptive_field(layers, size=64):
    """Which input pixels does output 0 depend on: propagate a dependency set through 1-D
    layers (F, S, P) and count the span."""
    deps = [{i} for i in range(size)]
    for f, s, p in layers:
        n_out = (len(deps) + 2 * p - f) // s + 1
        new = []
        for o in range(n_out):
            d = set()
            for k in range(f):
                i = o * s - p + k
                if 0 <= i < len(deps):
                    d |= deps[i]
            new.append(d)
        deps = new
    mid = deps[len(deps) // 2]
    return max(mid) - min(mid) + 1


@pytest.mark.parametrize("layers", [[(3, 1, 1), (3, 1, 1)], [(7, 2, 3), (3, 2, 1), (3, 1, 1)],
                                    [(5, 3, 0), (2, 2, 0), (3, 1, 0)], [(1, 1, 0), (3, 2, 1)]])
def test_receptive_field_matches_dependency_enumeration(layers):
    expected = _brute_receptive_field(layers)
    assert S.receptive_field([(f, s) for f, s, _ in layers]) == expected


def test_receptive_field_steps_jump_and_start():
    steps = S.receptive_field_steps([(3, 1), (2, 2), (3, 1)], paddings=[1, 0, 1])
    assert steps == [(3, 1, 0.5), (4, 2, 1.0), (8, 2, 1.0)]
    with pytest.raises(ValueError, match="paddings"):
        S.receptive_field_steps([(3, 1)], paddings=[0, 0])
    with pytest.raises(ValueError, match="layers"):
        S.receptive_field_steps([(3,)])


@pytest.mark.parametrize("i,f,s,p,d", [(227, 11, 4, 0, 1), (13, 3, 3, 1, 1), (17, 3, 2, 2, 2),
                                       (1, 1, 1, 0, 1), (31, 5, 3, 0, 2), (8, 2, 2, 0, 1)])
def test_conv_output_size_matches_torch(i, f, s, p, d):
    conv = torch.nn.Conv1d(1, 1, f, stride=s, padding=p, dilation=d)
    expected = conv(torch.zeros(1, 1, i)).shape[-1]
    assert S.conv_output_size(i, f, s, p, d) == expected


def test_conv_output_size_asymmetric_padding():
    # O = (I - F + Ps + Pe)/S + 1 = (10 - 3 + 0 + 2)/2 + 1 = 5
    assert S.conv_output_size(10, 3, 2, (0, 2)) == 5
    x = torch.nn.functional.pad(torch.zeros(1, 1, 10), (0, 2))
    assert torch.nn.functional.conv1d(x, torch.zeros(1, 1, 3), stride=2).shape[-1] == 5


@pytest.mark.parametrize("i,f,s,d", list(itertools.product([1, 7, 8, 13], [1, 2, 3, 5], [1, 2, 3],
                                                           [1, 2])))
def test_same_padding_gives_ceil_i_over_s_with_extra_at_end(i, f, s, d):
    ps, pe = S.same_padding(i, f, s, d)
    assert pe - ps in (0, 1)
    assert S.conv_output_size(i, f, s, "same", d) == -(-i // s)
    if s == 1 and f % 2 == 1:  # torch supports "same" at stride 1 only
        conv = torch.nn.Conv1d(1, 1, f, padding="same", dilation=d)
        assert conv(torch.zeros(1, 1, i)).shape[-1] == i


def test_valid_and_full_padding():
    assert S.resolve_padding("valid", 10, 3) == (0, 0)
    assert S.resolve_padding("full", 10, 3) == (2, 2)
    assert S.conv_output_size(10, 3, 1, "full") == 12
    assert S.resolve_padding("full", 10, 3, dilation=2) == (4, 4)
    assert S.conv_output_size(10, 3, 1, "valid") == 8


@pytest.mark.parametrize("i,f,s,p", [(112, 3, 2, 0), (14, 2, 2, 0), (13, 3, 2, 1), (6, 3, 3, 1),
                                     (55, 3, 2, 0), (5, 2, 2, 1)])
def test_pool_output_size_ceil_mode_matches_torch(i, f, s, p):
    for ceil in (False, True):
        ref = torch.nn.MaxPool1d(f, s, p, ceil_mode=ceil)(torch.zeros(1, 1, i)).shape[-1]
        assert S.pool_output_size(i, f, s, p, ceil_mode=ceil) == ref
    assert S.pool_output_size(8, 2) == 4  # stride defaults to the kernel


@pytest.mark.parametrize("i,f,s,p,op,d", [(7, 2, 2, 0, 0, 1), (5, 3, 2, 1, 1, 1), (4, 3, 3, 0, 2, 2)])
def test_conv_transpose_output_size_matches_torch(i, f, s, p, op, d):
    m = torch.nn.ConvTranspose1d(1, 1, f, stride=s, padding=p, output_padding=op, dilation=d)
    assert S.conv_transpose_output_size(i, f, s, p, op, d) == m(torch.zeros(1, 1, i)).shape[-1]


@pytest.mark.parametrize("cin,cout,k,g,bias", [(3, 96, 11, 1, True), (96, 256, 5, 1, True),
                                                (6, 9, (3, 2), 3, False), (4, 4, 3, 4, True)])
def test_conv_params_match_torch(cin, cout, k, g, bias):
    m = torch.nn.Conv2d(cin, cout, k, groups=g, bias=bias)
    assert S.conv_params(cin, cout, k, g, bias) == sum(p.numel() for p in m.parameters())
    t = torch.nn.ConvTranspose2d(cin, cout, k, groups=g, bias=bias)
    assert S.conv_transpose_params(cin, cout, k, g, bias) == sum(p.numel() for p in t.parameters())


def test_seed_table_parameter_figures():
    assert S.conv_params(3, 96, 11) == 34944          # AlexNet conv1
    assert S.conv_params(384, 256, 3) == 884992       # AlexNet conv5
    assert S.fc_params(9216, 4096) == 37752832        # AlexNet fc6
    assert S.fc_params(25088, 4096) == 102764544      # VGG-16 fc
    assert S.pool_params(2, 2) == 0                   # not the sheet's 65,664
    assert S.batchnorm_params(64) == 128 and S.batchnorm_params(64, affine=False) == 0
    assert S.fc_params(10, 5, bias=False) == 50


def test_macs():
    assert S.conv_macs(55, 55, 3, 96, 11) == 55 * 55 * 96 * 3 * 121
    assert S.conv_macs(4, 4, 8, 8, 3, groups=4) == 16 * 8 * 2 * 9
    assert S.fc_macs(9216, 4096) == 9216 * 4096


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        S.resolve_padding("half", 5, 3)
    with pytest.raises(ValueError, match="padding"):
        S.resolve_padding((1, 2, 3), 5, 3)
    with pytest.raises(ValueError, match="padding"):
        S.resolve_padding(-1, 5, 3)
    with pytest.raises(ValueError, match="input_size"):
        S.conv_output_size(2, 5)
    with pytest.raises(ValueError, match="stride"):
        S.conv_output_size(5, 3, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        S.conv_output_size(5, 3.0)
    with pytest.raises(ValueError, match="groups"):
        S.conv_params(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="dilation"):
        S.effective_kernel_size(3, 0)
