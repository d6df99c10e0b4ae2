// Winograd F(4x4,3x3) driver: weight transform, tiling into chunks, the 36
// GEMMs per chunk and group, and dispatch of the tile transforms (scalar build
// below, AVX2 and AVX-512 builds in winograd_avx2.cpp / winograd_avx512.cpp).
//
// Threading: chunks of tiles (across images) are handed out dynamically; each
// thread has its own V/M buffers and runs serial GEMMs. The chunk size keeps one
// GEMM's operands (C/g x tiles of V) within L2.
#include "cpu/winograd.h"

#include <algorithm>
#include <climits>
#include <memory>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"

#define CNNFAST_WINO_NS wino_generic
#include "cpu/winograd_kernels.h"

namespace cnnfast::cpu {
namespace {

// U[g][xi][k][c] = (G g G^T)[xi] for every kernel, computed in double at the widest
// level the CPU has (winograd_kernels.h, transform_kernels).
template <class T>
void transform_weights(const T* w, int64_t K, int64_t Cg, int64_t groups, T* U) {
  const int64_t Kg = K / groups;
  parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
    std::vector<double> taps(9 * Cg), half(18 * Cg);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t g = k / Kg, kl = k % Kg;
      T* dst = U + (g * 36 * Kg + kl) * Cg;
      if constexpr (std::is_same_v<T, float>) {
        if (use_avx2()) {
          (use_avx512() ? avx512_impl::winograd_transform_kernels : avx2_impl::winograd_transform_kernels)(
              w + k * Cg * 9, Cg, taps.data(), half.data(), dst, Kg * Cg);
          continue;
        }
      }
      wino_generic::transform_kernels<T>(w + k * Cg * 9, Cg, taps.data(), half.data(), dst, Kg * Cg);
    }
  });
}

// Output channels per part, whole rows of 8.
int64_t rows_per_part(int64_t Kg, int64_t parts) { return (Kg + parts * 8 - 1) / (parts * 8) * 8; }

// How a call splits its tiles: chunks of tc tiles (across images), each also cut into
// `parts` blocks of kb output channels when the chunks are too few to share.
struct Plan {
  int64_t tc, chunks, parts, kb;
};

Plan plan_tiles(int64_t N, int64_t Cg, int64_t Kg, int64_t Ho, int64_t Wo) {
  const int64_t Q = N * ((Ho + 3) / 4) * ((Wo + 3) / 4);
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  // ~32 KiB of V per transformed position (measured best: V and M of one GEMM
  // stay in L2), and a few chunks per thread so the
  // dynamic distribution can balance them.
  int64_t tc_max = std::max<int64_t>(32, (8192 / std::max<int64_t>(Cg, Kg)) / 16 * 16);
  tc_max = std::min(tc_max, std::max<int64_t>(16, ((Q + 3 * threads - 1) / (3 * threads) + 15) / 16 * 16));
  // Chunks are whole 16-tile panels, so the tile count rarely divides evenly; of the
  // sizes down to half the largest, the one whose chunks deal most evenly over the
  // threads (2 images of 56x56, 392 tiles: 5 chunks of 80, 3 against 2, became 7 of
  // 64, the last one 8 tiles).
  int64_t tc = tc_max, best_span = INT64_MAX;
  for (int64_t c = tc_max; c >= std::max<int64_t>(16, tc_max / 2); c -= 16) {
    const int64_t n = (Q + c - 1) / c;
    std::vector<int64_t> free_at(size_t(std::max<int64_t>(threads, 1)), 0);
    for (int64_t i = 0; i < n; ++i) *std::min_element(free_at.begin(), free_at.end()) += std::min(c, Q - i * c);
    const int64_t span = *std::max_element(free_at.begin(), free_at.end());
    if (span < best_span) tc = c, best_span = span;
  }
  // Every chunk's GEMMs stream all of U, the transformed weights. Where U passes L2 and a
  // chunk of V of at most ~2.5 MB holds every tile, one chunk, its output channels split
  // between the threads: each streams its share of U once instead of U per chunk (2
  // threads, Zen 5, ms: 3x3 C128 at 28x28 batch 1 0.41 -> 0.28, batch 2 0.82 -> 0.53, C256
  // at 14x14 batch 4 1.55 -> 0.90, where two threads had been no faster than one). Two
  // chunks of 64 at C256 14x14 batch 8 lost (1.75 -> 2.1); on one thread the single chunk
  // was even or worse (C256 at 14x14 batch 4 1.59 -> 1.87).
  const int64_t u_bytes = 36 * Cg * Kg * int64_t(sizeof(float));
  const int64_t one_chunk_tiles = ((int64_t(5) << 19) / (36 * Cg * int64_t(sizeof(float)))) / 16 * 16;
  if (threads > 1 && u_bytes > (int64_t(512) << 10) && Q <= one_chunk_tiles) tc = (Q + 15) / 16 * 16;
  const int64_t chunks = (Q + tc - 1) / tc;
  // Fewer chunks than threads (a 14x14 map at batch 1 is one chunk): each chunk is also
  // cut into parts of the output channels, in rows of 8, every part transforming the
  // chunk's input itself. Only then: a part costs that transform again and its GEMMs
  // run on fewer rows, so cutting merely to even out the shares lost (C128 28x28 batch
  // 1, 4 chunks, 2 threads: 0.57-0.64 ms in 2 parts, 0.47 in one; one thread alone 0.57).
  const int64_t parts =
      chunks >= threads ? 1
                        : even_parts(chunks, std::max<int64_t>(1, Kg / 32), double(Q - (chunks - 1) * tc) / double(tc));
  return {tc, chunks, parts, rows_per_part(Kg, parts)};
}

