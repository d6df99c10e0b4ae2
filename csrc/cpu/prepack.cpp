// Pre-packed convolution weights (prepack.h) and the im2col + GEMM forward that
// uses them. The loop is conv_gemm.cpp's forward (column chunks of ~128 KiB of
// im2col matrix, one block of y per task, bias and epilogue applied while the
// block is in cache) with the weights' GemmLhs taken from the pack, plus an
// output-channel split when there are fewer (image, group, chunk) tasks than threads.
#include "cpu/prepack.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_im2col.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"

namespace cnnfast::cpu {
using namespace conv_detail;

void pack_row_blocks_into(const float* w, int64_t K, int64_t CK, int64_t rows, int64_t b0, int64_t b1, float* dst) {
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t c = 0; c < CK; ++c)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t k = b * rows + r;
        dst[(b * CK + c) * rows + r] = k < K ? w[k * CK + c] : 0.0f;
      }
}

Workspace<float> pack_kvec_weights(const float* w, int64_t K, int64_t CK) {
  const int64_t blocks = (K + kKvecRows - 1) / kKvecRows;
  Workspace<float> wk = workspace_array<float>(blocks * CK * kKvecRows);
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) { pack_row_blocks_into(w, K, CK, kKvecRows, b0, b1, wk.get()); });
  return wk;
}

namespace {

AlignedPtr<float> pack_row_blocks(const float* w, int64_t K, int64_t CK, int64_t rows) {
  const int64_t blocks = (K + rows - 1) / rows;
  AlignedPtr<float> dst = aligned_alloc_array<float>(blocks * CK * rows);
  pack_row_blocks_into(w, K, CK, rows, 0, blocks, dst.get());
  return dst;
}

}  // namespace

ConvPacked::ConvPacked(const float* w, int64_t K, int64_t Cg, int64_t kk, int64_t groups)
    : K_(K), Cg_(Cg), kk_(kk), groups_(groups) {
  const int64_t Kg = K / groups, CK = Cg * kk;
  // Blocks of at least 32 rows (whole micro-tiles), one per thread at most.
  const int64_t threads = std::max(1, get_num_threads());
  row_blocks_ = std::max<int64_t>(1, std::min<int64_t>(threads, Kg / 32));
  rows_per_block_ = (Kg + row_blocks_ - 1) / row_blocks_;
  rows_per_block_ = (rows_per_block_ + 7) / 8 * 8;
  row_blocks_ = (Kg + rows_per_block_ - 1) / rows_per_block_;
  w_ = aligned_alloc_array<float>(K * CK);
  std::memcpy(w_.get(), w, sizeof(float) * K * CK);
  lhs_.reserve(groups * row_blocks_);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t rb = 0; rb < row_blocks_; ++rb) {
      const int64_t r0 = rb * rows_per_block_, r1 = std::min(Kg, r0 + rows_per_block_);
      lhs_.emplace_back(r1 - r0, CK, w_.get() + (g * Kg + r0) * CK, CK, int64_t(1), false);
    }
  if (groups == 1) pw_ = pack_row_blocks(w, K, CK, kPanelRows);
}

const float* ConvPacked::kvec() const {
  std::call_once(kvec_once_, [&] { kvec_ = pack_row_blocks(w_.get(), K_, Cg_ * kk_, kKvecRows); });
  return kvec_.get();
}

std::shared_ptr<const WinogradPack> ConvPacked::winograd(int64_t parts) const {
  std::lock_guard<std::mutex> lock(winograd_mutex_);
  if (!winograd_ || winograd_->parts() != parts)
    winograd_ = std::make_shared<const WinogradPack>(w_.get(), K_, Cg_, groups_, parts);
  return winograd_;
}

namespace {

constexpr int64_t kOutputBlock = 32768;

bool is_pointwise(const ConvShape& s) {
  for (int d = 0; d < 3; ++d)
    if (s.k[d] != 1 || s.stride[d] != 1 || s.pad0[d] != 0 || s.out[d] != s.in[d]) return false;
  return true;
}

}  // namespace

