// im2col + GEMM convolution: forward, backward to the input (GEMM + col2im) and
// backward to the weights (im2col + GEMM), the bias, the fully connected layer,
// and the per-shape algorithm choice.
//
// The im2col matrix is never built whole: it is made a column chunk (a run of
// output positions, ~128 KiB) at a time, right before the GEMM packs it, and the
// weights are packed once per call (GemmLhs) instead of once per chunk. Small
// outputs gather it through an offset table (ColumnMap), and kernel taps that
// only ever read padding are dropped before any of this (live_tap_window).
//
// Threading: the forward and the weight gradient split (image, group, chunk)
// tasks into one contiguous range per thread, each with its own chunk buffer and
// serial GEMMs; the weight gradient is accumulated per range and the ranges are
// summed in a fixed order afterwards, so a given thread count always gives the
// same bits. The input gradient splits (image, group) pairs, because the chunks
// of one image scatter into overlapping parts of grad_x; with fewer pairs than
// threads (batch 1) it splits the GEMM and then col2im by channels instead.
#include "cpu/conv.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"
#include "cpu/winograd.h"

#define CNNFAST_DW_NS dw_generic
#include "cpu/conv_depthwise.h"

namespace cnnfast::cpu {
namespace {

// ceil(a / b) for b > 0 and any sign of a; no a + b - 1, which wraps for a stride near 2^63.
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? a / b + (a % b != 0) : -((-a) / b); }

// Output positions o in [0, n_out) whose input index o*s + off falls in [0, n_in).
inline void valid_range(int64_t n_out, int64_t n_in, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, ceil_div(-off, s));
  hi = std::min<int64_t>(n_out, ceil_div(n_in - off, s));
  if (hi < lo) hi = lo;
}

// A 1x1x1 kernel with stride 1 and no padding: the input already is the im2col matrix.
bool is_pointwise(const ConvShape& s) {
  for (int d = 0; d < 3; ++d)
    if (s.k[d] != 1 || s.stride[d] != 1 || s.pad0[d] != 0 || s.out[d] != s.in[d]) return false;
  return true;
}

// Columns [p0, p1) of the im2col matrix of one image's group: x (Cg, D, H, W) ->
// col (Cg*kD*kH*kW, p1 - p0), row r = ((c*kD + a)*kH + b)*kW + e, column p an
// output position (od*Ho + oh)*Wo + ow. A column chunk of a few hundred KB stays
// in L2 between being written here and being packed by the GEMM.
template <class T>
void im2col_rows(const ConvShape& s, const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) {
  const int64_t kk = s.k_size(), rows = s.Cg() * kk, width = ld;
  const int64_t Ho = s.out[1], Wo = s.out[2];
  const int64_t D = s.in[0], H = s.in[1], W = s.in[2], sw = s.stride[2];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / kk, kr = r % kk;
    const int64_t a = kr / (s.k[1] * s.k[2]), b = (kr / s.k[2]) % s.k[1], e = kr % s.k[2];
    const int64_t offw = e * s.dil[2] - s.pad0[2];
    int64_t lo, hi;
    valid_range(Wo, W, sw, offw, lo, hi);
    T* dst = col + r * width;
    // Position of p as (od, oh, ow0), stepped rather than divided per segment
    // (three 64-bit divisions per 32-column segment showed up in C = 3 layers).
    int64_t ow0 = p0 % Wo, oh = (p0 / Wo) % Ho, od = p0 / (Wo * Ho);
    for (int64_t p = p0; p < p1; ow0 = 0, oh = (oh + 1 == Ho) ? 0 : oh + 1, od += (oh == 0)) {
      const int64_t len = std::min(p1 - p, Wo - ow0), ow1 = ow0 + len;
      const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
      const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
      T* d = dst - ow0;  // d[ow] is this segment's output column ow
      if (id < 0 || id >= D || ih < 0 || ih >= H) {
        std::fill(d + ow0, d + ow1, T(0));
      } else {
        const T* src = x + ((c * D + id) * H + ih) * W + offw;
        const int64_t vlo = std::clamp(lo, ow0, ow1), vhi = std::clamp(hi, vlo, ow1);
        std::fill(d + ow0, d + vlo, T(0));
        if (sw == 1) {
          std::memcpy(d + vlo, src + vlo, sizeof(T) * (vhi - vlo));
        } else {
          for (int64_t ow = vlo; ow < vhi; ++ow) d[ow] = src[ow * sw];
        }
        std::fill(d + vhi, d + ow1, T(0));
      }
      dst += len;
      p += len;
    }
  }
}

// The adjoint of im2col over the same column chunk: dx (Cg, D, H, W) += scatter
// of col, for channels [c0, c1) (channels own disjoint parts of dx).
template <class T>
void col2im_rows(const ConvShape& s, const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1,
                 int64_t ld) {
  const int64_t kk = s.k_size(), width = ld > 0 ? ld : p1 - p0;
  const int64_t Ho = s.out[1], Wo = s.out[2];
  const int64_t D = s.in[0], H = s.in[1], W = s.in[2], sw = s.stride[2];
  for (int64_t r = c0 * kk; r < c1 * kk; ++r) {
    const int64_t c = r / kk, kr = r % kk;
    const int64_t a = kr / (s.k[1] * s.k[2]), b = (kr / s.k[2]) % s.k[1], e = kr % s.k[2];
    const int64_t offw = e * s.dil[2] - s.pad0[2];
    int64_t lo, hi;
    valid_range(Wo, W, sw, offw, lo, hi);
    const T* src = col + r * width;
    int64_t ow0 = p0 % Wo, oh = (p0 / Wo) % Ho, od = p0 / (Wo * Ho);  // stepped as in im2col
    for (int64_t p = p0; p < p1; ow0 = 0, oh = (oh + 1 == Ho) ? 0 : oh + 1, od += (oh == 0)) {
      const int64_t len = std::min(p1 - p, Wo - ow0), ow1 = ow0 + len;
      const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
      const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
      if (id >= 0 && id < D && ih >= 0 && ih < H) {
        const T* g = src - ow0;
        T* row = dx + ((c * D + id) * H + ih) * W + offw;
        const int64_t vlo = std::clamp(lo, ow0, ow1), vhi = std::clamp(hi, vlo, ow1);
        if (sw == 1) {
          for (int64_t ow = vlo; ow < vhi; ++ow) row[ow] += g[ow];
        } else {
          for (int64_t ow = vlo; ow < vhi; ++ow) row[ow * sw] += g[ow];
        }
      }
      src += len;
      p += len;
    }
  }
}

