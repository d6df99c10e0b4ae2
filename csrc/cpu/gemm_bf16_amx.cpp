// The AMX and AVX512-BF16 kernels of the bf16 paths (bf16.h) and the AMX peak loop.
// Compiled with -mavx512bf16 -mamx-tile -mamx-bf16; nothing here runs unless
// gemm_bf16.cpp has checked the CPU, the SIMD level and (for AMX) the OS permission.
#include <immintrin.h>

#include "cpu/bf16.h"
#include "cpu/bf16_impl.h"
#include "cpu/bf16_pack_avx512.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {
namespace {

// The packers' tile-row converters (bf16_impl.h ScalarPack) with VCVTNE2PS2BF16: 32
// floats rounded per instruction, and for B the two rows' halves put into k pairs by one
// word permute. Its rounding (nearest-even, NaN quieted) is ScalarPack's except that it
// flushes float32 denormals (below 1.2e-38) to zero.
struct Avx512Pack : ScalarPack {
  static void cvt(const float* s, int64_t n, uint16_t* d) {
    for (int64_t i = 0; i < n; i += 32)
      _mm512_storeu_si512(d + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i)));
  }
  static void cvt(const uint16_t* s, int64_t n, uint16_t* d) { std::memcpy(d, s, 2 * n); }
  static void interleave(const float* r0, const float* r1, uint16_t* d) {
    _mm512_storeu_si512(d, bf16_pairs_of(r0, r1));
  }
  static void interleave(const uint16_t* r0, const uint16_t* r1, uint16_t* d) {
    _mm512_storeu_si512(d, bf16_pairs_of(r0, r1));
  }
  // 16 columns n of 32 bf16 k (16 k pairs) each -> one B tile: a 16 x 16 transpose of pairs.
  static void transpose(const uint16_t* s, int64_t ld, uint16_t* d) {
    __m512i r[16];
    for (int n = 0; n < 16; ++n) r[n] = _mm512_loadu_si512(s + n * ld);
    transpose16x16_words(r, d);
  }
  // 32 rows k of 16 bf16 m -> one A tile: rows k, k+1 into pairs, then the pairs transposed.
  static void transpose_a(const uint16_t* s, int64_t ld, uint16_t* d) {
    __m512i r[16];
    for (int p = 0; p < 16; ++p) r[p] = bf16_pairs_of(s + 2 * p * ld, s + (2 * p + 1) * ld);
    transpose16x16_words(r, d);
  }

  // ScalarPack::store_transposed with whole 16 x 16 blocks transposed in registers.
  static void store_transposed(const float* C, int64_t ldc, int64_t M, int64_t N, float* dst, int64_t ld) {
    const int64_t M16 = M / 16 * 16, N16 = N / 16 * 16;
    alignas(64) uint16_t t[16 * 32];
    for (int64_t nb = 0; nb < N16; nb += 16)
      for (int64_t mb = 0; mb < M16; mb += 16) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(_mm512_loadu_ps(C + (mb + i) * ldc + nb));
        transpose16x16_words(r, t);
        for (int n = 0; n < 16; ++n) {
          float* d = dst + (nb + n) * ld + mb;
          _mm512_storeu_ps(d, _mm512_load_ps(reinterpret_cast<const float*>(t + n * 32)));
        }
      }
    if (M16 < M) ScalarPack::store_transposed(C + M16 * ldc, ldc, M - M16, N16, dst + M16, ld);
    if (N16 < N) ScalarPack::store_transposed(C + N16, ldc, M, N - N16, dst + N16 * ld, ld);
  }

};

