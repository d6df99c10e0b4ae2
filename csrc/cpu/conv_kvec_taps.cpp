// Dense convolutions on the channel-vector tiles (conv_kvec_avx512.cpp), the forward at
// strides 1 to 4 and grad_w at 1 or 2, straight from a zero-bordered copy of each image:
// no im2col matrix. The forward and the
// stride-1 grad_x (the forward of grad_y with the rotated kernel) run 32 output channels
// by up to 14 positions of one output row; grad_w runs 64 output channels by the taps
// of one or two kernel rows, summed over every position of every image.
//
// Why: a 5x5 layer such as AlexNet's C96->256 at 27x27 went to the grouped direct
// kernel, whose vectors run along an output row (27 columns fill two vectors to 84%),
// or to im2col + GEMM, which writes and reads back a 2400 x 729 column matrix per
// image (7 MB, ~9% of the layer). Here the vectors hold 16 output channels, so any
// row width tiles by 14s (27 = 14 + 13), and each (channel, kh, kw) row of the
// virtual im2col matrix is the padded image read at that tap's offset.
// Zen 5, AlexNet 5x5 C96->256 27x27 batch 8, one thread: forward 32.9-36.4 ms (grouped
// direct, im2col + GEMM) -> 28.7-30.0 (242 GFLOP/s, 96% of the FMA peak; torch 30.3),
// grad_x 33.1 -> 29.7; two threads 16.4-17.2 -> 15.0 and 16.8-17.2 -> 15.1. The error
// against float64 is that of one float32 sum over C kh kw terms (2.5e-6 relative here,
// the GEMM's KC-deep partial sums 3.9e-7). Stride 2 (ms, one thread, before / after):
// 3x3 C64->128 at 56x56 batch 16 forward 9.7 / 8.2, grad_w 11.2 / 8.7; 4x4 C64->128
// batch 8 forward 8.9 / 6.9; 3x3 C32->64 at 32x32 batch 32 forward 2.09 / 1.41, grad_w
// 2.74 / 1.66; C128->256 at 56x56 batch 8 forward even (2 threads 9.8 / 9.9).
#include <algorithm>
#include <numeric>
#include <utility>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/epilogue.h"
#include "cpu/prepack.h"

namespace cnnfast::cpu::conv_detail {

void border_image(const float* x, int64_t C, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp,
                  float* xp) {
  const int64_t plane = Hp * Wp;
  std::memset(xp, 0, sizeof(float) * size_t(C * plane));
  const int64_t h0 = std::max<int64_t>(0, -top), h1 = std::min(H, Hp - top);
  const int64_t w0 = std::max<int64_t>(0, -left), w1 = std::min(W, Wp - left);
  if (h1 <= h0 || w1 <= w0) return;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = h0; h < h1; ++h)
      std::memcpy(xp + c * plane + (h + top) * Wp + w0 + left, x + (c * H + h) * W + w0,
                  sizeof(float) * size_t(w1 - w0));
}

int64_t bordered_extent(const ConvShape& s, int d) {
  return (s.out[d] - 1) * s.stride[d] + s.dil[d] * (s.k[d] - 1) + 1;
}

namespace {

// What both passes' tiles take: AVX-512 (at full rate or split into 256-bit halves as on
// Zen 4, where they beat the direct kernel and the GEMM too), a dense 2-D layer with equal
// strides up to max_stride (a tile's positions are that many input columns apart: 4 for
// the forward's tiles, 2 for grad_w's), no
// dilation, and a bordered image of fewer than 2^31 floats (the tap offsets are int32).
bool bordered_tiles_apply(const ConvShape& s, int64_t max_stride) {
  if (!use_avx512()) return false;
  const bool stride_fits = s.stride[1] == s.stride[2] && s.stride[2] >= 1 && s.stride[2] <= max_stride;
  return is_two_d(s) && s.groups == 1 && stride_fits && s.dil[1] == 1 && s.dil[2] == 1 &&
         s.C * bordered_extent(s, 1) * bordered_extent(s, 2) < (int64_t(1) << 31);
}

}  // namespace

bool kvec_taps_pays(const ConvShape& s, bool prepacked) {
  if (!bordered_tiles_apply(s, 4) || s.k_size() == 1) return false;
  const int64_t CK = s.C * s.k_size(), blocks = (s.K + kKvecRows - 1) / kKvecRows;
  // Rows of at least 16 positions where the weights are packed per call (a tile holds up
  // to 14 of one row; 14x14 maps ran no faster than the GEMM: C256 batch 1 1.55 against
  // 1.61 ms, 2 threads 1.21 / 1.15); a frozen graph's pack leaves only the im2col
  // matrix to save, and there rows of 7 pay (one thread, ms, im2col + tiles against
  // these: 3x3 C256 at 14x14 batch 1 1.19 / 1.00, C512 at 7x7 batch 1 1.38 / 1.24, batch
  // 8 11.1 / 9.4, stride 2 C256 at 28x28 batch 8 10.5 / 8.7, C128 batch 2 0.68 / 0.54;
  // two threads C256 at 14x14 batch 1 0.59 / 0.50). 32-channel blocks
  // at least 85% full, and enough depth that the 28 accumulators' transpose and store
  // are small next to the FMAs. Layers Auto gives Winograd keep it, and dilated ones
  // stay on the grouped direct kernel (3x3 dilation 2 C64 at 56x56 batch 8, 2 threads:
  // 4.2 ms here against 3.4 there).
  return s.out[2] >= (prepacked ? 7 : 16) && s.K * 100 >= blocks * kKvecRows * 85 && CK >= 256 &&
         choose_algo(s, true) == ConvAlgo::Gemm;
}

