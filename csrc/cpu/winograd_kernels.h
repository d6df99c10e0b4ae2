// Source of the Winograd F(4x4,3x3) tile transforms, included by winograd.cpp
// (generic build), winograd_avx2.cpp and winograd_avx512.cpp. Each TU defines
// CNNFAST_WINO_NS first so the builds are distinct symbols and the linker can
// never hand a wide copy to a narrower CPU. Tiles go CNNFAST_WINO_LANES (8 unless
// the TU says otherwise: one ymm, or 16 for one zmm) at a time through
// fixed-length lane loops that the compiler turns into vector code.
// No standard-library calls in here for the same reason.
#include <cstdint>

#include "cpu/winograd.h"

namespace cnnfast::cpu::CNNFAST_WINO_NS {

#ifndef CNNFAST_WINO_LANES
#define CNNFAST_WINO_LANES 8
#endif
constexpr int kLanes = CNNFAST_WINO_LANES;

// V[xi][c][t] = B^T d B for every tile t and channel c of x (Cg, H, W per
// image; t.base selects the image). nr = 0: plain rows, V[xi] is a (Cg x count)
// row-major matrix at xi * Cg * count. nr > 0 (a multiple of kLanes): each V[xi]
// (at xi * Cg * npad) is already in the SGEMM's packed-B layout with nr-column
// panels (gemm.h, sgemm_packed_ab) so the 36 GEMMs skip packing.
// Where V[xi] (M[xi]) of one transform position starts from the next, and where channel
// c's tiles [t0, t0 + kLanes) sit in V[0] (t0 a multiple of kLanes, which nr is).
// The 36 slabs are a cache line more than their contents apart: a transform reads or
// writes all 36 at one offset, and slabs a multiple of 4 KiB apart (128 channels x 64
// tiles) all fall in one L1 set, 36 lines for its 12 ways.
constexpr int64_t kSlabPad = 16;
inline int64_t v_xi_stride(int64_t Cg, int64_t nt, int64_t nr) {
  return (nr > 0 ? Cg * ((nt + nr - 1) / nr * nr) : Cg * nt) + kSlabPad;
}
inline int64_t m_xi_stride(int64_t Kg, int64_t nt) { return Kg * nt + kSlabPad; }
inline int64_t v_offset(int64_t c, int64_t t0, int64_t Cg, int64_t nt, int64_t nr) {
  if (nr <= 0) return c * nt + t0;
  const int64_t npad = (nt + nr - 1) / nr * nr, pcb = c / 256 * 256, kc = (Cg - pcb) < 256 ? (Cg - pcb) : 256;
  return pcb * npad + (t0 / nr) * nr * kc + (c - pcb) * nr + t0 % nr;
}

template <class T>
void input_transform(const T* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, T* V, int64_t nr) {
  const int64_t plane = H * W, nt = t.count;
  const int64_t xi_stride = v_xi_stride(Cg, nt, nr);
  for (int64_t c = 0; c < Cg; ++c) {
    for (int64_t t0 = 0; t0 < nt; t0 += kLanes) {
      const int L = (nt - t0) < kLanes ? int(nt - t0) : kLanes;
      T d[36][kLanes];
      for (int l = 0; l < kLanes; ++l) {
        if (l >= L) {
          for (int i = 0; i < 36; ++i) d[i][l] = T(0);
          continue;
        }
        const int64_t r0 = t.row[t0 + l], c0 = t.col[t0 + l];
        const T* src = x + t.base[t0 + l] + c * plane;
        const bool inside = r0 >= 0 && c0 >= 0 && r0 + 6 <= H && c0 + 6 <= W;
        for (int i = 0; i < 6; ++i) {
          const int64_t r = r0 + i;
          for (int j = 0; j < 6; ++j) {
            const int64_t cc = c0 + j;
            d[i * 6 + j][l] = (inside || (r >= 0 && r < H && cc >= 0 && cc < W)) ? src[r * W + cc] : T(0);
          }
        }
      }
      // Columns first: u = B^T d, then rows: v = u B.
      T u[36][kLanes];
      for (int j = 0; j < 6; ++j) {
        for (int l = 0; l < kLanes; ++l) {
          const T d0 = d[0 * 6 + j][l], d1 = d[1 * 6 + j][l], d2 = d[2 * 6 + j][l];
          const T d3 = d[3 * 6 + j][l], d4 = d[4 * 6 + j][l], d5 = d[5 * 6 + j][l];
          u[0 * 6 + j][l] = T(4) * d0 - T(5) * d2 + d4;
          u[1 * 6 + j][l] = -T(4) * (d1 + d2) + d3 + d4;
          u[2 * 6 + j][l] = T(4) * (d1 - d2) - d3 + d4;
          u[3 * 6 + j][l] = T(2) * (d3 - d1) - d2 + d4;
          u[4 * 6 + j][l] = T(2) * (d1 - d3) - d2 + d4;
          u[5 * 6 + j][l] = T(4) * d1 - T(5) * d3 + d5;
        }
      }
      // kLanes consecutive tiles (t0 is a multiple of kLanes) are contiguous in both layouts.
      T* out = V + v_offset(c, t0, Cg, nt, nr);
      for (int i = 0; i < 6; ++i) {
        T v[6][kLanes];
        for (int l = 0; l < kLanes; ++l) {
          const T d0 = u[i * 6 + 0][l], d1 = u[i * 6 + 1][l], d2 = u[i * 6 + 2][l];
          const T d3 = u[i * 6 + 3][l], d4 = u[i * 6 + 4][l], d5 = u[i * 6 + 5][l];
          v[0][l] = T(4) * d0 - T(5) * d2 + d4;
          v[1][l] = -T(4) * (d1 + d2) + d3 + d4;
          v[2][l] = T(4) * (d1 - d2) - d3 + d4;
          v[3][l] = T(2) * (d3 - d1) - d2 + d4;
          v[4][l] = T(2) * (d1 - d3) - d2 + d4;
          v[5][l] = T(4) * d1 - T(5) * d3 + d5;
        }
        for (int j = 0; j < 6; ++j) {
          T* o = out + (i * 6 + j) * xi_stride;
          for (int l = 0; l < L; ++l) o[l] = v[j][l];
        }
      }
    }
  }
}

// y tiles (4x4, clipped at the edges) = A^T m A (+ bias[k] when bias is not
// null) from M[xi][k][t] (stride m_xi_stride per xi).
template <class T>
void output_transform(const T* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t, const T* bias, T* y) {
  const int64_t plane = Ho * Wo, nt = t.count, xi_stride = m_xi_stride(Kg, nt);
  for (int64_t k = 0; k < Kg; ++k) {
    for (int64_t t0 = 0; t0 < nt; t0 += kLanes) {
      const int L = (nt - t0) < kLanes ? int(nt - t0) : kLanes;
      const T* in = M + k * nt + t0;
      T m[36][kLanes];
      for (int i = 0; i < 36; ++i) {
        const T* src = in + i * xi_stride;
        for (int l = 0; l < kLanes; ++l) m[i][l] = l < L ? src[l] : T(0);
      }
      T u[4 * 6][kLanes];  // u = A^T m  (4 x 6)
      for (int j = 0; j < 6; ++j) {
        for (int l = 0; l < kLanes; ++l) {
          const T m0 = m[0 * 6 + j][l], m1 = m[1 * 6 + j][l], m2 = m[2 * 6 + j][l];
          const T m3 = m[3 * 6 + j][l], m4 = m[4 * 6 + j][l], m5 = m[5 * 6 + j][l];
          const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
          u[0 * 6 + j][l] = m0 + s12 + s34;
          u[1 * 6 + j][l] = d12 + T(2) * d34;
          u[2 * 6 + j][l] = s12 + T(4) * s34;
          u[3 * 6 + j][l] = d12 + T(8) * d34 + m5;
        }
      }
      T o[16][kLanes];  // o = u A  (4 x 4)
      for (int i = 0; i < 4; ++i) {
        for (int l = 0; l < kLanes; ++l) {
          const T m0 = u[i * 6 + 0][l], m1 = u[i * 6 + 1][l], m2 = u[i * 6 + 2][l];
          const T m3 = u[i * 6 + 3][l], m4 = u[i * 6 + 4][l], m5 = u[i * 6 + 5][l];
          const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
          o[i * 4 + 0][l] = m0 + s12 + s34;
          o[i * 4 + 1][l] = d12 + T(2) * d34;
          o[i * 4 + 2][l] = s12 + T(4) * s34;
          o[i * 4 + 3][l] = d12 + T(8) * d34 + m5;
        }
      }
      const T bk = bias ? bias[k] : T(0);
      for (int l = 0; l < L; ++l) {
        const int64_t r0 = t.row[t0 + l], c0 = t.col[t0 + l];
        T* dst = y + t.base[t0 + l] + k * plane;
        const int rows = (Ho - r0) < 4 ? int(Ho - r0) : 4, cols = (Wo - c0) < 4 ? int(Wo - c0) : 4;
        for (int i = 0; i < rows; ++i)
          for (int j = 0; j < cols; ++j) dst[(r0 + i) * Wo + c0 + j] = o[i * 4 + j][l] + bk;
      }
    }
  }
}

// One output channel's Cg kernels src (Cg, 9) -> dst[xi * xi_stride + c] = (G g G^T)[xi]
// of kernel c, in double. The kernels go through together, tap by tap, so every step is a
// loop over c that the compiler vectorises at the TU's width (the baseline build's
// two-lane doubles took 2.5 ms for a 256x256 layer, per call), and dst is written in
// unit-stride rows. taps and half: 9 Cg and 18 Cg doubles of scratch.
template <class T>
void transform_kernels(const T* src, int64_t Cg, double* taps, double* half, T* dst, int64_t xi_stride) {
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  for (int64_t c = 0; c < Cg; ++c)
    for (int t = 0; t < 9; ++t) taps[t * Cg + c] = src[c * 9 + t];
  // half[i][j][c] = sum_m G[i][m] taps[3m + j][c]
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 3; ++j) {
      double* h = half + (i * 3 + j) * Cg;
      const double* t0 = taps + j * Cg;
      const double* t1 = taps + (3 + j) * Cg;
      const double* t2 = taps + (6 + j) * Cg;
      for (int64_t c = 0; c < Cg; ++c) h[c] = G[i][0] * t0[c] + G[i][1] * t1[c] + G[i][2] * t2[c];
    }
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      const double* h0 = half + (i * 3 + 0) * Cg;
      const double* h1 = half + (i * 3 + 1) * Cg;
      const double* h2 = half + (i * 3 + 2) * Cg;
      T* d = dst + (i * 6 + j) * xi_stride;
      for (int64_t c = 0; c < Cg; ++c) d[c] = static_cast<T>(h0[c] * G[j][0] + h1[c] * G[j][1] + h2[c] * G[j][2]);
    }
}

}  // namespace cnnfast::cpu::CNNFAST_WINO_NS

