// The bf16 GEMM driver shared by every path (bf16.h): included by gemm_bf16.cpp
// (fallback kernel, generic build) and gemm_bf16_amx.cpp (AMX and VDPBF16PS kernels),
// each in its own CNNFAST_ISA_NS so the two builds never share a symbol.
//
// A product is described by two sources and an epilogue, so that im2col, the
// float32 -> bfloat16 rounding and the VNNI interleave all happen in one pass while
// the tiles are packed, and the float32 result goes straight to its final place:
//   source.row(r, c0, len, dst, ds) writes elements (r, c0 .. c0+len) as bf16 bits to dst[i*ds];
//   epilogue(m0, rows, n0, cols, C, ldc) consumes a finished float32 block.
// Packed layouts (one 1 KiB tile each, shared by the AMX and VDPBF16PS kernels):
//   A tile: 16 rows x 32 k, row-major (element (m, k) at m*32 + k);
//   B tile: 16 k-pairs x 16 columns x 2 (element (k, n) at (k/2)*32 + n*2 + k%2), the
//   "VNNI" order TDPBF16PS and VDPBF16PS read pairs of k in.
// Kern::block(A, a_ts, B, b_ts, kt, C, ldc, mt, nt, load_c): C tiles (mt x nt of 16x16)
// (+)= sum over kt k-tiles; tile (i, k) of A at A + i*a_ts + k*512, of B at B + j*b_ts + k*512.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/parallel.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "core/workspace.h"
#include "cpu/conv.h"

namespace cnnfast::cpu::CNNFAST_ISA_NS {

constexpr int64_t kTile = 16, kTileK = 32, kTileElems = 512;
constexpr int64_t kBlockK = 512, kBlockN = 256, kSlabTiles = 16;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Branch-free (a select, not a jump) so that runs of it vectorise.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet = (u >> 16) | 0x40u;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}
inline uint16_t to_bf16(uint16_t h) { return h; }
inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// dst[i] = src[i*ss] for a run of len elements (sources copy their values unconverted:
// the kernel's packer rounds whole tile rows at once, see pack_a / pack_b). Runs on small
// maps are a few elements long: a plain loop, not a libc call per run.
template <class T>
inline void copy_run(const T* src, int64_t ss, int64_t len, T* dst) {
  if (ss == 1 && len >= 64) {
    std::memcpy(dst, src, sizeof(T) * len);
  } else {
    for (int64_t i = 0; i < len; ++i) dst[i] = src[i * ss];
  }
}
template <class T>
inline void zero_run(T* dst, int64_t len) {
  for (int64_t i = 0; i < len; ++i) dst[i] = T(0);
}

// Calls f(i, img, od, oh, ow, run) for the runs of output positions j0 .. j0+len that lie
// in one output row (fixed img, od, oh); i is the run's offset from j0.
template <class F>
inline void for_output_runs(const ConvShape& S, int64_t j0, int64_t len, F&& f) {
  const int64_t osz = S.out_size();
  int64_t img = j0 / osz, pos = j0 % osz;
  int64_t od = pos / (S.out[1] * S.out[2]), oh = (pos / S.out[2]) % S.out[1], ow = pos % S.out[2];
  for (int64_t i = 0; i < len;) {
    const int64_t run = std::min(len - i, S.out[2] - ow);
    f(i, img, od, oh, ow, run);
    i += run;
    ow = 0;
    if (++oh == S.out[1]) {
      oh = 0;
      if (++od == S.out[0]) {
        od = 0;
        ++img;
      }
    }
  }
}

// Kernel tap ckk = (c, kd, kh, kw) of a group: its channel, and the input offsets it reads
// at output (od, oh, ow): id = od*stride + off[0], ...; along w, outputs [lo, hi) read
// inside the input.
struct Tap {
  int64_t c, off[3], lo, hi;
  Tap(const ConvShape& S, int64_t ckk) {
    const int64_t ksz = S.k_size(), t = ckk % ksz;
    const int64_t kk[3] = {t / (S.k[1] * S.k[2]), (t / S.k[2]) % S.k[1], t % S.k[2]};
    c = ckk / ksz;
    for (int d = 0; d < 3; ++d) off[d] = kk[d] * S.dil[d] - S.pad0[d];
    const int64_t sw = S.stride[2];
    lo = off[2] >= 0 ? 0 : ceil_div(-off[2], sw);
    hi = S.in[2] - off[2] <= 0 ? 0 : ceil_div(S.in[2] - off[2], sw);
  }
};

// A plain strided matrix: element (r, c) = p[r*rs + c*cs].
template <class T>
struct StridedSource {
  const T* p;
  int64_t rs, cs;
  void row(int64_t r, int64_t c0, int64_t len, T* dst) const { copy_run(p + r * rs + c0 * cs, cs, len, dst); }
  const T* span(int64_t r, int64_t c0, int64_t) const { return cs == 1 ? p + r * rs + c0 : nullptr; }
};

// A weight matrix seen through a window of kernel taps (gemm_bf16.cpp live_taps):
// element (r, k) = p[r*rs + col[k]], or p[r*rs + k] when col is null (every tap live).
template <class T>
struct ColumnMapSource {
  const T* p;
  int64_t rs;
  const int64_t* col;
  const T* span(int64_t r, int64_t c0, int64_t) const { return col ? nullptr : p + r * rs + c0; }
  void row(int64_t r, int64_t c0, int64_t len, T* dst) const {
    const T* base = p + r * rs;
    if (!col) return copy_run(base + c0, int64_t(1), len, dst);
    for (int64_t i = 0; i < len; ++i) dst[i] = base[col[c0 + i]];
  }
};