ConvShape data_pass_as_forward(const ConvShape& s) {
  ConvShape f = s;
  std::swap(f.C, f.K);
  for (int d = 0; d < 3; ++d) {
    f.in[d] = s.out[d], f.out[d] = s.in[d];
    f.pad0[d] = s.dil[d] * (s.k[d] - 1) - s.pad0[d];
    f.pad1[d] = s.dil[d] * (s.k[d] - 1) - s.pad1[d];
  }
  return f;
}

bool kvec_taps_data_pays(const ConvShape& s) {
  return s.groups == 1 && s.stride[0] == 1 && s.stride[1] == 1 && s.stride[2] == 1 &&
         kvec_taps_pays(data_pass_as_forward(s));
}

void forward_kvec_taps(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                       const float* packed, const Epilogue* e) {
  constexpr int64_t KR = kKvecRows;
  const int64_t C = s.C, K = s.K, H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2], P = Ho * Wo;
  const int64_t KH = s.k[1], KW = s.k[2], kk = KH * KW, CK = C * kk, blocks_k = (K + KR - 1) / KR;
  const int64_t sh = s.stride[1], sw = s.stride[2];
  const int64_t Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2), plane = Hp * Wp;
  const int64_t top = s.pad0[1], left = s.pad0[2];

  // Weights in blocks of 32 output channels, (block, CK, 32), zero rows past K.
  const Workspace<float> wk = packed ? workspace_array<float>(1) : pack_kvec_weights(w, K, CK);
  const float* wpacked = packed ? packed : wk.get();
  std::vector<int32_t> off(static_cast<size_t>(CK));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw)
        off[size_t((c * KH + kh) * KW + kw)] = int32_t(c * plane + kh * s.dil[1] * Wp + kw * s.dil[2]);

  // A row's tiles, balanced (27 = 14 + 13).
  const int64_t row_tiles = (Wo + kKvecMaxCols - 1) / kKvecMaxCols;
  auto tile_start = [&](int64_t t) { return t * Wo / row_tiles; };
  // Tasks: (image, chunk of channel blocks, part of the output rows); a thread keeps the
  // image it bordered last, so consecutive tasks of one image share the copy. Small
  // batches split the channels, then the rows: AlexNet's 11x11/4 3->96 at batch 1 has
  // three 32-channel blocks, which two threads shared 2 + 1.
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t chunks = std::min(blocks_k, std::max<int64_t>(1, (2 * threads + s.N - 1) / s.N));
  const int64_t per_chunk = (blocks_k + chunks - 1) / chunks;
  // Rows split only where the tasks would not share out evenly, into just enough parts that
  // they do: each part re-reads its blocks' weights and may border the image again
  // (AlexNet's 5x5 C96->256 at batch 8, 8 tasks on 2 threads, forward 31.4 ms whole,
  // 32.6 with each image's rows in two).
  const int64_t tasks = s.N * chunks;
  const int64_t row_parts = std::min<int64_t>(Ho, threads / std::gcd(tasks, threads));
  struct Bordered {
    Workspace<float> xp;
    int64_t image = -1;
  };
  dynamic_tasks(
      s.N * chunks * row_parts, [&] { return Bordered{workspace_array<float>(C * plane), -1}; },
      [&](int64_t t, Bordered& b) {
        const int64_t n = t / (chunks * row_parts), g0 = t / row_parts % chunks * per_chunk,
                      g1 = std::min(blocks_k, g0 + per_chunk);
        const int64_t oh0 = t % row_parts * Ho / row_parts, oh1 = (t % row_parts + 1) * Ho / row_parts;
        if (g0 >= g1 || oh0 >= oh1) return;
        if (b.image != n) {
          border_image(x + n * C * H * W, C, H, W, top, left, Hp, Wp, b.xp.get());
          b.image = n;
        }
        for (int64_t g = g0; g < g1; ++g) {
          const int64_t k0 = g * KR, rows = std::min(KR, K - k0);
          const float* wg = wpacked + g * CK * KR;
          for (int64_t oh = oh0; oh < oh1; ++oh)
            for (int64_t q = 0; q < row_tiles; ++q) {
              const int64_t ow = tile_start(q);
              avx512_impl::kvec_taps_tile(CK, b.xp.get() + oh * sh * Wp + ow * sw, off.data(), sw, wg, rows,
                                          bias ? bias + k0 : nullptr, y + (n * K + k0) * P + oh * Wo + ow, P,
                                          tile_start(q + 1) - ow);
            }
          if (e && !e->empty()) epilogue_block(y, (n * K + k0) * P + oh0 * Wo, rows, P, (oh1 - oh0) * Wo, *e);
        }
      });
}

