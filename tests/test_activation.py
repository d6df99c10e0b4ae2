"""Activation kernels (cnnfast._C) against PyTorch, float64 finite differences,
and each other (every SIMD level vs scalar), plus bad-input handling."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C
from helpers import TAIL_LENGTHS, assert_close, assert_nontrivial, at_level, numerical_grad

# name -> (forward, backward, what backward saves, torch reference, kwargs)
ELEMENTWISE = {
    "relu": (_C.relu_forward, _C.relu_backward, "x", lambda t: TF.relu(t), {}),
    "leaky_relu": (_C.leaky_relu_forward, _C.leaky_relu_backward, "x",
                   lambda t: TF.leaky_relu(t, 0.07), {"negative_slope": 0.07}),
    "elu": (_C.elu_forward, _C.elu_backward, "x", lambda t: TF.elu(t, 1.3), {"alpha": 1.3}),
    "sigmoid": (_C.sigmoid_forward, _C.sigmoid_backward, "y", torch.sigmoid, {}),
    "tanh": (_C.tanh_forward, _C.tanh_backward, "y", torch.tanh, {}),
    "silu": (_C.silu_forward, _C.silu_backward, "x", TF.silu, {}),
}
RELU_LIKE = {"relu", "leaky_relu"}
# Odd sizes exercise the masked AVX2 tails; 70001 crosses the threading grain.
SHAPES = [(1,), (7,), (13,), (2, 17), (3, 1, 5, 11), (70001,)]


def run_elementwise(name, x, gy):
    fwd, bwd, saved, _, kw = ELEMENTWISE[name]
    y = fwd(x, **kw)
    gx = bwd(gy, x if saved == "x" else y, **kw)
    return y, gx


def torch_elementwise(name, x, gy):
    t = torch.tensor(x, requires_grad=True)
    y = ELEMENTWISE[name][3](t)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_matches_torch(name, shape, simd, rng):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    y, gx = run_elementwise(name, x, gy)
    ty, tgx = torch_elementwise(name, x, gy)
    rtol = 1e-6 if name in RELU_LIKE else 1e-5
    assert_close(y, ty, rtol=rtol, atol=1e-7, what=f"{name} forward")
    assert_close(gx, tgx, rtol=rtol, atol=1e-6, what=f"{name} backward")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_wide_range_and_specials(name, simd):
    # Large magnitudes hit the exp clamps; the specials must behave as in torch.
    x = np.concatenate([np.linspace(-100, 100, 2001), np.linspace(-1e-3, 1e-3, 37),
                        [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    gy = np.ones_like(x)
    y, gx = run_elementwise(name, x, gy)
    ty, tgx = torch_elementwise(name, x, gy)
    assert_close(y, ty, rtol=1e-5, atol=1e-7, what=f"{name} forward")
    fin = np.isfinite(x)
    assert_close(gx[fin], tgx[fin], rtol=1e-5, atol=1e-6, what=f"{name} backward")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_gradient_finite_differences(name, rng):
    # Keep away from ReLU's kink where the derivative is undefined.
    x = rng.uniform(-3, 3, size=(3, 7))
    x[np.abs(x) < 0.05] += 0.2
    gy = rng.standard_normal(x.shape)
    fwd, bwd, saved, _, kw = ELEMENTWISE[name]
    _, gx = run_elementwise(name, x, gy)
    (num,) = numerical_grad(lambda a: fwd(a, **kw), [x.copy()], gy)
    assert_nontrivial(num)
    assert_close(gx, num, rtol=1e-6, atol=1e-8, what=f"{name} grad vs finite differences")


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_every_level_agrees_with_scalar(name, level, rng):
    if level not in cnnfast.simd_levels():
        pytest.skip(f"no {level} on this CPU")
    x = (rng.standard_normal(10007) * 6).astype(np.float32)
    gy = rng.standard_normal(10007).astype(np.float32)
    fwd, bwd, saved, _, kw = ELEMENTWISE[name]
    y_ref = at_level("scalar", fwd, x, **kw)
    # Both backwards get the same saved tensor, so they are compared on their own.
    saved_arr = x if saved == "x" else y_ref
    gx_ref = at_level("scalar", bwd, gy, saved_arr, **kw)
    y_vec = at_level(level, fwd, x, **kw)
    gx_vec = at_level(level, bwd, gy, saved_arr, **kw)
    assert_close(y_vec, y_ref, rtol=4e-7, atol=1e-7, what="forward")
    assert_close(gx_vec, gx_ref, rtol=1e-6, atol=1e-7, what="backward")


@pytest.mark.parametrize("n", TAIL_LENGTHS)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_every_tail_length_matches_scalar_and_torch(name, n, simd, rng):
    # Masked tails of every length after the 8- and 16-lane bodies; the output
    # sits inside a larger buffer so a store past the end would show.
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    gy = rng.standard_normal(n).astype(np.float32)
    fwd, bwd, saved, _, kw = ELEMENTWISE[name]
    buf = np.full(n + 40, 7.0, np.float32)
    out = buf[3:3 + n]
    fwd(x, **kw, out=out)
    y_ref = at_level("scalar", fwd, x, **kw)
    assert_close(out, y_ref, rtol=4e-7, atol=1e-7, what=f"{name} forward vs scalar")
    saved_arr = x if saved == "x" else y_ref
    bwd(gy, saved_arr, **kw, out=out)
    assert_close(out, at_level("scalar", bwd, gy, saved_arr, **kw), rtol=1e-6, atol=1e-7, what=f"{name} backward")
    assert np.all(buf[:3] == 7.0) and np.all(buf[3 + n:] == 7.0), "store outside the output"
    y, gx = run_elementwise(name, x, gy)
    ty, tgx = torch_elementwise(name, x, gy)
    assert_close(y, ty, rtol=1e-5, atol=1e-7, what=f"{name} forward vs torch")
    assert_close(gx, tgx, rtol=1e-5, atol=1e-6, what=f"{name} backward vs torch")


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,axis", [((1, 1), -1), ((5, 13), -1), ((4, 1000), 1), ((2, 3, 5, 7), 1),
                                        ((2, 3, 5, 7), 0), ((3, 11, 2), -2), ((17,), 0), ((2, 9, 3), 2)])
def test_softmax_matches_torch(log, shape, axis, simd, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    fwd = _C.log_softmax_forward if log else _C.softmax_forward
    bwd = _C.log_softmax_backward if log else _C.softmax_backward
    y = fwd(x, axis)
    gx = bwd(gy, y, axis)
    t = torch.tensor(x, requires_grad=True)
    ty = (torch.log_softmax if log else torch.softmax)(t, dim=axis)
    ty.backward(torch.tensor(gy))
    assert_close(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, what="softmax forward")
    assert_close(gx, t.grad.numpy(), rtol=1e-5, atol=1e-6, what="softmax backward")


@pytest.mark.parametrize("n", TAIL_LENGTHS)
def test_softmax_every_tail_length(n, simd, rng):
    # n is the reduced length of contiguous rows, then the vectorised inner width
    # of a strided axis; both against torch and the scalar path.
    for log in (False, True):
        fwd = _C.log_softmax_forward if log else _C.softmax_forward
        bwd = _C.log_softmax_backward if log else _C.softmax_backward
        tfn = torch.log_softmax if log else torch.softmax
        for shape, axis in (((3, n), 1), ((2, 5, n), 1)):
            x = (rng.standard_normal(shape) * 5).astype(np.float32)
            gy = rng.standard_normal(shape).astype(np.float32)
            y = fwd(x, axis)
            gx = bwd(gy, y, axis)
            t = torch.tensor(x, requires_grad=True)
            ty = tfn(t, dim=axis)
            ty.backward(torch.tensor(gy))
            assert_close(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, what=f"{shape} forward")
            assert_close(gx, t.grad.numpy(), rtol=1e-5, atol=1e-6, what=f"{shape} backward")
            # x - logsumexp cancels near 0: the two paths' lse differ by an ulp of lse.
            assert_close(y, at_level("scalar", fwd, x, axis), rtol=2e-6, atol=4e-6 if log else 1e-7,
                         what="forward vs scalar")
            assert_close(gx, at_level("scalar", bwd, gy, y, axis), rtol=1e-5, atol=1e-6, what="backward vs scalar")


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_gradient_finite_differences(log, axis, rng):
    x = rng.standard_normal((3, 4, 5))
    gy = rng.standard_normal(x.shape)
    fwd = _C.log_softmax_forward if log else _C.softmax_forward
    bwd = _C.log_softmax_backward if log else _C.softmax_backward
    gx = bwd(gy, fwd(x, axis), axis)
    (num,) = numerical_grad(lambda a: fwd(a, axis), [x.copy()], gy)
    assert_nontrivial(num)
    assert_close(gx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_nan_and_inf_rows_as_torch(log, simd):
    x = np.array([[1.0, np.nan, 2.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0]],
                 np.float32)
    fwd = _C.log_softmax_forward if log else _C.softmax_forward
    ref = (torch.log_softmax if log else torch.softmax)(torch.tensor(x), dim=1).numpy()
    assert_close(fwd(x, 1), ref, what="special rows, last axis")
    assert_close(fwd(np.ascontiguousarray(x.T), 0), ref.T, what="special rows, strided axis")


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_sigmoid_silu_accuracy_dense_grid(level):
    # The vector sigmoids have their own exponentials (simd_math_avx2.h,
    # simd_math_avx512.h): bound their relative error everywhere it matters.
    if level not in cnnfast.simd_levels():
        pytest.skip(f"no {level} on this CPU")
    x = np.linspace(-87, 30, 1_170_001).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = 1 / (1 + np.exp(-x64))
    y = at_level(level, _C.sigmoid_forward, x).astype(np.float64)
    ys = at_level(level, _C.silu_forward, x).astype(np.float64)
    tail = at_level(level, _C.sigmoid_forward, np.linspace(-120, -87, 1001).astype(np.float32))
    assert np.max(np.abs(y - ref) / ref) < 2.5e-7
    nz = x != 0
    assert np.max(np.abs(ys - x64 * ref)[nz] / np.abs(x64 * ref)[nz]) < 2.5e-7
    # Below -87 the result stays within the smallest normal floats of the exact one.
    assert np.all((tail >= 0) & (tail < 2e-38))


def _ulp_error(y, ref64):
    """Largest |y - ref| in units of the float32 spacing at ref."""
    spacing = np.spacing(np.abs(ref64.astype(np.float32))).astype(np.float64)
    return np.max(np.abs(y.astype(np.float64) - ref64) / spacing)


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_tanh_ulp_error_dense_grid(level):
    # tanh switches formulas at |x| = 0.625 and saturates near 9: a dense grid over
    # both, a finer one around 0, and every power of two down to the subnormals.
    if level not in cnnfast.simd_levels():
        pytest.skip(f"no {level} on this CPU")
    x = np.concatenate([np.linspace(-20, 20, 2_000_001), np.linspace(-1, 1, 1_000_001),
                        2.0 ** -np.arange(1, 140), -(2.0 ** -np.arange(1, 140))]).astype(np.float32)
    y = at_level(level, _C.tanh_forward, x)
    assert _ulp_error(y, np.tanh(x.astype(np.float64))) <= 3.0
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30], np.float32)
    ys = at_level(level, _C.tanh_forward, specials)
    np.testing.assert_array_equal(ys, [1, -1, np.nan, 0, 0, 1, -1])
    assert np.signbit(ys[4])


def test_large_outputs_streamed_to_unaligned_memory(simd, rng):
    # From 16 MB on, the cheap ops write with non-temporal stores after peeling
    # up to 7 elements to a 32-byte boundary: outputs at every misalignment.
    n = (16 << 20) // 4 + 11
    x = rng.standard_normal(n).astype(np.float32)
    gy = rng.standard_normal(n).astype(np.float32)
    buf = np.empty(n + 8, np.float32)
    for shift in (0, 3, 7):
        out = buf[shift:shift + n]
        _C.relu_forward(x, out=out)
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        _C.leaky_relu_forward(x, 0.1, out=out)
        np.testing.assert_array_equal(out, np.where(x < 0, x * np.float32(0.1), x))
        _C.relu_backward(gy, x, out=out)
        np.testing.assert_array_equal(out, np.where(x > 0, gy, 0))
    # A float view into a byte buffer at an odd offset is not even 4-byte aligned:
    # the binding refuses it before any store (the kernels assume element alignment).
    raw = np.frombuffer(bytearray(4 * n + 8), dtype=np.float32, count=n, offset=2)
    assert not raw.flags.aligned
    with pytest.raises(ValueError, match="out: expected an array aligned"):
        _C.relu_forward(x, out=raw)
    y = _C.sigmoid_forward(x)
    out = buf[5:5 + n]
    _C.sigmoid_backward(gy, y, out=out)
    assert_close(out, gy * y * (1 - y), rtol=1e-6, atol=1e-7, what="sigmoid backward")
    _C.tanh_backward(gy, y, out=out)
    assert_close(out, gy * (1 - y * y), rtol=1e-6, atol=1e-7, what="tanh backward")


def test_large_extra_outputs_streamed_to_unaligned_memory(simd, rng):
    # ReLU6, Hardsigmoid and Hardswish stream their large outputs the same way.
    n = (16 << 20) // 4 + 13
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    gy = rng.standard_normal(n).astype(np.float32)
    buf = np.empty(n + 16, np.float32)
    x64 = x.astype(np.float64)
    relu6 = np.clip(x64, 0, 6)
    refs = {
        "relu6": (relu6, np.where((x > 0) & (x < 6), gy, 0)),
        "hardsigmoid": (np.clip(x64 + 3, 0, 6) / 6, np.where((x > -3) & (x < 3), gy / 6, 0)),
        "hardswish": (x64 * np.clip(x64 + 3, 0, 6) / 6, None),
    }
    for shift in (0, 5, 15):
        out = buf[shift:shift + n]
        for name, (fwd_ref, bwd_ref) in refs.items():
            getattr(_C, f"{name}_forward")(x, out=out)
            assert_close(out, fwd_ref, rtol=1e-6, atol=1e-6, what=f"{name} forward, shift {shift}")
            if bwd_ref is not None:
                getattr(_C, f"{name}_backward")(gy, x, out=out)
                assert_close(out, bwd_ref, rtol=1e-6, atol=1e-7, what=f"{name} backward, shift {shift}")


def test_nan_passes_through_elementwise():
    x = np.array([np.nan] * 9, np.float32)
    for name, (fwd, _, _, _, kw) in ELEMENTWISE.items():
        assert np.isnan(fwd(x, **kw)).all(), name


def test_float64_kernels_match_float32_within_rounding(rng):
    x = rng.standard_normal(1001)
    for name, (fwd, _, _, _, kw) in ELEMENTWISE.items():
        assert_close(fwd(x.astype(np.float32), **kw), fwd(x, **kw), rtol=1e-5, atol=1e-7, what=name)


def test_out_argument_is_written(rng):
    x = rng.standard_normal(33).astype(np.float32)
    out = np.empty_like(x)
    ret = _C.tanh_forward(x, out=out)
    assert ret is out or np.shares_memory(ret, out)
    assert_close(out, np.tanh(x))


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal(7 * 40009).astype(np.float32)
    before = cnnfast.get_num_threads()
    cnnfast.set_num_threads(1)
    one = _C.silu_forward(x)
    s1 = _C.softmax_forward(x.reshape(7, -1), 1)
    cnnfast.set_num_threads(2)
    two = _C.silu_forward(x)
    s2 = _C.softmax_forward(x.reshape(7, -1), 1)
    cnnfast.set_num_threads(before)
    assert np.array_equal(one, two) and np.array_equal(s1, s2)


# ---- bad input ---------------------------------------------------------------

def test_wrong_dtype_is_type_error():
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        _C.relu_forward(np.arange(4))


def test_mixed_dtypes_are_type_error():
    with pytest.raises(TypeError, match="mixed dtypes"):
        _C.relu_backward(np.ones(3, np.float32), np.ones(3, np.float64))


def test_non_contiguous_is_value_error():
    x = np.ones((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="x: expected a C-contiguous array"):
        _C.sigmoid_forward(x)


def test_read_only_output_is_value_error():
    out = np.empty(4, np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out: expected a writeable array"):
        _C.relu_forward(np.ones(4, np.float32), out=out)


def test_wrong_output_shape_and_dtype():
    with pytest.raises(ValueError, match=r"out: expected shape \(4,\), got \(5,\)"):
        _C.relu_forward(np.ones(4, np.float32), out=np.empty(5, np.float32))
    with pytest.raises(TypeError, match="out"):
        _C.relu_forward(np.ones(4, np.float32), out=np.empty(4, np.float64))


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        _C.relu_forward(np.ones((0, 3), np.float32))


def test_shape_mismatch_in_backward():
    with pytest.raises(ValueError, match=r"x: expected shape \(3,\), got \(4,\)"):
        _C.relu_backward(np.ones(3, np.float32), np.ones(4, np.float32))


def test_softmax_bad_axis_and_rank():
    with pytest.raises(ValueError, match="axis"):
        _C.softmax_forward(np.ones((2, 3), np.float32), 2)
    with pytest.raises(ValueError, match="dimensions"):
        _C.softmax_forward(np.array(1.0, np.float32))


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="n: expected a thread count >= 1, got 0"):
        cnnfast.set_num_threads(0)


def test_unknown_simd_level():
    with pytest.raises(ValueError, match="'scalar', 'avx2' or 'avx512', got 'sse9'"):
        cnnfast.set_simd_level("sse9")


def test_info_reports_build(capsys):
    facts = cnnfast.info()
    printed = capsys.readouterr().out
    for key in ("version", "compiler", "simd", "threads", "cuda_compiled", "cuda_available"):
        assert key in facts and key in printed
    assert facts["simd"] in cnnfast.simd_levels()
    assert facts["cuda_available"] == (facts["cuda_compiled"] and cnnfast.cuda.device_count() > 0)


def test_thread_pool_survives_repeated_resizing(rng):
    # A rebuilt pool once replayed the previous job on its new workers.
    x = rng.standard_normal(1 << 17).astype(np.float32)
    expected = _C.tanh_forward(x)
    before = cnnfast.get_num_threads()
    for n in (1, 2, 3, 1, 4, 2):
        cnnfast.set_num_threads(n)
        assert cnnfast.get_num_threads() == n
        assert np.array_equal(_C.tanh_forward(x), expected)
    cnnfast.set_num_threads(before)


def test_host_allocator_is_left_alone_unless_asked():
    # Importing a library must not change its host's malloc policy; the tuning is opt-in.
    import os
    import subprocess
    import sys

    code = ("import cnnfast; before = cnnfast._C.host_allocator_tuned(); "
            "applied = cnnfast.tune_host_allocator(); print(before, applied, cnnfast._C.host_allocator_tuned())")
    env = {k: v for k, v in os.environ.items() if k != "CNNFAST_HOST_ALLOCATOR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    by_env = subprocess.run([sys.executable, "-c", "import cnnfast; print(cnnfast._C.host_allocator_tuned())"],
                            env=dict(env, CNNFAST_HOST_ALLOCATOR="tuned"), capture_output=True, text=True)
    before, applied, after = plain.stdout.split()
    assert before == "False", plain.stderr
    assert applied == after
    # Under AddressSanitizer (tests/run_sanitized.sh preloads libasan) malloc is ASan's, and
    # glibc's mallopt has nothing to tune: only the default-off half is checked there.
    sanitized = "asan" in os.environ.get("LD_PRELOAD", "")
    if sanitized:
        return
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        assert applied == "True"
        assert by_env.stdout.strip() == "True", by_env.stderr
    else:
        assert by_env.stdout.strip() == "False", by_env.stderr