// The level's entry points of winograd.h, for the ISA files that name their
// namespace in CNNFAST_WINO_IMPL_NS (winograd_avx2.cpp, winograd_avx512.cpp).
#ifdef CNNFAST_WINO_IMPL_NS
namespace cnnfast::cpu::CNNFAST_WINO_IMPL_NS {

// A TU with hand-written float transforms (winograd_avx512.cpp) defines
// CNNFAST_WINO_OWN_FLOAT_TRANSFORMS and these entry points itself.
#ifndef CNNFAST_WINO_OWN_FLOAT_TRANSFORMS
void winograd_input_transform(const float* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, float* V,
                              int64_t packed_nr) {
  CNNFAST_WINO_NS::input_transform<float>(x, Cg, H, W, t, V, packed_nr);
}

void winograd_output_transform(const float* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t,
                               const float* bias, float* y) {
  CNNFAST_WINO_NS::output_transform<float>(M, Kg, Ho, Wo, t, bias, y);
}
#endif

void winograd_transform_kernels(const float* src, int64_t Cg, double* taps, double* half, float* dst,
                                int64_t xi_stride) {
  CNNFAST_WINO_NS::transform_kernels<float>(src, Cg, taps, half, dst, xi_stride);
}

}  // namespace cnnfast::cpu::CNNFAST_WINO_IMPL_NS
#endif