// Per-image planes: element (r, j) = p[(img*img_stride + r*plane) + pos], j = img*plane + pos,
// with `plane` positions per image (grad_y as the right operand of backward-data).
template <class T>
struct PlaneSource {
  const T* p;
  int64_t img_stride, plane;
  const T* span(int64_t r, int64_t c0, int64_t len) const {
    const int64_t pos = c0 % plane;
    return pos + len <= plane ? p + (c0 / plane) * img_stride + r * plane + pos : nullptr;
  }
  void row(int64_t r, int64_t c0, int64_t len, T* dst) const {
    int64_t img = c0 / plane, pos = c0 % plane;
    while (len > 0) {
      const int64_t run = std::min(len, plane - pos);
      std::memcpy(dst, p + img * img_stride + r * plane + pos, sizeof(T) * run);
      dst += run;
      len -= run;
      ++img;
      pos = 0;
    }
  }
};

// The im2col matrix of one group: element (ckk, j) = x value that kernel tap ckk =
// (c, kd, kh, kw) sees at output position j = (img, od, oh, ow), 0 in the padding.
// x points at this group's first channel of image 0; img_stride = C * in_size.
template <class T>
struct Im2colSource {
  const ConvShape* s;
  const T* x;
  int64_t img_stride;
  const T* span(int64_t, int64_t, int64_t) const { return nullptr; }
  void row(int64_t ckk, int64_t c0, int64_t len, T* dst) const {
    const ConvShape& S = *s;
    const Tap tp(S, ckk);
    const int64_t sw = S.stride[2], osz = S.out_size();
    if (osz <= kSmallMap) return row_small(tp, c0, len, dst);
    for_output_runs(S, c0, len, [&](int64_t i, int64_t img, int64_t od, int64_t oh, int64_t ow, int64_t run) {
      T* d = dst + i;
      const int64_t id = od * S.stride[0] + tp.off[0], ih = oh * S.stride[1] + tp.off[1];
      if (id < 0 || id >= S.in[0] || ih < 0 || ih >= S.in[1]) return zero_run(d, run);
      const T* src = x + img * img_stride + (tp.c * S.in[0] + id) * S.in[1] * S.in[2] + ih * S.in[2];
      const int64_t lo = std::clamp(tp.lo - ow, int64_t(0), run);
      const int64_t hi = std::clamp(tp.hi - ow, lo, run);
      zero_run(d, lo);
      copy_run(src + (ow + lo) * sw + tp.off[2], sw, hi - lo, d + lo);
      zero_run(d + hi, run - hi);
    });
  }

  // Maps of a few positions (4x4 and smaller) have output rows of 1-4 elements, so the
  // per-run work above dominates: the tap's source offset per output position (-1 in the
  // padding) is worked out once per row, then every image reads through that table.
  static constexpr int64_t kSmallMap = 64;
  // off[pos] for every output position: where tap tp reads it in x (-1: padding).
  static void small_table(const ConvShape& S, const Tap& tp, int64_t* off) {
    for_output_runs(S, 0, S.out_size(), [&](int64_t i, int64_t, int64_t od, int64_t oh, int64_t ow, int64_t run) {
      const int64_t id = od * S.stride[0] + tp.off[0], ih = oh * S.stride[1] + tp.off[1];
      for (int64_t q = 0; q < run; ++q) {
        const int64_t iw = (ow + q) * S.stride[2] + tp.off[2];
        const bool in = id >= 0 && id < S.in[0] && ih >= 0 && ih < S.in[1] && iw >= 0 && iw < S.in[2];
        off[i + q] = in ? ((tp.c * S.in[0] + id) * S.in[1] + ih) * S.in[2] + iw : -1;
      }
    });
  }
  void row_small(const Tap& tp, int64_t c0, int64_t len, T* dst) const {
    const ConvShape& S = *s;
    const int64_t osz = S.out_size();
    int64_t off[kSmallMap];
    small_table(S, tp, off);
    int64_t img = c0 / osz, pos = c0 % osz;
    for (int64_t i = 0; i < len; ++i) {
      dst[i] = off[pos] >= 0 ? x[img * img_stride + off[pos]] : T(0);
      if (++pos == osz) {
        pos = 0;
        ++img;
      }
    }
  }
};

// Small maps (<= kSmallMap output positions): every group's im2col matrix (CKK x N*osz),
// built once by the threads through one offset table per tap; the GEMMs then pack its
// contiguous rows. Read through Im2colSource, every row and column block rebuilt its
// table (and a Tap, with its divisions), and where threads split the filters each built
// all of it: 55% of a 256x256x3x3 forward on 2x2 maps, batch 32 (perf). False (nothing
// built) for larger maps or a matrix over 16 MiB.
template <class T>
static bool small_im2col(const ConvShape& s, const T* x, WorkspaceBlock& wb) {
  const int64_t osz = s.out_size(), ks = s.k_size(), CKK = s.Cg() * ks, J = s.N * osz;
  if (osz > Im2colSource<T>::kSmallMap || s.groups * CKK * J * int64_t(sizeof(T)) > (int64_t(16) << 20)) return false;
  wb = WorkspaceBlock(workspace_bytes(s.groups * CKK * J, sizeof(T)));
  WorkspaceBlock tb(workspace_bytes(ks * osz, sizeof(int64_t)));
  T* col = static_cast<T*>(wb.data());
  int64_t* tab = static_cast<int64_t*>(tb.data());
  for (int64_t t = 0; t < ks; ++t) Im2colSource<T>::small_table(s, Tap(s, t), tab + t * osz);
  const int64_t plane = s.in_size(), Cg = s.Cg();
  parallel_for(0, s.groups * CKK, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t g = r / CKK, c = (r % CKK) / ks, t = r % ks;
      const T* src = x + (g * Cg + c) * plane;
      const int64_t* off = tab + t * osz;
      T* dst = col + r * J;
      for (int64_t img = 0; img < s.N; ++img, src += s.C * plane, dst += osz)
        for (int64_t pos = 0; pos < osz; ++pos) dst[pos] = off[pos] >= 0 ? src[off[pos]] : T(0);
    }
  });
  return true;
}

