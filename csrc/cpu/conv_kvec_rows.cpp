// Direct forward convolution on row tiles: 64 output channels in the vector lanes by up to
// 7 positions of one output row, read from a zero-bordered copy of each image, with only
// the live taps of each row visited and the weights packed per (64-channel block,
// channel chunk) by the thread that uses them, into a buffer that stays in L2.
//
// Why: ResNet's deep 3x3 layers on 7x7 and 14x14 maps at batch 4-8 ran at 0.79-0.88x of
// PyTorch on Zen 4. oneDNN's direct kernel runs them at ~96% of the FMA peak on the
// products that read inside the image. Ours lost in three places: the small-map passes
// (conv_smallmap.cpp) put positions in the lanes, and a 7x7 map fills 49 of 64 lanes;
// every path read the zero border as if it were data (18% of a 3x3 layer's products on
// a 7x7 map); and the channel-vector tiles packed all 9.4 MB of weights before starting,
// a pass through memory that cost as much as the border (1.0-1.2 ms of 8.4). Here the
// lanes are output channels, so any width tiles without waste; a row's taps that fall
// in the border are not visited, nor the first or last position's column taps there;
// and each chunk of weights (64 output channels by ~128 KiB of (channel, tap) rows) is
// transposed from the user's (K, C, kh, kw) array into L2 right before the tiles that use
// it, so the pack costs no trip to memory (a standalone model of the 512-channel layer
// below: 7.4-7.5 ms packing in place, 7.8-8.5 with a separate pack pass of 0.7-1.2 ms).
// Zen 4, 2 threads, 3x3 C512 at 7x7 batch 8, forward: 11.4 ms
// (small-map passes) -> 8.5, torch 9.2-9.5 side by side; the tiles alone run at ~93% of
// the FMA peak on the live products.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_kvec_rows.h"
#include "cpu/conv_parallel.h"