bool conv_forward_packed(const ConvShape& s, const float* x, const ConvPacked& p, const float* bias, float* y,
                         const Epilogue& e) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  if (p.K() != s.K || p.Cg() != Cg || p.kk() != kk || p.groups() != G) return false;
  if (P < kSmallOutput && s.N > 1) return false;  // the batched-images path shares one pass over the weight
  const TapWindow t = live_tap_window(s);
  if (t.empty || t.trimmed) return false;
  TapPairs tp;
  if (tap_pairs(s, tp)) return false;
  const ColumnMap cmap(s);
  const int64_t CK = Cg * kk;
  const bool direct = is_pointwise(s);
  // Column chunks as conv_gemm.cpp's: ~128 KiB (256 KiB pointwise) of float32, whole 16-column panels.
  // The block of y a chunk writes is capped too (~128 KiB), so the epilogue re-reads it from
  // L2: with 16 input channels a 256 KiB input chunk meant a 1.5 MB output block.
  int64_t PC = std::max<int64_t>(64, (direct ? 65536 : 32768) / CK);
  PC = std::min(PC, std::max<int64_t>(64, kOutputBlock / std::max<int64_t>(Kg, 1)));
  PC = std::min((PC + 15) / 16 * 16, P);
  const int64_t nch = (P + PC - 1) / PC, base = s.N * G * nch, RB = p.row_blocks(), rows = p.rows_per_block();
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  // Few tasks (batch 1, small map): each row block becomes a task of its own; a
  // non-pointwise chunk's im2col is then repeated per row block, the price of
  // keeping every thread busy.
  const bool split = base < threads && RB > 1;
  dynamic_tasks(
      split ? base * RB : base, [&] { return aligned_alloc_array<float>(direct ? 1 : CK * PC); },
      [&](int64_t task, AlignedPtr<float>& col) {
        const int64_t t0 = split ? task / RB : task;
        const int64_t ch = t0 % nch, g = (t0 / nch) % G, n = t0 / (nch * G);
        const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
        const float* xg = x + (n * s.C + g * Cg) * inS;
        float* yg = y + (n * s.K + g * Kg) * P;
        const float* b = direct ? xg + p0 : col.get();
        const int64_t ldb = direct ? P : p1 - p0;
        if (!direct) cmap.im2col(xg, col.get(), p0, p1, p1 - p0);
        const int64_t rb0 = split ? task % RB : 0, rb1 = split ? rb0 + 1 : RB;
        for (int64_t rb = rb0; rb < rb1; ++rb) {
          const int64_t r0 = rb * rows, r1 = std::min(Kg, r0 + rows);
          float* yb = yg + r0 * P + p0;
          p.lhs(g, rb).multiply(p1 - p0, b, ldb, int64_t(1), yb, P, false);
          if (bias) add_bias_rows(yb, bias + g * Kg + r0, r1 - r0, P, p1 - p0);
          epilogue_block(y, yb - y, r1 - r0, P, p1 - p0, e);
        }
      },
      Dealing::Contiguous);  // neighbouring chunks of the same rows stay on one thread (conv_parallel.h)
  return true;
}

namespace {

// One image's im2col matrix for the dense tiles, rows ld apart: whole channels at a time
// on AVX-512 for 2-D layers (conv_im2col_avx512.cpp), else ColumnMap's column chunks.
class ImageColumns {
 public:
  ImageColumns(const ConvShape& s, int64_t ld, bool avx512)
      : s_(s), ld_(ld),
        by_channels_(avx512 && s.in[0] == 1 && s.k[0] == 1 && s.out[0] == 1 && s.pad0[1] >= 0 && s.pad0[2] >= 0),
        col_(workspace_array<float>(s.C * s.k_size() * ld)) {
    if (!by_channels_) cmap_ = std::make_unique<ColumnMap>(s);
  }
  const float* operator()(const float* image) {
    if (by_channels_) {
      parallel_for(0, s_.C, 8, [&](int64_t c0, int64_t c1) {
        Workspace<float> row = workspace_array<float>(avx512_impl::im2col_channels_scratch(s_));
        avx512_impl::im2col_channels(s_, image, col_.get(), ld_, c0, c1, row.get());
      });
    } else {
      parallel_for(0, s_.out_size(), 64,
                   [&](int64_t p0, int64_t p1) { cmap_->im2col(image, col_.get() + p0, p0, p1, ld_); });
    }
    return col_.get();
  }