// Scalar tile-row converters (the fallback path; the AVX512-BF16 kernels bring
// VCVTNE2PS2BF16 versions with the same names and results, NaN quieting included):
//   cvt(src, n, dst)              dst[i] = bf16(src[i]), n a multiple of 32
//   interleave(r0, r1, dst)       16 columns of rows k, k+1 -> one B tile row of pairs
//   transpose(src, ld, dst)       16 rows (columns n) of 32 bf16 k each -> one B tile
struct ScalarPack {
  template <class T>
  static void cvt(const T* s, int64_t n, uint16_t* d) {
    for (int64_t i = 0; i < n; ++i) d[i] = to_bf16(s[i]);
  }
  template <class T>
  static void interleave(const T* r0, const T* r1, uint16_t* d) {
    for (int64_t n = 0; n < kTile; ++n) {
      d[2 * n] = to_bf16(r0[n]);
      d[2 * n + 1] = to_bf16(r1[n]);
    }
  }
  // 32 rows (k) of 16 bf16 m each, ld apart -> one A tile (16 m x 32 k).
  static void transpose_a(const uint16_t* s, int64_t ld, uint16_t* d) {
    for (int64_t r = 0; r < kTile; ++r)
      for (int64_t k = 0; k < kTileK; ++k) d[r * kTileK + k] = s[k * ld + r];
  }
  // dst (N x M, ld) = C^T (C: M x N, ldc) in 16 x 16 blocks, so neither side is walked
  // with a long stride (grad_w from grad_w^T blocks; each block of grad_w is finished in
  // one epilogue, so it is stored, with no zeroing pass before and no read of it).
  static void store_transposed(const float* C, int64_t ldc, int64_t M, int64_t N, float* dst, int64_t ld) {
    for (int64_t nb = 0; nb < N; nb += kTile)
      for (int64_t mb = 0; mb < M; mb += kTile)
        for (int64_t n = nb; n < std::min(N, nb + kTile); ++n)
          for (int64_t m = mb; m < std::min(M, mb + kTile); ++m) dst[n * ld + m] = C[m * ldc + n];
  }
  static void transpose(const uint16_t* s, int64_t ld, uint16_t* d) {
    for (int64_t n = 0; n < kTile; ++n)
      for (int64_t p = 0; p < kTileK / 2; ++p) std::memcpy(d + p * 32 + 2 * n, s + n * ld + 2 * p, 4);
  }
};

// Rows are fetched whole (all of the block's k or n at once, unconverted) into `row`, a
// scratch of T, then rounded into tiles a full tile row at a time: one source decode per
// row, and the rounding and VNNI interleave in wide instructions.

// An operand read through its transpose: src.row(j, i0, len) gives column j along i (for
// B, column n along k: grad_y in backward-weight, weights in linear; for A, column k
// along m: the weights in backward-data).
template <class Src>
struct Transposed {
  Src src;
};

// A tiles for rows [m0, m0+M) and k [k0, k0+K): tile (i, kk) at dst + i*ts + kk*512.
template <class Kern, class Src, class T>
void pack_a(const Src& src, int64_t m0, int64_t M, int64_t k0, int64_t K, uint16_t* dst, int64_t ts, T* row) {
  const int64_t mt = ceil_div(M, kTile), kt = ceil_div(K, kTileK);
  for (int64_t i = 0; i < mt; ++i)
    for (int64_t r = 0; r < kTile; ++r) {
      const int64_t m = i * kTile + r;
      if (m < M) {
        // A source row that is contiguous in memory is rounded from where it lies.
        const T* sp = K == kt * kTileK ? src.span(m0 + m, k0, K) : nullptr;
        if (sp) {
          for (int64_t kk = 0; kk < kt; ++kk)
            Kern::cvt(sp + kk * kTileK, kTileK, dst + i * ts + kk * kTileElems + r * kTileK);
          continue;
        }
        src.row(m0 + m, k0, K, row);
        std::memset(row + K, 0, (kt * kTileK - K) * sizeof(T));
      } else {
        std::memset(row, 0, kt * kTileK * sizeof(T));
      }
      for (int64_t kk = 0; kk < kt; ++kk)
        Kern::cvt(row + kk * kTileK, kTileK, dst + i * ts + kk * kTileElems + r * kTileK);
    }
}

// pack_a for Transposed sources: each k's run over m is read contiguously and rounded into
// a staging block of 32 k, which is transposed into the tiles. `row` holds one raw run of
// T and the staging (gemm_blocked sizes it).
template <class Kern, class Src, class T>
void pack_a(const Transposed<Src>& src, int64_t m0, int64_t M, int64_t k0, int64_t K, uint16_t* dst, int64_t ts,
            T* row) {
  const int64_t mt = ceil_div(M, kTile), kt = ceil_div(K, kTileK), mp = ceil_div(M, kTileK) * kTileK;
  uint16_t* stg = reinterpret_cast<uint16_t*>(row + mp);
  for (int64_t kk = 0; kk < kt; ++kk) {
    for (int64_t kc = 0; kc < kTileK; ++kc) {
      const int64_t k = kk * kTileK + kc;
      if (k < K) {
        src.src.row(k0 + k, m0, M, row);
        std::memset(row + M, 0, (mp - M) * sizeof(T));
        Kern::cvt(row, mp, stg + kc * mp);
      } else {
        std::memset(stg + kc * mp, 0, mp * 2);
      }
    }
    for (int64_t i = 0; i < mt; ++i) Kern::transpose_a(stg + i * kTile, mp, dst + i * ts + kk * kTileElems);
  }
}

