// The im2col + GEMM convolution: forward, backward to the input (GEMM + col2im)
// and backward to the weights (im2col + GEMM).
//
// The im2col matrix is never built whole: it is made a column chunk (a run of
// output positions, ~128 KiB) at a time, right before the GEMM packs it, and the
// weights are packed once per call (GemmLhs) instead of once per chunk. Small
// outputs gather it through an offset table (ColumnMap, conv_im2col.cpp), and kernel taps that
// only ever read padding are dropped before any of this (conv_window.cpp).
//
// Threading: the forward hands out (image, group, chunk) tasks dynamically, cut
// further into parts of the output channels when there are too few to share evenly;
// the weight gradient splits them into one contiguous range per thread, each with its
// own chunk buffer and serial GEMMs, accumulates per range and sums the ranges in a
// fixed order afterwards, so a given thread count always gives the same bits. The
// input gradient splits (image, group) pairs, because the chunks of one image scatter
// into overlapping parts of grad_x; with fewer pairs than threads, or a number that
// does not share evenly, it splits the GEMM and then col2im by channels instead.
#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_im2col.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"

namespace cnnfast::cpu::conv_detail {
namespace {

// A 1x1x1 kernel with stride 1 and no padding: the input already is the im2col matrix.
bool is_pointwise(const ConvShape& s) {
  for (int d = 0; d < 3; ++d)
    if (s.k[d] != 1 || s.stride[d] != 1 || s.pad0[d] != 0 || s.out[d] != s.in[d]) return false;
  return true;
}

// Output columns per im2col chunk: about 128 KiB of float32 column matrix, so the
// chunk is packed from L2, in whole 32-column micro-panels (the AVX-512 kernel's
// width, two of AVX2's): 16-column rounding left every chunk of a 3x3 C16 or C48
// layer (240 and 80 columns) with a half-empty AVX-512 panel (one thread, 3x3 C48->64
// 56x56 batch 8 forward: 22.2 -> 17.1 ms; C16->32 112x112 13.7 -> 12.9).
// At least 256 columns, though: every chunk's GEMM streams the whole weight matrix
// (2.4 MB for AlexNet's 5x5 C96->256) from L3, and 64-column chunks of deep layers
// did that 12 times per 27x27 image. One thread on Zen 5, 64 -> 256 columns (ms):
// 5x5 C96->256 27x27 forward 32.7 -> 32.0, grad_x 34.7 -> 31.6; 5x5 C256->96 grad_x
// 43.9 -> 35.8; 3x3 C96 56x56 forward 22.0 -> 21.0; at the avx2 level even or better.
int64_t chunk_columns(int64_t CK, int64_t P, int64_t target_elems) {
  int64_t pc = std::max<int64_t>(256, target_elems / std::max<int64_t>(CK, 1));
  pc = (pc + 31) / 32 * 32;
  return std::min(pc, P);
}

template <class T>
struct ForwardBuffers {
  Workspace<T> col, xp;        // a column chunk; the zero-bordered image group
  int64_t padded_image = -1;   // which (image, group) xp holds
};

template <class T>
struct BatchedBuffers {
  Workspace<T> col, tmp;
};

// The batched forward of one-group float32 layers on AVX-512, as the transposed product:
// y^T (columns, K) = col^T (columns, C kh kw) x W^T on the parallel GEMM (each thread a
// slab of output channels), then transposed into y in 16 x 16 register blocks. Why: with
// the weights as the packed left operand and a block of images' columns per thread
// (below), each thread streamed the whole weight and half-filled the last 32-wide panels
// of its 196 columns (four 7x7 images): 1x1 layers on 7x7 maps ran 25-30% behind the same
// product as a linear layer. 2 threads on Zen 5, ms, before / after (torch): 1x1 2048->512
// at 7x7 batch 8 2.58 / 2.04 (2.31), batch 2 0.79 / 0.61 (0.61); 512->2048 batch 8 2.53 /
// 2.22 (2.17); 1x1/2 1024->2048 at 14x14 batch 8 5.96 / 4.85 (5.21); 256->512 at 4x4
// batch 32 0.134 / 0.115. (With a scalar transpose out, widening layers had lost: 2.43 ->
// 2.57.) 1x1 layers copy their input rows as the column matrix.
void forward_batched_transposed(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                                const Epilogue* epi) {
  const int64_t K = s.K, P = s.out_size(), inS = s.in_size(), CK = s.C * s.k_size();
  const ColumnMap cmap(s);
  const int64_t nb = std::clamp<int64_t>(kBatchedColumns / P, 1, s.N);
  Workspace<float> col = workspace_array<float>(CK * nb * P), ct = workspace_array<float>(nb * P * K);
  for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
    const int64_t m = std::min(nb, s.N - n0), cols = m * P;
    if (is_pointwise(s)) {
      // The input is the column matrix already: each channel's rows side by side.
      parallel_for(0, s.C, 16, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t i = 0; i < m; ++i)
            std::memcpy(col.get() + c * cols + i * P, x + ((n0 + i) * s.C + c) * P, sizeof(float) * size_t(P));
      });
    } else {
      parallel_for(0, m, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) cmap.im2col(x + (n0 + i) * s.C * inS, col.get() + i * P, int64_t(0), P, cols);
      });
    }
    gemm(cols, K, CK, col.get(), int64_t(1), cols, w, int64_t(1), CK, ct.get(), K, false);
    // ct (image, P, K) -> y (image, K, P), 64 channels a task, in 16 x 16 register transposes.
    const int64_t kblocks = (K + 63) / 64;
    parallel_for(0, m * kblocks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = t / kblocks, k0 = (t % kblocks) * 64, k1 = std::min(K, k0 + 64);
        float* yi = y + (n0 + i) * K * P;
        avx512_impl::transpose_add_bias(ct.get() + i * P * K, P, K, bias, yi, k0, k1);
        if (epi) epilogue_block(y, yi + k0 * P - y, k1 - k0, P, P, *epi);
      }
    });
  }
}