namespace cnnfast::cpu::conv_detail {
namespace {

// CNNFAST_KVEC_ROWS=0 turns this path off, =1 takes it wherever it applies (A/B
// measurements); tests set the same through set_kvec_rows_mode.
std::atomic<int>& kvec_rows_mode() {
  static std::atomic<int> mode{[] {
    const char* e = std::getenv("CNNFAST_KVEC_ROWS");
    return e ? std::atoi(e) : -1;
  }()};
  return mode;
}

// Whether K output channels fill their 64-channel blocks to at least 75%.
bool blocks_filled(int64_t K) {
  const int64_t blocks = (K + kRowTileChannels - 1) / kRowTileChannels;
  return 4 * K >= 3 * blocks * kRowTileChannels;
}

// Output rows split into tiles of at most 7 positions, balanced (12 -> 6 + 6, not 7 + 5).
struct RowSplit {
  int64_t tiles_per_row, Wo;
  int64_t start(int64_t i) const { return i * Wo / tiles_per_row; }
  int64_t width(int64_t i) const { return start(i + 1) - start(i); }
};

RowSplit split_row(int64_t Wo) {
  return RowSplit{(Wo + kRowTileMaxPositions - 1) / kRowTileMaxPositions, Wo};
}

// The live taps of the tile at output row oh, columns [ow0, ow0 + np), for a bordered
// plane Wp wide: rows of the kernel that fall in the border are left out, and so are the
// first and last position's FMAs where their column does.
int64_t live_taps(const ConvShape& s, int64_t oh, int64_t ow0, int64_t np, int64_t Wp, RowTileTap* taps) {
  int64_t n = 0;
  for (int64_t a = 0; a < s.k[1]; ++a) {
    const int64_t ih = oh * s.stride[1] + a * s.dil[1] - s.pad0[1];
    if (ih < 0 || ih >= s.in[1]) continue;
    for (int64_t b = 0; b < s.k[2]; ++b) {
      int64_t lo, hi;
      valid_range(s.out[2], s.in[2], s.stride[2], b * s.dil[2] - s.pad0[2], lo, hi);
      if (std::max(lo, ow0) >= std::min(hi, ow0 + np)) continue;
      taps[n++] = RowTileTap{int32_t((oh * s.stride[1] + a * s.dil[1]) * Wp + ow0 * s.stride[2] + b * s.dil[2]),
                             int32_t(a * s.k[2] + b), int8_t(np > 1 && ow0 < lo), int8_t(np > 1 && ow0 + np > hi)};
    }
  }
  return n;
}

}  // namespace

int set_kvec_rows_mode(int mode) { return kvec_rows_mode().exchange(mode < 0 ? -1 : mode > 0 ? 1 : 0); }

bool kvec_rows_applies(const ConvShape& s) {
  if (!use_avx512() || !is_two_d(s) || s.groups != 1 || (s.stride[2] != 1 && s.stride[2] != 2)) return false;
  const int64_t plane = bordered_extent(s, 1) * bordered_extent(s, 2);
  return s.pad0[1] >= 0 && s.pad0[2] >= 0 && plane < (int64_t(1) << 31) / std::max<int64_t>(s.C, 1);
}

namespace {

// The rule for a forward f (a layer's, or its stride-1 grad_x as a forward) that the
// small-map passes or Winograd would otherwise take as given.
bool rows_pay(const ConvShape& f, bool smallmap_takes, bool winograd_takes) {
  // Deep layers on maps up to 16x16 with 64-channel blocks at least 75% full. Zen 4, 2
  // threads, forward ms, the path Auto took before against these (torch in brackets, all
  // side by side in one process):
  // 3x3 C512 at 7x7 batch 8 11.4 (small-map) / 8.5 (9.2-9.5), batch 4 5.7 / 5.0 (5.6-5.8);
  // 3x3/2 C512 at 14x14 batch 8 12.3 (GEMM) / 10.5 (10.1-10.9); C128->256 at 28x28 batch 2
  // 2.2 / 1.8 (2.1-2.2); 3x3 C256 at 14x14 batch 4 5.0 (Winograd) / 4.3 (4.6-5.1).
  // grad_x alike: 3x3 C512 at 7x7 batch 8 11.4 / 8.4, batch 4 5.7 / 4.7, C256 at 14x14
  // batch 4 6.5 / 4.8.
  // Wider maps went to the GEMM, Winograd and the channel-vector tiles (3x3/2 C64->128
  // at 56x56 batch 16 9.3 / 13.5; grad_x of 5x5 C96->256 at 27x27 batch 8 34 / 43), and
  // so do shallow layers (3x3 C16->32 at 128x128 4.8 / 8.2).
  if (f.k_size() == 1 || f.C < 32 || !blocks_filled(f.K)) return false;
  const int64_t positions = f.N * f.out_size();
  if (f.out_size() > 256 && positions >= 1024) return false;
  // The small-map passes read each weight once where this path packs it: they stay ahead
  // below ~200 positions unless most of their lanes idle (3x3 C512 at 7x7 batch 1 1.6 /
  // 1.9 ms, batch 2 2.9 / 3.1, at 4x4 batch 1 (a 0.28 share) 0.91 / 1.00, batch 4 5.4 /
  // 2.4; 5x5 C256 at 7x7 batch 1 (0.42) 1.4-2.4 / 1.1-1.2; 3x3 C256 at 14x14 batch 1 even).
  if (smallmap_takes) return positions >= 196 || (positions >= 32 && smallmap_useful_share(f) < 0.5);
  // Winograd's filter transform is paid back from ~1000 positions (3x3 C256 at 14x14
  // batch 8 6.8 / 8.2 ms, C512 at 7x7 batch 32 28.3 / 31.1, C128 at 28x28 batch 4 3.6 / 4.5;
  // batch 1 1.7 / 1.3).
  if (winograd_takes) return positions < 1024;
  return f.out_size() <= 256;
}

}  // namespace

bool kvec_rows_forward_pays(const ConvShape& s) {
  if (!kvec_rows_applies(s)) return false;
  if (const int mode = kvec_rows_mode().load(std::memory_order_relaxed); mode >= 0) return mode == 1;
  return rows_pay(s, smallmap_forward_pays(s), choose_forward_algo(s, true) == ConvAlgo::Winograd);
}

namespace {

// y = conv(x, w) + bias (then e) for s, on planes of E (float32 channels, or bf16 channel
// pairs as uint32) with `units` of them per image: border(i, dst) writes plane i (image
// i / units, unit i % units) bordered; pack(k0, u0, nu, scratch, dst) the weights of
// output channels [k0, k0 + 64) and units [u0, u0 + nu); tile(np, stride, x, plane, taps,
// ntaps, w, kk, nu, acc, first) one tile over nu units.
template <class E, class Border, class Pack, class Tile>
void run_row_tiles(const ConvShape& s, int64_t units, int64_t scratch_per_unit, Border border, Pack pack, Tile tile,
                   const float* bias, float* y, const Epilogue* e) {
  const int64_t N = s.N, K = s.K, kk = s.k_size(), Ho = s.out[1], Wo = s.out[2];
  const int64_t P = Ho * Wo, Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2), plane = Hp * Wp;
  Workspace<E> xb = workspace_array<E>(N * units * plane);
  parallel_for(0, N * units, std::max<int64_t>(1, 16384 / plane), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) border(i, xb.get() + i * plane);
  });
  const RowSplit split = split_row(Wo);
  const int64_t tiles = N * Ho * split.tiles_per_row, blocks = (K + kRowTileChannels - 1) / kRowTileChannels;
  // Unit chunks of ~128 KiB of packed weights: they stay in L2 while every tile of the
  // task passes over them.
  const int64_t chunk = std::clamp<int64_t>(32768 / (kk * kRowTileChannels), 1, units);
  // Enough tasks to balance the threads; a group of tiles packs its own weights.
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t groups = std::min(tiles, std::max<int64_t>(1, (2 * threads + blocks - 1) / blocks));
  const Epilogue none;
  const Epilogue& ep = e ? *e : none;
  const float* res = static_cast<const float*>(ep.residual);
  // A tile's live taps depend only on its place in the image (output row, tile of the
  // row): listed once per call, not per image, block and chunk.
  const int64_t places = Ho * split.tiles_per_row;
  std::vector<RowTileTap> taps(size_t(places * kk));
  std::vector<int64_t> ntaps(static_cast<size_t>(places));
  for (int64_t q = 0; q < places; ++q) {
    const int64_t i = q % split.tiles_per_row;
    ntaps[size_t(q)] = live_taps(s, q / split.tiles_per_row, split.start(i), split.width(i), Wp, &taps[size_t(q * kk)]);
  }
  struct State {
    Workspace<E> wchunk;
    Workspace<float> scratch, acc;
  };
  const int64_t max_group = (tiles + groups - 1) / groups;
  dynamic_tasks(
      blocks * groups,
      [&] {
        return State{workspace_array<E>(chunk * kk * kRowTileChannels),
                     workspace_array<float>(std::max<int64_t>(1, chunk * scratch_per_unit)),
                     workspace_array<float>(max_group * kRowTileMaxPositions * kRowTileChannels)};
      },
      [&](int64_t t, State& st) {
        const int64_t kb = t / groups, g = t % groups, k0 = kb * kRowTileChannels;
        const int64_t r0 = g * tiles / groups, r1 = (g + 1) * tiles / groups;
        for (int64_t u0 = 0; u0 < units; u0 += chunk) {
          const int64_t nu = std::min(chunk, units - u0);
          pack(k0, u0, nu, st.scratch.get(), st.wchunk.get());
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / places, q = r % places;
            tile(split.width(q % split.tiles_per_row), s.stride[2], xb.get() + (n * units + u0) * plane, plane,
                 &taps[size_t(q * kk)], ntaps[size_t(q)], st.wchunk.get(), kk, nu,
                 st.acc.get() + (r - r0) * kRowTileMaxPositions * kRowTileChannels, u0 == 0);
          }
        }
        const int64_t rows = std::min(kRowTileChannels, K - k0);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t n = r / places, q = r % places, i = q % split.tiles_per_row;
          const int64_t at = (n * K + k0) * P + q / split.tiles_per_row * Wo + split.start(i);
          avx512_impl::row_tile_store(st.acc.get() + (r - r0) * kRowTileMaxPositions * kRowTileChannels,
                                      split.width(i), rows, bias ? bias + k0 : nullptr, y + at, res ? res + at : nullptr,
                                      P, ep);
        }
      });
}