// B tiles for k [k0, k0+K) and columns [n0, n0+N): tile (j, kk) at dst + j*ts + kk*512;
// rows k and k+1 are interleaved into the pairs TDPBF16PS reads.
template <class Kern, class Src, class T>
void pack_b(const Src& src, int64_t k0, int64_t K, int64_t n0, int64_t N, uint16_t* dst, int64_t ts, T* row) {
  const int64_t nt = ceil_div(N, kTile), kt = ceil_div(K, kTileK), npad = nt * kTile;
  T* r0 = row;
  T* r1 = row + npad;
  for (int64_t k = 0; k < kt * kTileK; k += 2) {
    uint16_t* base = dst + (k / kTileK) * kTileElems + ((k % kTileK) / 2) * 32;
    // Two rows contiguous in memory (x on the grid, grad_y planes) are interleaved from
    // where they lie, without the copy into `row`.
    const T* s0 = k + 1 < K && N == npad ? src.span(k0 + k, n0, N) : nullptr;
    const T* s1 = s0 ? src.span(k0 + k + 1, n0, N) : nullptr;
    if (s1) {
      for (int64_t j = 0; j < nt; ++j) Kern::interleave(s0 + j * kTile, s1 + j * kTile, base + j * ts);
      continue;
    }
    if (k < K) {
      src.row(k0 + k, n0, N, r0);
      std::memset(r0 + N, 0, (npad - N) * sizeof(T));
    } else {
      std::memset(r0, 0, npad * sizeof(T));
    }
    if (k + 1 < K) {
      src.row(k0 + k + 1, n0, N, r1);
      std::memset(r1 + N, 0, (npad - N) * sizeof(T));
    } else {
      std::memset(r1, 0, npad * sizeof(T));
    }
    for (int64_t j = 0; j < nt; ++j) Kern::interleave(r0 + j * kTile, r1 + j * kTile, base + j * ts);
  }
}

// pack_b for Transposed sources: each column n is read contiguously along k and rounded,
// and each 16-column by 32-k block is transposed (in 32-bit k pairs) into its tile.
// `row` holds kTile rounded columns of the block's k (stg) after one raw column of T.
template <class Kern, class Src, class T>
void pack_b(const Transposed<Src>& src, int64_t k0, int64_t K, int64_t n0, int64_t N, uint16_t* dst, int64_t ts,
            T* row) {
  const int64_t nt = ceil_div(N, kTile), kt = ceil_div(K, kTileK), kpad = kt * kTileK;
  uint16_t* stg = reinterpret_cast<uint16_t*>(row + kpad);
  for (int64_t j = 0; j < nt; ++j) {
    for (int64_t n = 0; n < kTile; ++n) {
      if (j * kTile + n < N) {
        src.src.row(n0 + j * kTile + n, k0, K, row);
        std::memset(row + K, 0, (kpad - K) * sizeof(T));
      } else {
        std::memset(row, 0, kpad * sizeof(T));
      }
      Kern::cvt(row, kpad, stg + n * kpad);
    }
    for (int64_t kk = 0; kk < kt; ++kk) Kern::transpose(stg + kk * kTileK, kpad, dst + j * ts + kk * kTileElems);
  }
}

// C (rows [m0, m1), columns [n0, n1)) = A * B over K, handed block by block to epi.
// Single-threaded; callers split M or N (or images) across threads.
template <class Kern, class T, class ASrc, class BSrc, class Epi>
void gemm_blocked(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const ASrc& a, const BSrc& b,
                  const Epi& epi) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t M = m1 - m0, mt = ceil_div(M, kTile);
  const int64_t kt_all = ceil_div(K, kTileK);
  // A is packed once for the whole call when it fits (weights), else per k-block.
  const bool a_once = mt * kt_all * kTileElems <= (int64_t(4) << 20);
  const int64_t kbk = kBlockK / kTileK;
  const int64_t a_elems = a_once ? mt * kt_all * kTileElems : mt * kbk * kTileElems;
  uint16_t* Ap = reinterpret_cast<uint16_t*>(thread_scratch_floats(1, a_elems / 2 + 32));
  uint16_t* Bp = reinterpret_cast<uint16_t*>(thread_scratch_floats(2, kBlockN / kTile * kbk * kTileElems / 2 + 32));
  const int64_t ldc = kBlockN;
  float* C = thread_scratch_floats(3, mt * kTile * ldc + 16);
  // Raw rows for pack_a (all of K) or pack_b (two rows of a column block, or one column
  // of a k block and 16 rounded ones for Transposed sources).
  // (Transposed A: a run of M and 32 rounded ones.)
  T* row = reinterpret_cast<T*>(
      thread_scratch_floats(0, std::max(kt_all * kTileK + 2 * kBlockN + 9 * kBlockK, (mt + 1) * kTile * 17) + 64));
  if (a_once) pack_a<Kern>(a, m0, M, 0, K, Ap, kt_all * kTileElems, row);
  Kern::begin();
  for (int64_t nb = n0; nb < n1; nb += kBlockN) {
    const int64_t N = std::min(kBlockN, n1 - nb), nt = ceil_div(N, kTile);
    for (int64_t kc = 0; kc < K; kc += kBlockK) {
      const int64_t KL = std::min(kBlockK, K - kc), kt = ceil_div(KL, kTileK);
      pack_b<Kern>(b, kc, KL, nb, N, Bp, kt * kTileElems, row);
      const uint16_t* Ablk = Ap + (a_once ? (kc / kTileK) * kTileElems : 0);
      const int64_t a_ts = a_once ? kt_all * kTileElems : kt * kTileElems;
      if (!a_once) pack_a<Kern>(a, m0, M, kc, KL, Ap, a_ts, row);
      if (KL == K) {
        // One k block: slabs of rows run and go to the epilogue while their block of C
        // is in cache (a tall C, thousands of taps on a small map, would not fit in L2).
        for (int64_t i = 0; i < mt; i += kSlabTiles) {
          const int64_t st = std::min(kSlabTiles, mt - i);
          Kern::block(Ablk + i * a_ts, a_ts, Bp, kt * kTileElems, kt, C, ldc, st, nt, false);
          epi(m0 + i * kTile, std::min(M - i * kTile, st * kTile), nb, N, static_cast<const float*>(C), ldc);
        }
        break;
      }
      Kern::block(Ablk, a_ts, Bp, kt * kTileElems, kt, C, ldc, mt, nt, kc > 0);
      if (kc + KL == K) epi(m0, M, nb, N, static_cast<const float*>(C), ldc);
    }
  }
  Kern::end();
}