// The 36 transformed kernels per group and part, packed as the left operands of every
// chunk's GEMMs: lhs[(g * parts + part) * 36 + xi].
template <class T>
std::vector<std::unique_ptr<GemmLhs<T>>> pack_lhs(const T* U, int64_t Kg, int64_t Cg, int64_t groups, int64_t parts,
                                                  int64_t kb, bool pooled) {
  std::vector<std::unique_ptr<GemmLhs<T>>> lhs(groups * parts * 36);
  parallel_for(0, groups * parts * 36, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t xi = i % 36, part = (i / 36) % parts, g = i / (36 * parts);
      const int64_t k0 = std::min(Kg, part * kb), k1 = std::min(Kg, k0 + kb);
      lhs[i] = std::make_unique<GemmLhs<T>>(k1 - k0, Cg, U + ((g * 36 + xi) * Kg + k0) * Cg, Cg, int64_t(1), pooled);
    }
  });
  return lhs;
}

template <class T>
void run_tiles(const Plan& plan, int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho,
               int64_t Wo, int64_t pad_t, int64_t pad_l, const T* x, const std::unique_ptr<GemmLhs<T>>* lhs,
               const T* bias, T* y) {
  const int64_t Cg = C / groups, Kg = K / groups;
  const int64_t TH = (Ho + 3) / 4, TW = (Wo + 3) / 4, per_image = TH * TW, Q = N * per_image;
  const int64_t tc = plan.tc, chunks = plan.chunks, parts = plan.parts, kb = plan.kb;
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // The transforms of the level the GEMM operands were packed for.
  const bool wide = vec && use_avx512();
  const auto input_transform = wide ? avx512_impl::winograd_input_transform : avx2_impl::winograd_input_transform;
  const auto output_transform = wide ? avx512_impl::winograd_output_transform : avx2_impl::winograd_output_transform;

  struct Scratch {
    Workspace<T> V, M;
    std::vector<int64_t> in_base, in_row, in_col, out_base, out_row, out_col;
  };
  auto make_scratch = [&] {
    const size_t n = static_cast<size_t>(tc);
    return Scratch{workspace_array<T>(36 * wino_generic::v_xi_stride(Cg, (tc + 31) / 32 * 32, 0)),
                   workspace_array<T>(36 * wino_generic::m_xi_stride(kb, tc)),
                   std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(n),
                   std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(n)};
  };
  dynamic_tasks(chunks * parts, make_scratch, [&](int64_t task, Scratch& sc) {
    const int64_t ch = task / parts, part = task % parts;
    const int64_t k0 = std::min(Kg, part * kb), nk = std::min(Kg, k0 + kb) - k0;
    if (nk == 0) return;
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
        T* yg = y + (g * Kg + k0) * Ho * Wo;
        const T* bg = bias ? bias + g * Kg + k0 : nullptr;
        const std::unique_ptr<GemmLhs<T>>* lg = lhs + (g * parts + part) * 36;
        bool done = false;
        if constexpr (std::is_same_v<T, float>) {
          if (vec && lg[0]->packed()) {
            // Transform straight into the packed-B layout: no packing in the GEMMs.
            const int64_t nr = lg[0]->panel_width(), npad = (nt + nr - 1) / nr * nr;
            const int64_t vs = wino_generic::v_xi_stride(Cg, nt, nr), ms = wino_generic::m_xi_stride(nk, nt);
            if (npad != nt) {
              // The last panel's columns past nt are never written by the transform;
              // zero them so the discarded lanes cannot hold NaNs or denormals.
              for (int64_t xi = 0; xi < 36; ++xi)
                for (int64_t c = 0; c < Cg; ++c) {
                  T* row = Vp + xi * vs + wino_generic::v_offset(c, nt / nr * nr, Cg, nt, nr);
                  std::fill(row + nt % nr, row + nr, T(0));
                }
            }
            input_transform(xg, Cg, H, W, tin, Vp, nr);
            for (int64_t xi = 0; xi < 36; ++xi)
              lg[xi]->multiply_packed_b(nt, Vp + xi * vs, Mp + xi * ms, nt, false);
            done = true;
          } else if (vec) {
            input_transform(xg, Cg, H, W, tin, Vp, 0);
          }
        }
        if (!done) {
          if (!vec) wino_generic::input_transform<T>(xg, Cg, H, W, tin, Vp, 0);
          for (int64_t xi = 0; xi < 36; ++xi)
            lg[xi]->multiply(nt, Vp + xi * wino_generic::v_xi_stride(Cg, nt, 0), nt, int64_t(1),
                             Mp + xi * wino_generic::m_xi_stride(nk, nt), nt, false);
        }
        if constexpr (std::is_same_v<T, float>) {
          if (vec) output_transform(Mp, nk, Ho, Wo, tout, bg, yg);
          else wino_generic::output_transform<T>(Mp, nk, Ho, Wo, tout, bg, yg);
        } else {
          wino_generic::output_transform<T>(Mp, nk, Ho, Wo, tout, bg, yg);
        }
      }
    }
  });
}


}  // namespace

