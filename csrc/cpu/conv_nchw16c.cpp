// Drivers of the NCHW16c kernels (conv_nchw16c.h): how each layer is cut into tasks.
#include "cpu/conv_nchw16c.h"

#include <algorithm>
#include <vector>

#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/prepack.h"
#include "cpu/squeeze_excite.h"

namespace cnnfast::cpu {
namespace {

constexpr int64_t L = kBlockLanes;

// y = epilogue(W x + bias) on the channel-vector tiles: tasks of a block of position
// tiles by a chunk of 32-channel groups, as conv_forward_kvec (prepack.cpp) cuts them,
// input channels 256 at a time so that the slice of x in use stays in L2. Eight tasks a
// thread, not four: MobileNet's 96->576 at 14x14, batch 1, made 9 tasks (5 against 4 on
// two threads); 8 measured 2-4% faster on MobileNet-V2 / EfficientNet-B0 batch 1, at
// the edge of this host's noise, 16 no better.
void pointwise_forward(const ConvShape& s, const float* xb, const float* w, const float* bias, float* yb,
                       const Epilogue& e, const float* xscale) {
  const int64_t C = s.C, K = s.K, P = s.out_size(), CB = nchw16c_blocks(C), KB = nchw16c_blocks(K);
  constexpr int64_t kDepth = 256, kGroupRows = 2 * L;
  // Tiles of 14 positions by two blocks; 28 by one where the layer has one block (K <= 16).
  const int64_t kCols = KB == 1 ? 28 : 14;
  const int64_t tiles = (P + kCols - 1) / kCols, groups = (K + kGroupRows - 1) / kGroupRows;
  auto tile_start = [&](int64_t t) { return t * P / tiles; };  // balanced: 49 = 13 + 12 + 12 + 12
  const int64_t depth = std::min(C, kDepth);
  const TaskGrid grid =
      task_grid(s.N, tiles, std::max<int64_t>(1, std::min(tiles, (128 << 10) / (4 * depth * kCols))), groups,
                std::max<int64_t>(1, std::min(groups, (96 << 10) / (4 * depth * kGroupRows))), 8);
  const float* res = static_cast<const float*>(e.residual);
  dynamic_tasks(
      s.N * grid.nb * grid.nr, [] { return 0; },
      [&](int64_t t, int) {
        for_grid_task_tiles(grid, t, tiles, groups, C, kDepth, w, kGroupRows,
                            [&](int64_t n, int64_t c0, int64_t c1, int64_t g, int64_t q, const float* wnext) {
                              const int64_t p0 = tile_start(q), off = (n * KB * P + 2 * g * P + p0) * L;
                              avx512_impl::nchw16c_pointwise_tile(
                                  xb + n * CB * P * L, P, c0, c1, w + (g * C + c0) * kGroupRows, 2 * g + 1 < KB,
                                  bias ? bias + g * kGroupRows : nullptr, yb + off, P, res ? res + off : nullptr, p0,
                                  tile_start(q + 1) - p0, e, c0 > 0, c1 == C, wnext,
                                  xscale ? xscale + n * C : nullptr);
                            });
      },
      Dealing::Contiguous);
}

// Tasks of (image, channel block, band of output rows), the bands narrowed until each
// thread has several tasks (MobileNet-V2's first depthwise layer has two blocks).
void depthwise_forward(const ConvShape& s, const float* xb, const float* wb, const float* bb, float* yb,
                       const Epilogue& e) {
  const int64_t CB = nchw16c_blocks(s.C), Ho = s.out[1], taps = s.k_size();
  const int64_t in_plane = s.in_size() * L, out_plane = s.out_size() * L;
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  int64_t rows = Ho;
  while (rows > 1 && s.N * CB * ((Ho + rows - 1) / rows) < 8 * threads) rows = (rows + 1) / 2;
  const int64_t bands = (Ho + rows - 1) / rows;
  const float* res = static_cast<const float*>(e.residual);
  dynamic_tasks(
      s.N * CB * bands, [] { return 0; },
      [&](int64_t t, int) {
        const int64_t band = t % bands, plane = t / bands, cb = plane % CB;
        avx512_impl::nchw16c_depthwise_rows(s, xb + plane * in_plane, 0, wb + cb * taps * L, bb + cb * L,
                                            yb + plane * out_plane, res ? res + plane * out_plane : nullptr,
                                            band * rows, std::min(Ho, (band + 1) * rows), e);
      },
      Dealing::Contiguous);
}

// Output rows per band of a banded depthwise layer: the band's input rows within ~512
// KiB, then fewer until each thread has several bands.
int64_t band_rows(const ConvShape& dw) {
  const int64_t HB = nchw16c_blocks(dw.C), W = dw.in[2], S = dw.stride[1], K = dw.k[1], Ho = dw.out[1];
  const int64_t row_bytes = HB * W * L * int64_t(sizeof(float));
  int64_t rows = Ho;
  while (rows > 1 && ((rows - 1) * S + K) * row_bytes > (int64_t(512) << 10)) --rows;
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  while (rows > 1 && dw.N * ((Ho + rows - 1) / rows) < 4 * threads) rows = (rows + 1) / 2;
  return rows;
}

}  // namespace

bool nchw16c_band_pays(const ConvShape& dw, bool packed) {
  // Bands of >= 4 output rows keep the rows made twice at their edges (K - S a band) to a
  // fraction. Packing those rows again costs little: always, then. An expanding 1x1
  // layer's rows cost its FMAs again: only where its output passes the caches, beyond 8
  // MiB in all or 2 MiB an image (MobileNet-V2's 96 channels at 112x112 is 4.8 MB an
  // image; in-graph at batch 8, 2 threads, ms: expand + 3x3/2 depthwise 3.4 -> 2.0,
  // 24->144 + 3x3 at 56x56 1.85 -> 1.35; 32->192 + 3x3 at 28x28, 4.8 MB at batch 8,
  // lost: 0.84 -> 0.94).
  if (band_rows(dw) < 4) return false;
  const int64_t image = nchw16c_blocks(dw.C) * dw.in_size() * L * int64_t(sizeof(float));
  return packed || dw.N * image > (int64_t(8) << 20) || image > (int64_t(2) << 20);
}

void nchw16c_banded_depthwise(const ConvShape* pw, const float* x, const float* w1, const float* b1,
                              const Epilogue& e1, const ConvShape& dw, const float* w2, const float* b2, float* yb,
                              const Epilogue& e2) {
  const int64_t HB = nchw16c_blocks(dw.C), P = dw.in_size();
  const int64_t H = dw.in[1], W = dw.in[2], Ho = dw.out[1], Wo = dw.out[2], S = dw.stride[1], K = dw.k[1];
  const int64_t ph = dw.pad0[1], taps = dw.k_size();
  constexpr int64_t kDepth = 256, kCols = 14;
  const int64_t rows = band_rows(dw), bands = (Ho + rows - 1) / rows;
  const int64_t max_in = (rows - 1) * S + K;
  // The bands' buffers come from the workspace pool: a fresh 512 KiB per thread and call
  // would be an mmap whose pages fault in again on every call.
  dynamic_tasks(
      dw.N * bands, [&] { return workspace_array<float>(HB * max_in * W * L); },
      [&](int64_t t, Workspace<float>& band) {
        const int64_t n = t / bands, oh0 = (t % bands) * rows, oh1 = std::min(Ho, oh0 + rows);
        const int64_t ih0 = std::max<int64_t>(0, oh0 * S - ph), ih1 = std::min(H, (oh1 - 1) * S - ph + K);
        if (ih1 <= ih0) return;  // (cannot happen with padding under the kernel size)
        const int64_t bandP = (ih1 - ih0) * W, p_first = ih0 * W;
        if (!pw) {
          for (int64_t cb = 0; cb < HB; ++cb)
            avx512_impl::nchw16c_pack_range(x + n * dw.C * P, dw.C, P, cb, p_first, bandP,
                                            band.get() + cb * bandP * L);
        } else {
          // Positions [p_first, p_first + bandP) of the 1x1 layer, its 32-channel groups.
          const int64_t C = pw->C, groups = (pw->K + 2 * L - 1) / (2 * L);
          const float* xn = x + n * nchw16c_blocks(C) * P * L;
          const int64_t tiles = (bandP + kCols - 1) / kCols;
          for (int64_t c0 = 0; c0 < C; c0 += kDepth) {
            const int64_t c1 = std::min(C, c0 + kDepth);
            for (int64_t g = 0; g < groups; ++g)
              for (int64_t q = 0; q < tiles; ++q) {
                const int64_t q0 = q * bandP / tiles, np = (q + 1) * bandP / tiles - q0;
                avx512_impl::nchw16c_pointwise_tile(xn, P, c0, c1, w1 + (g * C + c0) * 2 * L, 2 * g + 1 < HB,
                                                    b1 + g * 2 * L, band.get() + (2 * g * bandP + q0) * L, bandP,
                                                    nullptr, p_first + q0, np, e1, c0 > 0, c1 == C, nullptr);
              }
          }
        }
        for (int64_t cb = 0; cb < HB; ++cb)
          avx512_impl::nchw16c_depthwise_rows(dw, band.get() + cb * bandP * L, ih0, w2 + cb * taps * L, b2 + cb * L,
                                              yb + (n * HB + cb) * Ho * Wo * L, nullptr, oh0, oh1, e2);
      },
      Dealing::Contiguous);
}

bool nchw16c_is_depthwise(const ConvShape& s) {
  return s.in[0] == 1 && s.k[0] == 1 && s.groups == s.C && s.K == s.C && s.groups > 1 && s.k[1] == s.k[2] &&
         (s.k[1] == 3 || s.k[1] == 5) && s.stride[1] == s.stride[2] && (s.stride[1] == 1 || s.stride[1] == 2) &&
         s.dil[1] == 1 && s.dil[2] == 1 && s.pad0[1] >= 0 && s.pad0[2] >= 0 && s.pad0[1] < s.k[1] &&
         s.pad0[2] < s.k[2] && s.pad1[1] >= 0 && s.pad1[2] >= 0;
}

bool nchw16c_conv_applicable(const ConvShape& s) {
  if (s.in[0] != 1 || s.k[0] != 1) return false;  // 2-D (a 1-D layer is (1, 1, W))
  const bool pointwise = s.groups == 1 && s.k_size() == 1 && s.stride[1] == 1 && s.stride[2] == 1 &&
                         s.pad0[1] == 0 && s.pad0[2] == 0 && s.pad1[1] == 0 && s.pad1[2] == 0;
  return pointwise || nchw16c_is_depthwise(s);
}

void nchw16c_pack(const float* x, int64_t N, int64_t C, int64_t P, float* xb) {
  const int64_t CB = nchw16c_blocks(C);
  parallel_for(0, N * CB, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / CB, cb = i % CB;
      avx512_impl::nchw16c_pack_range(x + n * C * P, C, P, cb, 0, P, xb + (n * CB + cb) * P * L);
    }
  });
}

