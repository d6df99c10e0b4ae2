// Tap-by-tap convolution for tiny maps (conv_internal.h says when it pays).
#include <algorithm>
#include <climits>
#include <memory>
#include <vector>

#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"

namespace cnnfast::cpu::conv_detail {
namespace {

constexpr int64_t kTapOutputs = 64;
// 7x7 maps under a 3x3 kernel with padding 1 (ResNet layer4 at 224x224) hold 82% of
// the dense pairs; tap by tap they ran 71.5 ms forward, 150 ms backward against 95
// and 186 ms as one im2col GEMM (C512, batch 32, one thread, AVX-512 on Zen 4).
constexpr double kTapDensity = 0.85;

}  // namespace

bool tap_pairs(const ConvShape& s, TapPairs& tp) {
  const int64_t P = s.out_size(), kk = s.k_size();
  if (P > kTapOutputs || s.in_size() >= INT32_MAX) return false;
  // Pairs come tap by tap, so each tap's run starts where the previous one ended.
  tp.start.assign(kk + 1, 0);
  tp.out.clear();
  tp.in.clear();
  for_each_tap_read(s, [&](int64_t t, int64_t p, int64_t off) {
    if (off < 0) return;
    tp.out.push_back(int32_t(p));
    tp.in.push_back(int32_t(off));
    tp.start[t + 1] = int64_t(tp.out.size());
  });
  for (int64_t t = 0; t < kk; ++t) tp.start[t + 1] = std::max(tp.start[t + 1], tp.start[t]);
  return double(tp.out.size()) <= kTapDensity * double(P * kk);
}

namespace {

// w (K, Cg, kk) -> wt (G, kk, Kg, Cg): each tap's W_t (Kg x Cg) contiguous. Read
// row by row, written as kk sequential streams (writing tap-major the other way
// round, Kg innermost, strided every store and cost more than the GEMMs).
template <class T>
Workspace<T> taps_major(const ConvShape& s, const T* w) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), kk = s.k_size();
  Workspace<T> wt = workspace_array<T>(s.K * Cg * kk);
  parallel_for(0, s.K, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t g = r / Kg, k = r % Kg;
      const T* src = w + r * Cg * kk;
      for (int64_t t = 0; t < kk; ++t) {
        T* dst = wt.get() + ((g * kk + t) * Kg + k) * Cg;
        for (int64_t c = 0; c < Cg; ++c) dst[c] = src[c * kk + t];
      }
    }
  });
  return wt;
}

template <class T>
struct TapBuffers {
  Workspace<T> in, out, acc;
};

// Gathers rows (count, stride `from_ld` per row in each image, `img` per image)
// at offsets `at` (v of them) into dst (count, m * v): dst[r][n*v + j] = src[n*img + r*from_ld + at[j]].
template <class T>
void gather_pairs(const T* src, int64_t img, int64_t from_ld, int64_t count, int64_t m, const int32_t* at, int64_t v,
                  T* dst) {
  const int64_t cols = m * v;
  for (int64_t r = 0; r < count; ++r)
    for (int64_t n = 0; n < m; ++n) {
      const T* s = src + n * img + r * from_ld;
      T* d = dst + r * cols + n * v;
      for (int64_t j = 0; j < v; ++j) d[j] = s[at[j]];
    }
}

// The adjoint: acc[r][n*len + at[j]] += src[r][n*v + j].
template <class T>
void scatter_pairs(const T* src, int64_t count, int64_t m, const int32_t* at, int64_t v, T* acc, int64_t len) {
  const int64_t cols = m * v;
  for (int64_t r = 0; r < count; ++r)
    for (int64_t n = 0; n < m; ++n) {
      const T* s = src + r * cols + n * v;
      T* a = acc + (r * m + n) * len;
      for (int64_t j = 0; j < v; ++j) a[at[j]] += s[j];
    }
}

}  // namespace

