// Direct bf16 convolution on AMX tiles, with no im2col: the forward (and grad_x of
// stride-1 layers, run as a forward) and grad_w of 2-D convolutions.
//
// Why: the GEMM passes (bf16_impl.h) build every tile of the im2col matrix with AVX-512
// before a TDPBF16PS reads it, and at 16 x 16 x 32 products per 16 cycles AMX is far
// faster than that packing: 3x3 layers ran at 5-15% of the tile peak. Here x is put once
// into a layout a tile load reads straight from, at any kernel tap:
//
// * Positions: x zero-padded and split into stride x stride phase planes (one plane
//   for stride 1), every image's plane of Hs x Ws laid end to end. Output (n, oh, ow) is
//   grid position q = n*Hs*Ws + oh*Ws + ow; kernel tap (kh, kw) reads phase
//   ((kh*dil) % s, (kw*dil) % s) at q + (kh*dil / s)*Ws + kw*dil / s. Columns ow >= Wout
//   and rows oh >= Hout of the grid are computed and dropped.
// * Forward: C (16 filters x 16 positions) += A (16 filters x 32 channels, one tap) *
//   B (32 channels x 16 positions). B is a plain tile load from x stored as channel
//   pairs interleaved ([phase][c/2][q][2]), shifted by the tap's offset; A is the
//   weights, pre-tiled per (filter block, tap, channel block). The output rows are
//   filters, i.e. NCHW rows: the epilogue copies runs of valid positions into y.
// * grad_w: C (16 channels x 16 filters, one tap) += A (16 channels x 32 positions) *
//   B (32 positions x 16 filters). A rows are x's phase planes read at any shift
//   ([phase][c][q], plain bf16); B is grad_y on the output grid, transposed and paired
//   once into tiles ([q/32][k/16] of 16 position pairs x 16 filters x 2).
//
// Four accumulator tiles (2 x 2) per step: four tile loads feed four TDPBF16PS.
#include <immintrin.h>

#include <type_traits>

#include "cpu/bf16.h"
#include "cpu/bf16_impl.h"
#include "cpu/bf16_pack_avx512.h"

// GCC 12 flags the unpack intrinsics' own undefined pass-through operand as maybe
// uninitialized where transpose16x16_words is inlined into pack_grad_tiles' lambda (a
// false positive; templates are instantiated at the end of the file, so the whole file).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cnnfast::cpu::CNNFAST_ISA_NS {
namespace {

struct TileScope {
  TileScope() { configure_tiles(); }
  ~TileScope() { _tile_release(); }
};

inline void bf16_store16(const float* s, uint16_t* d) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s)));
}
inline void bf16_store16(const uint16_t* s, uint16_t* d) { std::memcpy(d, s, 32); }

constexpr int64_t kMaxTaps = 64;
constexpr int64_t kMaxChunk = 32;  // position blocks of 32 per chunk

// The grid geometry shared by the passes.
struct Geom {
  int64_t sh, sw, Hp, Wp, Hs, Ws, PL, phases, Ho, Wo, H, W, ph0, pw0;
  int64_t Q;        // grid positions computed: a multiple of 32 covering every valid one
  int64_t max_off;  // the largest tap offset
  int64_t Qx;       // positions stored per plane: Q + max_off + a tile's overrun, zeros past the data
  // No std::vector in an ISA object (cmake/check_isa_symbols.py): taps are capped (kMaxTaps).
  int64_t tap_phase[kMaxTaps], tap_off[kMaxTaps];
  bool phase_used[kMaxTaps] = {};
  explicit Geom(const ConvShape& s)
      : sh(s.stride[1]), sw(s.stride[2]), Hp(s.in[1] + s.pad0[1] + s.pad1[1]), Wp(s.in[2] + s.pad0[2] + s.pad1[2]),
        Hs(ceil_div(Hp, sh)), Ws(ceil_div(Wp, sw)), PL(Hs * Ws), phases(sh * sw), Ho(s.out[1]), Wo(s.out[2]),
        H(s.in[1]), W(s.in[2]), ph0(s.pad0[1]), pw0(s.pad0[2]) {
    const int64_t ks = s.k[1] * s.k[2];
    max_off = 0;
    for (int64_t t = 0; t < ks; ++t) {
      const int64_t rr = (t / s.k[2]) * s.dil[1], cc = (t % s.k[2]) * s.dil[2];
      tap_phase[t] = (rr % sh) * sw + cc % sw;
      tap_off[t] = (rr / sh) * Ws + cc / sw;
      max_off = std::max(max_off, tap_off[t]);
      phase_used[tap_phase[t]] = true;
    }
    Q = ceil_div((s.N - 1) * PL + (Ho - 1) * Ws + Wo, 32) * 32;
    Qx = Q + max_off + 32;
  }
  // Element (phase plane position i, j) of image n comes from padded (i*sh + a, j*sw + b).
  template <class T, class F>
  void for_phase_row(const T* plane, int64_t a, int64_t b, int64_t i, F&& put) const {
    const int64_t ih = i * sh + a - ph0;
    if (ih < 0 || ih >= H) return;
    // j with 0 <= j*sw + b - pw0 < W
    const int64_t j0 = std::max<int64_t>(0, ceil_div(pw0 - b, sw)), j1 = std::min(Ws, ceil_div(W + pw0 - b, sw));
    if (j1 > j0) put(plane + ih * W + j0 * sw + b - pw0, j0, j1 - j0);
  }
};

inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- forward ----

// x (N, C, H, W) -> xi [group][phase][Cg/2 rounded to 16 pairs][Qx][2] bf16, zeros in
// padding, grid slack and the channels past Cg.
template <class T>
void pack_pairs(const ConvShape& s, const Geom& gm, const T* x, int64_t CP, uint16_t* xi) {
  const int64_t G = s.groups, Cg = s.Cg(), HW = s.in_size();
  const int64_t units = G * gm.phases * CP;
  parallel_for(0, units, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t cp = u % CP, ph = (u / CP) % gm.phases, g = u / (CP * gm.phases);
      const int64_t a = ph / gm.sw, bb = ph % gm.sw;
      uint16_t* dst = xi + u * gm.Qx * 2;
      if (!gm.phase_used[ph]) continue;  // a 1x1 stride-2 kernel reads one phase of four
      const int64_t c0 = 2 * cp, c1 = 2 * cp + 1;
      if (c0 >= Cg) {
        std::memset(dst, 0, sizeof(uint16_t) * 2 * gm.Qx);
        continue;
      }
      for (int64_t n = 0; n < s.N; ++n) {
        const T* p0 = x + (n * s.C + g * Cg + c0) * HW;
        const T* p1 = c1 < Cg ? p0 + HW : nullptr;
        for (int64_t i = 0; i < gm.Hs; ++i) {
          uint16_t* d = dst + (n * gm.PL + i * gm.Ws) * 2;
          std::memset(d, 0, sizeof(uint16_t) * 2 * gm.Ws);
          gm.for_phase_row(p0, a, bb, i, [&](const T* src0, int64_t j0, int64_t len) {
            const T* src1 = p1 ? p1 + (src0 - p0) : nullptr;
            int64_t j = 0;
            if (gm.sw == 1 && src1) {
              for (; j + 16 <= len; j += 16)
                _mm512_storeu_si512(d + (j0 + j) * 2, bf16_pairs_of(src0 + j, src1 + j));
            } else if (gm.sw == 2 && src1) {
              alignas(64) T e0[16], e1[16];
              for (; j + 16 <= len; j += 16) {
                for (int i = 0; i < 16; ++i) e0[i] = src0[2 * (j + i)], e1[i] = src1[2 * (j + i)];
                _mm512_storeu_si512(d + (j0 + j) * 2, bf16_pairs_of(e0, e1));
              }
            }
            for (; j < len; ++j) {
              d[(j0 + j) * 2] = to_bf16(src0[j * gm.sw]);
              d[(j0 + j) * 2 + 1] = src1 ? to_bf16(src1[j * gm.sw]) : uint16_t(0);
            }
          });
        }
      }
      std::memset(dst + s.N * gm.PL * 2, 0, sizeof(uint16_t) * 2 * (gm.Qx - s.N * gm.PL));
    }
  });
}