 private:
  const ConvShape& s_;
  int64_t ld_;
  bool by_channels_;
  Workspace<float> col_;
  std::unique_ptr<ColumnMap> cmap_;
};

// Where the channel-vector tiles beat the panel tiles (one thread, CPU time, ms, panels
// / kvec): whenever the output channels fill their 32-row blocks to >= 85% (K = 40:
// 240->40 at 28x28 0.069 / 0.101) and the layer is deep enough for the transposes at
// the end of each tile to pay (C = 32, 40: 32->192 at 28x28 0.050 / 0.055, 40->240
// 0.073 / 0.086; C = 80: 80->480 at 14x14 0.074 / 0.069); on maps past 16x16 only from
// C = 192 (512->128 at 28x28 0.460 / 0.420, 256->64 at 56x56 0.459 / 0.435, 256->512
// stride 2 at 56x56 0.967 / 0.977, 128->512 at 28x28 0.469 / 0.455).
bool kvec_pays(int64_t K, int64_t CK, int64_t P) {
  const int64_t rows = (K + kKvecRows - 1) / kKvecRows * kKvecRows;
  return CK >= kKvecMinDepth && 100 * K >= 85 * rows && (P <= kKvecMaxPositions || CK >= 2 * kKvecMinDepth);
}

// conv_forward_panels on the channel-vector tiles (conv_kvec_avx512.cpp).
// wk: the weights packed by pack_row_blocks(w, K, CK, kKvecRows).
void conv_forward_kvec(const ConvShape& s, const float* x, const float* wk, const float* bias, float* y,
                       const Epilogue& e, bool direct) {
  const int64_t C = s.C, K = s.K, P = s.out_size(), CK = C * s.k_size();
  constexpr int64_t KR = kKvecRows, kDepth = 256;
  // Tiles of at most 14 positions, balanced (49 = 13 + 12 + 12 + 12).
  const int64_t tiles = (P + kKvecMaxCols - 1) / kKvecMaxCols, blocks_k = (K + KR - 1) / KR;
  auto tile_start = [&](int64_t t) { return t * P / tiles; };
  // A task: a block of position tiles by a chunk of channel blocks, within ~128 KiB of x
  // and ~96 KiB of weights per depth slice, then smaller until each thread has several.
  const int64_t depth = std::min(CK, kDepth);
  const int64_t images = direct ? s.N : 1;
  const TaskGrid grid =
      task_grid(images, tiles, std::max<int64_t>(1, std::min(tiles, (128 << 10) / (4 * depth * kKvecMaxCols))),
                blocks_k, std::max<int64_t>(1, std::min(blocks_k, (96 << 10) / (4 * depth * KR))));
  const float* res = static_cast<const float*>(e.residual);
  const int64_t ldx = direct ? P : (P + 15) / 16 * 16;
  std::unique_ptr<ImageColumns> columns;
  if (!direct) columns = std::make_unique<ImageColumns>(s, ldx, true);
  for (int64_t n0 = 0; n0 < s.N; n0 += images) {
    const float* src = direct ? x : (*columns)(x + n0 * C * s.in_size());
    dynamic_tasks(images * grid.nb * grid.nr, [] { return 0; }, [&](int64_t t, int) {
      for_grid_task_tiles(grid, t, tiles, blocks_k, CK, kDepth, wk, KR,
                          [&](int64_t i, int64_t c0, int64_t c1, int64_t g, int64_t q, const float* wnext) {
                            const int64_t n = n0 + i, p0 = tile_start(q), k0 = g * KR, o = n * K * P + k0 * P + p0;
                            const float* xn = direct ? x + n * C * P : src;
                            avx512_impl::kvec_tile(c1 - c0, xn + c0 * ldx + p0, ldx, wk + (g * CK + c0) * KR,
                                                   std::min(KR, K - k0), bias ? bias + k0 : nullptr, y + o,
                                                   res ? res + o : nullptr, P, tile_start(q + 1) - p0, e, c0 > 0,
                                                   c1 == CK, wnext);
                          });
    });
  }
}

}  // namespace