template <class T>
void forward_gemm_batched(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, const Epilogue* epi) {
  if constexpr (std::is_same_v<T, float>)
    if (s.groups == 1 && use_avx512()) return forward_batched_transposed(s, x, w, bias, y, epi);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size(), nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(Kg, CK, w + g * Kg * CK, CK, int64_t(1));
  dynamic_tasks(
      blocks * G,
      [&] { return BatchedBuffers<T>{workspace_array<T>(CK * nb * P), workspace_array<T>(Kg * nb * P)}; },
      [&](int64_t t, BatchedBuffers<T>& buf) {
        const int64_t g = t % G, n0 = (t / G) * nb, n1 = std::min(s.N, n0 + nb), cols = (n1 - n0) * P;
        // col (CK, cols): image n's columns start at (n - n0) * P.
        for (int64_t n = n0; n < n1; ++n)
          cmap.im2col(x + (n * s.C + g * Cg) * inS, buf.col.get() + (n - n0) * P, int64_t(0), P, cols);
        lhs[g].multiply(cols, buf.col.get(), cols, int64_t(1), buf.tmp.get(), cols, false);
        for (int64_t n = n0; n < n1; ++n) {
          T* yg = y + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k) {
            const T* src = buf.tmp.get() + k * cols + (n - n0) * P;
            const T b = bias ? bias[g * Kg + k] : T(0);
            for (int64_t p = 0; p < P; ++p) yg[k * P + p] = src[p] + b;
          }
          if (epi) epilogue_block(y, yg - y, Kg, P, P, *epi);
        }
      });
}

template <class T>
void backward_data_gemm_batched(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size(), nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  // col (CK, cols) = w_g^T (CK, Kg) * dy (Kg, cols)
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(CK, Kg, w + g * Kg * CK, int64_t(1), CK);
  dynamic_tasks(
      blocks * G,
      [&] { return BatchedBuffers<T>{workspace_array<T>(CK * nb * P), workspace_array<T>(Kg * nb * P)}; },
      [&](int64_t t, BatchedBuffers<T>& buf) {
        const int64_t g = t % G, n0 = (t / G) * nb, n1 = std::min(s.N, n0 + nb), cols = (n1 - n0) * P;
        for (int64_t n = n0; n < n1; ++n) {
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k)
            std::copy(dyg + k * P, dyg + (k + 1) * P, buf.tmp.get() + k * cols + (n - n0) * P);
        }
        lhs[g].multiply(cols, buf.tmp.get(), cols, int64_t(1), buf.col.get(), cols, false);
        for (int64_t n = n0; n < n1; ++n) {
          T* dxg = gx + (n * s.C + g * Cg) * inS;
          std::fill(dxg, dxg + Cg * inS, T(0));
          cmap.col2im(buf.col.get() + (n - n0) * P, dxg, int64_t(0), P, int64_t(0), Cg, cols);
        }
      });
}

}  // namespace

