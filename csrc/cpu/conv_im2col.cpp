// im2col / col2im (conv_im2col.h). The im2col matrix is never built whole: it
// is made a column chunk at a time, right before the GEMM packs it.
#include "cpu/conv_im2col.h"

#include <algorithm>
#include <cstring>

#include "cpu/conv_internal.h"

namespace cnnfast::cpu::conv_detail {

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

ColumnMap::ColumnMap(const ConvShape& s) : s_(s) {
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
  for_each_tap_read(s, [&](int64_t t, int64_t p, int64_t off) { tbl_[t * P + p] = off < 0 ? 0 : int32_t(1 + off); });
}

// Columns [p0, p1) of one image's group (x: (Cg, D, H, W)) into col (Cg*kk, ld).
template <class T>
void ColumnMap::im2col(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const {
  // At a W stride too: the padded copy's column phases make its runs contiguous
  // (the weight gradient of a 4x4 stride-2 transposed layer: im2col by row runs
  // was a tenth of the backward on Zen 2).
  if (use_padded(p0, p1) || (padded_ && (p1 - p0) * s_.k_size() >= 2 * plane()))
    return im2col_padded(x, col, p0, p1, ld);
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
void ColumnMap::col2im(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const {
  // At a W stride too, through column phases (col2im_padded), once the columns' adds
  // outnumber the plane: clearing and folding back the accumulator costs about two
  // passes over it, the per-element table scatter it saves several per column.
  if (use_padded(p0, p1) || (padded_ && (p1 - p0) * s_.k_size() >= plane()))
    return col2im_padded(col, dx, p0, p1, c0, c1, ld);
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


// Small outputs always; otherwise at unit W stride (col2im's strided rows measured
// no faster than the row runs; im2col takes strided ones too) and only when the
// columns mapped outnumber the padded copy (a 64-column chunk of a 56x56 map would
// copy the map each time).
bool ColumnMap::use_padded(int64_t p0, int64_t p1) const {
  return padded_ && (s_.out_size() <= kTableOutputs ||
                     (s_.stride[2] == 1 && (p1 - p0) * s_.k_size() >= 2 * plane()));
}

// x (D, H, W) -> the middle of a zeroed (D+pads, H+pads, W+pads) plane.
template <class T>
void ColumnMap::pad_into(const T* x, T* xp) const {
  std::fill(xp, xp + plane(), T(0));
  for (int64_t d = 0; d < s_.in[0]; ++d)
    for (int64_t h = 0; h < s_.in[1]; ++h)
      std::copy(x + (d * s_.in[1] + h) * s_.in[2], x + (d * s_.in[1] + h + 1) * s_.in[2],
                xp + ((d + s_.pad0[0]) * ext_[1] + h + s_.pad0[1]) * ext_[2] + s_.pad0[2]);
}

// f(out_offset, run_length, padded_offset) for every output-row run of columns
// [p0, p1) of tap (a, b, e); out_offset counts from p0.
template <class F>
void ColumnMap::runs(int64_t a, int64_t b, int64_t e, int64_t p0, int64_t p1, F&& f) const {
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
void ColumnMap::pad_group(const T* x, T* xp) const {
  const int64_t sw = s_.stride[2];
  if (sw == 1) {
    for (int64_t c = 0; c < s_.Cg(); ++c) pad_into(x + c * s_.in_size(), xp + c * plane());
    return;
  }
  // Column phases: padded column j of row (d, h) goes to phase j % sw, at j / sw.
  const int64_t wq = phase_width(), pp = ext_[0] * ext_[1] * wq;
  std::fill(xp, xp + padded_elements(), T(0));
  for (int64_t c = 0; c < s_.Cg(); ++c)
    for (int64_t d = 0; d < s_.in[0]; ++d)
      for (int64_t h = 0; h < s_.in[1]; ++h) {
        const T* src = x + ((c * s_.in[0] + d) * s_.in[1] + h) * s_.in[2];
        T* row = xp + c * sw * pp + ((d + s_.pad0[0]) * ext_[1] + h + s_.pad0[1]) * wq;
        for (int64_t q = 0; q < sw; ++q) {
          int64_t lo, hi;  // phase columns l whose input column l * sw + q - pad lies in the row
          valid_range(wq, s_.in[2], sw, q - s_.pad0[2], lo, hi);
          const T* from = src + q - s_.pad0[2];
          T* to = row + q * pp;
          for (int64_t l = lo; l < hi; ++l) to[l] = from[l * sw];
        }
      }
}

template <class T>
void ColumnMap::im2col_padded(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const {
  T* xp = scratch<T>(padded_elements());
  pad_group(x, xp);
  im2col_prepadded(xp, col, p0, p1, ld);
}

template <class T>
void ColumnMap::im2col_prepadded(const T* xp, T* col, int64_t p0, int64_t p1, int64_t ld) const {
  const int64_t Cg = s_.Cg(), pl = phased_plane(), sw = s_.stride[2];
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
          if (sw == 1) {
            runs(a, b, e, p0, p1, [&](int64_t o, int64_t len, int64_t at) {
              for (int64_t i = 0; i < len; ++i) dst[o + i] = src[at + i];
            });
            continue;
          }
          // Every run of this tap reads one column phase: run at padded column
          // ow0 * sw + e * dil reads phase (e * dil) % sw from ow0 + (e * dil) / sw.
          const int64_t wq = phase_width(), pp = ext_[0] * ext_[1] * wq, ec = e * s_.dil[2];
          const T* ph = src + (ec % sw) * pp + ec / sw;
          runs(a, b, e, p0, p1, [&](int64_t o, int64_t len, int64_t at) {
            const T* from = ph + at / ext_[2] * wq + (at % ext_[2] - ec) / sw;
            for (int64_t i = 0; i < len; ++i) dst[o + i] = from[i];
          });
        }
}

// The accumulator holds the padded plane as sw column phases (sw = the W stride), as
// pad_group's copy does; at sw = 1 that is the plain padded plane. Each tap's run of
// outputs then adds into contiguous memory instead of every sw-th element (the
// per-element table scatter it replaced took 40% of a 4x4 stride-2 transposed forward,
// C128->64 28->56, on Zen 5).
template <class T>
void ColumnMap::col2im_padded(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const {
  const int64_t inS = s_.in_size(), sw = s_.stride[2], wq = phase_width(), pp = ext_[0] * ext_[1] * wq;
  T* acc = scratch<T>(phased_plane());
  const bool whole = p0 == 0 && p1 == s_.out_size() && sw == 1;
  for (int64_t c = c0; c < c1; ++c) {
    std::fill(acc, acc + phased_plane(), T(0));
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
          // A run at padded column ow0 * sw + ec lands in phase ec % sw from ow0 + ec / sw
          // (im2col_prepadded reads the same places).
          const int64_t ec = e * s_.dil[2];
          T* ph = acc + (ec % sw) * pp + ec / sw;
          runs(a, b, e, p0, p1, [&](int64_t o, int64_t len, int64_t at) {
            T* __restrict to = ph + at / ext_[2] * wq + (at % ext_[2] - ec) / sw;
            const T* __restrict from = src + o;
            for (int64_t i = 0; i < len; ++i) to[i] += from[i];
          });
        }
    // Back to the plane, the border (what fell on padding) left out: padded column
    // l * sw + q of a row is phase q's column l.
    T* out = dx + c * inS;
    for (int64_t d = 0; d < s_.in[0]; ++d)
      for (int64_t h = 0; h < s_.in[1]; ++h) {
        const T* row = acc + ((d + s_.pad0[0]) * ext_[1] + h + s_.pad0[1]) * wq;
        T* to = out + (d * s_.in[1] + h) * s_.in[2];
        if (sw == 1) {
          for (int64_t w = 0; w < s_.in[2]; ++w) to[w] += row[w + s_.pad0[2]];
          continue;
        }
        for (int64_t q = 0; q < sw; ++q) {
          int64_t lo, hi;  // phase columns l whose input column l * sw + q - pad lies in the row
          valid_range(wq, s_.in[2], sw, q - s_.pad0[2], lo, hi);
          const T* from = row + q * pp;
          T* t = to + q - s_.pad0[2];
          for (int64_t l = lo; l < hi; ++l) t[l * sw] += from[l];
        }
      }
  }
}

// Per-thread scratch kept across calls (several threads map columns at once).
template <class T>
T* ColumnMap::scratch(int64_t count) {
  thread_local std::vector<T> buf;
  if (int64_t(buf.size()) < count) buf.resize(count);
  return buf.data();
}

#define CNNFAST_INSTANTIATE(T)                                                                              \
  template void im2col_rows<T>(const ConvShape&, const T*, T*, int64_t, int64_t, int64_t);                 \
  template void col2im_rows<T>(const ConvShape&, const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t); \
  template void ColumnMap::im2col<T>(const T*, T*, int64_t, int64_t, int64_t) const;                       \
  template void ColumnMap::col2im<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t) const;     \
  template void ColumnMap::pad_group<T>(const T*, T*) const;                                               \
  template void ColumnMap::im2col_prepadded<T>(const T*, T*, int64_t, int64_t, int64_t) const;
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu::conv_detail