// The float32 passes; rotated: w is the weights of the layer whose stride-1 grad_x s is
// the forward of, rotated and swapped while packed.
void run_row_tiles_f32(const ConvShape& s, const float* x, const float* w, bool rotated, const float* bias, float* y,
                       const Epilogue* e) {
  const int64_t C = s.C, K = s.K, kk = s.k_size(), H = s.in[1], W = s.in[2];
  const int64_t Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2);
  run_row_tiles<float>(
      s, C, 0,
      [&](int64_t i, float* dst) { border_image(x + i * H * W, 1, H, W, s.pad0[1], s.pad0[2], Hp, Wp, dst); },
      [&](int64_t k0, int64_t c0, int64_t nc, float*, float* dst) {
        if (rotated)
          avx512_impl::row_tiles_pack_rotated(w, K, kk, k0, c0, nc, dst);
        else
          avx512_impl::row_tiles_pack(w, K, C * kk, k0, c0 * kk, nc * kk, dst);
      },
      avx512_impl::row_tile, bias, y, e);
}

}  // namespace

void forward_kvec_rows(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                       const Epilogue* e) {
  run_row_tiles_f32(s, x, w, false, bias, y, e);
}

bool kvec_rows_bf16_pays(const ConvShape& s) {
  if (!kvec_rows_applies(s)) return false;
  if (const int mode = kvec_rows_mode().load(std::memory_order_relaxed); mode >= 0) return mode == 1;
  // Against the VDPBF16PS GEMM, which packs an im2col matrix of pairs per call. Zen 4, 2
  // threads, 3x3, bf16 inputs, forward ms, GEMM / tiles (torch bf16 in brackets): C64->128
  // at 32x32 stride 2 batch 32 7.1 / 4.5 (4.3); C128 at 16x16 batch 32 8.0 / 7.0 (10.8);
  // C256 at 8x8 9.3 / 7.1 (6.2); C512 at 4x4 9.4 / 6.2 (4.9); C512 at 7x7 batch 8 7.6 /
  // 4.8 (4.7); C256 at 14x14 batch 8 6.3 / 4.9 (4.9); C128 at 28x28 batch 16 12.5 / 10.9.
  // Stride-1 layers of 64 channels stay: the layout passes weigh as much as the 64 x 9
  // products per output they prepare (C64 at 32x32 batch 32 8.7 / 8.7, at 56x56 batch 8
  // 6.4 / 6.7).
  // Maps of under 16 outputs too: the GEMM packs only the live window of taps, these every
  // tap (batch 32, C256 at 2x2 0.85 / 1.01, C512 at 1x1 0.49 / 0.90; C128 at 4x4 0.80 / 0.46).
  const bool strided = s.stride[1] > 1 || s.stride[2] > 1;
  return s.k_size() > 1 && s.out_size() >= 16 && blocks_filled(s.K) &&
         (s.C >= 96 || (strided && s.C >= 32));
}

