// Packed, cache-blocked SGEMM for AVX2+FMA (compiled with -mavx2 -mfma) on the
// loop nest of gemm_driver.h: a 6x16 micro-kernel with 12 ymm accumulators;
// partial tiles of C go through a small stack buffer.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/gemm.h"
#include "cpu/gemm_driver.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

constexpr int64_t MR = 6, NR = 16;
constexpr int64_t MC = 96;    // 96 x 256 x 4 B = 96 KiB of packed A: half of a 512 KiB L2
constexpr int64_t KC = 256;   // one 16-wide B micro-panel is 16 KiB: fits L1 with room for A
constexpr int64_t NC = 2048;  // 2 MiB of packed B, shared from L3

// A (mc x kc, element strides rs, cs) -> panels of MR rows: Ap[panel][k][r].
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = std::min(MR, mc - i0);
    if (mr == MR && rs == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* a = A + i0 + k * cs;
        for (int64_t r = 0; r < MR; ++r) Ap[k * MR + r] = a[r];
      }
    } else {
      avx2_isa::pack_a_panel_strided<MR>(mr, kc, A + i0 * rs, rs, cs, Ap);
    }
    Ap += MR * kc;
  }
}

// B (kc x nc, element strides rs, cs) -> panels of NR columns: Bp[panel][k][c].
void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rs, int64_t cs, float* Bp) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = std::min(NR, nc - j0);
    if (cs == 1) {
      if (nr == NR) {
        for (int64_t k = 0; k < kc; ++k) {
          const float* b = B + k * rs + j0;
          _mm256_store_ps(Bp + k * NR, _mm256_loadu_ps(b));
          _mm256_store_ps(Bp + k * NR + 8, _mm256_loadu_ps(b + 8));
        }
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          const float* b = B + k * rs + j0;
          int64_t c = 0;
          for (; c < nr; ++c) Bp[k * NR + c] = b[c];
          for (; c < NR; ++c) Bp[k * NR + c] = 0.f;
        }
      }
    } else {
      avx2_isa::pack_b_strided<NR>(kc, nr, B + j0 * cs, rs, cs, Bp);
    }
    Bp += NR * kc;
  }
}

// C[0:mr, 0:nr] (+)= the first R rows of Ap (kc x 6) ^T * Bp (kc x 16), mr <= R.
// R = 6 is the full tile; a panel with 1-4 real rows (the last one when M % 6 is 1-4:
// 16 or 32 output channels, LeNet's and CIFAR nets' layers) runs R = 2 or 4, so it
// neither multiplies the padding rows nor, for whole rows, goes through the tile buffer.
template <int R>
inline void kernel_rx16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool acc, int64_t mr,
                        int64_t nr) {
  __m256 c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = _mm256_setzero_ps(), c1[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(Bp);
    const __m256 b1 = _mm256_load_ps(Bp + 8);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + 8 * NR), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(Ap + r);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
    Ap += MR;
    Bp += NR;
  }
  if (nr == NR) {
    for (int64_t r = 0; r < mr; ++r) {
      float* c = C + r * ldc;
      __m256 v0 = c0[r], v1 = c1[r];
      if (acc) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    }
    return;
  }
  alignas(32) float tile[R * NR];
  for (int r = 0; r < R; ++r) {
    _mm256_store_ps(tile + r * NR, c0[r]);
    _mm256_store_ps(tile + r * NR + 8, c1[r]);
  }
  for (int64_t r = 0; r < mr; ++r) {
    float* c = C + r * ldc;
    if (acc)
      for (int64_t j = 0; j < nr; ++j) c[j] += tile[r * NR + j];
    else
      for (int64_t j = 0; j < nr; ++j) c[j] = tile[r * NR + j];
  }
}

inline void kernel_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool acc, int64_t mr,
                        int64_t nr) {
  if (mr > 4) return kernel_rx16<6>(kc, Ap, Bp, C, ldc, acc, mr, nr);
  if (mr > 2) return kernel_rx16<4>(kc, Ap, Bp, C, ldc, acc, mr, nr);
  kernel_rx16<2>(kc, Ap, Bp, C, ldc, acc, mr, nr);
}

struct Kern {
  static constexpr int64_t MR = avx2_impl::MR, NR = avx2_impl::NR, MC = avx2_impl::MC, KC = avx2_impl::KC,
                           NC = avx2_impl::NC;
  static constexpr auto pack_a = avx2_impl::pack_a;
  static constexpr auto pack_b = avx2_impl::pack_b;
  static constexpr auto kernel = kernel_6x16;
};

}  // namespace

CNNFAST_SGEMM_ENTRY_POINTS(avx2_isa, Kern)

}  // namespace cnnfast::cpu::avx2_impl