// Small outputs (ResNet-18's 4x4, 2x2 and 1x1 maps at 32x32 input) cut im2col's
// rows into runs of a few elements, and the per-run bounds work cost more than the
// GEMM behind it (4x4 maps: 55% of the forward in im2col). There, a table of where
// every (tap, output position) reads inside one channel's volume is built once per
// call, and both passes become plain gathers / scatters without a branch: each
// channel is first copied behind a zero slot (entry 0), where padding points.
constexpr int64_t kTableOutputs = 256, kTableEntries = 16384;

// Rows of at least kPaddedRow outputs (8x8 maps and up) copy whole output rows
// instead: the channel is first copied into a zero-bordered plane, so every row of
// the column matrix is a run of plain (vectorised) copies with no bounds work;
// gathers through the table cost ~1.5 cycles an element, about as much as the GEMM
// behind them for 64-channel 3x3 layers.
constexpr int64_t kPaddedRow = 8;
constexpr int64_t kScratchMax = int64_t(1) << 20;  // elements

// im2col / col2im for one shape: for small outputs by zero-bordered rows or by
// table, otherwise by row runs of the unpadded input.
class ColumnMap {
 public:
  explicit ColumnMap(const ConvShape& s) : s_(s) {
    const int64_t P = s.out_size(), kk = s.k_size();
    int64_t padded_size = s.Cg();
    bool padded = s.out[2] >= kPaddedRow;
    for (int d = 0; d < 3; ++d) {
      ext_[d] = s.in[d] + s.pad0[d] + s.pad1[d];
      padded = padded && s.pad0[d] >= 0 && s.pad1[d] >= 0;
      padded_size *= std::max<int64_t>(ext_[d], 1);
    }
    // Both copy the input into per-thread scratch that is kept between calls: a
    // small output of a large input (a big stride) stays on the row runs instead.
    if (padded_size > kScratchMax) return;
    // Zero-bordered rows also serve larger outputs of small inputs (LeNet's 28x28),
    // for calls that map enough columns to pay for the copy (see use_padded).
    padded_ = padded;
    if (padded_ || P > kTableOutputs || P * kk > kTableEntries) return;
    tbl_.resize(P * kk);
    for (int64_t a = 0; a < s.k[0]; ++a)
      for (int64_t b = 0; b < s.k[1]; ++b)
        for (int64_t e = 0; e < s.k[2]; ++e) {
          int32_t* row = tbl_.data() + ((a * s.k[1] + b) * s.k[2] + e) * P;
          for (int64_t od = 0, p = 0; od < s.out[0]; ++od)
            for (int64_t oh = 0; oh < s.out[1]; ++oh)
              for (int64_t ow = 0; ow < s.out[2]; ++ow, ++p) {
                const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
                const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
                const int64_t iw = ow * s.stride[2] - s.pad0[2] + e * s.dil[2];
                const bool in = id >= 0 && id < s.in[0] && ih >= 0 && ih < s.in[1] && iw >= 0 && iw < s.in[2];
                row[p] = in ? int32_t(1 + (id * s.in[1] + ih) * s.in[2] + iw) : 0;
              }
        }
  }