// w (K, Cg, kh, kw) -> wa [group][Kg/16][tap][Cg/32][16 x 32] bf16 tiles, zero padded.
// Weight row r's element (c, tap) is w[r*w_rs + col[c*ks + tap]] (the live-tap window of
// gemm_bf16.cpp), or w[r*w_rs + c*ks + tap] when col is null.
template <class T>
void pack_weight_tiles(const ConvShape& s, const T* w, int64_t w_rs, const int64_t* col, int64_t KB, int64_t CB,
                       uint16_t* wa) {
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ks = s.k_size();
  parallel_for(0, G * KB, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t g = u / KB, kb = u % KB;
      uint16_t* base = wa + u * ks * CB * kTileElems;
      std::memset(base, 0, sizeof(uint16_t) * ks * CB * kTileElems);
      for (int64_t kk = 0; kk < 16 && kb * 16 + kk < Kg; ++kk) {
        const T* row = w + (g * Kg + kb * 16 + kk) * w_rs;
        int64_t c = 0;
        if constexpr (std::is_same_v<T, float>) {
          // 32 channels of one tap are 32 floats ks apart: two gathers and one rounding.
          if (!col && ks * 31 < (int64_t(1) << 30)) {
            const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                   _mm512_set1_epi32(int(ks)));
            for (; c + 32 <= Cg; c += 32)
              for (int64_t t = 0; t < ks; ++t) {
                const float* src = row + c * ks + t;
                const __m512 lo = _mm512_i32gather_ps(idx, src, 4), hi = _mm512_i32gather_ps(idx, src + 16 * ks, 4);
                _mm512_storeu_si512(base + (t * CB + c / 32) * kTileElems + kk * 32, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
              }
          }
        }
        for (; c < Cg; ++c)
          for (int64_t t = 0; t < ks; ++t)
            base[(t * CB + c / 32) * kTileElems + kk * 32 + c % 32] =
                to_bf16(row[col ? col[c * ks + t] : c * ks + t]);
      }
    }
  });
}

// Copies the valid positions of a 32-filter x 32-position block (rows of C, ldc 32) into y.
struct OutRuns {
  int64_t n[32], y_off[32], c_off[32], len[32];
  int count = 0;
};

// The valid output positions among grid positions q0 .. q0+31 as runs (image, offset in
// its output plane, first lane, length): at most one per grid row the block touches.
inline void block_runs(const Geom& gm, int64_t N, int64_t q0, OutRuns& rs) {
  rs.count = 0;
  for (int64_t q = q0; q < q0 + 32;) {
    const int64_t n = q / gm.PL, rem = q % gm.PL, oh = rem / gm.Ws, ow = rem % gm.Ws;
    if (n < N && oh < gm.Ho && ow < gm.Wo) {
      rs.n[rs.count] = n;
      rs.y_off[rs.count] = oh * gm.Wo + ow;
      rs.c_off[rs.count] = q - q0;
      rs.len[rs.count] = std::min(gm.Wo - ow, q0 + 32 - q);
      ++rs.count;
    }
    q += gm.Ws - ow;
  }
}

// C tiles 0, 1 (filters of tile kb at position tiles q0, q1) and 2, 3 (tile kb + 1) start
// from zero or from bias tiles (16 rows of one filter's bias each).
template <bool TwoK>
inline void block_init(const float* bias_tile) {
  if (bias_tile) {
    _tile_loadd(0, bias_tile, 64);
    _tile_loadd(1, bias_tile, 64);
    if (TwoK) {
      _tile_loadd(2, bias_tile + 256, 64);
      _tile_loadd(3, bias_tile + 256, 64);
    }
  } else {
    _tile_zero(0);
    _tile_zero(1);
    if (TwoK) {
      _tile_zero(2);
      _tile_zero(3);
    }
  }
}