// Images per batched GEMM: about kBatchedColumns columns, in blocks that split
// evenly over the threads. The (block, group) tasks are handed out dynamically,
// so a thread's share is ceil(tasks / threads) blocks: (at a 256-column target) 32 7x7 images in blocks of 6
// made 6 blocks, 3 per thread, 18 images on the busier one; blocks of 4 make 16.
// Blocks shrink to no less than half the target width for that.
int64_t images_per_block(const ConvShape& s) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t want = std::min((kBatchedColumns + s.out_size() - 1) / s.out_size(), (s.N + threads - 1) / threads);
  int64_t best = std::max<int64_t>(1, want), best_load = INT64_MAX;
  for (int64_t nb = std::max<int64_t>(1, want); nb >= std::max<int64_t>(1, want / 2); --nb) {
    const int64_t tasks = (s.N + nb - 1) / nb * s.groups;
    const int64_t load = (tasks + threads - 1) / threads * nb;  // images on the busiest thread
    if (load < best_load) best = nb, best_load = load;
  }
  return best;
}

template <class T>
void forward_gemm(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, const Epilogue* epi) {
  TapPairs tp;
  if (tap_pairs(s, tp)) {
    forward_taps(s, tp, x, w, bias, y);
    if (epi) apply_epilogue(y, s.N * s.K * s.out_size(), *epi);
    return;
  }
  if (s.out_size() < kSmallOutput && s.N > 1) return forward_gemm_batched(s, x, w, bias, y, epi);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size();
  const bool direct = is_pointwise(s);
  const int64_t PC = chunk_columns(CK, P, direct ? 65536 : 32768), nch = (P + PC - 1) / PC;
  // Too few (image, group, chunk) tasks for the threads (batch 1 on a small map) also
  // split the output channels, each part building the chunk's columns itself.
  const int64_t parts =
      even_parts(s.N * G * nch, std::max<int64_t>(1, Kg / 32), nch > 1 ? double(P - (nch - 1) * PC) / double(PC) : 1.0);
  const int64_t kb = (Kg + parts * 8 - 1) / (parts * 8) * 8;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G * parts);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t part = 0; part < parts; ++part) {
      const int64_t k0 = std::min(Kg, part * kb);
      lhs.emplace_back(std::min(Kg, k0 + kb) - k0, CK, w + (g * Kg + k0) * CK, CK, int64_t(1));
    }
  // Tasks are (image, group, column chunk, part); every task writes its own block of y.
  // With several chunks per image, each thread zero-borders the image's group once
  // and maps its chunks from that copy: per-chunk row runs spent as long as the GEMM
  // on fill/memcpy calls of one output row each (AVX2 on Zen 2, one thread, 3x3
  // dilation-2 C64 56x56 batch 8: im2col ~35% of the forward).
  const bool prepad = !direct && nch * parts > 1 && cmap.can_prepad();
  dynamic_tasks(
      s.N * G * nch * parts,
      [&] {
        return ForwardBuffers<T>{workspace_array<T>(direct ? 1 : CK * PC),
                                 workspace_array<T>(prepad ? cmap.padded_elements() : 1), -1};
      },
      [&](int64_t t, ForwardBuffers<T>& buf) {
        Workspace<T>& col = buf.col;
        const int64_t part = t % parts, ch = (t / parts) % nch, g = (t / (parts * nch)) % G;
        const int64_t n = t / (parts * nch * G);
        const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
        const int64_t k0 = std::min(Kg, part * kb), nk = std::min(Kg, k0 + kb) - k0;
        if (nk == 0) return;
        const GemmLhs<T>& a = lhs[g * parts + part];
        const T* xg = x + (n * s.C + g * Cg) * inS;
        T* yg = y + (n * s.K + g * Kg + k0) * P;
        if (direct) {
          a.multiply(p1 - p0, xg + p0, P, int64_t(1), yg + p0, P, false);
        } else {
          if (prepad) {
            if (buf.padded_image != n * G + g) cmap.pad_group(xg, buf.xp.get());
            buf.padded_image = n * G + g;
            cmap.im2col_prepadded(buf.xp.get(), col.get(), p0, p1, p1 - p0);
          } else {
            cmap.im2col(xg, col.get(), p0, p1, p1 - p0);
          }
          a.multiply(p1 - p0, col.get(), p1 - p0, int64_t(1), yg + p0, P, false);
        }
        if (bias) add_bias_rows(yg + p0, bias + g * Kg + k0, nk, P, p1 - p0);
        if (epi) epilogue_block(y, yg + p0 - y, nk, P, p1 - p0, *epi);
      },
      Dealing::Contiguous);
}