  // Columns [p0, p1) of one image's group (x: (Cg, D, H, W)) into col (Cg*kk, ld).
  template <class T>
  void im2col(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const {
    if (use_padded(p0, p1)) return im2col_padded(x, col, p0, p1, ld);
    if (tbl_.empty()) return im2col_rows(s_, x, col, p0, p1, ld);
    const int64_t kk = s_.k_size(), P = s_.out_size(), inS = s_.in_size(), n = p1 - p0, Cg = s_.Cg();
    T* ext = scratch<T>(Cg * (inS + 1));
    for (int64_t c = 0; c < Cg; ++c) {
      ext[c * (inS + 1)] = T(0);
      std::memcpy(ext + c * (inS + 1) + 1, x + c * inS, sizeof(T) * inS);
    }
    for (int64_t r = 0; r < Cg * kk; ++r) {
      const int32_t* at = tbl_.data() + (r % kk) * P + p0;
      const T* xc = ext + (r / kk) * (inS + 1);
      T* dst = col + r * ld;
      for (int64_t p = 0; p < n; ++p) dst[p] = xc[at[p]];
    }
  }

  // dx (Cg, D, H, W) += scatter of col's columns [p0, p1), channels [c0, c1).
  template <class T>
  void col2im(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const {
    if (use_padded(p0, p1)) return col2im_padded(col, dx, p0, p1, c0, c1, ld);
    if (tbl_.empty()) return col2im_rows(s_, col, dx, p0, p1, c0, c1, ld);
    const int64_t kk = s_.k_size(), P = s_.out_size(), inS = s_.in_size(), n = p1 - p0;
    T* ext = scratch<T>(inS + 1);
    for (int64_t c = c0; c < c1; ++c) {
      // Padding lands in ext[0], which is never read back.
      std::copy(dx + c * inS, dx + (c + 1) * inS, ext + 1);
      for (int64_t t = 0; t < kk; ++t) {
        const int32_t* at = tbl_.data() + t * P + p0;
        const T* src = col + (c * kk + t) * ld;
        for (int64_t p = 0; p < n; ++p) ext[at[p]] += src[p];
      }
      std::copy(ext + 1, ext + 1 + inS, dx + c * inS);
    }
  }

 private:
  int64_t plane() const { return ext_[0] * ext_[1] * ext_[2]; }

  // Small outputs always; otherwise at unit W stride (strided rows measured no
  // faster than the row runs) and only when the columns mapped outnumber the padded
  // copy (a 64-column chunk of a 56x56 map would copy the map each time).
  bool use_padded(int64_t p0, int64_t p1) const {
    return padded_ && (s_.out_size() <= kTableOutputs ||
                       (s_.stride[2] == 1 && (p1 - p0) * s_.k_size() >= 2 * plane()));
  }

  // x (D, H, W) -> the middle of a zeroed (D+pads, H+pads, W+pads) plane.
  template <class T>
  void pad_into(const T* x, T* xp) const {
    std::fill(xp, xp + plane(), T(0));
    for (int64_t d = 0; d < s_.in[0]; ++d)
      for (int64_t h = 0; h < s_.in[1]; ++h)
        std::copy(x + (d * s_.in[1] + h) * s_.in[2], x + (d * s_.in[1] + h + 1) * s_.in[2],
                  xp + ((d + s_.pad0[0]) * ext_[1] + h + s_.pad0[1]) * ext_[2] + s_.pad0[2]);
  }

  // f(out_offset, run_length, padded_offset) for every output-row run of columns
  // [p0, p1) of tap (a, b, e); out_offset counts from p0.
  template <class F>
  void runs(int64_t a, int64_t b, int64_t e, int64_t p0, int64_t p1, F&& f) const {
    const int64_t Ho = s_.out[1], Wo = s_.out[2];
    int64_t ow0 = p0 % Wo, oh = (p0 / Wo) % Ho, od = p0 / (Wo * Ho);
    for (int64_t p = p0; p < p1; ow0 = 0, oh = (oh + 1 == Ho) ? 0 : oh + 1, od += (oh == 0)) {
      const int64_t len = std::min(p1 - p, Wo - ow0);
      const int64_t pd = od * s_.stride[0] + a * s_.dil[0], ph = oh * s_.stride[1] + b * s_.dil[1];
      f(p - p0, len, (pd * ext_[1] + ph) * ext_[2] + ow0 * s_.stride[2] + e * s_.dil[2]);
      p += len;
    }
  }

  template <class T>
  void im2col_padded(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const {
    const int64_t Cg = s_.Cg(), inS = s_.in_size(), pl = plane(), sw = s_.stride[2];
    T* xp = scratch<T>(Cg * pl);
    for (int64_t c = 0; c < Cg; ++c) pad_into(x + c * inS, xp + c * pl);
    if (p0 == 0 && p1 == s_.out_size() && sw == 1) {
      // Whole images at unit W stride (every caller but the chunked forward):
      // plain nested loops, no run bookkeeping (LeNet's 10-wide rows spent more
      // on stepping positions than on copying; strided rows measured slower here).
      const int64_t Do = s_.out[0], Ho = s_.out[1], Wo = s_.out[2];
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t a = 0, r = c * s_.k_size(); a < s_.k[0]; ++a)
          for (int64_t b = 0; b < s_.k[1]; ++b)
            for (int64_t e = 0; e < s_.k[2]; ++e, ++r) {
              T* __restrict dst = col + r * ld;
              for (int64_t od = 0; od < Do; ++od)
                for (int64_t oh = 0; oh < Ho; ++oh, dst += Wo) {
                  const T* __restrict src =
                      xp + c * pl + ((od * s_.stride[0] + a * s_.dil[0]) * ext_[1] + oh * s_.stride[1] + b * s_.dil[1]) *
                                        ext_[2] + e * s_.dil[2];
                  for (int64_t i = 0; i < Wo; ++i) dst[i] = src[i];
                }
            }
      return;
    }
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t a = 0, r = c * s_.k_size(); a < s_.k[0]; ++a)
        for (int64_t b = 0; b < s_.k[1]; ++b)
          for (int64_t e = 0; e < s_.k[2]; ++e, ++r) {
            T* dst = col + r * ld;
            const T* src = xp + c * pl;
            runs(a, b, e, p0, p1, [&](int64_t o, int64_t len, int64_t at) {
              if (sw == 1) {
                for (int64_t i = 0; i < len; ++i) dst[o + i] = src[at + i];
              } else {
                for (int64_t i = 0; i < len; ++i) dst[o + i] = src[at + i * sw];
              }
            });
          }
  }

  template <class T>
  void col2im_padded(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const {
    const int64_t inS = s_.in_size(), sw = s_.stride[2];
    T* acc = scratch<T>(plane());
    const bool whole = p0 == 0 && p1 == s_.out_size() && sw == 1;
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(acc, acc + plane(), T(0));
      for (int64_t a = 0, r = c * s_.k_size(); a < s_.k[0]; ++a)
        for (int64_t b = 0; b < s_.k[1]; ++b)
          for (int64_t e = 0; e < s_.k[2]; ++e, ++r) {
            const T* src = col + r * ld;
            if (whole) {  // as in im2col_padded
              const T* __restrict from = src;
              for (int64_t od = 0; od < s_.out[0]; ++od)
                for (int64_t oh = 0; oh < s_.out[1]; ++oh, from += s_.out[2]) {
                  T* __restrict to = acc + ((od * s_.stride[0] + a * s_.dil[0]) * ext_[1] + oh * s_.stride[1] +
                                            b * s_.dil[1]) * ext_[2] + e * s_.dil[2];
                  for (int64_t i = 0; i < s_.out[2]; ++i) to[i] += from[i];
                }
              continue;
            }
            runs(a, b, e, p0, p1, [&](int64_t o, int64_t len, int64_t at) {
              if (sw == 1) {
                for (int64_t i = 0; i < len; ++i) acc[at + i] += src[o + i];
              } else {
                for (int64_t i = 0; i < len; ++i) acc[at + i * sw] += src[o + i];
              }
            });
          }
      // The border collected what fell on padding; only the middle goes back.
      T* out = dx + c * inS;
      for (int64_t d = 0; d < s_.in[0]; ++d)
        for (int64_t h = 0; h < s_.in[1]; ++h) {
          const T* from = acc + ((d + s_.pad0[0]) * ext_[1] + h + s_.pad0[1]) * ext_[2] + s_.pad0[2];
          T* to = out + (d * s_.in[1] + h) * s_.in[2];
          for (int64_t w = 0; w < s_.in[2]; ++w) to[w] += from[w];
        }
    }
  }

  // Per-thread scratch kept across calls (several threads map columns at once).
  template <class T>
  static T* scratch(int64_t count) {
    thread_local std::vector<T> buf;
    if (int64_t(buf.size()) < count) buf.resize(count);
    return buf.data();
  }

  ConvShape s_;
  std::vector<int32_t> tbl_;
  bool padded_ = false;
  int64_t ext_[3] = {1, 1, 1};  // padded extents (D, H, W)
};

// Output columns per im2col chunk: about 128 KiB of float32 column matrix, in
// whole 16-column micro-panels, so the chunk is packed from L2.
int64_t chunk_columns(int64_t CK, int64_t P, int64_t target_elems) {
  int64_t pc = std::max<int64_t>(64, target_elems / std::max<int64_t>(CK, 1));
  pc = (pc + 15) / 16 * 16;
  return std::min(pc, P);
}

// rows (count, stride ld) of width n: row i += b[i].
template <class T>
void add_bias_rows(T* y, const T* b, int64_t count, int64_t ld, int64_t n) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = b[i];
    T* row = y + i * ld;
    for (int64_t j = 0; j < n; ++j) row[j] += v;
  }
}