void nchw16c_unpack(const float* xb, int64_t N, int64_t C, int64_t P, float* x) {
  const int64_t CB = nchw16c_blocks(C);
  parallel_for(0, N * CB, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / CB, cb = i % CB;
      avx512_impl::nchw16c_unpack_blocks(xb + n * CB * P * L, C, P, x + n * C * P, cb, cb + 1);
    }
  });
}

void nchw16c_pack_depthwise(const float* w, const float* bias, int64_t C, int64_t taps, float* wb, float* bb) {
  const int64_t CB = nchw16c_blocks(C);
  for (int64_t cb = 0; cb < CB; ++cb)
    for (int64_t l = 0; l < L; ++l) {
      const int64_t c = cb * L + l;
      for (int64_t t = 0; t < taps; ++t) wb[(cb * taps + t) * L + l] = c < C ? w[c * taps + t] : 0.0f;
      bb[c] = c < C && bias ? bias[c] : 0.0f;
    }
}

void nchw16c_conv_forward(const ConvShape& s, const float* xb, const float* w, const float* bias, float* yb,
                          const Epilogue& e, const float* xscale) {
  if (nchw16c_is_depthwise(s)) return depthwise_forward(s, xb, w, bias, yb, e);
  pointwise_forward(s, xb, w, bias, yb, e, xscale);
}

