"""Sizes that overflow 32 and 64 bits, and allocations that cannot succeed (issue 10).

Every size reachable from Python is an int64 that a caller can pick so that a
product or a sum wraps around. The bindings compute output sizes with checked
64-bit arithmetic (csrc/core/checked_math.h) and refuse, before anything is
allocated: ValueError when a size does not fit in int64, MemoryError (with the
byte count) when the buffer exceeds this machine's memory. Sizes that pass 2**31
but fit in memory must give the right answer: the kernels index in 64 bits.
"""
import tracemalloc

import numpy as np
import pytest

import cnnfast
import cnnfast._C as C
from helpers import assert_close

BIG = 2**62
I64_MAX = 2**63 - 1


def _no_big_allocation(fn, *args, **kwargs):
    """Runs fn expecting an exception; asserts NumPy allocated (almost) nothing first."""
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as info:
            fn(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes were allocated before the refusal"
    return info


def x1d(n=5, dt=np.float32):
    return np.arange(n, dtype=dt).reshape(1, 1, n)


# ---- convolution geometry ----------------------------------------------------


@pytest.mark.parametrize("padding", [[[BIG, BIG]], [[I64_MAX, 0]], [[0, I64_MAX]]])
def test_conv_padding_sum_overflow_is_a_value_error(padding):
    with pytest.raises(ValueError, match="padding: size .* does not fit in a 64-bit integer"):
        C.conv_forward(x1d(), np.ones((1, 1, 3), np.float32), None, [1], padding, [1], 1)


@pytest.mark.parametrize("dilation", [BIG, I64_MAX])
def test_conv_dilated_extent_overflow_is_a_value_error(dilation):
    with pytest.raises(ValueError, match="dilation: size .* does not fit in a 64-bit integer"):
        C.conv_forward(x1d(), np.ones((1, 1, 3), np.float32), None, [1], [[0, 0]], [dilation], 1)
    with pytest.raises(ValueError, match="dilation"):
        C.conv_backward(np.ones((1, 1, 1), np.float32), x1d(), np.ones((1, 1, 3), np.float32), [1], [[0, 0]],
                        [dilation], 1)


def test_conv_transpose_output_overflow_is_a_value_error():
    x, w = x1d(3), np.ones((1, 1, 3), np.float32)
    with pytest.raises(ValueError, match="stride: size .* does not fit in a 64-bit integer"):
        C.conv_transpose_forward(x, w, None, [BIG], [[0, 0]], [0], [1], 1)
    with pytest.raises(ValueError, match="dilation: size .* does not fit"):
        C.conv_transpose_forward(x, w, None, [1], [[0, 0]], [0], [I64_MAX], 1)
    with pytest.raises(ValueError, match="padding"):
        C.conv_transpose_forward(x, w, None, [1], [[I64_MAX, I64_MAX]], [0], [1], 1)


def test_conv_output_with_more_elements_than_int64_is_refused_before_allocating():
    # Each spatial extent fits in int64, their product with N*K does not.
    x = np.ones((1, 1, 2, 2), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    info = _no_big_allocation(C.conv_forward, x, w, None, [1, 1], [[2**40, 2**40], [2**40, 2**40]], [1, 1], 1)
    assert issubclass(info.type, ValueError)
    assert "more elements than fit in a 64-bit integer" in str(info.value)


def test_conv_output_beyond_memory_is_a_memory_error_before_allocating():
    # 2**21 x 2**21 float32 outputs: 16 TiB, more than any test machine has.
    x = np.ones((1, 1, 2, 2), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    info = _no_big_allocation(C.conv_forward, x, w, None, [1, 1], [[2**20, 2**20], [2**20, 2**20]], [1, 1], 1)
    assert info.type is MemoryError
    assert "refusing to allocate" in str(info.value) and "output" in str(info.value)


def test_conv_with_offsets_beyond_32_bits_gives_the_right_answer():
    """Padding, stride and dilation of 2**31 push every window offset past int32,
    yet the output is three elements: an int32 index anywhere would misplace them."""
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5) + 1
    w = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3)
    y = C.conv_forward(x, w, None, [2**31], [[2**31, 2**31]], [1], 1)
    assert_close(y, np.array([[[0.0, x[0, 0, :3] @ w[0, 0], 0.0]]]), rtol=0, atol=0)
    # Two taps 2**31 apart: only the windows whose taps both land inside x see it.
    w2 = np.array([1.0, 10.0]).reshape(1, 1, 2)
    y2 = C.conv_forward(x, w2, None, [2**31], [[2**31, 2**31]], [2**31], 1)
    # window o covers padded positions o*2**31 and o*2**31 + 2**31, i.e. x indices (o-1)*2**31 and o*2**31
    assert_close(y2, np.array([[[10.0 * x[0, 0, 0], 1.0 * x[0, 0, 0]]]]), rtol=0, atol=0)
    gx, gw, gb = C.conv_backward(np.ones_like(y2), x, w2, [2**31], [[2**31, 2**31]], [2**31], 1)
    assert_close(gx, np.array([[[11.0, 0, 0, 0, 0]]]), rtol=0, atol=0)
    assert_close(gw, np.array([[[x[0, 0, 0], x[0, 0, 0]]]]), rtol=0, atol=0)
    assert_close(gb, np.array([2.0]), rtol=0, atol=0)


@pytest.mark.parametrize("stride", [2**31, 2**62, I64_MAX])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_conv_huge_stride_gives_one_output(stride, groups, dt, simd):
    """A stride near 2**63 once wrapped inside the im2col range computation (ceil_div's
    a + b - 1) and the only output came back 0 instead of x[0] + x[1]."""
    x = np.arange(2 * 7, dtype=dt).reshape(1, 2, 7) + 1
    w = np.ones((2, 2 // groups, 2), dt)
    y = C.conv_forward(x, w, None, [stride], [[0, 0]], [1], groups)
    want = (x[0, :, 0] + x[0, :, 1]).sum() if groups == 1 else x[0, :, 0] + x[0, :, 1]
    assert y.shape == (1, 2, 1)
    assert_close(y[0, :, 0], np.broadcast_to(want, (2,)), rtol=0, atol=0)
    gx, gw, gb = C.conv_backward(np.ones_like(y), x, w, [stride], [[0, 0]], [1], groups)
    want_gx = np.zeros_like(x)
    want_gx[0, :, :2] = 2 if groups == 1 else 1
    assert_close(gx, want_gx, rtol=0, atol=0)


def test_huge_groups_is_a_value_error():
    with pytest.raises(ValueError, match="groups"):
        C.conv_forward(x1d(), np.ones((1, 1, 3), np.float32), None, [1], [[0, 0]], [1], BIG)


# ---- pooling and other requested sizes ------------------------------------------


def test_pool_sizes_at_and_beyond_2_31_are_value_errors():
    x = np.ones((1, 1, 4, 4), np.float32)
    for arg in ("kernel_size", "stride", "padding", "dilation"):
        kw = dict(kernel_size=[2, 2], stride=[2, 2], padding=[0, 0], dilation=[1, 1])
        kw[arg] = [2**31, 1]
        with pytest.raises(ValueError, match=arg):
            C.max_pool2d_forward(x, **kw)
    with pytest.raises(ValueError, match="output_size"):
        C.adaptive_avg_pool2d_forward(x, [2**31, 2])


def test_pool_backward_input_size_beyond_int64_is_refused_before_allocating():
    gy = np.ones((1, 1, 1, 1, 1), np.float32)
    info = _no_big_allocation(C.max_pool3d_backward, gy, np.zeros(gy.shape, np.int64), [1, 1] + [2**31 - 1] * 3)
    assert issubclass(info.type, ValueError) and "more elements than fit in a 64-bit integer" in str(info.value)


def test_pool_backward_input_size_beyond_memory_is_a_memory_error():
    info = _no_big_allocation(C.adaptive_avg_pool2d_backward, np.ones((1, 1, 1, 1), np.float32),
                              [1, 1, 2**31 - 1, 2**31 - 1])
    assert info.type is MemoryError and "refusing to allocate" in str(info.value)


def test_unpool_output_size_beyond_memory_is_a_memory_error():
    x = np.ones((1, 1, 1, 1), np.float32)
    info = _no_big_allocation(C.max_unpool2d_forward, x, np.zeros((1, 1, 1, 1), np.int64),
                              [2**31 - 1, 2**31 - 1])
    assert info.type is MemoryError


@pytest.mark.parametrize("n", [2**40, 2**62, I64_MAX])
def test_dropout_mask_beyond_memory_is_a_memory_error(n):
    info = _no_big_allocation(C.dropout_mask, n, 0.5, 1, 0)
    assert info.type is MemoryError and str(info.value).startswith("n: needs")


def test_int64_overflowing_python_ints_are_type_errors():
    with pytest.raises(TypeError):
        C.dropout_mask(2**64, 0.5, 1, 0)
    with pytest.raises((TypeError, ValueError), match="divisor_override"):
        C.avg_pool2d_forward(np.ones((1, 1, 2, 2), np.float32), [2, 2], divisor_override=2**70)


# ---- arrays that claim huge sizes ---------------------------------------------


def test_zero_stride_views_with_huge_shapes_never_reach_a_kernel():
    base = np.zeros(1, np.float32)
    huge = np.lib.stride_tricks.as_strided(base, shape=(2**30, 2**30), strides=(0, 0))
    with pytest.raises(ValueError, match="a: expected a C-contiguous array"):
        C.gemm(huge, huge)
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        C.relu_forward(huge)
    w = np.lib.stride_tricks.as_strided(base, shape=(3, 2**30), strides=(0, 0))
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        C.linear_forward(huge, w, None)


def test_zero_size_arrays_with_large_other_dims_are_value_errors():
    a = np.empty((0, 2**30), np.float32)
    for fn in (C.relu_forward, C.softmax_forward, C.sigmoid_forward):
        with pytest.raises(ValueError, match="x: expected a non-empty array"):
            fn(a)
    with pytest.raises(ValueError, match="input"):
        C.layer_norm_forward(np.empty((2**20, 0, 3), np.float32), 1)


# ---- threads --------------------------------------------------------------------


def test_thread_counts_are_capped():
    before = cnnfast.get_num_threads()
    try:
        with pytest.raises(ValueError, match="n: expected a thread count <= 1024"):
            C.set_num_threads(10**6)
        with pytest.raises(TypeError):
            C.set_num_threads(2**40)
        assert C.get_num_threads() == before
    finally:
        C.set_num_threads(before)
    with pytest.raises(ValueError, match="threads: expected at most 1024"):
        C.fma_peak_gflops(10**6)