// The scalar kernel of the fallback path: same packed tiles, float32 multiply-adds.
struct FallbackKern : ScalarPack {
  static void begin() {}
  static void end() {}
  static void block(const uint16_t* A, int64_t a_ts, const uint16_t* B, int64_t b_ts, int64_t kt, float* C,
                    int64_t ldc, int64_t mt, int64_t nt, bool load_c) {
    for (int64_t i = 0; i < mt; ++i)
      for (int64_t j = 0; j < nt; ++j) {
        float acc[kTile][kTile];
        for (int64_t r = 0; r < kTile; ++r)
          for (int64_t n = 0; n < kTile; ++n) acc[r][n] = load_c ? C[(i * kTile + r) * ldc + j * kTile + n] : 0.0f;
        for (int64_t kk = 0; kk < kt; ++kk) {
          const uint16_t* a = A + i * a_ts + kk * kTileElems;
          const uint16_t* b = B + j * b_ts + kk * kTileElems;
          float bf[kTileK][kTile];
          for (int64_t p = 0; p < kTileK / 2; ++p)
            for (int64_t n = 0; n < kTile; ++n) {
              bf[2 * p][n] = from_bf16(b[p * 32 + 2 * n]);
              bf[2 * p + 1][n] = from_bf16(b[p * 32 + 2 * n + 1]);
            }
          for (int64_t r = 0; r < kTile; ++r)
            for (int64_t k = 0; k < kTileK; ++k) {
              const float av = from_bf16(a[r * kTileK + k]);
              for (int64_t n = 0; n < kTile; ++n) acc[r][n] += av * bf[k][n];
            }
        }
        for (int64_t r = 0; r < kTile; ++r)
          for (int64_t n = 0; n < kTile; ++n) C[(i * kTile + r) * ldc + j * kTile + n] = acc[r][n];
      }
  }
};

// ---- stride-1 2-D convolution on the padded grid ----
//
// With x zero-padded once (x_pad, Hp x Wp planes) and the output positions numbered on
// the padded width (j = img*P + oh*Wp + ow, P = Hout*Wp; the columns ow >= Wout are
// computed and dropped), the im2col row of kernel tap (kh, kw) is x_pad itself shifted
// by kh*dil*Wp + kw*dil: one contiguous run per image instead of one short run per
// output row with its bounds checks, and col2im is one contiguous add per tap and image.
// Each plane carries (kW-1)*dil slack so the last columns' shifted reads stay inside it.

// The dropped columns are (kW-1)*dil per output row: worth it while they stay under a
// quarter of the row (8x8 and larger maps for a 3x3 kernel).
inline bool grid_ok(const ConvShape& s) {
  return s.in[0] == 1 && s.k[0] == 1 && s.out[0] == 1 && s.stride[1] == 1 && s.stride[2] == 1 &&
         4 * (s.k[2] - 1) * s.dil[2] <= s.out[2];
}

struct Grid {
  int64_t Hp, Wp, plane, P;
  explicit Grid(const ConvShape& s)
      : Hp(s.out[1] + (s.k[1] - 1) * s.dil[1]),
        Wp(s.out[2] + (s.k[2] - 1) * s.dil[2]),
        plane(Hp * Wp + (s.k[2] - 1) * s.dil[2]),
        P(s.out[1] * Wp) {}
  int64_t tap_offset(const ConvShape& s, int64_t t) const {
    return (t / s.k[2]) * s.dil[1] * Wp + (t % s.k[2]) * s.dil[2];
  }
};

// x (N, C, H, W) -> x_pad (N, C, plane): padded planes, zero borders and slack.
template <class T>
static void pad_to_grid(const ConvShape& s, const Grid& gr, const T* x, T* xp) {
  const int64_t H = s.in[1], W = s.in[2], p0 = s.pad0[1], p1 = s.pad0[2];
  parallel_for(0, s.N * s.C, 4, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const T* src = x + pl * H * W;
      T* dst = xp + pl * gr.plane;
      for (int64_t r = 0; r < gr.Hp; ++r) {
        T* d = dst + r * gr.Wp;
        const int64_t ih = r - p0;
        if (ih < 0 || ih >= H) {
          zero_run(d, gr.Wp);
          continue;
        }
        const int64_t lo = std::clamp(p1, int64_t(0), gr.Wp), hi = std::clamp(p1 + W, lo, gr.Wp);
        zero_run(d, lo);
        copy_run(src + ih * W + (lo - p1), int64_t(1), hi - lo, d + lo);
        zero_run(d + hi, gr.Wp - hi);
      }
      zero_run(dst + gr.Hp * gr.Wp, gr.plane - gr.Hp * gr.Wp);
    }
  });
}

// grad_y (N, K, Hout, Wout) -> (N, K, P) on the padded width, zeros in the dropped columns
// (so they add nothing to grad_w, and nothing but zeros to grad_x).
template <class T>
static void grad_to_grid(const ConvShape& s, const Grid& gr, const T* gy, T* gp) {
  const int64_t Ho = s.out[1], Wo = s.out[2];
  parallel_for(0, s.N * s.K, 4, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl)
      for (int64_t r = 0; r < Ho; ++r) {
        copy_run(gy + (pl * Ho + r) * Wo, int64_t(1), Wo, gp + pl * gr.P + r * gr.Wp);
        zero_run(gp + pl * gr.P + r * gr.Wp + Wo, gr.Wp - Wo);
      }
  });
}