// Eager (unpacked) forwards of dense layers whose rows are too short for the tiles on the
// bordered image (conv_kvec_taps.cpp takes rows of >= 16) and whose maps are too large
// for the weight-streaming passes: the weights are packed for this call, then each image
// goes through its im2col columns as in a frozen graph. The im2col + GEMM path blocks
// the same work less well (Zen 4, 2 threads, in-process A/B, ms, GEMM / these with the
// pack): 3x3/2 C256 at 28x28 batch 8 11.2-11.5 / 9.8-10.1, C128 3.6-3.8 / 2.8-3.2. The
// pack is one pass over the weights; below 1024 positions it costs what the tiles save
// (3x3/2 C512 at 14x14 batch 8, 392 positions: 11.7 against 12.6 with them).
bool kvec_eager_pays(const ConvShape& s) {
  const int64_t P = s.out_size();
  return use_avx512() && s.groups == 1 && !is_pointwise(s) && s.out[2] < 16 && P <= kPanelMaxPositions &&
         s.N * P >= 1024 && kvec_pays(s.K, s.C * s.k_size(), P);
}

bool conv_forward_kvec_eager(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                             const Epilogue& e) {
  if (!kvec_eager_pays(s)) return false;
  const Workspace<float> wk = pack_kvec_weights(w, s.K, s.C * s.k_size());
  conv_forward_kvec(s, x, wk.get(), bias, y, e, false);
  return true;
}