namespace {

template <class T>
void run_row_tiles_bf16(const ConvShape& s, const T* x, const T* w, bool rotated, const float* bias, float* y) {
  const int64_t C = s.C, pairs = (C + 1) / 2, H = s.in[1], W = s.in[2], kk = s.k_size();
  const int64_t Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2);
  run_row_tiles<uint32_t>(
      s, pairs, 2 * kk * kRowTileChannels,
      [&](int64_t i, uint32_t* dst) {
        amx_impl::rows_bf16_border(x + (i / pairs) * C * H * W, C, H, W, s.pad0[1], s.pad0[2], Hp, Wp, i % pairs, dst);
      },
      [&](int64_t k0, int64_t p0, int64_t np, float* scratch, uint32_t* dst) {
        amx_impl::rows_bf16_pack(w, s.K, C, kk, k0, p0, np, rotated, scratch, dst);
      },
      amx_impl::rows_bf16_tile, bias, y, nullptr);
}

}  // namespace

template <class T>
void forward_kvec_rows_bf16(const ConvShape& s, const T* x, const T* w, const float* bias, float* y) {
  run_row_tiles_bf16(s, x, w, false, bias, y);
}

template <class T>
void backward_data_kvec_rows_bf16(const ConvShape& s, const T* gy, const T* w, float* gx) {
  run_row_tiles_bf16(data_pass_as_forward(s), gy, w, true, nullptr, gx);
}