// 2x2 tiles of C (32 x 32) per pass: each A and B tile load feeds two TDPBF16PS.
template <bool TwoM, bool TwoN>
inline void amx_quad(const uint16_t* A0, const uint16_t* A1, const uint16_t* B0, const uint16_t* B1, int64_t kt,
                     float* C, int64_t ldc, bool load_c) {
  const int64_t cs = ldc * 4;
  if (load_c) {
    _tile_loadd(0, C, cs);
    if (TwoN) _tile_loadd(1, C + 16, cs);
    if (TwoM) _tile_loadd(2, C + 16 * ldc, cs);
    if (TwoM && TwoN) _tile_loadd(3, C + 16 * ldc + 16, cs);
  } else {
    _tile_zero(0);
    if (TwoN) _tile_zero(1);
    if (TwoM) _tile_zero(2);
    if (TwoM && TwoN) _tile_zero(3);
  }
  for (int64_t k = 0; k < kt; ++k) {
    const int64_t o = k * kTileElems;
    _tile_loadd(4, A0 + o, 64);
    _tile_loadd(6, B0 + o, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (TwoN) {
      _tile_loadd(7, B1 + o, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if (TwoM) {
      _tile_loadd(5, A1 + o, 64);
      _tile_dpbf16ps(2, 5, 6);
      if (TwoN) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, C, cs);
  if (TwoN) _tile_stored(1, C + 16, cs);
  if (TwoM) _tile_stored(2, C + 16 * ldc, cs);
  if (TwoM && TwoN) _tile_stored(3, C + 16 * ldc + 16, cs);
}

struct AmxKern : Avx512Pack {
  static void begin() { configure_tiles(); }
  static void end() { _tile_release(); }
  static void block(const uint16_t* A, int64_t a_ts, const uint16_t* B, int64_t b_ts, int64_t kt, float* C,
                    int64_t ldc, int64_t mt, int64_t nt, bool load_c) {
    for (int64_t i = 0; i < mt; i += 2)
      for (int64_t j = 0; j < nt; j += 2) {
        const uint16_t* A0 = A + i * a_ts;
        const uint16_t* B0 = B + j * b_ts;
        float* Cij = C + i * kTile * ldc + j * kTile;
        const bool tm = i + 1 < mt, tn = j + 1 < nt;
        if (tm && tn) amx_quad<true, true>(A0, A0 + a_ts, B0, B0 + b_ts, kt, Cij, ldc, load_c);
        else if (tm) amx_quad<true, false>(A0, A0 + a_ts, B0, B0, kt, Cij, ldc, load_c);
        else if (tn) amx_quad<false, true>(A0, A0, B0, B0 + b_ts, kt, Cij, ldc, load_c);
        else amx_quad<false, false>(A0, A0, B0, B0, kt, Cij, ldc, load_c);
      }
  }
};

// VDPBF16PS on half a tile row block against two column tiles at a time: 8 rows x 32
// columns, 16 zmm accumulators; each k-pair loads two B vectors and broadcasts 8 A pairs
// for 16 dot products. One 16x16 tile at a time (16 broadcasts for one B vector, each
// used once) kept the loads as many as the dot products: 30-60% of the VDPBF16PS peak on
// Zen 5 (benchmarks/RESULTS.md).
template <bool Two>
inline void dp_half_block(const uint16_t* A, const uint16_t* B0, const uint16_t* B1, int64_t kt, float* C0, float* C1,
                          int64_t ldc, bool load_c) {
  constexpr int kRows = kTile / 2;
  __m512 acc0[kRows], acc1[kRows];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    acc0[r] = load_c ? _mm512_loadu_ps(C0 + r * ldc) : _mm512_setzero_ps();
    acc1[r] = Two && load_c ? _mm512_loadu_ps(C1 + r * ldc) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kt; ++k) {
    const uint16_t* a = A + k * kTileElems;
    const uint16_t* b0 = B0 + k * kTileElems;
    const uint16_t* b1 = B1 + k * kTileElems;
    for (int p = 0; p < kTileK / 2; ++p) {
      const __m512bh bv0 = (__m512bh)_mm512_loadu_si512(b0 + p * 32);
      const __m512bh bv1 = Two ? (__m512bh)_mm512_loadu_si512(b1 + p * 32) : bv0;
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        int32_t pair;
        std::memcpy(&pair, a + r * kTileK + 2 * p, 4);
        const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
        acc0[r] = _mm512_dpbf16_ps(acc0[r], av, bv0);
        if (Two) acc1[r] = _mm512_dpbf16_ps(acc1[r], av, bv1);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    _mm512_storeu_ps(C0 + r * ldc, acc0[r]);
    if (Two) _mm512_storeu_ps(C1 + r * ldc, acc1[r]);
  }
}

struct DpKern : Avx512Pack {
  static void begin() {}
  static void end() {}
  static void block(const uint16_t* A, int64_t a_ts, const uint16_t* B, int64_t b_ts, int64_t kt, float* C,
                    int64_t ldc, int64_t mt, int64_t nt, bool load_c) {
    constexpr int kRows = kTile / 2;
    for (int64_t i = 0; i < mt; ++i)
      for (int64_t j = 0; j < nt; j += 2) {
        const bool two = j + 1 < nt;
        for (int h = 0; h < 2; ++h) {
          const uint16_t* a = A + i * a_ts + h * kRows * kTileK;
          float* C0 = C + (i * kTile + h * kRows) * ldc + j * kTile;
          if (two)
            dp_half_block<true>(a, B + j * b_ts, B + (j + 1) * b_ts, kt, C0, C0 + kTile, ldc, load_c);
          else
            dp_half_block<false>(a, B + j * b_ts, B + j * b_ts, kt, C0, C0, ldc, load_c);
        }
      }
  }
};

}  // namespace
}  // namespace cnnfast::cpu::CNNFAST_ISA_NS

namespace cnnfast::cpu::amx_impl {
using namespace cnnfast::cpu::CNNFAST_ISA_NS;

#define CNNFAST_BF16_DISPATCH(path, call)        \
  do {                                           \
    if (path == Bf16Path::AMX) call(AmxKern);    \
    else call(DpKern);                           \
  } while (0)

template <class T>
void conv_forward(Bf16Path p, const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col,
                  const float* bias, float* y) {
#define CALL(K) conv_forward_impl<K, T>(s, x, w, w_rs, w_col, bias, y)
  CNNFAST_BF16_DISPATCH(p, CALL);
#undef CALL
}
template <class T>
void conv_backward_data(Bf16Path p, const ConvShape& s, const T* gy, const T* w, int64_t w_rs, const int64_t* w_col,
                        float* gx) {
#define CALL(K) conv_backward_data_impl<K, T>(s, gy, w, w_rs, w_col, gx)
  CNNFAST_BF16_DISPATCH(p, CALL);
#undef CALL
}
template <class T>
void conv_backward_weight(Bf16Path p, const ConvShape& s, const T* gy, const T* x, float* gw) {
#define CALL(K) conv_backward_weight_impl<K, T>(s, gy, x, gw)
  CNNFAST_BF16_DISPATCH(p, CALL);
#undef CALL
}
template <class T>
void gemm(Bf16Path p, int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
          int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate) {
#define CALL(Kn) gemm_impl<Kn, T>(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate)
  CNNFAST_BF16_DISPATCH(p, CALL);
#undef CALL
}

#define CNNFAST_INST(T)                                                                                          \
  template void conv_forward<T>(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, const float*, float*);         \
  template void conv_backward_data<T>(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, float*);                 \
  template void conv_backward_weight<T>(Bf16Path, const ConvShape&, const T*, const T*, float*);               \
  template void gemm<T>(Bf16Path, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,    \
                        int64_t, float*, int64_t, bool);
CNNFAST_INST(float)
CNNFAST_INST(uint16_t)
#undef CNNFAST_INST

float amx_loop(int64_t iters) {
  alignas(64) uint16_t a[kTileElems], b[kTileElems];
  for (int i = 0; i < kTileElems; ++i) a[i] = b[i] = 0x3f80;  // 1.0
  alignas(64) float c[kTile * kTile];
  configure_tiles();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, a, 64);
  _tile_loadd(5, a, 64);
  _tile_loadd(6, b, 64);
  _tile_loadd(7, b, 64);
  for (int64_t i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, 64);
  _tile_release();
  return c[0];
}

float dpbf16_loop(int64_t iters) {
  // a and b are bf16 pairs near 1 and 1e-3 so the sums stay finite and uncancelled.
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f), b = (__m512bh)_mm512_set1_epi32(0x3a833a83);
  __m512 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm512_set1_ps(0.1f * float(i));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm512_dpbf16_ps(c[i], a, b);
  }
  __m512 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, c[i]);
  return _mm512_reduce_add_ps(s);
}

void round_array(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = to_bf16(x[i]);
}

}  // namespace cnnfast::cpu::amx_impl