// Sums every tap and channel block into C tiles 0..3: A from the filter blocks' weight
// tiles, B straight from the channel-pair planes at the tap's shift of q0 and q1.
template <bool TwoK>
inline void block_compute(const uint16_t* A0, int64_t a_step, const uint16_t* xi_g, int64_t pair_stride,
                          const int64_t* tap_base, int64_t ks, int64_t CB, int64_t q0, int64_t q1) {
  const int64_t bstride = pair_stride * 4;  // bytes between channel pairs
  for (int64_t t = 0; t < ks; ++t) {
    const uint16_t* b0 = xi_g + tap_base[t] + q0 * 2;
    const uint16_t* b1 = xi_g + tap_base[t] + q1 * 2;
    const uint16_t* at = A0 + t * CB * kTileElems;
    for (int64_t cb = 0; cb < CB; ++cb) {
      const int64_t cofs = cb * 16 * pair_stride * 2;
      _tile_loadd(4, at + cb * kTileElems, 64);
      _tile_loadd(6, b0 + cofs, bstride);
      _tile_dpbf16ps(0, 4, 6);
      _tile_loadd(7, b1 + cofs, bstride);
      _tile_dpbf16ps(1, 4, 7);
      if (TwoK) {
        _tile_loadd(5, at + a_step + cb * kTileElems, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
}

// Stores C tiles 0..3 as a 32 x 32 block (ldc 32).
template <bool TwoK>
inline void block_store(float* C) {
  _tile_stored(0, C, 128);
  _tile_stored(1, C + 16, 128);
  if (TwoK) {
    _tile_stored(2, C + 16 * 32, 128);
    _tile_stored(3, C + 16 * 32 + 16, 128);
  }
}

// Blocks of 32 filters x 32 positions, swept filters-outer over a chunk of position blocks
// whose x pairs stay in L2 (the filter block's weights stay there too). Where the weights
// are the larger operand (deep layers on small maps) the threads split the filters, so
// each streams half of them; else they split the positions.
struct ForwardSplit {
  int64_t kparts, QC, chunks;
  ForwardSplit(const ConvShape& s, const Geom& gm, int64_t CB, int64_t KB, int64_t blocks) {
    const int64_t threads = get_num_threads(), CP = CB * 16, KP = ceil_div(KB, 2);
    const int64_t x_bytes = CP * gm.Q * 4, w_bytes = KB * s.k_size() * CB * kTileElems * 2;
    kparts = (w_bytes > x_bytes && KP >= 2 * threads) ? threads : 1;
    QC = std::max<int64_t>(1, std::min<int64_t>(kMaxChunk, (int64_t(512) << 10) / (CP * 32 * 4)));
    if (kparts == 1) QC = std::min(QC, std::max<int64_t>(1, ceil_div(s.groups * blocks, threads) / s.groups));
    chunks = ceil_div(blocks, QC);
  }
};

// Output rows of 16+ columns: position tiles of 16 columns of one output row each (a
// row's last tile masked), so finished tiles are stored straight into y (16 filter rows,
// HWo apart) with the bias preloaded into the accumulators: no copy of the results and no
// grid column computed. Two position tiles and two filter tiles per block, as on the grid.
inline void forward_rows(const ConvShape& s, const Geom& gm, const uint16_t* xi, const uint16_t* wa,
                         const int64_t* tap_base, int64_t CB, int64_t KB, const float* bias, float* y) {
  const int64_t G = s.groups, Kg = s.Kg(), ks = s.k_size(), CP = CB * 16, KP = ceil_div(KB, 2);
  const int64_t HWo = gm.Ho * gm.Wo, TPR = ceil_div(gm.Wo, 16), T = s.N * gm.Ho * TPR, NB = ceil_div(T, 2);
  WorkspaceBlock bb;
  float* bias_tiles = nullptr;
  if (bias) {
    bb = WorkspaceBlock(workspace_bytes(G * KB * 256, sizeof(float)));
    bias_tiles = static_cast<float*>(bb.data());
    for (int64_t g = 0; g < G; ++g)
      for (int64_t k = 0; k < KB * 16; ++k) {
        const float v = k < Kg ? bias[g * Kg + k] : 0.0f;
        std::fill(bias_tiles + (g * KB * 16 + k) * 16, bias_tiles + (g * KB * 16 + k + 1) * 16, v);
      }
  }
  const ForwardSplit sp(s, gm, CB, KB, NB);
  const int64_t kparts = sp.kparts, QC = sp.QC, chunks = sp.chunks;
  struct Tile {
    int64_t q, y_off, valid;
  };
  auto tile = [&](int64_t t) {
    const int64_t n = t / (gm.Ho * TPR), oh = (t / TPR) % gm.Ho, ow0 = (t % TPR) * 16;
    return Tile{n * gm.PL + oh * gm.Ws + ow0, n * s.K * HWo + oh * gm.Wo + ow0, std::min<int64_t>(16, gm.Wo - ow0)};
  };
  parallel_for(0, G * chunks * kparts, 1, [&](int64_t b, int64_t e) {
    TileScope tiles;
    alignas(64) float C[32 * 32];
    for (int64_t u = b; u < e; ++u) {
      const int64_t part = u % kparts, chunk = (u / kparts) % chunks, g = u / (kparts * chunks);
      const int64_t nb0 = chunk * QC, nb1 = std::min(NB, nb0 + QC);
      const int64_t kp0 = part * KP / kparts, kp1 = (part + 1) * KP / kparts;
      const uint16_t* xi_g = xi + g * gm.phases * CP * gm.Qx * 2;
      for (int64_t kp = kp0; kp < kp1; ++kp) {
        const int64_t kb = 2 * kp;
        const uint16_t* A0 = wa + (g * KB + kb) * ks * CB * kTileElems;
        const bool two = kb + 1 < KB;
        const int64_t k_rows = std::min<int64_t>(Kg - kb * 16, two ? 32 : 16);
        const float* bt = bias_tiles ? bias_tiles + (g * KB + kb) * 256 : nullptr;
        float* yk = y + (g * Kg + kb * 16) * HWo;
        for (int64_t nb = nb0; nb < nb1; ++nb) {
          const Tile t0 = tile(2 * nb), t1 = 2 * nb + 1 < T ? tile(2 * nb + 1) : Tile{t0.q, t0.y_off, 0};
          if (two) {
            block_init<true>(bt);
            block_compute<true>(A0, ks * CB * kTileElems, xi_g, gm.Qx, tap_base, ks, CB, t0.q, t1.q);
          } else {
            block_init<false>(bt);
            block_compute<false>(A0, 0, xi_g, gm.Qx, tap_base, ks, CB, t0.q, t1.q);
          }
          if (t0.valid == 16 && (t1.valid == 16 || t1.valid == 0) && k_rows == (two ? 32 : 16)) {
            const int64_t stride = HWo * 4;
            _tile_stored(0, yk + t0.y_off, stride);
            if (t1.valid) _tile_stored(1, yk + t1.y_off, stride);
            if (two) {
              _tile_stored(2, yk + 16 * HWo + t0.y_off, stride);
              if (t1.valid) _tile_stored(3, yk + 16 * HWo + t1.y_off, stride);
            }
            continue;
          }
          if (two) block_store<true>(C);
          else block_store<false>(C);
          for (int64_t r = 0; r < k_rows; ++r) {
            std::memcpy(yk + r * HWo + t0.y_off, C + r * 32, sizeof(float) * t0.valid);
            if (t1.valid) std::memcpy(yk + r * HWo + t1.y_off, C + r * 32 + 16, sizeof(float) * t1.valid);
          }
        }
      }
    }
  });
}

template <class T>
void forward_direct(const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col, const float* bias,
                    float* y) {
  const Geom gm(s);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ks = s.k_size();
  const int64_t CB = ceil_div(Cg, 32), CP = CB * 16, KB = ceil_div(Kg, 16);
  WorkspaceBlock xb(workspace_bytes(G * gm.phases * CP * gm.Qx * 2, sizeof(uint16_t)));
  WorkspaceBlock wb(workspace_bytes(G * KB * ks * CB * kTileElems, sizeof(uint16_t)));
  uint16_t* xi = static_cast<uint16_t*>(xb.data());
  uint16_t* wa = static_cast<uint16_t*>(wb.data());
  pack_pairs(s, gm, x, CP, xi);
  pack_weight_tiles(s, w, w_rs, w_col, KB, CB, wa);
  int64_t tap_base[kMaxTaps];
  for (int64_t t = 0; t < ks; ++t)
    tap_base[t] = (gm.tap_phase[t] * CP * gm.Qx + gm.tap_off[t]) * 2;
  const int64_t QB = gm.Q / 32, KP = ceil_div(KB, 2), HWo = gm.Ho * gm.Wo;
  if (gm.Wo >= 16) return forward_rows(s, gm, xi, wa, tap_base, CB, KB, bias, y);
  const ForwardSplit sp(s, gm, CB, KB, QB);
  const int64_t kparts = sp.kparts, QC = sp.QC, chunks = sp.chunks;
  parallel_for(0, G * chunks * kparts, 1, [&](int64_t b, int64_t e) {
    TileScope tiles;
    alignas(64) float C[32 * 32];
    OutRuns runs[kMaxChunk];
    for (int64_t u = b; u < e; ++u) {
      const int64_t part = u % kparts, chunk = (u / kparts) % chunks, g = u / (kparts * chunks);
      const int64_t qb0 = chunk * QC, qb1 = std::min(QB, qb0 + QC);
      const int64_t kp0 = part * KP / kparts, kp1 = (part + 1) * KP / kparts;
      // The runs of valid positions in each block: at most one per grid row it touches.
      for (int64_t qb = qb0; qb < qb1; ++qb) block_runs(gm, s.N, qb * 32, runs[qb - qb0]);
      const uint16_t* xi_g = xi + g * gm.phases * CP * gm.Qx * 2;
      for (int64_t kp = kp0; kp < kp1; ++kp) {
        const int64_t kb = 2 * kp;
        const uint16_t* A0 = wa + (g * KB + kb) * ks * CB * kTileElems;
        const bool two = kb + 1 < KB;
        const int64_t k_end = std::min(Kg, kb * 16 + (two ? 32 : 16));
        for (int64_t qb = qb0; qb < qb1; ++qb) {
          const OutRuns& rs = runs[qb - qb0];
          if (rs.count == 0) continue;
          if (two) {
            block_init<true>(nullptr);
            block_compute<true>(A0, ks * CB * kTileElems, xi_g, gm.Qx, tap_base, ks, CB, qb * 32, qb * 32 + 16);
            block_store<true>(C);
          } else {
            block_init<false>(nullptr);
            block_compute<false>(A0, 0, xi_g, gm.Qx, tap_base, ks, CB, qb * 32, qb * 32 + 16);
            block_store<false>(C);
          }
          for (int64_t k = kb * 16; k < k_end; ++k) {
            const int64_t kg = g * Kg + k;
            const __m512 bvec = _mm512_set1_ps(bias ? bias[kg] : 0.0f);
            const float* crow = C + (k - kb * 16) * 32;
            for (int r = 0; r < rs.count; ++r) {
              float* d = y + (rs.n[r] * s.K + kg) * HWo + rs.y_off[r];
              const float* c = crow + rs.c_off[r];
              const int64_t len = rs.len[r];
              for (int64_t i = 0; i < len; i += 16) {
                const __mmask16 m = len - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (len - i)) - 1);
                _mm512_mask_storeu_ps(d + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, c + i), bvec));
              }
            }
          }
        }
      }
    }
  });
}

