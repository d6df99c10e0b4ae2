// Winograd F(4x4,3x3) driver: weight transform, tiling into chunks, the 36
// GEMMs per chunk and group, and dispatch of the tile transforms (scalar build
// below, AVX2 build in winograd_avx2.cpp).
//
// Threading: chunks of tiles (across images) are handed out dynamically; each
// thread has its own V/M buffers and runs serial GEMMs. The chunk size keeps one
// GEMM's operands (C/g x tiles of V) within L2.
#include "cpu/winograd.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"

#define CNNFAST_WINO_NS wino_generic
#include "cpu/winograd_kernels.h"

namespace cnnfast::cpu {
namespace {

// U[g][xi][k][c] = (G g G^T)[xi] for every kernel, computed in double.
template <class T>
void transform_weights(const T* w, int64_t K, int64_t Cg, int64_t groups, T* U) {
  const double G[6][3] = {{1.0 / 4, 0, 0},
                          {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                          {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                          {1.0 / 24, 1.0 / 12, 1.0 / 6},
                          {1.0 / 24, -1.0 / 12, 1.0 / 6},
                          {0, 0, 1}};
  const int64_t Kg = K / groups;
  parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t g = k / Kg, kl = k % Kg;
      for (int64_t c = 0; c < Cg; ++c) {
        const T* g3 = w + (k * Cg + c) * 9;
        double tmp[6][3];
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 3; ++j)
            tmp[i][j] = G[i][0] * g3[0 * 3 + j] + G[i][1] * g3[1 * 3 + j] + G[i][2] * g3[2 * 3 + j];
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j) {
            const double v = tmp[i][0] * G[j][0] + tmp[i][1] * G[j][1] + tmp[i][2] * G[j][2];
            U[((g * 36 + i * 6 + j) * Kg + kl) * Cg + c] = static_cast<T>(v);
          }
      }
    }
  });
}

}  // namespace

template <class T>
void winograd_conv2d(int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                     int64_t pad_t, int64_t pad_l, const T* x, const T* w, T* y) {
  const int64_t Cg = C / groups, Kg = K / groups;
  const int64_t TH = (Ho + 3) / 4, TW = (Wo + 3) / 4, per_image = TH * TW, Q = N * per_image;
  AlignedPtr<T> U = aligned_alloc_array<T>(groups * 36 * Kg * Cg);
  transform_weights(w, K, Cg, groups, U.get());
  // The 36 transformed kernels per group are the left operands of every chunk's
  // GEMMs: pack them once here rather than once per chunk.
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(groups * 36);
  for (int64_t i = 0; i < groups * 36; ++i) lhs.emplace_back(Kg, Cg, U.get() + i * Kg * Cg, Cg, int64_t(1));

  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  // ~64 KiB of V per transformed position, and a few chunks per thread so the
  // dynamic distribution can balance them.
  int64_t tc = std::max<int64_t>(32, (16384 / std::max<int64_t>(Cg, Kg)) / 16 * 16);
  tc = std::min(tc, std::max<int64_t>(16, ((Q + 3 * threads - 1) / (3 * threads) + 15) / 16 * 16));
  const int64_t chunks = (Q + tc - 1) / tc;
  const bool vec = std::is_same_v<T, float> && use_avx2();

  struct Scratch {
    AlignedPtr<T> V, M;
    std::vector<int64_t> in_base, in_row, in_col, out_base, out_row, out_col;
  };
  auto make_scratch = [&] {
    const size_t n = static_cast<size_t>(tc);
    return Scratch{aligned_alloc_array<T>(36 * Cg * tc), aligned_alloc_array<T>(36 * Kg * tc),
                   std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(n),
                   std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(n)};
  };
  dynamic_tasks(chunks, make_scratch, [&](int64_t ch, Scratch& sc) {
    T* Vp = sc.V.get();
    T* Mp = sc.M.get();
    int64_t *in_base = sc.in_base.data(), *in_row = sc.in_row.data(), *in_col = sc.in_col.data();
    int64_t *out_base = sc.out_base.data(), *out_row = sc.out_row.data(), *out_col = sc.out_col.data();
    {  // one chunk of tiles
      const int64_t q0 = ch * tc, nt = std::min(tc, Q - q0);
      for (int64_t i = 0; i < nt; ++i) {
        const int64_t q = q0 + i, n = q / per_image, r = q % per_image;
        const int64_t ty = r / TW, tx = r % TW;
        out_row[i] = ty * 4;
        out_col[i] = tx * 4;
        in_row[i] = ty * 4 - pad_t;
        in_col[i] = tx * 4 - pad_l;
        in_base[i] = n * C * H * W;
        out_base[i] = n * K * Ho * Wo;
      }
      const WinoTiles tin{in_base, in_row, in_col, nt};
      const WinoTiles tout{out_base, out_row, out_col, nt};
      for (int64_t g = 0; g < groups; ++g) {
        const T* xg = x + g * Cg * H * W;
        T* yg = y + g * Kg * Ho * Wo;
        if constexpr (std::is_same_v<T, float>) {
          if (vec) avx2_impl::winograd_input_transform(xg, Cg, H, W, tin, Vp);
          else wino_generic::input_transform<T>(xg, Cg, H, W, tin, Vp);
        } else {
          wino_generic::input_transform<T>(xg, Cg, H, W, tin, Vp);
        }
        for (int64_t xi = 0; xi < 36; ++xi)
          lhs[g * 36 + xi].multiply(nt, Vp + xi * Cg * nt, nt, int64_t(1), Mp + xi * Kg * nt, nt, false);
        if constexpr (std::is_same_v<T, float>) {
          if (vec) avx2_impl::winograd_output_transform(Mp, Kg, Ho, Wo, tout, yg);
          else wino_generic::output_transform<T>(Mp, Kg, Ho, Wo, tout, yg);
        } else {
          wino_generic::output_transform<T>(Mp, Kg, Ho, Wo, tout, yg);
        }
      }
    }
  });
}

template void winograd_conv2d<float>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                     int64_t, const float*, const float*, float*);
template void winograd_conv2d<double>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                      int64_t, int64_t, const double*, const double*, double*);

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void winograd_input_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, float*) {}
void winograd_output_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, float*) {}
}  // namespace avx2_impl
#endif

}  // namespace cnnfast::cpu
