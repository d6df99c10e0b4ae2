// The FMA peak loop, written once and included by peak_avx2.cpp and peak_avx512.cpp
// (each in its own CNNFAST_ISA_NS, core/simd.h), which define
// CNNFAST_PEAK_VECTOR_BYTES first. GCC vector types of that many bytes become ymm or
// zmm registers; with -mfma the multiply-add of each chain contracts
// to one FMA instruction.
#pragma once
#include <cstdint>

#include "core/simd.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

inline float fma_chains(int64_t iters) {
  typedef float vec __attribute__((vector_size(CNNFAST_PEAK_VECTOR_BYTES)));
  constexpr int lanes = CNNFAST_PEAK_VECTOR_BYTES / 4;
  // Twelve independent chains cover the FMA latency times the two FMA ports of
  // current x86 cores; named variables (not an array) so they stay in registers.
  // The chains cannot be folded without reassociation, which -O3 does not do.
  vec c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, a, b;
  for (int l = 0; l < lanes; ++l) {
    c0[l] = 0.0f, c1[l] = 0.1f, c2[l] = 0.2f, c3[l] = 0.3f, c4[l] = 0.4f, c5[l] = 0.5f;
    c6[l] = 0.6f, c7[l] = 0.7f, c8[l] = 0.8f, c9[l] = 0.9f, c10[l] = 1.0f, c11[l] = 1.1f;
    a[l] = 0.9999f, b[l] = 1e-7f;
  }
  for (int64_t it = 0; it < iters; ++it) {
    c0 = c0 * a + b, c1 = c1 * a + b, c2 = c2 * a + b, c3 = c3 * a + b;
    c4 = c4 * a + b, c5 = c5 * a + b, c6 = c6 * a + b, c7 = c7 * a + b;
    c8 = c8 * a + b, c9 = c9 * a + b, c10 = c10 * a + b, c11 = c11 * a + b;
  }
  const vec s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11));
  return s[0];
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