// ---- grad_w ----

// x (N, C, H, W) -> xs [phase][C + 16][Qx] bf16 phase planes (zeros in padding, slack and
// the 16 rows past C that a last partial channel tile reads).
template <class T>
void pack_planes(const ConvShape& s, const Geom& gm, const T* x, int64_t Cpad, uint16_t* xs) {
  const int64_t HW = s.in_size();
  parallel_for(0, gm.phases * Cpad, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t c = u % Cpad, ph = u / Cpad, a = ph / gm.sw, bb = ph % gm.sw;
      uint16_t* dst = xs + u * gm.Qx;
      if (c >= s.C || !gm.phase_used[ph]) {
        std::memset(dst, 0, sizeof(uint16_t) * gm.Qx);
        continue;
      }
      for (int64_t n = 0; n < s.N; ++n) {
        const T* plane = x + (n * s.C + c) * HW;
        for (int64_t i = 0; i < gm.Hs; ++i) {
          uint16_t* d = dst + n * gm.PL + i * gm.Ws;
          std::memset(d, 0, sizeof(uint16_t) * gm.Ws);
          gm.for_phase_row(plane, a, bb, i, [&](const T* src, int64_t j0, int64_t len) {
            int64_t j = 0;
            if (gm.sw == 1) {
              for (; j + 16 <= len; j += 16) bf16_store16(src + j, d + j0 + j);
            } else if (gm.sw == 2) {
              alignas(64) T e[16];
              for (; j + 16 <= len; j += 16) {
                for (int i = 0; i < 16; ++i) e[i] = src[2 * (j + i)];
                bf16_store16(e, d + j0 + j);
              }
            }
            for (; j < len; ++j) d[j0 + j] = to_bf16(src[j * gm.sw]);
          });
        }
      }
      std::memset(dst + s.N * gm.PL, 0, sizeof(uint16_t) * (gm.Qx - s.N * gm.PL));
    }
  });
}