bool conv_forward_panels(const ConvShape& s, const float* x, const ConvPacked& p, const float* bias, float* y,
                         const Epilogue& e, bool allow_im2col) {
  const int64_t C = s.C, K = s.K, P = s.out_size(), CK = C * s.k_size();
  const bool avx512 = use_avx512();
  if (!(avx512 || use_avx2()) || !p.panels() || s.groups != 1 || p.K() != K || p.Cg() != C || p.kk() != s.k_size())
    return false;
  const bool direct = is_pointwise(s);
  // AVX2 (Zen 2, one thread, frozen graphs): the panel tiles beat the packed GEMM only on
  // 1x1 layers with few input channels, where the GEMM's extra passes over y cost as much
  // as the multiply (MobileNet-V2's 16->96 at 112x112: 0.93 against 1.2-1.4 ms), and
  // lose ~10% on ResNet-50's (its 1x1 layers: 64 against 59 ms); through im2col they are
  // for batch 1 only (512->512 3x3 at 7x7: 4.1 against 6.8 ms; at batch 8 30 against 23).
  if (!avx512 && (direct ? C > kAvx2PanelMaxChannels : s.N > 1)) return false;
  if (!direct && (!allow_im2col || P > kPanelMaxPositions)) return false;
  if (avx512 && kvec_pays(K, CK, P)) {
    conv_forward_kvec(s, x, p.kvec(), bias, y, e, direct);
    return true;
  }
  constexpr int64_t MR = kPanelRows, kDepth = 256;
  // A map of 16m + 1 or 16m + 2 positions (7x7: 49) would leave its last vector one or
  // two lanes full; those positions go to the matrix-vector kernel instead, one column
  // of x at a time against the rows of W (1x1 160->960 at 7x7: 0.18 -> 0.14 ms).
  // Not when the weights pass L2 (ResNet-50's 512->512 3x3 at 7x7: 9.4 MB at batch 1):
  // the matrix-vector pass reads all of them a second time from memory, for one or two
  // positions, and the layer is bound by that stream, not by the multiplies.
  const bool weights_stream = K * CK * int64_t(sizeof(float)) > (int64_t(1) << 20);
  // The next panel slice is prefetched whenever the weights pass L1: inside a frozen
  // graph each layer's weights come back from L3 or memory however small (batch 1 on
  // Zen 5, 2 threads, 64 KiB against 1 MiB: EfficientNet-B0 6.3 -> 6.0 ms, MobileNet-V2
  // 4.15 -> 4.0, ResNet-50 26.9 -> 26.6).
  const bool prefetch_weights = K * CK * int64_t(sizeof(float)) > (int64_t(64) << 10);
  const int64_t rest = P > 16 && P % 16 <= 2 && !weights_stream ? P % 16 : 0, Pm = P - rest;
  // Column tiles of 3 or 4 vectors, balanced, not 64 columns and a remainder: 14x14 =
  // 13 vectors ran as 4 + 4 + 4 + 1, and a one-vector tile (6 accumulators, one load
  // per 6 FMAs) is latency-bound at a third of a full tile's speed for a quarter of its
  // work.
  const int64_t vectors = (Pm + 15) / 16, tiles = (vectors + 3) / 4, panels = (K + MR - 1) / MR;
  auto tile_start = [&](int64_t t) { return 16 * (t * (vectors / tiles) + std::min(t, vectors % tiles)); };
  // The im2col matrix's rows start on cache lines (a 64-column row from a misaligned
  // start splits every load across two lines). A 1x1 layer's input is read as it is:
  // copying misaligned rows (14x14, 7x7) to aligned ones measured no faster.
  const int64_t ldx = (P + 15) / 16 * 16;
  // A task: a block of column tiles by a chunk of panels. The column block's slice
  // of x (C x cols) is kept within ~128 KiB so that it stays in L2 while the chunk's
  // panels pass over it, the chunk's weights within ~96 KiB; deep im2col matrices go
  // kDepth rows at a time (y accumulated in between), so the slice in use stays in L2.
  // Then smaller pieces until each thread has several tasks: at batch 1 on a 7x7 map
  // there is one column tile, and the threads share the layer by output channels.
  const int64_t depth = std::min(CK, kDepth);
  const int64_t images = direct ? s.N : 1;  // im2col goes one image at a time
  const TaskGrid grid = task_grid(images, tiles, std::max<int64_t>(1, std::min(tiles, 512 / depth)), panels,
                                  std::max<int64_t>(1, std::min(panels, 4096 / depth)));
  const int64_t cb = grid.cb, rc = grid.rc, nb = grid.nb, nr = grid.nr;
  const float* res = static_cast<const float*>(e.residual);
  std::unique_ptr<ImageColumns> columns;
  if (!direct) columns = std::make_unique<ImageColumns>(s, ldx, avx512);
  const int64_t ld_src = direct ? P : ldx;
  for (int64_t n0 = 0; n0 < s.N; n0 += images) {
    const float* src = direct ? x + n0 * C * s.in_size() : (*columns)(x + n0 * C * s.in_size());
    dynamic_tasks(
        images * nb * nr, [&] { return workspace_array<float>(rest ? CK + K : 1); },
        [&](int64_t t, Workspace<float>& buf) {
          const int64_t r = t % nr, b = (t / nr) % nb, n = n0 + t / (nr * nb);
          const float* xn = direct ? x + n * C * P : src;
          const int64_t off = n * K * P;
          if (rest && b == nb - 1) {
            const int64_t k0 = r * rc * MR, k1 = std::min(K, (r + 1) * rc * MR);
            float* xcol = buf.get();
            float* acc = xcol + CK;
            for (int64_t q = Pm; q < P; ++q) {
              for (int64_t c = 0; c < CK; ++c) xcol[c] = xn[c * ld_src + q];
              (avx512 ? avx512_impl::gemv_rows : avx2_impl::gemv_rows)(k1 - k0, CK, p.weights() + k0 * CK, xcol, acc);
              for (int64_t k = k0; k < k1; ++k) y[off + k * P + q] = acc[k - k0] + (bias ? bias[k] : 0.0f);
              epilogue_block(y, off + k0 * P + q, k1 - k0, P, 1, e);
            }
          }
          const int64_t pb0 = r * rc, pb1 = std::min(panels, (r + 1) * rc);
          const int64_t t0 = b * cb, t1 = std::min(tiles, (b + 1) * cb);
          // The chunk's first panel fetches the next tile's x ahead (it is the one that
          // brings x in; the others find it in cache).
          auto run = [&](int64_t tile, int64_t c0, int64_t pb) {
            const int64_t p0 = tile_start(tile), cols = std::min(tile_start(tile + 1), Pm) - p0;
            const int64_t c1 = std::min(CK, c0 + kDepth), k0 = pb * MR, o = off + k0 * P + p0;
            const float* xs = xn + c0 * ld_src + p0;
            // The slice the next call reads, in the deep loop order below (next panel, else
            // the next depth slice of the first panel), when the weights stream from memory.
            const float* wnext = nullptr;
            if (prefetch_weights && CK > kDepth) {
              if (pb + 1 < pb1) wnext = p.panels() + ((pb + 1) * CK + c0) * MR;
              else if (c1 < CK) wnext = p.panels() + (pb0 * CK + c1) * MR;
            } else if (prefetch_weights && tile + 1 == t1 && pb + 1 < pb1) {
              wnext = p.panels() + (pb + 1) * CK * MR;  // one slice: panel after panel
            }
            (avx512 ? avx512_impl::panel_tile : avx2_impl::panel_tile)(c1 - c0, xs, ld_src, p.panels() + (pb * CK + c0) * MR, std::min(MR, K - k0),
                                    bias ? bias + k0 : nullptr, y + o, res ? res + o : nullptr, P, cols, e, c0 > 0,
                                    c1 == CK, pb == pb0 && p0 + cols < Pm ? xs + cols : nullptr, wnext);
          };
          if (CK <= kDepth) {
            // One slice: panel by panel along the block, so that each writes its rows of y
            // as a few long runs instead of 64 positions of every row of the chunk in turn.
            for (int64_t pb = pb0; pb < pb1; ++pb)
              for (int64_t tile = t0; tile < t1; ++tile) run(tile, 0, pb);
          } else {
            for (int64_t tile = t0; tile < t1; ++tile)
              for (int64_t c0 = 0; c0 < CK; c0 += kDepth)
                for (int64_t pb = pb0; pb < pb1; ++pb) run(tile, c0, pb);
          }
        });
  }
  return true;
}