// Below this many output positions per image, one image's GEMM is close to a
// matrix-vector product that streams the whole weight per image (ResNet-18 on
// 32x32 inputs: layer4's 3x3 conv has P = 1 and a 9.4 MB weight; timings in
// benchmarks/RESULTS.md, "Design measurements"). The batched paths below put the
// columns of several images side by side so they share one pass over the weight.
constexpr int64_t kSmallOutput = 64;
constexpr int64_t kBatchedColumns = 256;

// Images per batched GEMM: about kBatchedColumns columns, but at least one block
// per thread when the batch allows it.
int64_t images_per_block(const ConvShape& s) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t want = (kBatchedColumns + s.out_size() - 1) / s.out_size();
  const int64_t fair = (s.N + threads - 1) / threads;
  return std::max<int64_t>(1, std::min(want, fair));
}

template <class T>
struct BatchedBuffers {
  AlignedPtr<T> col, tmp;
};

template <class T>
void forward_gemm_batched(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size(), nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(Kg, CK, w + g * Kg * CK, CK, int64_t(1));
  dynamic_tasks(
      blocks * G,
      [&] { return BatchedBuffers<T>{aligned_alloc_array<T>(CK * nb * P), aligned_alloc_array<T>(Kg * nb * P)}; },
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
      [&] { return BatchedBuffers<T>{aligned_alloc_array<T>(CK * nb * P), aligned_alloc_array<T>(Kg * nb * P)}; },
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

// Tiny maps leave most of the column matrix zero even when every tap is live
// somewhere: a 3x3 kernel with padding 1 on a 2x2 map reads 16 real pixels of its
// 36 (tap, output) slots, on a 4x4 map 100 of 144. There the convolution is run
// tap by tap over only the (output, input) pairs that exist,
//   y[:, o] += W_t x[:, i],  grad_x[:, i] += W_t^T grad_y[:, o],  grad_W_t += grad_y[:, o] x[:, i]^T,
// each tap one GEMM whose columns are its pairs over a block of images, gathered
// and scattered around it. The arithmetic drops to the real products (2.25x fewer
// on 2x2 maps); below kTapDensity of the dense work the gathers are worth it.
constexpr int64_t kTapOutputs = 64;
constexpr double kTapDensity = 0.75;

struct TapPairs {
  std::vector<int64_t> start;  // tap t's pairs are [start[t], start[t + 1])
  std::vector<int32_t> out, in;  // output position, input offset in one channel's volume
};

bool tap_pairs(const ConvShape& s, TapPairs& tp) {
  const int64_t P = s.out_size(), kk = s.k_size();
  if (P > kTapOutputs || s.in_size() >= INT32_MAX) return false;
  tp.start.assign(1, 0);
  for (int64_t a = 0; a < s.k[0]; ++a)
    for (int64_t b = 0; b < s.k[1]; ++b)
      for (int64_t e = 0; e < s.k[2]; ++e) {
        for (int64_t od = 0, p = 0; od < s.out[0]; ++od)
          for (int64_t oh = 0; oh < s.out[1]; ++oh)
            for (int64_t ow = 0; ow < s.out[2]; ++ow, ++p) {
              const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
              const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
              const int64_t iw = ow * s.stride[2] - s.pad0[2] + e * s.dil[2];
              if (id >= 0 && id < s.in[0] && ih >= 0 && ih < s.in[1] && iw >= 0 && iw < s.in[2]) {
                tp.out.push_back(int32_t(p));
                tp.in.push_back(int32_t((id * s.in[1] + ih) * s.in[2] + iw));
              }
            }
        tp.start.push_back(int64_t(tp.out.size()));
      }
  return double(tp.out.size()) <= kTapDensity * double(P * kk);
}

// w (K, Cg, kk) -> wt (G, kk, Kg, Cg): each tap's W_t (Kg x Cg) contiguous. Read
// row by row, written as kk sequential streams (writing tap-major the other way
// round, Kg innermost, strided every store and cost more than the GEMMs).
template <class T>
AlignedPtr<T> taps_major(const ConvShape& s, const T* w) {
  const int64_t Cg = s.Cg(), Kg = s.Kg(), kk = s.k_size();
  AlignedPtr<T> wt = aligned_alloc_array<T>(s.K * Cg * kk);
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
  AlignedPtr<T> in, out, acc;
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

template <class T>
void forward_taps(const ConvShape& s, const TapPairs& tp, const T* x, const T* w, const T* bias, T* y) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  const int64_t nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  int64_t vmax = 0;
  for (int64_t t = 0; t < kk; ++t) vmax = std::max(vmax, tp.start[t + 1] - tp.start[t]);
  const AlignedPtr<T> wt = taps_major(s, w);
  dynamic_tasks(
      blocks * G,
      [&] {
        return TapBuffers<T>{aligned_alloc_array<T>(Cg * nb * vmax), aligned_alloc_array<T>(Kg * nb * vmax),
                             aligned_alloc_array<T>(Kg * nb * P)};
      },
      [&](int64_t task, TapBuffers<T>& buf) {
        const int64_t g = task % G, n0 = (task / G) * nb, m = std::min(s.N, n0 + nb) - n0;
        // acc (Kg, m, P): every output of the block, summed over taps.
        std::fill(buf.acc.get(), buf.acc.get() + Kg * m * P, T(0));
        for (int64_t t = 0; t < kk; ++t) {
          const int64_t j0 = tp.start[t], v = tp.start[t + 1] - j0;
          if (v == 0) continue;
          gather_pairs(x + (n0 * s.C + g * Cg) * inS, s.C * inS, inS, Cg, m, tp.in.data() + j0, v, buf.in.get());
          // out (Kg, m*v) = W_t (Kg x Cg) * in (Cg, m*v)
          gemm_serial(Kg, m * v, Cg, wt.get() + (g * kk + t) * Cg * Kg, Cg, int64_t(1), buf.in.get(), m * v,
                      int64_t(1), buf.out.get(), m * v, false);
          scatter_pairs(buf.out.get(), Kg, m, tp.out.data() + j0, v, buf.acc.get(), P);
        }
        for (int64_t k = 0; k < Kg; ++k) {
          const T b = bias ? bias[g * Kg + k] : T(0);
          for (int64_t n = 0; n < m; ++n) {
            const T* src = buf.acc.get() + (k * m + n) * P;
            T* dst = y + ((n0 + n) * s.K + g * Kg + k) * P;
            for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + b;
          }
        }
      });
}

template <class T>
void backward_data_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* w, T* gx) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  const int64_t nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  int64_t vmax = 0;
  for (int64_t t = 0; t < kk; ++t) vmax = std::max(vmax, tp.start[t + 1] - tp.start[t]);
  const AlignedPtr<T> wt = taps_major(s, w);
  dynamic_tasks(
      blocks * G,
      [&] {
        return TapBuffers<T>{aligned_alloc_array<T>(Kg * nb * vmax), aligned_alloc_array<T>(Cg * nb * vmax),
                             aligned_alloc_array<T>(Cg * nb * inS)};
      },
      [&](int64_t task, TapBuffers<T>& buf) {
        const int64_t g = task % G, n0 = (task / G) * nb, m = std::min(s.N, n0 + nb) - n0;
        std::fill(buf.acc.get(), buf.acc.get() + Cg * m * inS, T(0));
        for (int64_t t = 0; t < kk; ++t) {
          const int64_t j0 = tp.start[t], v = tp.start[t + 1] - j0;
          if (v == 0) continue;
          gather_pairs(gy + (n0 * s.K + g * Kg) * P, s.K * P, P, Kg, m, tp.out.data() + j0, v, buf.in.get());
          // out (Cg, m*v) = W_t^T (Cg x Kg) * in (Kg, m*v)
          gemm_serial(Cg, m * v, Kg, wt.get() + (g * kk + t) * Cg * Kg, int64_t(1), Cg, buf.in.get(), m * v,
                      int64_t(1), buf.out.get(), m * v, false);
          scatter_pairs(buf.out.get(), Cg, m, tp.in.data() + j0, v, buf.acc.get(), inS);
        }
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t n = 0; n < m; ++n)
            std::copy(buf.acc.get() + (c * m + n) * inS, buf.acc.get() + (c * m + n + 1) * inS,
                      gx + ((n0 + n) * s.C + g * Cg + c) * inS);
      });
}