bool kvec_rows_bf16_weight_pays(const ConvShape& s) {
  if (!kvec_rows_applies(s) || s.stride[1] != 1 || s.stride[2] != 1) return false;
  // Each pair of positions is an int32 offset into the whole batch's planes.
  if (s.N * s.C * bordered_extent(s, 1) * bordered_extent(s, 2) >= (int64_t(1) << 31) - 64) return false;
  if (const int mode = kvec_rows_mode().load(std::memory_order_relaxed); mode >= 0) return mode == 1;
  // Against the VDPBF16PS GEMM over an im2col matrix. Zen 4, 2 threads, 3x3, bf16 inputs,
  // grad_w ms, GEMM / tiles: C64 at 32x32 batch 32 9.2 / 7.0, C128 at 16x16 8.8 / 6.3, C256
  // at 8x8 10.9 / 6.3, C512 at 4x4 8.5 / 7.1; batch 8: C512 at 7x7 7.0 / 6.2, C256 at
  // 14x14 7.7 / 4.9, C64 at 56x56 6.4 / 5.3; C128 at 28x28 batch 16 12.0 / 9.6.
  // Few positions per tile leave the per-tile stores and the pair transposes exposed: C128
  // at 4x4 batch 32 0.72 / 0.85, C256 at 2x2 0.74 / 0.94 (C512 at 4x4 holds: 8.5 / 7.1).
  const int64_t P = s.out_size();
  return s.k_size() > 1 && s.C >= 32 && blocks_filled(s.K) &&
         (P >= 64 || (P >= 16 && s.C >= 256));
}

template <class T>
void backward_weight_kvec_rows_bf16(const ConvShape& s, const T* gy, const T* x, float* gw) {
  const int64_t N = s.N, C = s.C, K = s.K, kk = s.k_size(), CK = C * kk, H = s.in[1], W = s.in[2];
  const int64_t Ho = s.out[1], Wo = s.out[2], KW = s.k[2];
  const int64_t Hp = bordered_extent(s, 1), Wp = bordered_extent(s, 2), plane = Hp * Wp, x_image = C * plane;
  // The last pair of an odd row reads one value past its row's end: the next row's first,
  // or for the last row of all, zeros past the planes.
  constexpr int64_t kSlack = 32;
  Workspace<uint16_t> xb = workspace_array<uint16_t>(N * x_image + kSlack);
  parallel_for(0, N * C, std::max<int64_t>(1, 16384 / plane), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      amx_impl::rows_bf16_border16(x + i * H * W, H, W, s.pad0[1], s.pad0[2], Hp, Wp, xb.get() + i * plane);
  });
  std::fill(xb.get() + N * x_image, xb.get() + N * x_image + kSlack, uint16_t(0));
  const int64_t blocks = (K + kRowTileChannels - 1) / kRowTileChannels, wpairs = (Wo + 1) / 2;
  const int64_t gy_block = N * Ho * wpairs * kRowTileChannels;
  Workspace<uint32_t> gp = workspace_array<uint32_t>(blocks * gy_block);
  parallel_for(0, blocks * N, 1, [&](int64_t t0, int64_t t1) {
    Workspace<float> scratch = workspace_array<float>(kRowTileChannels * ((Wo + 15) / 16 * 16));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t kb = t / N, n = t % N;
      amx_impl::rows_bf16_grad_pairs(gy + n * K * Ho * Wo, K, Ho, Wo, kb * kRowTileChannels, scratch.get(),
                                     gp.get() + kb * gy_block + n * Ho * wpairs * kRowTileChannels);
    }
  });
  // Where each pair of positions (image, output row, pair) reads x, from its column's tap.
  std::vector<int32_t> steps(size_t(N * Ho * wpairs));
  for (int64_t n = 0, q = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t j = 0; j < wpairs; ++j) steps[size_t(q++)] = int32_t(n * x_image + oh * Wp + 2 * j);
  constexpr int64_t NC = amx_impl::kWeightTileColumns;
  const int64_t col_blocks = (CK + NC - 1) / NC;
  parallel_for(0, blocks * col_blocks, 1, [&](int64_t t0, int64_t t1) {
    float out[NC * kRowTileChannels];
    const uint16_t* xcol[NC];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t kb = t / col_blocks, j0 = t % col_blocks * NC, nc = std::min(NC, CK - j0);
      for (int64_t i = 0; i < nc; ++i) {
        const int64_t c = (j0 + i) / kk, tap = (j0 + i) % kk;
        xcol[i] = xb.get() + c * plane + tap / KW * s.dil[1] * Wp + tap % KW * s.dil[2];
      }
      amx_impl::rows_bf16_weight_tile(nc, gp.get() + kb * gy_block, steps.data(), int64_t(steps.size()), xcol, out);
      const int64_t k0 = kb * kRowTileChannels, rows = std::min(kRowTileChannels, K - k0);
      for (int64_t l = 0; l < rows; ++l)
        for (int64_t i = 0; i < nc; ++i) gw[(k0 + l) * CK + j0 + i] = out[i * kRowTileChannels + l];
    }
  });
}

