// The Goto/BLIS loop nest shared by the per-ISA SGEMMs (gemm_avx2.cpp,
// gemm_avx512.cpp); each includes it with its own flags and CNNFAST_ISA_NS, so the
// two builds are distinct symbols. A kernel description `Kern` supplies
//   MR, NR            micro-tile (rows of A, columns of B per register block)
//   MC, KC, NC        cache blocks
//   pack_a(mc, kc, A, rs, cs, Ap)   A block -> MR-row panels Ap[panel][k][r]
//   pack_b(kc, nc, B, rs, cs, Bp)   B block -> NR-column panels Bp[panel][k][c]
//   kernel(kc, Ap, Bp, C, ldc, acc, mr, nr)   C[0:mr, 0:nr] (+)= panel product
// Blocking:
//   for jc (NC columns of B/C)        B block  KC x NC  packed once, lives in L3
//     for pc (KC of the inner dim)
//       for ic (MC rows of A/C)       A block  MC x KC  packed, lives in L2
//         for jr (NR columns)         B micro-panel KC x NR streams from L1
//           for ir (MR rows)          MR x NR micro-kernel in registers
// Packed panels are zero-padded to whole tiles, so the micro-kernel never branches
// on sizes inside its k loop.
#pragma once
#include <cstdint>

#include "core/parallel.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "cpu/simd_transpose_x86.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

inline int64_t gemm_min(int64_t a, int64_t b) { return a < b ? a : b; }

template <class Kern>
int64_t packed_a_size(int64_t M, int64_t K) {
  return (M + Kern::MR - 1) / Kern::MR * Kern::MR * K;
}

// The whole of A in the order sgemm_blocked consumes it: KC-deep slices one after
// the other, each holding every MR-row panel of that slice, so the slice for
// (pc, ic) starts at pc * Mpad + ic * kc.
template <class Kern>
void pack_a_full(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, float* Ap) {
  const int64_t Mpad = (M + Kern::MR - 1) / Kern::MR * Kern::MR;
  // Slices are independent; a large weight (9.4 MB for a 512x512 3x3 layer) packed
  // on one core took longer than the GEMM that follows it when N is small.
  const int64_t slices = (K + Kern::KC - 1) / Kern::KC;
  parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t sl = s0; sl < s1; ++sl) {
      const int64_t pc = sl * Kern::KC, kc = gemm_min(Kern::KC, K - pc);
      Kern::pack_a(M, kc, A + pc * cs_a, rs_a, cs_a, Ap + pc * Mpad);
    }
  });
}

// C (+)= A * B with A given strided (A) or packed by pack_a_full (Apacked), and B
// strided (B) or already packed as described in gemm.h (Bpacked, N <= NC).
template <class Kern>
void sgemm_blocked(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a,
                   const float* Apacked, const float* B, int64_t rs_b, int64_t cs_b, const float* Bpacked, float* C,
                   int64_t ldc, bool accumulate) {
  constexpr int64_t MR = Kern::MR, NR = Kern::NR, MC = Kern::MC, KC = Kern::KC, NC = Kern::NC;
  const int64_t kc_max = gemm_min(K, KC), Mpad = (M + MR - 1) / MR * MR, Npad = (N + NR - 1) / NR * NR;
  // Per-thread packing buffers (core/scratch.h), kept across calls so the GEMMs
  // inside a convolution do not hit malloc every time.
  float* Bp = Bpacked ? nullptr : thread_scratch_floats(0, kc_max * ((gemm_min(N, NC) + NR - 1) / NR * NR));
  float* Ap = Apacked ? nullptr : thread_scratch_floats(1, kc_max * ((gemm_min(M, MC) + MR - 1) / MR * MR));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = gemm_min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = gemm_min(KC, K - pc);
      const bool acc = accumulate || pc > 0;
      if (Bpacked)
        Bp = const_cast<float*>(Bpacked) + pc * Npad;  // N <= NC: a single jc block
      else
        Kern::pack_b(kc, nc, B + pc * rs_b + jc * cs_b, rs_b, cs_b, Bp);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = gemm_min(MC, M - ic);
        const float* ap;
        if (Apacked) {
          ap = Apacked + pc * Mpad + ic * kc;
        } else {
          Kern::pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, Ap);
          ap = Ap;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = gemm_min(NR, nc - jr);
          const float* bp = Bp + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = gemm_min(MR, mc - ir);
            Kern::kernel(kc, ap + ir * kc, bp, C + (ic + ir) * ldc + jc + jr, ldc, acc, mr, nr);
          }
        }
      }
    }
  }
}