template <class T>
void backward_weight_taps(const ConvShape& s, const TapPairs& tp, const T* gy, const T* x, T* gw) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), kk = s.k_size();
  int64_t vmax = 0;
  for (int64_t t = 0; t < kk; ++t) vmax = std::max(vmax, tp.start[t + 1] - tp.start[t]);
  // One task per (group, tap) over the whole batch: each owns its taps of grad_w
  // and sums the images in one fixed order, so the bits do not depend on threads.
  dynamic_tasks(
      G * kk,
      [&] {
        return TapBuffers<T>{aligned_alloc_array<T>(Kg * s.N * vmax), aligned_alloc_array<T>(Cg * s.N * vmax),
                             aligned_alloc_array<T>(Kg * Cg)};
      },
      [&](int64_t task, TapBuffers<T>& buf) {
        const int64_t g = task / kk, t = task % kk, j0 = tp.start[t], v = tp.start[t + 1] - j0, cols = s.N * v;
        if (v == 0) return;
        gather_pairs(gy + g * Kg * P, s.K * P, P, Kg, s.N, tp.out.data() + j0, v, buf.in.get());
        gather_pairs(x + g * Cg * inS, s.C * inS, inS, Cg, s.N, tp.in.data() + j0, v, buf.out.get());
        // acc (Kg, Cg) = dy_t (Kg, cols) * x_t^T (cols, Cg)
        gemm_serial(Kg, Cg, cols, buf.in.get(), cols, int64_t(1), buf.out.get(), int64_t(1), cols, buf.acc.get(), Cg,
                    false);
        for (int64_t k = 0; k < Kg; ++k) {
          T* dst = gw + ((g * Kg + k) * Cg) * kk + t;
          const T* src = buf.acc.get() + k * Cg;
          for (int64_t c = 0; c < Cg; ++c) dst[c * kk] += src[c];
        }
      });
}

