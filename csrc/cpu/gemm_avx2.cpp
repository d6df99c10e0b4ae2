// Packed, cache-blocked SGEMM for AVX2+FMA (compiled with -mavx2 -mfma).
//
// Blocking follows the Goto/BLIS scheme:
//   for jc (NC columns of B/C)        B block  KC x NC  packed once, lives in L3
//     for pc (KC of the inner dim)
//       for ic (MC rows of A/C)       A block  MC x KC  packed, lives in L2
//         for jr (16 columns)         B micro-panel KC x 16 streams from L1
//           for ir (6 rows)           6x16 micro-kernel: 12 ymm accumulators
// Packed panels are zero-padded to whole 6/16 tiles, so the micro-kernel never
// branches on sizes inside its k loop; partial tiles of C go through a small
// stack buffer instead.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/scratch.h"
#include "core/parallel.h"
#include "cpu/gemm.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

constexpr int64_t MR = 6, NR = 16;
constexpr int64_t MC = 96;    // 96 x 256 x 4 B = 96 KiB of packed A: half of a 512 KiB L2
constexpr int64_t KC = 256;   // one 16-wide B micro-panel is 16 KiB: fits L1 with room for A
constexpr int64_t NC = 2048;  // 2 MiB of packed B, shared from L3

// Per-thread packing buffers (core/scratch.h), kept across calls so the GEMMs
// inside a convolution do not hit malloc every time.
float* scratch(int which, int64_t count) { return thread_scratch_floats(which, count); }

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
      for (int64_t k = 0; k < kc; ++k) {
        int64_t r = 0;
        for (; r < mr; ++r) Ap[k * MR + r] = A[(i0 + r) * rs + k * cs];
        for (; r < MR; ++r) Ap[k * MR + r] = 0.f;
      }
    }
    Ap += MR * kc;
  }
}

// 8x8 transpose in registers: r[i] holds row i on entry and column i on exit.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
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
    } else if (rs == 1) {
      // Transposed B (the im2col matrix in the weight gradient): eight source
      // columns of eight consecutive k each, transposed in registers; a last
      // panel's partial half walks its columns (LeNet's 25-column weight
      // gradient spent a third of its time packing that tail one float at a time
      // across rows).
      for (int h = 0; h < 2; ++h) {
        const int64_t c0 = h * 8;
        if (c0 + 8 <= nr) {
          int64_t k = 0;
          for (; k + 8 <= kc; k += 8) {
            __m256 r[8];
            for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(B + (j0 + c0 + c) * cs + k);
            transpose8(r);
            for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(Bp + (k + kk) * NR + c0, r[kk]);
          }
          for (; k < kc; ++k)
            for (int64_t c = c0; c < c0 + 8; ++c) Bp[k * NR + c] = B[(j0 + c) * cs + k];
        } else {
          for (int64_t c = c0; c < c0 + 8; ++c) {
            if (c < nr) {
              const float* b = B + (j0 + c) * cs;
              for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = b[k];
            } else {
              for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = 0.f;
            }
          }
        }
      }
    } else {
      // Other strided B: walk each source column contiguously.
      for (int64_t c = 0; c < NR; ++c) {
        if (c < nr) {
          const float* b = B + (j0 + c) * cs;
          for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = b[k * rs];
        } else {
          for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = 0.f;
        }
      }
    }
    Bp += NR * kc;
  }
}

// C[0:mr, 0:nr] (+)= Ap (kc x 6) ^T * Bp (kc x 16).
inline void kernel_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool acc, int64_t mr,
                        int64_t nr) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(Bp);
    const __m256 b1 = _mm256_load_ps(Bp + 8);
    _mm_prefetch(reinterpret_cast<const char*>(Bp + 8 * NR), _MM_HINT_T0);
    __m256 a = _mm256_broadcast_ss(Ap + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(Ap + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(Ap + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(Ap + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(Ap + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(Ap + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    Ap += MR;
    Bp += NR;
  }
  const __m256 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc;
      __m256 v0 = rows[r][0], v1 = rows[r][1];
      if (acc) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    }
    return;
  }
  alignas(32) float tile[MR * NR];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tile + r * NR, rows[r][0]);
    _mm256_store_ps(tile + r * NR + 8, rows[r][1]);
  }
  for (int64_t r = 0; r < mr; ++r) {
    float* c = C + r * ldc;
    if (acc)
      for (int64_t j = 0; j < nr; ++j) c[j] += tile[r * NR + j];
    else
      for (int64_t j = 0; j < nr; ++j) c[j] = tile[r * NR + j];
  }
}

}  // namespace

int64_t packed_a_size(int64_t M, int64_t K) { return (M + MR - 1) / MR * MR * K; }

// The whole of A in the order sgemm consumes it: KC-deep slices one after the
// other, each holding every MR-row panel of that slice, so the slice for
// (pc, ic) starts at pc * Mpad + ic * kc.
void pack_a_full(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, float* Ap) {
  const int64_t Mpad = (M + MR - 1) / MR * MR;
  // Slices are independent; a large weight (9.4 MB for a 512x512 3x3 layer) packed
  // on one core took longer than the GEMM that follows it when N is small.
  const int64_t slices = (K + KC - 1) / KC;
  parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t sl = s0; sl < s1; ++sl) {
      const int64_t pc = sl * KC, kc = std::min(KC, K - pc);
      pack_a(M, kc, A + pc * cs_a, rs_a, cs_a, Ap + pc * Mpad);
    }
  });
}

namespace {

void sgemm_impl(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* Apacked,
                const float* B, int64_t rs_b, int64_t cs_b, const float* Bpacked, float* C, int64_t ldc,
                bool accumulate) {
  const int64_t kc_max = std::min(K, KC), Mpad = (M + MR - 1) / MR * MR, Npad = (N + NR - 1) / NR * NR;
  float* Bp = Bpacked ? nullptr : scratch(0, kc_max * ((std::min(N, NC) + NR - 1) / NR * NR));
  float* Ap = Apacked ? nullptr : scratch(1, kc_max * ((std::min(M, MC) + MR - 1) / MR * MR));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool acc = accumulate || pc > 0;
      if (Bpacked)
        Bp = const_cast<float*>(Bpacked) + pc * Npad;  // N <= NC: a single jc block
      else
        pack_b(kc, nc, B + pc * rs_b + jc * cs_b, rs_b, cs_b, Bp);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        const float* ap;
        if (Apacked) {
          ap = Apacked + pc * Mpad + ic * kc;
        } else {
          pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, Ap);
          ap = Ap;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = std::min(NR, nc - jr);
          const float* bp = Bp + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = std::min(MR, mc - ir);
            kernel_6x16(kc, ap + ir * kc, bp, C + (ic + ir) * ldc + jc + jr, ldc, acc, mr, nr);
          }
        }
      }
    }
  }
}

}  // namespace

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
           int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate) {
  sgemm_impl(M, N, K, A, rs_a, cs_a, nullptr, B, rs_b, cs_b, nullptr, C, ldc, accumulate);
}

void sgemm_packed_a(int64_t M, int64_t N, int64_t K, const float* Ap, const float* B, int64_t rs_b, int64_t cs_b,
                    float* C, int64_t ldc, bool accumulate) {
  sgemm_impl(M, N, K, nullptr, 0, 0, Ap, B, rs_b, cs_b, nullptr, C, ldc, accumulate);
}

void sgemm_packed_ab(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc,
                     bool accumulate) {
  sgemm_impl(M, N, K, nullptr, 0, 0, Ap, nullptr, 0, 0, Bp, C, ldc, accumulate);
}

}  // namespace cnnfast::cpu::avx2_impl