// im2col on the grid: element (ckk, j) = x_pad[img, c, pos + tap offset], j = img*P + pos.
template <class T>
struct GridIm2colSource {
  const ConvShape* s;
  const Grid* gr;
  const T* xp;  // this group's channel 0 of image 0
  int64_t img_stride;
  void row(int64_t ckk, int64_t c0, int64_t len, T* dst) const {
    plane_of(ckk).row(0, c0, len, dst);
  }
  const T* span(int64_t ckk, int64_t c0, int64_t len) const { return plane_of(ckk).span(0, c0, len); }
  PlaneSource<T> plane_of(int64_t ckk) const {
    const int64_t ksz = s->k_size();
    return {xp + (ckk / ksz) * gr->plane + gr->tap_offset(*s, ckk % ksz), img_stride, gr->P};
  }
};

template <class Kern, class T>
void conv_backward_data_grid(const ConvShape& s, const T* gy, const T* w, int64_t w_rs, const int64_t* w_col,
                             float* gx) {
  const Grid gr(s);
  WorkspaceBlock gb(workspace_bytes(s.N * s.K * gr.P, sizeof(T)));
  WorkspaceBlock xb(workspace_bytes(s.N * s.C * gr.plane, sizeof(float)));
  T* gp = static_cast<T*>(gb.data());
  float* gxp = static_cast<float*>(xb.data());
  grad_to_grid(s, gr, gy, gp);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ksz = s.k_size(), CKK = Cg * ksz;
  const int64_t H = s.in[1], W = s.in[2];
  // Threads own whole images: the adds of two threads never meet (the slack keeps each
  // plane's shifted adds inside it).
  parallel_for(0, s.N, 1, [&](int64_t b, int64_t e) {
    std::memset(gxp + b * s.C * gr.plane, 0, sizeof(float) * (e - b) * s.C * gr.plane);
    for (int64_t g = 0; g < G; ++g) {
      const Transposed<ColumnMapSource<T>> a{{w + g * Kg * w_rs, w_rs, w_col}};
      const PlaneSource<T> src{gp + g * Kg * gr.P, s.K * gr.P, gr.P};
      auto epi = [&](int64_t mb, int64_t M, int64_t n0, int64_t N, const float* C, int64_t ldc) {
        for (int64_t m = 0; m < M; ++m) {
          float* base = gxp + (g * Cg + (mb + m) / ksz) * gr.plane + gr.tap_offset(s, (mb + m) % ksz);
          const float* crow = C + m * ldc;
          for (int64_t jj = 0; jj < N;) {
            const int64_t j = n0 + jj, img = j / gr.P, pos = j % gr.P, run = std::min(N - jj, gr.P - pos);
            float* d = base + img * s.C * gr.plane + pos;
            const float* c = crow + jj;
            for (int64_t i = 0; i < run; ++i) d[i] += c[i];
            jj += run;
          }
        }
      };
      gemm_blocked<Kern, T>(0, CKK, b * gr.P, e * gr.P, Kg, a, src, epi);
    }
    // Crop the padded planes into grad_x (input rows/columns the convolution never read get 0).
    for (int64_t pl = b * s.C; pl < e * s.C; ++pl)
      for (int64_t ih = 0; ih < H; ++ih) {
        float* d = gx + (pl * H + ih) * W;
        const int64_t r = ih + s.pad0[1];
        if (r >= gr.Hp) {
          zero_run(d, W);
          continue;
        }
        for (int64_t iw = 0; iw < W; ++iw) {
          const int64_t cidx = iw + s.pad0[2];
          d[iw] = cidx < gr.Wp ? gxp[pl * gr.plane + r * gr.Wp + cidx] : 0.0f;
        }
      }
  });
}

template <class Kern, class T>
void conv_backward_weight_grid(const ConvShape& s, const T* gy, const T* x, float* gw) {
  const Grid gr(s);
  WorkspaceBlock xb(workspace_bytes(s.N * s.C * gr.plane, sizeof(T)));
  WorkspaceBlock gb(workspace_bytes(s.N * s.K * gr.P, sizeof(T)));
  T* xp = static_cast<T*>(xb.data());
  T* gp = static_cast<T*>(gb.data());
  pad_to_grid(s, gr, x, xp);
  grad_to_grid(s, gr, gy, gp);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), CKK = Cg * s.k_size();
  const int64_t J = s.N * gr.P, mt = ceil_div(CKK, kTile);
  parallel_for(0, G * mt, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b / mt; g < G && g * mt < e; ++g) {
      const int64_t i0 = std::max(b, g * mt) - g * mt, i1 = std::min(e, (g + 1) * mt) - g * mt;
      const GridIm2colSource<T> a{&s, &gr, xp + g * Cg * gr.plane, s.C * gr.plane};
      const Transposed<PlaneSource<T>> src{{gp + g * Kg * gr.P, s.K * gr.P, gr.P}};
      auto epi = [&](int64_t m0, int64_t M, int64_t n0, int64_t N, const float* C, int64_t ldc) {
        Kern::store_transposed(C, ldc, M, N, gw + (g * Kg + n0) * CKK + m0, CKK);
      };
      gemm_blocked<Kern, T>(i0 * kTile, std::min(CKK, i1 * kTile), 0, Kg, J, a, src, epi);
    }
  });
}

// ---- convolution passes (bf16.h), as GEMMs over im2col sources ----

// Whether threads should split a GEMM's rows rather than its columns: when the columns
// (positions) are fewer than the rows, the row operand (weights) is the larger one, and a
// column split would make every thread pack all of it.
inline bool split_rows(int64_t columns, int64_t rows) { return get_num_threads() > 1 && columns < rows; }