namespace {

// The forward (x -> y through W_t) and the input gradient (grad_y -> grad_x through
// W_t^T) run tap by tap over blocks of images in the same way and differ only in
// which side is gathered and which scattered. Per (image block, group) task:
// acc (rows, m, len_out) = sum over taps of the scattered W_t-products for output
// rows [r0, r0 + rows), then finish(g, n0, m, acc, r0, rows). Too few (block, group)
// tasks for the threads (batch 1: one) also split the output rows.
template <class T, class Finish>
void taps_over_blocks(const ConvShape& s, const TapPairs& tp, const T* w, bool transposed, const T* src,
                      Finish&& finish) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  const int64_t nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  // Forward: gather Cg rows of x at input offsets, scatter Kg rows to outputs.
  const int64_t rows_in = transposed ? Kg : Cg, rows_out = transposed ? Cg : Kg;
  const int64_t len_in = transposed ? P : inS, len_out = transposed ? inS : P;
  const int64_t chans_in = transposed ? s.K : s.C;
  const std::vector<int32_t>& at_in = transposed ? tp.out : tp.in;
  const std::vector<int32_t>& at_out = transposed ? tp.in : tp.out;
  int64_t vmax = 0;
  for (int64_t t = 0; t < kk; ++t) vmax = std::max(vmax, tp.start[t + 1] - tp.start[t]);
  const Workspace<T> wt = taps_major(s, w);
  const int64_t parts = even_parts(blocks * G, std::max<int64_t>(1, rows_out / 32),
                                   G == 1 ? double(s.N - (blocks - 1) * nb) / double(nb) : 1.0);
  const int64_t rb = (rows_out + parts * 8 - 1) / (parts * 8) * 8;
  // Each (group, tap, part)'s W_t rows packed once for every image block's GEMM: packed
  // per call, the 512 x 512 taps of a 7x7 layer cost about 8% of its forward.
  std::vector<std::unique_ptr<GemmLhs<T>>> lhs(size_t(G * kk * parts));
  parallel_for(0, G * kk * parts, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t part = i % parts, t = (i / parts) % kk, g = i / (parts * kk);
      const int64_t r0 = std::min(rows_out, part * rb), rows = std::min(rows_out, r0 + rb) - r0;
      if (rows == 0) continue;
      // rows [r0, r0 + rows) of W_t (Kg x Cg) or W_t^T (Cg x Kg)
      const T* wg = wt.get() + (g * kk + t) * Cg * Kg + (transposed ? r0 : r0 * Cg);
      lhs[size_t(i)] = std::make_unique<GemmLhs<T>>(rows, rows_in, wg, transposed ? int64_t(1) : Cg,
                                                    transposed ? Cg : int64_t(1));
    }
  });
  dynamic_tasks(
      blocks * G * parts,
      [&] {
        return TapBuffers<T>{workspace_array<T>(rows_in * nb * vmax), workspace_array<T>(rows_out * nb * vmax),
                             workspace_array<T>(rows_out * nb * len_out)};
      },
      [&](int64_t task, TapBuffers<T>& buf) {
        const int64_t part = task % parts, g = (task / parts) % G, n0 = (task / (parts * G)) * nb;
        const int64_t m = std::min(s.N, n0 + nb) - n0;
        const int64_t r0 = std::min(rows_out, part * rb), rows = std::min(rows_out, r0 + rb) - r0;
        if (rows == 0) return;
        std::fill(buf.acc.get(), buf.acc.get() + rows * m * len_out, T(0));
        for (int64_t t = 0; t < kk; ++t) {
          const int64_t j0 = tp.start[t], v = tp.start[t + 1] - j0;
          if (v == 0) continue;
          gather_pairs(src + (n0 * chans_in + g * rows_in) * len_in, chans_in * len_in, len_in, rows_in, m,
                       at_in.data() + j0, v, buf.in.get());
          // out (rows, m*v) = rows [r0, r0 + rows) of W_t or W_t^T times in (rows_in, m*v)
          lhs[size_t((g * kk + t) * parts + part)]->multiply(m * v, buf.in.get(), m * v, int64_t(1), buf.out.get(),
                                                             m * v, false);
          scatter_pairs(buf.out.get(), rows, m, at_out.data() + j0, v, buf.acc.get(), len_out);
        }
        finish(g, n0, m, buf.acc.get(), r0, rows);
      });
}

}  // namespace