// 32 lanes gathered from runs: lanes of mask[j] read from base[j] (same lane index).
inline __m512i bf16_row32_runs(const float* const* base, const __mmask32* mask, int64_t nr) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  for (int64_t j = 0; j < nr; ++j) {
    lo = _mm512_mask_loadu_ps(lo, __mmask16(mask[j]), base[j]);
    hi = _mm512_mask_loadu_ps(hi, __mmask16(mask[j] >> 16), base[j] + 16);
  }
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
inline __m512i bf16_row32_runs(const uint16_t* const* base, const __mmask32* mask, int64_t nr) {
  __m512i v = _mm512_setzero_si512();
  for (int64_t j = 0; j < nr; ++j) v = _mm512_mask_loadu_epi16(v, mask[j], base[j]);
  return v;
}

// grad_y (N, K, Ho, Wo) -> gt [group][Q/32][Kg/16][16 position pairs x 16 filters x 2]:
// TDPBF16PS B tiles of grad_y on the output grid, zeros at the dropped grid positions.
template <class T>
void pack_grad_tiles(const ConvShape& s, const Geom& gm, const T* gy, int64_t KB, uint16_t* gt) {
  const int64_t G = s.groups, Kg = s.Kg(), QB = gm.Q / 32, HWo = gm.Ho * gm.Wo;
  parallel_for(0, G * QB, 4, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t g = u / QB, q0 = (u % QB) * 32;
      OutRuns rs;
      block_runs(gm, s.N, q0, rs);
      const int64_t nr = rs.count;
      __mmask32 mask[32];
      for (int64_t j = 0; j < nr; ++j) mask[j] = __mmask32(((uint64_t(1) << rs.len[j]) - 1) << rs.c_off[j]);
      for (int64_t kb = 0; kb < KB; ++kb) {
        __m512i r[16] = {};  // filters past Kg stay zero
        for (int i = 0; i < 16; ++i) {
          const int64_t k = kb * 16 + i;
          if (k >= Kg) continue;
          // Each run is a masked load into its lanes, from a base rc lanes before it (the
          // masked-off lanes are never read).
          const T* base[32];
          for (int64_t j = 0; j < nr; ++j) base[j] = gy + (rs.n[j] * s.K + g * Kg + k) * HWo + rs.y_off[j] - rs.c_off[j];
          r[i] = bf16_row32_runs(base, mask, nr);
        }
        transpose16x16_words(r, gt + (u * KB + kb) * kTileElems);
      }
    }
  });
}