template <class T>
void backward_data_gemm(const ConvShape& s, const T* gy, const T* w, T* gx) {
  TapPairs tp;
  if (tap_pairs(s, tp)) return backward_data_taps(s, tp, gy, w, gx);
  if (s.out_size() < kSmallOutput && s.N > 1) return backward_data_gemm_batched(s, gy, w, gx);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size();
  const bool direct = is_pointwise(s);
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  // (image, group) tasks that do not share evenly (3 on 2 threads: 2 against 1) take
  // the split below instead, image by image.
  if (s.N * G % threads == 0 || s.N * G >= 4 * threads) {
    // Tasks are (image, group): the chunks of one task scatter into the same
    // part of grad_x, so they stay on one thread. Chunks of up to ~4 MiB, most
    // images in one: each col2im call clears and folds back a whole accumulator
    // plane (col2im_padded), so four 256-column chunks of a 28x28 map did that four
    // times. One thread on Zen 5, 512 KiB -> 4 MiB chunks (ms): 4x4/2 C64 56x56
    // grad_x 9.2 -> 7.3, 3x3/2 C64->128 13.1 -> 11.4, C32->64 at 112x112 8.6 -> 7.2;
    // 2 threads 3.9 -> 2.9 and 7.0 -> 6.0; avx2 level 10.8 -> 9.0.
    const int64_t PC = chunk_columns(CK, P, int64_t(1) << 20), nch = (P + PC - 1) / PC;
    std::vector<GemmLhs<T>> lhs;
    lhs.reserve(G);
    // col (CK, P) = w_g^T (CK, Kg) * dy_g (Kg, P)
    for (int64_t g = 0; g < G; ++g) lhs.emplace_back(CK, Kg, w + g * Kg * CK, int64_t(1), CK);
    dynamic_tasks(
        s.N * G, [&] { return workspace_array<T>(direct ? 1 : CK * PC); },
        [&](int64_t t, Workspace<T>& col) {
          const int64_t g = t % G, n = t / G;
          T* dxg = gx + (n * s.C + g * Cg) * inS;
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          if (direct) {
            lhs[g].multiply(P, dyg, P, int64_t(1), dxg, P, false);
            return;
          }
          std::fill(dxg, dxg + Cg * inS, T(0));
          for (int64_t ch = 0; ch < nch; ++ch) {
            const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
            lhs[g].multiply(p1 - p0, dyg + p0, P, int64_t(1), col.get(), p1 - p0, false);
            cmap.col2im(col.get(), dxg, p0, p1, 0, Cg, p1 - p0);
          }
        });
    return;
  }
  // Fewer (image, group) pairs than threads, or an uneven number: the whole column
  // matrix at once, the GEMM split across threads, then col2im split by channels.
  Workspace<T> col = workspace_array<T>(direct ? 1 : CK * P);
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      T* dxg = gx + (n * s.C + g * Cg) * inS;
      const T* dyg = gy + (n * s.K + g * Kg) * P;
      if (direct) {
        gemm(CK, P, Kg, w + g * Kg * CK, int64_t(1), CK, dyg, P, int64_t(1), dxg, P, false);
        continue;
      }
      gemm(CK, P, Kg, w + g * Kg * CK, int64_t(1), CK, dyg, P, int64_t(1), col.get(), P, false);
      std::fill(dxg, dxg + Cg * inS, T(0));
      parallel_for(0, Cg, 1, [&](int64_t c0, int64_t c1) { cmap.col2im(col.get(), dxg, int64_t(0), P, c0, c1, P); });
    }
  }
}