template void backward_weight_kvec_rows_bf16<float>(const ConvShape&, const float*, const float*, float*);
template void backward_weight_kvec_rows_bf16<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, float*);
template void forward_kvec_rows_bf16<float>(const ConvShape&, const float*, const float*, const float*, float*);
template void forward_kvec_rows_bf16<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, const float*,
                                               float*);
template void backward_data_kvec_rows_bf16<float>(const ConvShape&, const float*, const float*, float*);
template void backward_data_kvec_rows_bf16<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, float*);

bool kvec_rows_data_pays(const ConvShape& s) {
  if (s.stride[1] != 1 || s.stride[2] != 1 || !kvec_rows_applies(data_pass_as_forward(s))) return false;
  if (const int mode = kvec_rows_mode().load(std::memory_order_relaxed); mode >= 0) return mode == 1;
  return rows_pay(data_pass_as_forward(s), smallmap_data_pays(s), choose_algo(s, true) == ConvAlgo::Winograd);
}

void backward_data_kvec_rows(const ConvShape& s, const float* gy, const float* w, float* gx) {
  run_row_tiles_f32(data_pass_as_forward(s), gy, w, true, nullptr, gx, nullptr);
}

}  // namespace cnnfast::cpu::conv_detail

#if !CNNFAST_HAVE_AVX512_BUILD
// Builds without the AVX-512 translation units: use_avx512() is false and bf16_path() is
// the fallback, so nothing reaches these.
namespace cnnfast::cpu::avx512_impl {
void row_tiles_pack(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
void row_tiles_pack_rotated(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
void row_tile(int64_t, int64_t, const float*, int64_t, const RowTileTap*, int64_t, const float*, int64_t, int64_t,
              float*, bool) {}
void row_tile_store(const float*, int64_t, int64_t, const float*, float*, const float*, int64_t, const Epilogue&) {}
}  // namespace cnnfast::cpu::avx512_impl
namespace cnnfast::cpu::amx_impl {
template <class T>
void rows_bf16_border(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t*) {}
template <class T>
void rows_bf16_pack(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float*, uint32_t*) {}
void rows_bf16_tile(int64_t, int64_t, const uint32_t*, int64_t, const RowTileTap*, int64_t, const uint32_t*, int64_t,
                    int64_t, float*, bool) {}
template <class T>
void rows_bf16_border16(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint16_t*) {}
template <class T>
void rows_bf16_grad_pairs(const T*, int64_t, int64_t, int64_t, int64_t, float*, uint32_t*) {}
CNNFAST_ROWS_BF16_INSTANTIATE(float)
CNNFAST_ROWS_BF16_INSTANTIATE(uint16_t)
void rows_bf16_weight_tile(int64_t, const uint32_t*, const int32_t*, int64_t, const uint16_t* const*, float*) {}
}  // namespace cnnfast::cpu::amx_impl
#endif