template <class T>
void forward_gemm(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  TapPairs tp;
  if (tap_pairs(s, tp)) return forward_taps(s, tp, x, w, bias, y);
  if (s.out_size() < kSmallOutput && s.N > 1) return forward_gemm_batched(s, x, w, bias, y);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const ColumnMap cmap(s);
  const int64_t CK = Cg * s.k_size();
  const bool direct = is_pointwise(s);
  const int64_t PC = chunk_columns(CK, P, direct ? 65536 : 32768), nch = (P + PC - 1) / PC;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(Kg, CK, w + g * Kg * CK, CK, int64_t(1));
  // Tasks are (image, group, column chunk); every task writes its own block of y.
  dynamic_tasks(
      s.N * G * nch, [&] { return aligned_alloc_array<T>(direct ? 1 : CK * PC); },
      [&](int64_t t, AlignedPtr<T>& col) {
        const int64_t ch = t % nch, g = (t / nch) % G, n = t / (nch * G);
        const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
        const T* xg = x + (n * s.C + g * Cg) * inS;
        T* yg = y + (n * s.K + g * Kg) * P;
        if (direct) {
          lhs[g].multiply(p1 - p0, xg + p0, P, int64_t(1), yg + p0, P, false);
        } else {
          cmap.im2col(xg, col.get(), p0, p1, p1 - p0);
          lhs[g].multiply(p1 - p0, col.get(), p1 - p0, int64_t(1), yg + p0, P, false);
        }
        if (bias) add_bias_rows(yg + p0, bias + g * Kg, Kg, P, p1 - p0);
      });
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
  if (s.N * G >= threads) {
    // Tasks are (image, group): the chunks of one task scatter into the same
    // part of grad_x, so they stay on one thread. Chunks of ~512 KiB (half of
    // this core's L2): with the deep column matrices of transposed layers
    // (CK = 1024) a 128 KiB chunk left the GEMM only 64 columns per call.
    const int64_t PC = chunk_columns(CK, P, 131072), nch = (P + PC - 1) / PC;
    std::vector<GemmLhs<T>> lhs;
    lhs.reserve(G);
    // col (CK, P) = w_g^T (CK, Kg) * dy_g (Kg, P)
    for (int64_t g = 0; g < G; ++g) lhs.emplace_back(CK, Kg, w + g * Kg * CK, int64_t(1), CK);
    dynamic_tasks(
        s.N * G, [&] { return aligned_alloc_array<T>(direct ? 1 : CK * PC); },
        [&](int64_t t, AlignedPtr<T>& col) {
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
  // Fewer (image, group) pairs than threads: the whole column matrix at once,
  // the GEMM split across threads, then col2im split by channels.
  AlignedPtr<T> col = aligned_alloc_array<T>(direct ? 1 : CK * P);
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
  // and their sum cost several times the arithmetic. With at most 256
  // reduction columns the column matrix is built once for the whole batch and
  // gemm() splits grad_w across threads: no partials, and bits independent of
  // threads. (At 2048 columns the partials were cheaper; timings in RESULTS.md.)
  const int64_t NP = s.N * P;
  if (NP <= 256) {
    AlignedPtr<T> col = aligned_alloc_array<T>(CK * NP), dyb = aligned_alloc_array<T>(Kg * NP);
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
  // Image blocks of equal size, as many as a multiple of the threads: 32 8x8 images
  // in blocks of at most 28 made blocks of 28 and 4, and one of two threads did 7/8
  // of ResNet-18's 8x8 weight gradients.
  const int64_t pool = in_parallel_region() ? 1 : get_num_threads();
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
  std::vector<AlignedPtr<T>> partial(threads);
  parallel_for(0, threads, 1, [&](int64_t r0, int64_t r1) {
    AlignedPtr<T> col = aligned_alloc_array<T>(CK * width_max);
    AlignedPtr<T> dyb = aligned_alloc_array<T>(Kg * width_max);
    for (int64_t r = r0; r < r1; ++r) {
      T* dw = gw;
      if (threads > 1) {
        partial[r] = aligned_alloc_array<T>(wsize);
        std::fill(partial[r].get(), partial[r].get() + wsize, T(0));
        dw = partial[r].get();
      }
      for (int64_t t = r * tasks / threads; t < (r + 1) * tasks / threads; ++t) {
        const int64_t ch = t % nch, g = (t / nch) % G, blk = t / (nch * G);
        const int64_t p0 = ch * per_chunk, p1 = std::min(P, p0 + per_chunk), w1 = p1 - p0;
        const int64_t n0 = blk * imgs, n1 = std::min(s.N, n0 + imgs), width = (n1 - n0) * w1;
        // Gather grad_y (Kg, width) and the column matrix (CK, width) of the
        // task's images side by side.
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t off = (n - n0) * w1;
          const T* dyg = gy + (n * s.K + g * Kg) * P + p0;
          for (int64_t k = 0; k < Kg; ++k) std::memcpy(dyb.get() + k * width + off, dyg + k * P, sizeof(T) * w1);
          cmap.im2col(x + (n * s.C + g * Cg) * inS, col.get() + off, p0, p1, width);
        }
        // dw_g (Kg, CK) += dy (Kg, width) * col^T (width, CK)
        gemm_serial(Kg, CK, width, dyb.get(), width, int64_t(1), col.get(), int64_t(1), width, dw + g * Kg * CK, CK,
                    true);
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

bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.Cg() == 1; }

// Depthwise layers, one (image, channel) plane per task; see conv_depthwise.h.
template <class T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1 along W: the padded-plane kernel (no edge cases); otherwise the
  // row-at-a-time kernel.
  const bool padded = s.stride[2] == 1;
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  const int64_t scratch = padded && !direct ? dw_generic::dw_padded_size(s) : 1;
  dynamic_tasks(
      s.N * s.K, [&] { return aligned_alloc_array<T>(scratch); },
      [&](int64_t nk, AlignedPtr<T>& buf) {
        const int64_t n = nk / s.K, k = nk % s.K;
        const T* xp = x + (n * s.C + k / Kg) * inS;
        if constexpr (std::is_same_v<T, float>) {
          if (direct) {
            avx2_impl::dw_direct_plane(s, xp, w + k * ks, bias ? bias[k] : 0.0f, y + nk * P);
            return;
          }
          if (vec) {
            if (padded) avx2_impl::dw_forward_plane_padded(s, xp, w + k * ks, y + nk * P, buf.get());
            else avx2_impl::dw_forward_plane(s, xp, w + k * ks, y + nk * P);
            if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
            return;
          }
        }
        if (padded) dw_generic::dw_forward_plane_padded<T>(s, xp, w + k * ks, y + nk * P, buf.get());
        else dw_generic::dw_forward_plane<T>(s, xp, w + k * ks, y + nk * P);
        if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
      });
}

template <class T>
void depthwise_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1, dilation 1, one output per input channel: grad_x is the forward
  // convolution of grad_y with the flipped taps and padding k-1-p, which the
  // register-blocked forward kernel computes with plain stores.
  ConvShape t = s;
  if (Kg == 1) {
    for (int d = 0; d < 3; ++d) {
      std::swap(t.in[d], t.out[d]);
      t.pad0[d] = s.k[d] - 1 - s.pad0[d];
      t.pad1[d] = s.k[d] - 1 - s.pad1[d];
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (vec && Kg == 1 && avx2_impl::dw_direct_applicable(s) && avx2_impl::dw_direct_applicable(t)) {
      parallel_for(0, s.N * s.C, 1, [&](int64_t b, int64_t e) {
        float flipped[25];
        for (int64_t nc = b; nc < e; ++nc) {
          const int64_t c = nc % s.C;
          for (int64_t i = 0; i < ks; ++i) flipped[i] = w[c * ks + ks - 1 - i];
          avx2_impl::dw_direct_plane(t, gy + nc * P, flipped, 0.0f, gx + nc * inS);
        }
      });
      return;
    }
  }
  parallel_for(0, s.N * s.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(P * ks * Kg, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t nc = b; nc < e; ++nc) {
                   const int64_t n = nc / s.C, c = nc % s.C;
                   T* dst = gx + nc * inS;
                   std::fill(dst, dst + inS, T(0));
                   for (int64_t j = 0; j < Kg; ++j) {
                     const int64_t k = c * Kg + j;
                     const T* g = gy + (n * s.K + k) * P;
                     if constexpr (std::is_same_v<T, float>) {
                       if (vec) {
                         avx2_impl::dw_backward_data_plane(s, g, w + k * ks, dst);
                         continue;
                       }
                     }
                     dw_generic::dw_backward_data_plane<T>(s, g, w + k * ks, dst);
                   }
                 }
               });
}

template <class T>
void depthwise_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  // One thread owns each output channel's taps and sums images in order:
  // the result does not depend on the thread count.
  parallel_for(0, s.K, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      for (int64_t n = 0; n < s.N; ++n) {
        const T* g = gy + (n * s.K + k) * P;
        const T* xp = x + (n * s.C + k / Kg) * inS;
        if constexpr (std::is_same_v<T, float>) {
          if (direct) {
            avx2_impl::dw_direct_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
          if (vec) {
            avx2_impl::dw_backward_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
        }
        dw_generic::dw_backward_weight_plane<T>(s, g, xp, gw + k * ks);
      }
    }
  });
}

// Dead kernel taps. A tap whose input position is padding for every output
// (ResNet-18 on 32x32 inputs: layer4's 3x3 convolutions see a 1x1 or 2x2 map
// with padding 1, so 8 of the 9 taps of the second one only ever read zeros)
// contributes nothing to y or grad_x and has an exactly zero weight gradient.
// Per spatial dim the live taps are a set; the convolution is rerun on the
// smallest kernel window [lo, hi) that holds them, with the padding shifted so
// every remaining tap reads the same input positions as before: the result is
// the same sum without the zero terms, not an approximation. The window is
// widened where trimming would make a padding negative, so every algorithm
// below still sees a normal shape.
struct TapWindow {
  ConvShape s;             // the convolution over the window's taps
  int64_t lo[3] = {0, 0, 0};
  bool trimmed = false;    // some taps are dropped
  bool empty = false;      // no tap is live: y = bias, grad_x = 0, grad_w += 0
};

TapWindow live_tap_window(const ConvShape& s) {
  TapWindow t;
  t.s = s;
  for (int d = 0; d < 3; ++d) {
    int64_t first = -1, last = -1;
    for (int64_t a = 0; a < s.k[d]; ++a) {
      int64_t o0, o1;
      valid_range(s.out[d], s.in[d], s.stride[d], a * s.dil[d] - s.pad0[d], o0, o1);
      if (o1 > o0) {
        if (first < 0) first = a;
        last = a;
      }
    }
    if (first < 0) {
      t.empty = true;
      return t;
    }
    const int64_t lo = std::min(first, s.pad0[d] / s.dil[d]);
    const int64_t hi = std::max(last + 1, s.k[d] - s.pad1[d] / s.dil[d]);
    t.lo[d] = lo;
    t.s.k[d] = hi - lo;
    t.s.pad0[d] = s.pad0[d] - lo * s.dil[d];
    t.s.pad1[d] = s.pad1[d] - (s.k[d] - hi) * s.dil[d];
    t.trimmed = t.trimmed || t.s.k[d] != s.k[d];
  }
  return t;
}

// The window's taps of w (K, Cg, k) -> wc (K, Cg, window) when `to_window`, or
// the adjoint, w[taps of the window] += wc, otherwise.
template <class T>
void copy_window(const ConvShape& s, const TapWindow& t, T* w, T* wc, bool to_window) {
  const int64_t rows = s.K * s.Cg(), kk = s.k_size(), kw = t.s.k_size();
  std::vector<int64_t> at;  // where each window tap sits in the full kernel
  at.reserve(kw);
  for (int64_t a = 0; a < t.s.k[0]; ++a)
    for (int64_t b = 0; b < t.s.k[1]; ++b)
      for (int64_t e = 0; e < t.s.k[2]; ++e)
        at.push_back(((a + t.lo[0]) * s.k[1] + b + t.lo[1]) * s.k[2] + e + t.lo[2]);
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / kw), [&](int64_t r0, int64_t r1) {
    // Tap-major, so each pass is one strided stream (a per-row tap loop cost
    // ~8 ns a row on the 262,144 rows of a 512x512 layer).
    for (int64_t i = 0; i < kw; ++i) {
      T* from = w + at[i];
      T* to = wc + i;
      if (to_window) {
        for (int64_t r = r0; r < r1; ++r) to[r * kw] = from[r * kk];
      } else {
        for (int64_t r = r0; r < r1; ++r) from[r * kk] += to[r * kw];
      }
    }
  });
}

}  // namespace

bool winograd_applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.pad0[0] == 0 && s.k[1] == 3 && s.k[2] == 3 &&
         s.stride[1] == 1 && s.stride[2] == 1 && s.dil[1] == 1 && s.dil[2] == 1;
}