template <class T>
void backward_weight_gemm(const ConvShape& s, const T* gy, const T* x, T* gw) {
  TapPairs tp;
  if (tap_pairs(s, tp)) return backward_weight_taps(s, tp, gy, x, gw);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size(), wsize = s.K * CK;
  // A small batch of small images (ResNet-18 on 32x32: layer4's grad_w has only
  // N*P = 32 reduction columns) made the per-thread partial grad_w copies below
  // and their sum cost 7.6 ms against ~1 ms of arithmetic. With at most 256
  // reduction columns the column matrix is built once for the whole batch and
  // gemm() splits grad_w across threads: no partials, and bits independent of
  // threads. (At 32x 8x8 images, 2048 columns, the partials were cheaper: 2.5 vs 3.4 ms.)
  const int64_t NP = s.N * P;
  if (NP <= 256) {
    Workspace<T> col = workspace_array<T>(CK * NP), dyb = workspace_array<T>(Kg * NP);
    for (int64_t g = 0; g < G; ++g) {
      parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k) std::memcpy(dyb.get() + k * NP + n * P, dyg + k * P, sizeof(T) * P);
          cmap.im2col(x + (n * s.C + g * Cg) * inS, col.get() + n * P, int64_t(0), P, NP);
        }
      });
      // dw_g (Kg, CK) += dy (Kg, NP) * col^T (NP, CK)
      gemm(Kg, CK, NP, dyb.get(), NP, int64_t(1), col.get(), int64_t(1), NP, gw + g * Kg * CK, CK, true);
    }
    return;
  }
  // The GEMM's inner dimension runs over output positions; every call reads and
  // writes all of grad_w's group block, so each call gets a long inner dimension
  // (kd columns, ~4 MiB of column matrix): a chunk of one image when the image
  // is large, several whole images when it is small (14x14 layers).
  const int64_t kd = std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(CK, 1), 256, 2048);
  const int64_t per_chunk = P >= kd ? (P + (P + kd - 1) / kd - 1) / ((P + kd - 1) / kd) : P;
  const int64_t nch = (P + per_chunk - 1) / per_chunk;
  const int64_t pool = in_parallel_region() ? 1 : get_num_threads();
  if (pool > 1 && Kg * CK * int64_t(sizeof(T)) > (int64_t(1) << 20)) {
    // A group block of grad_w past L2 (AlexNet's 5x5 C96->256: 2.4 MB) made
    // the per-thread partials below stream it from L3 once per call on every thread,
    // and both threads together did 20% more work than one. Here the threads share
    // one column chunk: they build it together (by images and halves of positions),
    // then split the GEMM's columns of grad_w, so each thread updates its own half of
    // the block and no partials are summed; the bits match one thread's. (Modelled
    // 2-thread time, the two paths alternating in one process, load 5.5: 3x3 C256 14x14
    // batch 32 43.7 -> 41.0 ms, all threads' work 86.9 -> 79.7; AlexNet 5x5 41.1 -> 40.2.
    // A 590 KB block, C128 28x28, lost: 22.5 -> 26.2.)
    const int64_t imgs = P >= kd ? 1 : std::max<int64_t>(1, std::min<int64_t>(s.N, kd / P));
    Workspace<T> col = workspace_array<T>(CK * imgs * per_chunk), dyb = workspace_array<T>(Kg * imgs * per_chunk);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n0 = 0; n0 < s.N; n0 += imgs)
        for (int64_t ch = 0; ch < nch; ++ch) {
          const int64_t n1 = std::min(s.N, n0 + imgs), m = n1 - n0;
          const int64_t p0 = ch * per_chunk, p1 = std::min(P, p0 + per_chunk), w1 = p1 - p0, width = m * w1;
          parallel_for(0, 2 * m, 1, [&](int64_t q0, int64_t q1) {
            for (int64_t q = q0; q < q1; ++q) {
              const int64_t n = n0 + q / 2, pa = q % 2 ? p0 + w1 / 2 : p0, pb = q % 2 ? p1 : p0 + w1 / 2;
              const int64_t off = (n - n0) * w1 + (pa - p0);
              if (m > 1) {
                const T* dyg = gy + (n * s.K + g * Kg) * P + pa;
                for (int64_t k = 0; k < Kg; ++k)
                  std::memcpy(dyb.get() + k * width + off, dyg + k * P, sizeof(T) * (pb - pa));
              }
              cmap.im2col(x + (n * s.C + g * Cg) * inS, col.get() + off, pa, pb, width);
            }
          });
          const T* dy = m > 1 ? dyb.get() : gy + (n0 * s.K + g * Kg) * P + p0;
          // dw_g (Kg, CK) += dy (Kg, width) * col^T (width, CK)
          gemm(Kg, CK, width, dy, m > 1 ? width : P, int64_t(1), col.get(), int64_t(1), width, gw + g * Kg * CK, CK,
               true);
        }
    return;
  }
  // Image blocks of equal size, as many as a multiple of the threads: 32 8x8 images
  // in blocks of at most 28 made blocks of 28 and 4, and one of two threads did 7/8
  // of ResNet-18's 8x8 weight gradients.
  const int64_t imgs_max = P >= kd ? 1 : std::max<int64_t>(1, std::min<int64_t>(s.N, kd / P));
  const int64_t want = (s.N + imgs_max - 1) / imgs_max;
  const int64_t blocks_even = std::min<int64_t>(s.N, (want + pool - 1) / pool * pool);
  const int64_t imgs = (s.N + blocks_even - 1) / blocks_even;
  const int64_t nblk = (s.N + imgs - 1) / imgs;
  const int64_t width_max = imgs * per_chunk;
  const int64_t tasks = nblk * G * nch;
  const int64_t threads = std::min<int64_t>(pool, tasks);
  // One partial grad_w per thread's contiguous task range, summed in range
  // order afterwards: the same bits for the same thread count on every run.
  std::vector<Workspace<T>> partial(threads);
  parallel_for(0, threads, 1, [&](int64_t r0, int64_t r1) {
    Workspace<T> col = workspace_array<T>(CK * width_max);
    Workspace<T> dyb = workspace_array<T>(Kg * width_max);
    for (int64_t r = r0; r < r1; ++r) {
      T* dw = gw;
      if (threads > 1) {
        partial[r] = workspace_array<T>(wsize);
        std::fill(partial[r].get(), partial[r].get() + wsize, T(0));
        dw = partial[r].get();
      }
      for (int64_t t = r * tasks / threads; t < (r + 1) * tasks / threads; ++t) {
        const int64_t ch = t % nch, g = (t / nch) % G, blk = t / (nch * G);
        const int64_t p0 = ch * per_chunk, p1 = std::min(P, p0 + per_chunk), w1 = p1 - p0;
        const int64_t n0 = blk * imgs, n1 = std::min(s.N, n0 + imgs), width = (n1 - n0) * w1;
        // Gather the column matrix (CK, width) of the task's images side by side, and
        // grad_y (Kg, width) likewise when there are several (one image's rows are
        // read where they are: the copy took 5% of a 56x56 layer's weight gradient).
        const T* dy = gy + (n0 * s.K + g * Kg) * P + p0;
        int64_t ld_dy = P;
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t off = (n - n0) * w1;
          if (n1 - n0 > 1) {
            const T* dyg = gy + (n * s.K + g * Kg) * P + p0;
            for (int64_t k = 0; k < Kg; ++k) std::memcpy(dyb.get() + k * width + off, dyg + k * P, sizeof(T) * w1);
            dy = dyb.get();
            ld_dy = width;
          }
          cmap.im2col(x + (n * s.C + g * Cg) * inS, col.get() + off, p0, p1, width);
        }
        // dw_g (Kg, CK) += dy (Kg, width) * col^T (width, CK)
        gemm_serial(Kg, CK, width, dy, ld_dy, int64_t(1), col.get(), int64_t(1), width, dw + g * Kg * CK, CK, true);
      }
    }
  });
  if (threads > 1) {
    parallel_for(0, wsize, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t r = 0; r < threads; ++r) {
        const T* src = partial[r].get();
        for (int64_t i = i0; i < i1; ++i) gw[i] += src[i];
      }
    });
  }
}

#define CNNFAST_INSTANTIATE(T)                                                                  \
  template void forward_gemm<T>(const ConvShape&, const T*, const T*, const T*, T*, const Epilogue*);          \
  template void backward_data_gemm<T>(const ConvShape&, const T*, const T*, T*);              \
  template void backward_weight_gemm<T>(const ConvShape&, const T*, const T*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu::conv_detail