template <class T>
void winograd_conv2d(int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                     int64_t pad_t, int64_t pad_l, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Cg = C / groups, Kg = K / groups;
  Workspace<T> U = workspace_array<T>(groups * 36 * Kg * Cg);
  transform_weights(w, K, Cg, groups, U.get());
  const Plan plan = plan_tiles(N, Cg, Kg, Ho, Wo);
  const auto lhs = pack_lhs(U.get(), Kg, Cg, groups, plan.parts, plan.kb, true);
  run_tiles(plan, N, C, K, groups, H, W, Ho, Wo, pad_t, pad_l, x, lhs.data(), bias, y);
}

WinogradPack::WinogradPack(const float* w, int64_t K, int64_t Cg, int64_t groups, int64_t parts)
    : K_(K), Cg_(Cg), groups_(groups), parts_(parts), kb_(rows_per_part(K / groups, parts)),
      U_(aligned_alloc_array<float>(groups * 36 * (K / groups) * Cg)) {
  transform_weights(w, K, Cg, groups, U_.get());
  lhs_ = pack_lhs(static_cast<const float*>(U_.get()), K / groups, Cg, groups, parts, kb_, false);
}

WinogradPack::~WinogradPack() = default;

void winograd_conv2d_packed(int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho,
                            int64_t Wo, int64_t pad_t, int64_t pad_l, const float* x,
                            const std::function<std::shared_ptr<const WinogradPack>(int64_t)>& pack,
                            const float* bias, float* y) {
  const Plan plan = plan_tiles(N, C / groups, K / groups, Ho, Wo);
  const std::shared_ptr<const WinogradPack> p = pack(plan.parts);
  run_tiles(plan, N, C, K, groups, H, W, Ho, Wo, pad_t, pad_l, x, p->lhs(), bias, y);
}

template void winograd_conv2d<float>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                     int64_t, const float*, const float*, const float*, float*);
template void winograd_conv2d<double>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                      int64_t, int64_t, const double*, const double*, const double*, double*);

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void winograd_input_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, float*, int64_t) {}
void winograd_output_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, const float*, float*) {}
void winograd_transform_kernels(const float*, int64_t, double*, double*, float*, int64_t) {}
}  // namespace avx2_impl
#endif
#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
void winograd_input_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, float*, int64_t) {}
void winograd_output_transform(const float*, int64_t, int64_t, int64_t, const WinoTiles&, const float*, float*) {}
void winograd_transform_kernels(const float*, int64_t, double*, double*, float*, int64_t) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
