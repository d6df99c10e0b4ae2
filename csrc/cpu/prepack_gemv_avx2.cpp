// Matrix-vector product for the batch-1 layers of frozen graphs (prepack.h): a
// Linear layer on one image and a squeeze-and-excitation 1x1 convolution on a 1x1
// map are y = W x with W (M, K) row-major. The packed GEMM pads the one column of x
// to a 16/32-wide panel (16-32x the work) and, for a Linear, transposes W on every
// call; here each row of W is read once, four rows at a time against one x vector.
#include <immintrin.h>

#include <cstdint>

#include "cpu/conv.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
using avx2::hsum8;

// y[i] = sum_k W[i * K + k] * x[k] for i < M.
void gemv_rows(int64_t M, int64_t K, const float* W, const float* x, float* y) {
  const int64_t K8 = K / 8 * 8;
  int64_t i = 0;
  for (; i + 4 <= M; i += 4) {
    const float* w0 = W + i * K;
    const float* w1 = w0 + K;
    const float* w2 = w1 + K;
    const float* w3 = w2 + K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K8; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, a3);
    }
    float s0 = hsum8(a0), s1 = hsum8(a1), s2 = hsum8(a2), s3 = hsum8(a3);
    for (int64_t k = K8; k < K; ++k) {
      s0 += w0[k] * x[k];
      s1 += w1[k] * x[k];
      s2 += w2[k] * x[k];
      s3 += w3[k] * x[k];
    }
    y[i] = s0;
    y[i + 1] = s1;
    y[i + 2] = s2;
    y[i + 3] = s3;
  }
  for (; i < M; ++i) {
    const float* w0 = W + i * K;
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), _mm256_loadu_ps(x + k), a0);
    float s0 = hsum8(a0);
    for (int64_t k = K8; k < K; ++k) s0 += w0[k] * x[k];
    y[i] = s0;
  }
}

}  // namespace cnnfast::cpu::avx2_impl