bool kvec_weight_pays(const ConvShape& s) {
  if (!bordered_tiles_apply(s, 2) || s.k[2] < 3 || s.k[2] > 5 || s.k[1] > 7) return false;
  const int64_t blocks = (s.K + 63) / 64;
  // One thread on Zen 5, ms, GEMM (im2col, packed B) against these tiles: AlexNet 5x5
  // C96->256 27x27 batch 8 34.9 / 31.4 (two threads 20.6 / 15.0), 3x3 C64 56x56 batch 8
  // 12.0 / 9.0 (6.5 / 5.0), C128 28x28 batch 16 19.2 / 17.6, C64 32x32 batch 32 (two
  // threads) 7.9 / 6.4. Small maps gain once a tile sums over several images (below):
  // C64 8x8 batch 16 0.60 / 0.34 (two threads 0.45 / 0.21), C128 8x8 batch 32 3.5 / 2.6,
  // C256 14x14 batch 8 8.3 / 8.0 (5.9 / 4.2), C128 4x4 0.41 / 0.39; 2x2 maps lost (0.48 /
  // 0.62) and so did 512 channels on 7x7 (32.8 / 38.9): rows of >= 4, and past 256
  // channels >= 16.
  // Layers of at most 32 channels take two-zmm tiles: 32x16->32 5x5 at 28x28 batch 32
  // (LeNet-like) 7.9 ms on the grouped kernel against 4.0 in four-zmm tiles half empty.
  const bool full = s.K <= 32 ? s.K * 100 >= 32 * 85 : s.K * 100 >= blocks * 64 * 85;
  return s.out[2] >= 4 && (s.K <= 256 || s.out[2] >= 16) && full;
}

void backward_weight_kvec_taps(const ConvShape& s, const float* gy, const float* x, float* gw) {
  const int64_t C = s.C, K = s.K, H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2], P = Ho * Wo;
  const int64_t KH = s.k[1], KW = s.k[2], kk = KH * KW, CK = C * kk, blocks_k = (K + 63) / 64;
  const int64_t sh = s.stride[1], sw = s.stride[2];
  const int64_t Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2), plane = Hp * Wp;
  // Taps per tile: at most 6 kernel columns x rows with four zmm of channels (a 3x3
  // layer's three rows go as a pair and a single), 12 with two. kvec_weight_pays admits
  // only 3-5 kernel columns, for which every row count up to R is instantiated.
  const int64_t KV = K <= 32 ? 2 : 4, R = KV == 4 ? (KW == 3 ? 2 : 1) : std::min<int64_t>(3, 12 / KW);
  // Images per pass: as many as keep the pass's transposed grad_y and bordered images
  // within ~4 MiB, so that on small maps each tile's transposes and stores are spread
  // over many images' positions (one 8x8 image has 64).
  const int64_t per_image = (blocks_k * P * 64 + C * plane) * int64_t(sizeof(float));
  const int64_t nb = std::clamp<int64_t>((int64_t(4) << 20) / per_image, 1, s.N);
  Workspace<float> dyt = workspace_array<float>(blocks_k * nb * P * 64), xp = workspace_array<float>(nb * C * plane);
  for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
    const int64_t m = std::min(nb, s.N - n0);
    // dyt (block, image, P, 64); xp (image, C, Hp, Wp).
    parallel_for(0, m * (blocks_k + 1), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = t / (blocks_k + 1), j = t % (blocks_k + 1), n = n0 + i;
        if (j < blocks_k)
          avx512_impl::kvec_transpose_grad(gy + n * K * P, K, P, dyt.get() + i * P * 64, m * P * 64, j, j + 1);
        else
          border_image(x + n * C * H * W, C, H, W, s.pad0[1], s.pad0[2], Hp, Wp, xp.get() + i * C * plane);
      }
    });
    // Tasks (channel block, input channel): disjoint parts of gw, so no partial sums;
    // a thread's consecutive tasks share the block's dyt.
    parallel_for(0, blocks_k * C, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t kb = t / C, c = t % C, rows = std::min<int64_t>(16 * KV, K - kb * 64);
        for (int64_t kh = 0; kh < KH; kh += R) {
          const int64_t r = std::min(R, KH - kh);
          avx512_impl::kvec_weight_tile(r, KW, KV, m, Ho, Wo, Wp, sh, sw, dyt.get() + kb * m * P * 64, P * 64,
                                        xp.get() + c * plane + kh * Wp, C * plane, gw + kb * 64 * CK + c * kk + kh * KW,
                                        CK, rows);
        }
      }
    });
  }
}

}  // namespace cnnfast::cpu::conv_detail