void nchw16c_squeeze_excite_scales(const float* xb, int64_t N, int64_t C, int64_t P, const float* w1,
                                   const float* b1, int64_t R, const float* w2, const float* b2, const Epilogue& e1,
                                   const Epilogue& e2, float* scale) {
  const int64_t CB = nchw16c_blocks(C);
  std::vector<float> pooled(N * CB * L), means(N * C);
  parallel_for(0, N * CB, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) avx512_impl::nchw16c_block_mean(xb + i * P * L, P, pooled.data() + i * L);
  });
  // (N, CB 16) -> (N, C): the padded lanes' means are not the products' inputs.
  for (int64_t n = 0; n < N; ++n) std::copy_n(pooled.data() + n * CB * L, C, means.data() + n * C);
  squeeze_excite_scales(means.data(), scale, N, C, w1, b1, R, w2, b2, e1, e2);
}

void nchw16c_squeeze_excite(const float* xb, float* yb, int64_t N, int64_t C, int64_t P, const float* w1,
                            const float* b1, int64_t R, const float* w2, const float* b2, const Epilogue& e1,
                            const Epilogue& e2) {
  const int64_t CB = nchw16c_blocks(C);
  std::vector<float> scale(N * C), padded(N * CB * L, 0.0f);
  nchw16c_squeeze_excite_scales(xb, N, C, P, w1, b1, R, w2, b2, e1, e2, scale.data());
  for (int64_t n = 0; n < N; ++n) std::copy_n(scale.data() + n * C, C, padded.data() + n * CB * L);
  parallel_for(0, N * CB, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      avx512_impl::nchw16c_block_scale(xb + i * P * L, P, padded.data() + i * L, yb + i * P * L);
  });
}

#if !CNNFAST_HAVE_AVX512_BUILD
// Builds without the AVX-512 translation units: use_avx512() is false, so the chain
// never takes these.
namespace avx512_impl {
void nchw16c_pack_range(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
void nchw16c_unpack_blocks(const float*, int64_t, int64_t, float*, int64_t, int64_t) {}
void nchw16c_pointwise_tile(const float*, int64_t, int64_t, int64_t, const float*, bool, const float*, float*,
                            int64_t, const float*, int64_t, int64_t, const Epilogue&, bool, bool, const float*,
                            const float*) {}
void nchw16c_depthwise_rows(const ConvShape&, const float*, int64_t, const float*, const float*, float*, const float*,
                            int64_t, int64_t, const Epilogue&) {}
void nchw16c_block_mean(const float*, int64_t, float*) {}
void nchw16c_block_scale(const float*, int64_t, const float*, float*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
