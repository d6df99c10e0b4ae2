// Packed, cache-blocked SGEMM for AVX-512 (compiled with -mavx512f/bw/dq/vl) on
// the loop nest of gemm_driver.h.
//
// Micro-kernel 8 x 32: two zmm of B per k, eight broadcasts of A, sixteen zmm
// accumulators. Per k that is 16 FMAs against 10 loads (the broadcasts fold into
// the FMAs' memory operands), which keeps both FMA ports busy with loads to spare,
// and 16 independent chains cover the 4-cycle FMA latency twice over. The usual
// 12 x 32 shape (24 accumulators, as oneDNN and MLAS size theirs) would waste
// 1/9 of every tile on the 64-row weight matrices that ResNet layers start with;
// 8 rows divide every channel count those networks use. The B panel of 32 x 256
// floats (32 KiB) stays in the 48 KiB L1 next to an 8 KiB A panel.
//
// Edges use masked loads and stores: a partial tile of C is written straight
// through a lane mask (no stack tile, no scalar loop), and B's last panel is
// loaded with a mask that zero-fills the missing columns.
#include <immintrin.h>

#include "cpu/gemm.h"
#include "cpu/gemm_driver.h"
#include "cpu/simd_math_avx512.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

using cnnfast::avx512::load_lanes;
using cnnfast::avx512::store_lanes;
constexpr int64_t MR = 8, NR = 32;
constexpr int64_t MC = 128;   // 128 x 256 x 4 B = 128 KiB of packed A in L2
constexpr int64_t KC = 256;   // must match the packed-B layout of gemm.h
constexpr int64_t NC = 2048;  // 2 MiB of packed B, shared from L3

// The lanes [0, n) of a 16-lane vector, n clamped to [0, 16].
inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// A (mc x kc, element strides rs, cs) -> panels of MR rows: Ap[panel][k][r].
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = avx512_isa::gemm_min(MR, mc - i0);
    if (mr == MR && rs == 1) {
      // Transposed A (the weights in the input gradient): one row of 8 per k.
      for (int64_t k = 0; k < kc; ++k) _mm256_store_ps(Ap + k * MR, _mm256_loadu_ps(A + i0 + k * cs));
    } else if (mr == MR && cs == 1) {
      // Row-major A (weights in the forward, grad_y in the weight gradient): 8 rows
      // x 8 k at a time, transposed in registers.
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(A + (i0 + i) * rs + k);
        avx512_isa::transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(Ap + (k + i) * MR, r[i]);
      }
      for (; k < kc; ++k)
        for (int64_t r = 0; r < MR; ++r) Ap[k * MR + r] = A[(i0 + r) * rs + k];
    } else {
      avx512_isa::pack_a_panel_strided<MR>(mr, kc, A + i0 * rs, rs, cs, Ap);
    }
    Ap += MR * kc;
  }
}

// B (kc x nc, element strides rs, cs) -> panels of NR columns: Bp[panel][k][c].
void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rs, int64_t cs, float* Bp) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = avx512_isa::gemm_min(NR, nc - j0);
    if (cs == 1) {
      const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
      if (nr == NR) {
        for (int64_t k = 0; k < kc; ++k) {
          const float* b = B + k * rs + j0;
          _mm512_store_ps(Bp + k * NR, _mm512_loadu_ps(b));
          _mm512_store_ps(Bp + k * NR + 16, _mm512_loadu_ps(b + 16));
        }
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          const float* b = B + k * rs + j0;
          _mm512_store_ps(Bp + k * NR, _mm512_maskz_loadu_ps(m0, b));
          _mm512_store_ps(Bp + k * NR + 16, _mm512_maskz_loadu_ps(m1, b + 16));
        }
      }
    } else {
      avx512_isa::pack_b_strided<NR>(kc, nr, B + j0 * cs, rs, cs, Bp);
    }
    Bp += NR * kc;
  }
}

// C[0:mr, 0:nr] (+)= Ap (kc x 8)^T * Bp (kc x 32).
inline void kernel_8x32(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool acc, int64_t mr,
                        int64_t nr) {
  __m512 c0[MR], c1[MR];
  // The C tile is read back after the k loop whenever the product accumulates over
  // KC slices; touching its lines now lets them arrive from L2/L3 under the FMAs.
  if (acc)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(Bp);
    const __m512 b1 = _mm512_load_ps(Bp + 16);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(Ap[r]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
    Ap += MR;
    Bp += NR;
  }
  const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
    float* c = C + r * ldc;
    __m512 v0 = c0[r], v1 = c1[r];
    if (acc) {
      v0 = _mm512_add_ps(v0, load_lanes(m0, c));
      v1 = _mm512_add_ps(v1, load_lanes(m1, c + 16));
    }
    store_lanes(c, m0, v0);
    store_lanes(c + 16, m1, v1);
  }
}

struct Kern {
  static constexpr int64_t MR = avx512_impl::MR, NR = avx512_impl::NR, MC = avx512_impl::MC,
                           KC = avx512_impl::KC, NC = avx512_impl::NC;
  static constexpr auto pack_a = avx512_impl::pack_a;
  static constexpr auto pack_b = avx512_impl::pack_b;
  static constexpr auto kernel = kernel_8x32;
};

}  // namespace

CNNFAST_SGEMM_ENTRY_POINTS(avx512_isa, Kern)

}  // namespace cnnfast::cpu::avx512_impl