// Auto: Winograd F(4x4,3x3) does 36 multiplies per 4x4 output tile where direct
// convolution does 144, but pays two transforms per tile and a transformed
// weight per call; it wins when both channel counts per group are large enough
// for its 36 small GEMMs to run near peak (>= 16 each) and the output has at
// least one full 4x4 tile row worth of work (Ho, Wo >= 4). Depthwise and other
// thin-group layers stay on im2col + GEMM; depthwise ones (one input channel per
// group) take the direct kernel, whatever the dtype. float64 always takes GEMM: it exists
// for gradient checks, where the plainer path is the better oracle.
ConvAlgo choose_algo(const ConvShape& s, bool is_float32) {
  if (is_depthwise(s)) return ConvAlgo::Direct;
  if (!is_float32 || !winograd_applicable(s)) return ConvAlgo::Gemm;
  // Below 8x8 outputs most of each 4x4 Winograd tile is padding (ResNet-18 at 32x32:
  // 4x4 maps ran slower with Winograd than with GEMM; benchmarks/RESULTS.md, "Design measurements").
  if (s.Cg() >= 16 && s.Kg() >= 16 && s.out[1] >= 8 && s.out[2] >= 8) return ConvAlgo::Winograd;
  return ConvAlgo::Gemm;
}

namespace {

// Forced Winograd keeps the user's 3x3 kernel; every other choice runs on the live taps.
bool may_trim(ConvAlgo algo) { return algo != ConvAlgo::Winograd; }

template <class T>
void fill_bias(const ConvShape& s, const T* bias, T* y) {
  const int64_t P = s.out_size();
  parallel_for(0, s.N * s.K, std::max<int64_t>(1, 16384 / std::max<int64_t>(P, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::fill(y + r * P, y + (r + 1) * P, bias ? bias[r % s.K] : T(0));
  });
}

}  // namespace

template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo) {
  if (may_trim(algo)) {
    const TapWindow t = live_tap_window(s);
    if (t.empty) return fill_bias(s, bias, y);
    if (t.trimmed) {
      AlignedPtr<T> wc = aligned_alloc_array<T>(s.K * s.Cg() * t.s.k_size());
      copy_window(s, t, const_cast<T*>(w), wc.get(), true);
      return conv_forward(t.s, x, wc.get(), bias, y, algo);
    }
  }
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    winograd_conv2d<T>(s.N, s.C, s.K, s.groups, s.in[1], s.in[2], s.out[1], s.out[2], s.pad0[1], s.pad0[2], x, w,
                       bias, y);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_forward(s, x, w, bias, y);
  forward_gemm(s, x, w, bias, y);
}