bool linear_forward_gemv(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t K, int64_t M,
                         const Epilogue& e) {
  if (N > kGemvMaxRows || !use_avx2()) return false;
  const bool wide = use_avx512();
  // Row blocks of W of ~64 KiB: the threads split W, each reads its rows once per row of x.
  const int64_t grain = std::max<int64_t>(8, 16384 / std::max<int64_t>(K, 1));
  parallel_for(0, M, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t n = 0; n < N; ++n) {
      float* yn = y + n * M + i0;
      (wide ? avx512_impl::gemv_rows : avx2_impl::gemv_rows)(i1 - i0, K, w + i0 * K, x + n * K, yn);
      if (bias)
        for (int64_t i = i0; i < i1; ++i) yn[i - i0] += bias[i];
      epilogue_block(y, n * M + i0, 1, 0, i1 - i0, e);
    }
  });
  return true;
}

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
void gemv_rows(int64_t, int64_t, const float*, const float*, float*) {}
void panel_tile(int64_t, const float*, int64_t, const float*, int64_t, const float*, float*, const float*, int64_t,
                int64_t, const Epilogue&, bool, bool, const float*) {}
}  // namespace avx2_impl
namespace avx512_impl {
void gemv_rows(int64_t, int64_t, const float*, const float*, float*) {}
void panel_tile(int64_t, const float*, int64_t, const float*, int64_t, const float*, float*, const float*, int64_t,
                int64_t, const Epilogue&, bool, bool, const float*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