template <class T>
void forward_taps(const ConvShape& s, const TapPairs& tp, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = s.Kg(), P = s.out_size();
  taps_over_blocks(s, tp, w, false, x, [&](int64_t g, int64_t n0, int64_t m, const T* acc, int64_t r0, int64_t rows) {
    for (int64_t k = r0; k < r0 + rows; ++k) {
      const T b = bias ? bias[g * Kg + k] : T(0);
      for (int64_t n = 0; n < m; ++n) {
        const T* src = acc + ((k - r0) * m + n) * P;
        T* dst = y + ((n0 + n) * s.K + g * Kg + k) * P;
        for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + b;
      }
    }
  });
}

template <class T>
void backward_data_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* w, T* gx) {
  const int64_t Cg = s.Cg(), inS = s.in_size();
  taps_over_blocks(s, tp, w, true, gy, [&](int64_t g, int64_t n0, int64_t m, const T* acc, int64_t r0, int64_t rows) {
    for (int64_t c = r0; c < r0 + rows; ++c)
      for (int64_t n = 0; n < m; ++n) {
        const T* src = acc + ((c - r0) * m + n) * inS;
        std::copy(src, src + inS, gx + ((n0 + n) * s.C + g * Cg + c) * inS);
      }
  });
}

template <class T>
void backward_weight_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* x, T* gw) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  int64_t vmax = 0;
  for (int64_t t = 0; t < kk; ++t) vmax = std::max(vmax, tp.start[t + 1] - tp.start[t]);
  // One task per (group, tap) over the whole batch, each owning its taps of grad_w and
  // summing the images in one fixed order, so the bits do not depend on threads. The
  // pairs left over after an even share each (9 taps on 2 threads: one) are cut into
  // one block of output rows per thread; each block gathers the tap's x again.
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t pairs = G * kk, whole = Kg >= 16 * threads ? pairs / threads * threads : pairs;
  const int64_t split = pairs - whole, parts = split > 0 ? threads : 1;
  const int64_t kb = (Kg + parts - 1) / parts;
  dynamic_tasks(
      whole + split * parts,
      [&] {
        return TapBuffers<T>{workspace_array<T>(Kg * s.N * vmax), workspace_array<T>(Cg * s.N * vmax),
                             workspace_array<T>(Kg * Cg)};
      },
      [&](int64_t task, TapBuffers<T>& buf) {
        const int64_t pair = task < whole ? task : whole + (task - whole) / parts;
        const int64_t k0 = task < whole ? 0 : std::min(Kg, (task - whole) % parts * kb);
        const int64_t k1 = task < whole ? Kg : std::min(Kg, k0 + kb);
        const int64_t g = pair / kk, t = pair % kk, j0 = tp.start[t], v = tp.start[t + 1] - j0, cols = s.N * v;
        if (v == 0 || k0 >= k1) return;
        gather_pairs(gy + (g * Kg + k0) * P, s.K * P, P, k1 - k0, s.N, tp.out.data() + j0, v, buf.in.get());
        gather_pairs(x + g * Cg * inS, s.C * inS, inS, Cg, s.N, tp.in.data() + j0, v, buf.out.get());
        // acc (k1 - k0, Cg) = dy_t (k1 - k0, cols) * x_t^T (cols, Cg)
        gemm_serial(k1 - k0, Cg, cols, buf.in.get(), cols, int64_t(1), buf.out.get(), int64_t(1), cols, buf.acc.get(),
                    Cg, false);
        for (int64_t k = k0; k < k1; ++k) {
          T* dst = gw + ((g * Kg + k) * Cg) * kk + t;
          const T* src = buf.acc.get() + (k - k0) * Cg;
          for (int64_t c = 0; c < Cg; ++c) dst[c * kk] += src[c];
        }
      });
}

#define CNNFAST_INSTANTIATE(T)                                                                                \
  template void forward_taps<T>(const ConvShape&, const TapPairs&, const T*, const T*, const T*, T*);       \
  template void backward_data_taps<T>(const ConvShape&, const TapPairs&, const T*, const T*, T*);           \
  template void backward_weight_taps<T>(const ConvShape&, const TapPairs&, const T*, const T*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu::conv_detail
