// The AVX2 counterpart of conv_panels_avx512.cpp (prepack.h, conv_forward_panels) for
// CPUs without AVX-512 (Zen 2, Haswell..Comet Lake): y (K, P) = W (K, C) x (C, P) per
// image, the bias, residual and activation applied to the accumulators before the last
// store of y, the weights read from the same (panel, C, kPanelRows) pack.
//
// With 16 ymm registers a micro-tile is kPanelRows (6) output channels by two vectors of
// 8 positions: 12 accumulators, two x vectors, one broadcast weight. A call covers the
// same <= 64 positions as the AVX-512 tile, 16 at a time, the last 16 masked; while
// one 16-column strip computes, the next strip's x rows are prefetched (x in NCHW is one
// stream per channel, too many for the hardware prefetchers at C >= 16).
//
// Why not the packed GEMM on AVX2 too: a 1x1 layer with few input channels
// (MobileNet-V2's 16->96 on 112x112, batch 1, one thread on Zen 2: 1.40 ms against
// onnxruntime's 0.60) spends more on the GEMM's separate passes over y (store, bias,
// epilogue) than on the multiply.
#include <immintrin.h>

#include <algorithm>

#include "cpu/epilogue_vec.h"
#include "cpu/prepack.h"
#include "cpu/simd_math_avx2.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

using namespace cnnfast::avx2;
constexpr int kMR = static_cast<int>(kPanelRows);

using Ops = EpilogueOps;

// One strip: rows (<= kMR) output channels of y by NV vectors of 8 positions, the last
// vector's lanes enabled by `last` (all when the strip is full). pf (or null): the next
// strip's x, same rows and ld, fetched into L1 meanwhile.
template <int NV, bool MASKED>
void strip(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
           const float* res, int64_t ldy, __m256i last, const Epilogue& e, bool accumulate, bool finish,
           const float* pf) {
  auto load = [&](const float* p, int v) {
    return MASKED && v + 1 == NV ? _mm256_maskload_ps(p, last) : _mm256_loadu_ps(p);
  };
  __m256 acc[kMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    const __m256 b = bias && r < rows ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate && r < rows ? load(y + r * ldy + 8 * v, v) : b;
  }
  for (int64_t c = 0; c < C; ++c) {
    const float* xc = x + c * ldx;
    if (pf) _mm_prefetch(reinterpret_cast<const char*>(pf + c * ldx), _MM_HINT_T0);
    __m256 xv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) xv[v] = load(xc + 8 * v, v);
    const float* wc = wp + c * kMR;
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m256 w = _mm256_broadcast_ss(wc + r);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(w, xv[v], acc[r][v]);
    }
  }
  const __m256 alpha = _mm256_set1_ps(float(e.alpha)), beta = _mm256_set1_ps(float(e.beta));
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    if (r >= rows) continue;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m256 a = acc[r][v];
      if (finish) {
        if (res) a = _mm256_add_ps(a, load(res + r * ldy + 8 * v, v));
        a = CNNFAST_ISA_NS::activate_vec<Ops>(a, e.act, alpha, beta);
      }
      float* out = y + r * ldy + 8 * v;
      if (MASKED && v + 1 == NV)
        _mm256_maskstore_ps(out, last, a);
      else
        _mm256_storeu_ps(out, a);
    }
  }
}

}  // namespace

void panel_tile(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
                const float* res, int64_t ldy, int64_t cols, const Epilogue& e, bool accumulate, bool finish,
                const float* prefetch, const float* weight_prefetch) {
  // AVX2 takes the weight-streaming layers (batch 1, weights past L2) through the packed
  // GEMM first (conv_fused.cpp), so the weight prefetch is only measured, and used, at AVX-512.
  (void)weight_prefetch;
  for (int64_t p0 = 0; p0 < cols; p0 += 16) {
    const int64_t n = std::min<int64_t>(16, cols - p0);
    // The next strip of this tile, or the caller's next tile after the last one.
    const float* pf = p0 + 16 < cols ? x + p0 + 16 : prefetch;
    const float* xs = x + p0;
    float* ys = y + p0;
    const float* rs = res ? res + p0 : nullptr;
    if (n == 16) {
      strip<2, false>(C, xs, ldx, wp, rows, bias, ys, rs, ldy, _mm256_setzero_si256(), e, accumulate, finish, pf);
    } else if (n > 8) {
      strip<2, true>(C, xs, ldx, wp, rows, bias, ys, rs, ldy, tail_mask(int(n - 8)), e, accumulate, finish, pf);
    } else if (n == 8) {
      strip<1, false>(C, xs, ldx, wp, rows, bias, ys, rs, ldy, _mm256_setzero_si256(), e, accumulate, finish, pf);
    } else {
      strip<1, true>(C, xs, ldx, wp, rows, bias, ys, rs, ldy, tail_mask(int(n)), e, accumulate, finish, pf);
    }
  }
}

}  // namespace cnnfast::cpu::avx2_impl
