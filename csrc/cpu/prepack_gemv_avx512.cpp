// avx2_impl::gemv_rows on AVX-512 (prepack.h): y = W x for the batch-1 Linear and
// squeeze-and-excitation layers of frozen graphs, and the panel kernel's last column.
//
// Why not the AVX2 kernel's four rows at a time: a batch-1 classifier streams its
// weights from L3 or memory, and four rows K floats apart are four streams for the
// hardware prefetchers to find anew every four rows. Here two rows go together (one
// stream, W being row-major), each in two accumulator pairs, and the stream is fetched
// a few hundred lines ahead. MobileNet-V2's 1280->1000 at batch 1, weights from L3:
// 0.12 ms in a 2-thread graph, onnxruntime's 0.04.
#include <immintrin.h>

#include <cstdint>

#include "cpu/prepack.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

constexpr int64_t kAhead = 4096;  // bytes of W fetched ahead of the loads

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

}  // namespace

void gemv_rows(int64_t M, int64_t K, const float* W, const float* x, float* y) {
  const int64_t K16 = K / 16 * 16;
  const __mmask16 tail = cnnfast::avx512::tail_mask16(K - K16);
  const char* end = reinterpret_cast<const char*>(W + M * K);
  int64_t i = 0;
  for (; i + 2 <= M; i += 2) {
    const float* w0 = W + i * K;
    const float* w1 = w0 + K;
    __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
    int64_t k = 0;
    for (; k + 32 <= K16; k += 32) {
      const char* ahead = reinterpret_cast<const char*>(w1 + k) + kAhead;
      if (ahead < end) {
        _mm_prefetch(ahead, _MM_HINT_T0);
        _mm_prefetch(ahead + 64, _MM_HINT_T0);
        _mm_prefetch(ahead + K * 4, _MM_HINT_T0);
        _mm_prefetch(ahead + K * 4 + 64, _MM_HINT_T0);
      }
      const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x0, a0);
      b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), x1, b0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x0, a1);
      b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), x1, b1);
    }
    for (; k < K16; k += 16) {
      const __m512 x0 = _mm512_loadu_ps(x + k);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x0, a1);
    }
    if (tail) {
      const __m512 x0 = _mm512_maskz_loadu_ps(tail, x + K16);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + K16), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + K16), x0, a1);
    }
    y[i] = hsum(_mm512_add_ps(a0, b0));
    y[i + 1] = hsum(_mm512_add_ps(a1, b1));
  }
  if (i < M) {
    const float* w0 = W + i * K;
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), _mm512_loadu_ps(x + k), a0);
    if (tail) a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + K16), _mm512_maskz_loadu_ps(tail, x + K16), a0);
    y[i] = hsum(a0);
  }
}

}  // namespace cnnfast::cpu::avx512_impl