template <class T>
void backward_weight_direct(const ConvShape& s, const T* gy, const T* x, float* gw) {
  const Geom gm(s);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ks = s.k_size(), QB = gm.Q / 32;
  const int64_t KB = ceil_div(Kg, 16), Cpad = s.C + 16;
  WorkspaceBlock xb(workspace_bytes(gm.phases * Cpad * gm.Qx, sizeof(uint16_t)));
  WorkspaceBlock gb(workspace_bytes(G * QB * KB * kTileElems, sizeof(uint16_t)));
  uint16_t* xs = static_cast<uint16_t*>(xb.data());
  uint16_t* gt = static_cast<uint16_t*>(gb.data());
  pack_planes(s, gm, x, Cpad, xs);
  pack_grad_tiles(s, gm, gy, KB, gt);
  int64_t tap_base[kMaxTaps];
  for (int64_t t = 0; t < ks; ++t) tap_base[t] = gm.tap_phase[t] * Cpad * gm.Qx + gm.tap_off[t];
  // Units of 32 channels x 32 filters, each summing its C tiles of every tap over all
  // positions; with fewer than 8 units, positions are split too (into parts set by the
  // shape, not the thread count, so every thread count sums in the same order) and the
  // parts are added in a fixed order afterwards.
  const int64_t CBP = ceil_div(Cg, 32), KBP = ceil_div(KB, 2), units = G * CBP * KBP;
  const int64_t qparts = units >= 8 ? 1 : std::min(QB, ceil_div(8, units));
  constexpr int64_t QC = 16;  // position blocks per pass: A rows and B tiles stay in L1 across the taps
  WorkspaceBlock pb(workspace_bytes(units * qparts * ks * 4 * 256, sizeof(float)));
  float* partial = static_cast<float*>(pb.data());
  parallel_for(0, units * qparts, 1, [&](int64_t b, int64_t e) {
    TileScope tiles;
    for (int64_t v = b; v < e; ++v) {
      const int64_t u = v / qparts, part = v % qparts;
      const int64_t kbp = u % KBP, cbp = (u / KBP) % CBP, g = u / (KBP * CBP);
      const int64_t c0 = g * Cg + cbp * 32, kb0 = 2 * kbp;
      const bool two_k = kb0 + 1 < KB, two_c = cbp * 32 + 16 < Cg;
      float* P = partial + v * ks * 1024;
      const int64_t qb_lo = part * QB / qparts, qb_hi = (part + 1) * QB / qparts;
      const uint16_t* Bg = gt + (g * QB) * KB * kTileElems;
      for (int64_t qc = qb_lo; qc < qb_hi; qc += QC) {
        const int64_t qc_end = std::min(qb_hi, qc + QC);
        for (int64_t t = 0; t < ks; ++t) {
          float* Pt = P + t * 1024;  // tiles (c0, k0), (c0, k1), (c1, k0), (c1, k1) of 16 x 16
          if (qc == qb_lo) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
          } else {
            _tile_loadd(0, Pt, 64);
            _tile_loadd(1, Pt + 256, 64);
            _tile_loadd(2, Pt + 512, 64);
            _tile_loadd(3, Pt + 768, 64);
          }
          const uint16_t* A = xs + tap_base[t] + c0 * gm.Qx;
          for (int64_t qb = qc; qb < qc_end; ++qb) {
            const uint16_t* B0 = Bg + (qb * KB + kb0) * kTileElems;
            _tile_loadd(4, A + qb * 32, gm.Qx * 2);
            _tile_loadd(6, B0, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (two_k) {
              _tile_loadd(7, B0 + kTileElems, 64);
              _tile_dpbf16ps(1, 4, 7);
            }
            if (two_c) {
              _tile_loadd(5, A + 16 * gm.Qx + qb * 32, gm.Qx * 2);
              _tile_dpbf16ps(2, 5, 6);
              if (two_k) _tile_dpbf16ps(3, 5, 7);
            }
          }
          _tile_stored(0, Pt, 64);
          _tile_stored(1, Pt + 256, 64);
          _tile_stored(2, Pt + 512, 64);
          _tile_stored(3, Pt + 768, 64);
        }
      }
    }
  });
  // gw[k][c][t] = the parts' sums, added in order (the result does not depend on the threads).
  parallel_for(0, units, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t kbp = u % KBP, cbp = (u / KBP) % CBP, g = u / (KBP * CBP);
      for (int64_t kk = 0; kk < 32; ++kk) {
        const int64_t k = kbp * 32 + kk;
        if (k >= Kg) break;
        for (int64_t cc = 0; cc < 32; ++cc) {
          const int64_t c = cbp * 32 + cc;
          if (c >= Cg) break;
          float* d = gw + ((g * Kg + k) * Cg + c) * ks;
          const int64_t tile = (cc / 16) * 2 + kk / 16, off = tile * 256 + (cc % 16) * 16 + kk % 16;
          for (int64_t t = 0; t < ks; ++t) {
            float sum = 0.0f;
            for (int64_t part = 0; part < qparts; ++part) sum += partial[((u * qparts + part) * ks + t) * 1024 + off];
            d[t] = sum;
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace cnnfast::cpu::CNNFAST_ISA_NS

namespace cnnfast::cpu::amx_impl {
using namespace cnnfast::cpu::CNNFAST_ISA_NS;

bool direct_applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.k[0] == 1 && s.out[0] == 1 && s.Cg() >= 16 && s.Kg() >= 16 && s.k_size() <= kMaxTaps &&
         s.stride[1] * s.stride[2] <= kMaxTaps;
}

template <class T>
void conv_forward_direct(const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col,
                         const float* bias, float* y) {
  forward_direct<T>(s, x, w, w_rs, w_col, bias, y);
}

template <class T>
void conv_backward_weight_direct(const ConvShape& s, const T* gy, const T* x, float* gw) {
  backward_weight_direct<T>(s, gy, x, gw);
}
template void conv_backward_weight_direct<float>(const ConvShape&, const float*, const float*, float*);
template void conv_backward_weight_direct<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, float*);

template void conv_forward_direct<float>(const ConvShape&, const float*, const float*, int64_t, const int64_t*,
                                         const float*, float*);
template void conv_forward_direct<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, int64_t,
                                            const int64_t*, const float*, float*);

}  // namespace cnnfast::cpu::amx_impl