template <class Kern, class T>
void conv_forward_impl(const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col,
                       const float* bias, float* y) {
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), CKK = Cg * s.k_size(), osz = s.out_size();
  const Grid gr(s);
  const bool grid = grid_ok(s);
  WorkspaceBlock xb;
  if (grid) {
    xb = WorkspaceBlock(workspace_bytes(s.N * s.C * gr.plane, sizeof(T)));
    pad_to_grid(s, gr, x, static_cast<T*>(xb.data()));
  }
  // Columns per image, and rows of `row` columns of which the first `keep` are outputs
  // (the grid's padded rows; im2col's one row per image, all kept).
  const int64_t P = grid ? gr.P : osz, row = grid ? gr.Wp : osz, keep_w = grid ? s.out[2] : osz;
  const int64_t J = s.N * P, nt = ceil_div(J, kTile);
  WorkspaceBlock cb;
  const bool small = !grid && small_im2col(s, x, cb);
  auto run = [&](const auto& src, int64_t g, int64_t m0, int64_t m1, int64_t j0, int64_t j1) {
    const ColumnMapSource<T> a{w + g * Kg * w_rs, w_rs, w_col};
    auto epi = [&](int64_t m0, int64_t M, int64_t n0, int64_t N, const float* C, int64_t ldc) {
      for (int64_t jj = 0; jj < N;) {
        const int64_t j = n0 + jj, img = j / P, pos = j % P, r = pos / row, c = pos % row;
        const int64_t len = std::min(N - jj, row - c), keep = std::clamp(keep_w - c, int64_t(0), len);
        for (int64_t m = 0; m < M && keep > 0; ++m) {
          const float bv = bias ? bias[g * Kg + m0 + m] : 0.0f;
          float* dst = y + (img * s.K + g * Kg + m0 + m) * osz + r * keep_w + c;
          const float* cr = C + m * ldc + jj;
          for (int64_t i = 0; i < keep; ++i) dst[i] = cr[i] + bv;
        }
        jj += len;
      }
    };
    gemm_blocked<Kern, T>(m0, m1, j0 * kTile, std::min(J, j1 * kTile), CKK, a, src, epi);
  };
  auto run_group = [&](int64_t g, int64_t m0, int64_t m1, int64_t j0, int64_t j1) {
    if (grid) run(GridIm2colSource<T>{&s, &gr, static_cast<const T*>(xb.data()) + g * Cg * gr.plane, s.C * gr.plane},
                  g, m0, m1, j0, j1);
    else if (small) run(StridedSource<T>{static_cast<const T*>(cb.data()) + g * CKK * J, J, 1}, g, m0, m1, j0, j1);
    else run(Im2colSource<T>{&s, x + g * Cg * s.in_size(), s.C * s.in_size()}, g, m0, m1, j0, j1);
  };
  const int64_t mt = ceil_div(Kg, kTile);
  if (split_rows(J, Kg)) {
    // Few columns, large weights (deep layers on small maps): threads split the filters, so
    // each packs only its share of the weights (the columns they all pack are few).
    parallel_for(0, G * mt, 1, [&](int64_t b, int64_t e) {
      for (int64_t g = b / mt; g < G && g * mt < e; ++g) {
        const int64_t i0 = std::max(b, g * mt) - g * mt, i1 = std::min(e, (g + 1) * mt) - g * mt;
        run_group(g, i0 * kTile, std::min(Kg, i1 * kTile), 0, nt);
      }
    });
    return;
  }
  // Threads take ranges of 16-column tiles of one group: each packs that group's weights once.
  parallel_for(0, G * nt, 4, [&](int64_t b, int64_t e) {
    for (int64_t g = b / nt; g < G && g * nt < e; ++g)
      run_group(g, 0, Kg, std::max(b, g * nt) - g * nt, std::min(e, (g + 1) * nt) - g * nt);
  });
}

template <class Kern, class T>
void conv_backward_data_impl(const ConvShape& s, const T* gy, const T* w, int64_t w_rs, const int64_t* w_col,
                             float* gx) {
  if (grid_ok(s)) return conv_backward_data_grid<Kern, T>(s, gy, w, w_rs, w_col, gx);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ksz = s.k_size(), CKK = Cg * ksz, osz = s.out_size();
  const int64_t isz = s.in_size();
  // Rows [m0, m1) of group g's col2im matrix against columns [j0, j1) (whole images).
  auto part = [&](int64_t g, int64_t m0, int64_t m1, int64_t j0, int64_t j1) {
    // A is the weight's transpose (through the live-tap window), packed from its rows.
    const Transposed<ColumnMapSource<T>> a{{w + g * Kg * w_rs, w_rs, w_col}};
    const PlaneSource<T> src{gy + g * Kg * osz, s.K * osz, osz};
    const int64_t g_c0 = g * Cg;
    auto epi = [&](int64_t mb, int64_t M, int64_t n0, int64_t N, const float* C, int64_t ldc) {
      // col2im: row m of C is kernel tap (c, kd, kh, kw); along one output row the
      // inputs it touches are a strided run, as in Im2colSource::row.
      const int64_t sw = s.stride[2];
      for (int64_t m = 0; m < M; ++m) {
        const Tap tp(s, mb + m);
        const float* crow = C + m * ldc;
        for_output_runs(s, n0, N, [&](int64_t jj, int64_t img, int64_t od, int64_t oh, int64_t ow, int64_t run) {
          const int64_t id = od * s.stride[0] + tp.off[0], ih = oh * s.stride[1] + tp.off[1];
          if (id < 0 || id >= s.in[0] || ih < 0 || ih >= s.in[1]) return;
          float* g = gx + (img * s.C + g_c0 + tp.c) * isz + (id * s.in[1] + ih) * s.in[2] + tp.off[2] + ow * sw;
          const int64_t lo = std::clamp(tp.lo - ow, int64_t(0), run);
          const int64_t hi = std::clamp(tp.hi - ow, lo, run);
          const float* c = crow + jj;
          if (sw == 1)
            for (int64_t i = lo; i < hi; ++i) g[i] += c[i];
          else
            for (int64_t i = lo; i < hi; ++i) g[i * sw] += c[i];
        });
      }
    };
    gemm_blocked<Kern, T>(m0, m1, j0, j1, Kg, a, src, epi);
  };
  if (split_rows(s.N * osz, CKK)) {
    // Few positions, large weights: threads own input channels (whole groups of ksz rows,
    // so their scatter-adds never meet) and pack only their share of the weights.
    parallel_for(0, s.C, 1, [&](int64_t b, int64_t e) {
      for (int64_t img = 0; img < s.N; ++img) std::memset(gx + (img * s.C + b) * isz, 0, sizeof(float) * (e - b) * isz);
      for (int64_t g = b / Cg; g < G && g * Cg < e; ++g) {
        const int64_t c0 = std::max(b, g * Cg) - g * Cg, c1 = std::min(e, (g + 1) * Cg) - g * Cg;
        part(g, c0 * ksz, c1 * ksz, 0, s.N * osz);
      }
    });
    return;
  }
  // Threads own whole images, so the col2im scatter-adds of two threads never meet.
  parallel_for(0, s.N, 1, [&](int64_t b, int64_t e) {
    std::memset(gx + b * s.C * isz, 0, sizeof(float) * (e - b) * s.C * isz);
    for (int64_t g = 0; g < G; ++g) part(g, 0, CKK, b * osz, e * osz);
  });
}