// One MR-row panel of A (mr <= MR real rows from A's first row, the rest zero),
// element by element: the edges and strides the per-level fast paths skip.
template <int64_t MR>
void pack_a_panel_strided(int64_t mr, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
  for (int64_t k = 0; k < kc; ++k) {
    int64_t r = 0;
    for (; r < mr; ++r) Ap[k * MR + r] = A[r * rs + k * cs];
    for (; r < MR; ++r) Ap[k * MR + r] = 0.f;
  }
}

// One NR-column panel (nr <= NR real columns, the rest zero) of a B whose columns
// are not contiguous: B points at the panel's first column. Transposed B (rs = 1,
// the im2col matrix in the weight gradient) goes eight columns of eight
// consecutive k at a time through a register transpose; a partial group of eight
// and other strides walk each source column contiguously.
template <int64_t NR>
void pack_b_strided(int64_t kc, int64_t nr, const float* B, int64_t rs, int64_t cs, float* Bp) {
  for (int64_t c0 = 0; c0 < NR; c0 += 8) {
    if (rs == 1 && c0 + 8 <= nr) {
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
        for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(B + (c0 + c) * cs + k);
        transpose8(r);
        for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(Bp + (k + kk) * NR + c0, r[kk]);
      }
      for (; k < kc; ++k)
        for (int64_t c = c0; c < c0 + 8; ++c) Bp[k * NR + c] = B[c * cs + k];
      continue;
    }
    for (int64_t c = c0; c < c0 + 8; ++c) {
      if (c < nr) {
        const float* b = B + c * cs;
        for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = b[k * rs];
      } else {
        for (int64_t k = 0; k < kc; ++k) Bp[k * NR + c] = 0.f;
      }
    }
  }
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS

// The five entry points of a level (gemm.h) on its kernel description, expanded
// inside that level's *_impl namespace.
#define CNNFAST_SGEMM_ENTRY_POINTS(ISA, KERN)                                                                      \
  int64_t packed_a_size(int64_t M, int64_t K) { return ISA::packed_a_size<KERN>(M, K); }                         \
  void pack_a_full(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, float* Ap) {                \
    ISA::pack_a_full<KERN>(M, K, A, rs_a, cs_a, Ap);                                                              \
  }                                                                                                              \
  void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,         \
             int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate) {                                \
    ISA::sgemm_blocked<KERN>(M, N, K, A, rs_a, cs_a, nullptr, B, rs_b, cs_b, nullptr, C, ldc, accumulate);        \
  }                                                                                                              \
  void sgemm_packed_a(int64_t M, int64_t N, int64_t K, const float* Ap, const float* B, int64_t rs_b,             \
                      int64_t cs_b, float* C, int64_t ldc, bool accumulate) {                                     \
    ISA::sgemm_blocked<KERN>(M, N, K, nullptr, 0, 0, Ap, B, rs_b, cs_b, nullptr, C, ldc, accumulate);             \
  }                                                                                                              \
  void sgemm_packed_ab(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc,  \
                       bool accumulate) {                                                                         \
    ISA::sgemm_blocked<KERN>(M, N, K, nullptr, 0, 0, Ap, nullptr, 0, 0, Bp, C, ldc, accumulate);                  \
  }