template <class T>
void conv_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx, ConvAlgo algo) {
  if (may_trim(algo)) {
    const TapWindow t = live_tap_window(s);
    if (t.empty) {
      parallel_for(0, s.N * s.C, 64, [&](int64_t r0, int64_t r1) {
        std::fill(gx + r0 * s.in_size(), gx + r1 * s.in_size(), T(0));
      });
      return;
    }
    if (t.trimmed) {
      AlignedPtr<T> wc = aligned_alloc_array<T>(s.K * s.Cg() * t.s.k_size());
      copy_window(s, t, const_cast<T*>(w), wc.get(), true);
      return conv_backward_data(t.s, gy, wc.get(), gx, algo);
    }
  }
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    // For stride 1, grad_x is the convolution of grad_y with the kernel rotated by
    // 180 degrees and its two channel axes swapped (within each group), offset by
    // 2 - pad; the Winograd driver accepts any (even negative) offset.
    const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg();
    AlignedPtr<T> wt = aligned_alloc_array<T>(s.K * Cg * 9);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t t = 0; t < 9; ++t)
            wt[((g * Cg + c) * Kg + k) * 9 + (8 - t)] = w[((g * Kg + k) * Cg + c) * 9 + t];
    winograd_conv2d<T>(s.N, s.K, s.C, G, s.out[1], s.out[2], s.in[1], s.in[2], 2 - s.pad0[1], 2 - s.pad0[2], gy,
                       wt.get(), static_cast<const T*>(nullptr), gx);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_data(s, gy, w, gx);
  backward_data_gemm(s, gy, w, gx);
}

template <class T>
void conv_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo algo) {
  // Dead taps' gradients are exactly zero: += 0 leaves them as they are.
  const TapWindow t = live_tap_window(s);
  if (t.empty) return;
  if (t.trimmed) {
    const int64_t n = s.K * s.Cg() * t.s.k_size();
    AlignedPtr<T> gwc = aligned_alloc_array<T>(n);
    std::fill(gwc.get(), gwc.get() + n, T(0));
    conv_backward_weight(t.s, gy, x, gwc.get(), algo);
    copy_window(s, t, gw, gwc.get(), false);
    return;
  }
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_weight(s, gy, x, gw);
  backward_weight_gemm(s, gy, x, gw);
}

template <class T>
void bias_forward(T* y, const T* b, int64_t N, int64_t C, int64_t S) {
  parallel_for(0, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T v = b[r % C];
      T* row = y + r * S;
      for (int64_t i = 0; i < S; ++i) row[i] += v;
    }
  });
}

template <class T>
void bias_backward(const T* gy, T* gb, int64_t N, int64_t C, int64_t S) {
  // Each channel is summed by one thread in a fixed order: thread-count independent.
  parallel_for(0, C, std::max<int64_t>(1, 16384 / std::max<int64_t>(N * S, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T acc = T(0);
      for (int64_t n = 0; n < N; ++n) {
        const T* row = gy + (n * C + c) * S;
        // Eight running sums (a fixed order, so still thread-count independent)
        // let the compiler vectorise without reassociating behind our back.
        T lane[8] = {};
        int64_t i = 0;
        for (; i + 8 <= S; i += 8)
          for (int l = 0; l < 8; ++l) lane[l] += row[i + l];
        T part = T(0);
        for (; i < S; ++i) part += row[i];
        for (int l = 0; l < 8; ++l) part += lane[l];
        acc += part;
      }
      gb[c] += acc;
    }
  });
}

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t M, int64_t in, int64_t out) {
  gemm(M, out, in, x, in, int64_t(1), w, int64_t(1), in, y, out, false);
  if (b) bias_forward(y, b, M, out, int64_t(1));
}

template <class T>
void linear_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, int64_t M, int64_t in, int64_t out) {
  if (gx) gemm(M, in, out, gy, out, int64_t(1), w, in, int64_t(1), gx, in, false);
  if (gw) gemm(out, in, M, gy, int64_t(1), out, x, in, int64_t(1), gw, in, true);
  if (gb) {
    parallel_for(0, out, 256, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        T acc = T(0);
        for (int64_t m = 0; m < M; ++m) acc += gy[m * out + j];
        gb[j] += acc;
      }
    });
  }
}

#define CNNFAST_INSTANTIATE(T)                                                                         \
  template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, ConvAlgo);       \
  template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);           \
  template void conv_backward_weight<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);                \
  template void bias_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                            \
  template void bias_backward<T>(const T*, T*, int64_t, int64_t, int64_t);                           \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);      \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
void dw_forward_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_forward_plane_padded(const ConvShape&, const float*, const float*, float*, float*) {}
void dw_backward_data_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_backward_weight_plane(const ConvShape&, const float*, const float*, float*) {}
bool dw_direct_applicable(const ConvShape&) { return false; }
void dw_direct_plane(const ConvShape&, const float*, const float*, float, float*) {}
void dw_direct_weight_plane(const ConvShape&, const float*, const float*, float*) {}
}  // namespace avx2_impl
#endif

}  // namespace cnnfast::cpu