template <class Kern, class T>
void conv_backward_weight_impl(const ConvShape& s, const T* gy, const T* x, float* gw) {
  if (grid_ok(s)) return conv_backward_weight_grid<Kern, T>(s, gy, x, gw);
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), CKK = Cg * s.k_size(), osz = s.out_size();
  const int64_t J = s.N * osz, mt = ceil_div(CKK, kTile);
  WorkspaceBlock cb;
  const bool small = small_im2col(s, x, cb);
  // grad_w^T (CKK x Kg) = im2col (CKK x J) * grad_y^T (J x Kg): threads own rows of
  // grad_w^T (kernel taps), so each accumulates its own block over all of J.
  parallel_for(0, G * mt, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b / mt; g < G && g * mt < e; ++g) {
      const int64_t i0 = std::max(b, g * mt) - g * mt, i1 = std::min(e, (g + 1) * mt) - g * mt;
      const Transposed<PlaneSource<T>> src{{gy + g * Kg * osz, s.K * osz, osz}};
      auto epi = [&](int64_t m0, int64_t M, int64_t n0, int64_t N, const float* C, int64_t ldc) {
        Kern::store_transposed(C, ldc, M, N, gw + (g * Kg + n0) * CKK + m0, CKK);
      };
      if (small)
        gemm_blocked<Kern, T>(i0 * kTile, std::min(CKK, i1 * kTile), 0, Kg, J,
                              StridedSource<T>{static_cast<const T*>(cb.data()) + g * CKK * J, J, 1}, src, epi);
      else
        gemm_blocked<Kern, T>(i0 * kTile, std::min(CKK, i1 * kTile), 0, Kg, J,
                              Im2colSource<T>{&s, x + g * Cg * s.in_size(), s.C * s.in_size()}, src, epi);
    }
  });
}

// C (M x N, ldc) (+)= A * B for strided A, B; threads split the columns.
template <class Kern, class T, class BSrc>
void gemm_sources(int64_t M, int64_t N, int64_t K, const StridedSource<T>& a, const BSrc& b, float* Cout,
                  int64_t ldc_out, bool accumulate) {
  const int64_t nt = ceil_div(N, kTile);
  const int64_t grain = std::max<int64_t>(1, int64_t(4e6 / (2.0 * double(M) * double(K) * kTile + 1.0)));
  parallel_for(0, nt, grain, [&](int64_t lo, int64_t hi) {
    // M is split in slabs so the C block (slab x 256 floats) stays a few hundred KiB.
    for (int64_t m0 = 0; m0 < M; m0 += 512) {
      const int64_t m1 = std::min(M, m0 + 512);
      auto epi_slab = [&](int64_t mb, int64_t Mr, int64_t n0, int64_t Nc, const float* C, int64_t ldc) {
        for (int64_t m = 0; m < Mr; ++m) {
          float* dst = Cout + (mb + m) * ldc_out + n0;
          const float* c = C + m * ldc;
          if (accumulate)
            for (int64_t n = 0; n < Nc; ++n) dst[n] += c[n];
          else
            for (int64_t n = 0; n < Nc; ++n) dst[n] = c[n];
        }
      };
      gemm_blocked<Kern, T>(m0, m1, lo * kTile, std::min(N, hi * kTile), K, a, b, epi_slab);
    }
  });
}

template <class Kern, class T>
void gemm_impl(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
               int64_t cs_b, float* Cout, int64_t ldc_out, bool accumulate) {
  const StridedSource<T> a{A, rs_a, cs_a};
  // A B stored by columns (x @ W^T in linear) is packed from its contiguous columns.
  if (rs_b == 1 && cs_b != 1)
    gemm_sources<Kern, T>(M, N, K, a, Transposed<StridedSource<T>>{{B, cs_b, rs_b}}, Cout, ldc_out, accumulate);
  else
    gemm_sources<Kern, T>(M, N, K, a, StridedSource<T>{B, rs_b, cs_b}, Cout, ldc_out, accumulate);
}

}  // namespace cnnfast::cpu::CNNFAST_ISA_NS
