// The AVX-512 dense convolution of frozen inference graphs (prepack.h,
// conv_forward_panels): y (K, P) = W (K, C) x (C, P) per image, x the input itself
// for a 1x1 layer (NCHW as it is) or its im2col matrix, with bias, residual and
// activation applied to the accumulators before the last store of y.
//
// Why not the GEMM: a 1x1 layer with few input channels (MobileNet-V2's 16->96 on
// 112x112) does only C multiply-adds per output, so the GEMM's extra passes over y
// (store, bias, then the epilogue reading it back) cost as much as the multiply,
// and on a 7x7 map its 16-column panels leave a third of every row to edge code.
// Here a tile is kPanelRows output channels by up to four vectors of 16
// positions (the last one masked, so 7x7 = 49 positions is four vectors, not
// three plus scalar code); the weights, packed at freeze time as (panel, C,
// kPanelRows), are broadcast from memory straight into the FMAs. The same tiles
// serve a 3x3 layer on a 7x7 or 14x14 map at batch 1 (ResNet-50's 512-channel 3x3
// at 7x7: the GEMM's 16-column panels left 49 positions at 46 GFLOP/s).
#include <immintrin.h>

#include <type_traits>

#include "cpu/epilogue_vec.h"
#include "cpu/prepack.h"
#include "cpu/simd_math_avx512.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using namespace cnnfast::avx512;
constexpr int kMR = static_cast<int>(kPanelRows);

using Ops = EpilogueOps;

// One tile: rows (<= kMR) output channels of y from the panel wp (C, kMR), NV
// vectors of positions, the last masked by `last`.
// pf (PF): the same rows of the next tile, fetched into L1 while this one computes; x
// in NCHW is one stream per channel, so the hardware prefetchers lose track of a tile's
// C rows (MobileNet-V2's 144->24 at 56x56, batch 8: 47 GFLOP/s without).
template <int NV, bool PF>
void tile(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
          const float* res, int64_t ldy, __mmask16 last, const Epilogue& e, bool accumulate, bool finish,
          const float* pf, const float* wpf) {
  // Every loop over r and v unrolled, so that acc lives in registers (GCC otherwise
  // keeps the array on the stack and stores it back on every step of c).
  __m512 acc[kMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    const __m512 b = bias && r < rows ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v + 1 < NV ? __mmask16(0xffff) : last;
      acc[r][v] = accumulate && r < rows ? load_lanes(m, y + r * ldy + 16 * v) : b;
    }
  }
  // The residual rows this tile adds at its end are fetched now, while the C-long loop
  // below hides the wait: each row's 64 positions are a short run that the hardware
  // prefetchers do not pick up. One thread, batch 8, with residual and ReLU: ResNet-50's
  // 128->512 at 28x28 5.28 -> 4.12 ms, 64->256 at 56x56 5.74 -> 4.95, 256->1024 at
  // 14x14 4.49 -> 4.08. (Fetching y's rows the same way did not pay.)
  if (finish && res) {
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      if (r >= rows) continue;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(res + r * ldy + 16 * v), _MM_HINT_T0);
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const float* xc = x + c * ldx;
    if constexpr (PF) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) _mm_prefetch(reinterpret_cast<const char*>(pf + c * ldx + 16 * v), _MM_HINT_T0);
    }
    __m512 xv[NV];
#pragma GCC unroll 4
    for (int v = 0; v + 1 < NV; ++v) xv[v] = _mm512_loadu_ps(xc + 16 * v);
    xv[NV - 1] = load_lanes(last, xc + 16 * (NV - 1));
    if (wpf) _mm_prefetch(reinterpret_cast<const char*>(wpf + c * kMR), _MM_HINT_T1);
    fma_rows(acc, wp + c * kMR, xv);
  }
  const __m512 alpha = _mm512_set1_ps(float(e.alpha)), beta = _mm512_set1_ps(float(e.beta));
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    if (r >= rows) continue;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v + 1 < NV ? __mmask16(0xffff) : last;
      float* out = y + r * ldy + 16 * v;
      if (finish) CNNFAST_ISA_NS::epilogue_store<Ops>(acc[r][v], out, res ? res + r * ldy + 16 * v : nullptr, m, e.act,
                                                      alpha, beta);
      else store_lanes(out, m, acc[r][v]);
    }
  }
}

}  // namespace

void panel_tile(int64_t C, const float* x, int64_t ldx, const float* wp, int64_t rows, const float* bias, float* y,
                const float* res, int64_t ldy, int64_t cols, const Epilogue& e, bool accumulate, bool finish,
                const float* prefetch, const float* weight_prefetch) {
  const int nv = static_cast<int>((cols + 15) / 16);
  const __mmask16 last = tail_mask16(cols - 16 * (nv - 1));
  auto run = [&](auto nv_c, auto pf_c) {
    tile<decltype(nv_c)::value, decltype(pf_c)::value>(C, x, ldx, wp, rows, bias, y, res, ldy, last, e, accumulate,
                                                       finish, prefetch, weight_prefetch);
  };
  using T = std::true_type;
  using F = std::false_type;
  switch (nv) {
    case 1:
      return prefetch ? run(std::integral_constant<int, 1>(), T()) : run(std::integral_constant<int, 1>(), F());
    case 2:
      return prefetch ? run(std::integral_constant<int, 2>(), T()) : run(std::integral_constant<int, 2>(), F());
    case 3:
      return prefetch ? run(std::integral_constant<int, 3>(), T()) : run(std::integral_constant<int, 3>(), F());
    default:
      return prefetch ? run(std::integral_constant<int, 4>(), T()) : run(std::integral_constant<int, 4>(), F());
  }
}

}  // namespace cnnfast::cpu::avx512_impl
