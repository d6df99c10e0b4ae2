"""The GEMM engine (cnnfast._C.gemm): packed AVX-512 and AVX2 SGEMMs and the scalar
reference, against NumPy in float64, across block edges (AVX2: MR=6, NR=16, MC=96;
AVX-512: MR=8, NR=32, MC=128; both KC=256, NC=2048)."""
import numpy as np
import pytest

import cnnfast
from cnnfast import _C
from helpers import assert_close

# The last row panel of the AVX2 kernel runs 2, 4 or 6 rows for 1-2, 3-4 or 5-6 real ones:
# M = 32, 3, 16 put 2, 3, 4 rows there, at full and partial column panels, over several KC.
SHAPES = [(1, 1, 1), (6, 16, 1), (7, 17, 5), (13, 31, 257), (97, 33, 19), (5, 2049, 3), (130, 300, 150),
          (64, 3136, 27), (32, 48, 270), (3, 40, 300), (16, 16, 513)]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_float32(M, N, K, ta, tb, simd, rng):
    if simd == "scalar" and M * N * K > 3e6:
        pytest.skip("large shapes only on the vector path (the scalar path is checked on the others)")
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    A = np.ascontiguousarray(a.T) if ta else a
    B = np.ascontiguousarray(b.T) if tb else b
    c = _C.gemm(A, B, trans_a=ta, trans_b=tb)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert_close(c, ref, rtol=1e-4, atol=1e-5 * np.sqrt(K) * 10)


@pytest.mark.parametrize("M,N,K", [(7, 17, 5), (13, 31, 300)])
def test_gemm_float64(M, N, K, rng):
    a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    assert_close(_C.gemm(a, b), a @ b, rtol=1e-12, atol=1e-12)
    assert_close(_C.gemm(np.ascontiguousarray(a.T), b, trans_a=True), a @ b, rtol=1e-12, atol=1e-12)


def test_gemm_special_values(simd):
    a = np.array([[np.inf, 1.0], [np.nan, 2.0]], np.float32)
    b = np.array([[1.0], [1.0]], np.float32)
    c = _C.gemm(a, b)
    assert np.isinf(c[0, 0]) and np.isnan(c[1, 0])


def test_gemm_bad_input():
    with pytest.raises(ValueError, match="b: expected 3 rows"):
        _C.gemm(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="b: expected dtype float32"):
        _C.gemm(np.zeros((2, 3), np.float32), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="a: expected 2 dimensions"):
        _C.gemm(np.zeros(3, np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="a: expected a C-contiguous"):
        _C.gemm(np.zeros((3, 2), np.float32).T, np.zeros((3, 2), np.float32))


def test_fma_peak_is_measured():
    if not _C.cpu_supports_avx2():
        pytest.skip("CPU has no AVX2")
    assert _C.fma_peak_gflops(1) > 1.0
    with pytest.raises(ValueError, match="threads: expected a positive int"):
        _C.fma_peak_gflops(0)
