// Scalar reference pooling kernels (float32 and float64), the dispatch to the
// AVX2 row kernels for the interior of a row and to the AVX-512 separable max
// pooling (float32 without indices), and the threading.
//
// Forward kernels are threaded over output rows (plane, od, oh): every row
// writes its own outputs. Backward kernels scatter into overlapping windows, so
// they are threaded over whole planes, which never share an input element.
// Adaptive pooling of small float32 planes goes 8 planes at a time (one per AVX2
// lane), threaded over those blocks; the planes left over take the row path.
#include "cpu/pool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/simd.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// floor(a / b) for b > 0 and any sign of a.
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The first position >= 0 of start, start + d, start + 2d, ... (PyTorch's
// "while (start < 0) start += dilation"); also the initial index of a max window.
int64_t first_nonneg(int64_t start, int64_t d) { return start >= 0 ? start : start + (-start + d - 1) / d * d; }

// Window taps kw in [lo, hi) whose positions start + kw*d fall inside [0, n).
void valid_taps(int64_t start, int64_t k, int64_t d, int64_t n, int64_t* lo, int64_t* hi) {
  *lo = start >= 0 ? 0 : (-start + d - 1) / d;
  *hi = start >= n ? 0 : std::min(k, (n - start + d - 1) / d);
  if (*hi < *lo) *hi = *lo;
}

// Rows are grouped so one task carries at least ~16k window taps.
int64_t row_grain(const PoolGeom& g, int64_t taps_per_output) {
  return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, g.out[2] * taps_per_output));
}

// Output columns [lo, hi) whose whole window lies inside the row.
void interior_columns(const PoolGeom& g, int64_t eff_w, int64_t* lo, int64_t* hi) {
  const int64_t s = g.s[2], p = g.p[2];
  *lo = std::min(g.out[2], (p + s - 1) / s);
  const int64_t last = g.in[2] - eff_w + p;  // largest ow*s with the window inside
  *hi = last < 0 ? *lo : std::clamp(last / s + 1, *lo, g.out[2]);
}

// Offsets into a plane of the valid input rows (id, ih) of output row (od, oh), in scan order.
int64_t window_rows(const PoolGeom& g, int64_t od, int64_t oh, int64_t* rows) {
  int64_t n = 0;
  const int64_t ds = od * g.s[0] - g.p[0], hs = oh * g.s[1] - g.p[1];
  for (int64_t kd = 0; kd < g.k[0]; ++kd) {
    const int64_t id = ds + kd * g.d[0];
    if (id < 0 || id >= g.in[0]) continue;
    for (int64_t kh = 0; kh < g.k[1]; ++kh) {
      const int64_t ih = hs + kh * g.d[1];
      if (ih < 0 || ih >= g.in[1]) continue;
      rows[n++] = (id * g.in[1] + ih) * g.in[2];
    }
  }
  return n;
}

// avx512_impl::WindowAxis's tables along dimension dim (D or H), built once per
// call: dividing per row costs as much as pooling a short row.
struct AxisWindows {
  std::vector<int64_t> start, pos, mod;
  int64_t extent;
  AxisWindows(const PoolGeom& g, int dim) : extent(g.d[dim] * (g.k[dim] - 1) + 1) {
    for (int64_t o = 0; o < g.out[dim]; ++o) {
      start.push_back(static_cast<int64_t>(pos.size()));
      for (int64_t k = 0; k < g.k[dim]; ++k) {
        const int64_t i = o * g.s[dim] - g.p[dim] + k * g.d[dim];
        if (i < 0 || i >= g.in[dim]) continue;
        pos.push_back(i);
        mod.push_back(i % extent);
      }
    }
    start.push_back(static_cast<int64_t>(pos.size()));
  }
  avx512_impl::WindowAxis view() const { return {start.data(), pos.data(), mod.data(), extent}; }
};

template <class T>
void max_window(const PoolGeom& g, const T* xp, const int64_t* rows, int64_t nrows, int64_t row0, int64_t ow, T* y,
                int64_t* idx) {
  const int64_t ws = ow * g.s[2] - g.p[2];
  int64_t lo, hi;
  valid_taps(ws, g.k[2], g.d[2], g.in[2], &lo, &hi);
  T best = -std::numeric_limits<T>::infinity();
  int64_t bi = row0 + first_nonneg(ws, g.d[2]);
  for (int64_t r = 0; r < nrows; ++r) {
    const T* xr = xp + rows[r];
    for (int64_t kw = lo; kw < hi; ++kw) {
      const int64_t iw = ws + kw * g.d[2];
      const T v = xr[iw];
      // Branch-free (selects): on data the update pattern is unpredictable.
      const bool take = (v > best) | (v != v);
      best = take ? v : best;
      bi = take ? rows[r] + iw : bi;
    }
  }
  *y = best;
  if (idx) *idx = bi;
}

// PyTorch's average-pool window along one dimension: the divisor extent counts
// padding up to in + p, the summed extent only the input.
struct AvgSpan {
  int64_t lo, hi, padded;
};
AvgSpan avg_span(int64_t o, int64_t k, int64_t s, int64_t p, int64_t in) {
  int64_t lo = o * s - p;
  int64_t hi = std::min(lo + k, in + p);
  AvgSpan sp{lo, hi, hi - lo};
  sp.lo = std::max<int64_t>(lo, 0);
  sp.hi = std::min(hi, in);
  return sp;
}

template <class T>
T avg_divisor(const AvgSpan& a, const AvgSpan& b, const AvgSpan& c, bool include_pad, int64_t override_div) {
  if (override_div > 0) return T(override_div);
  if (include_pad) return T(a.padded * b.padded * c.padded);
  return T((a.hi - a.lo) * (b.hi - b.lo) * (c.hi - c.lo));
}

int64_t adaptive_start(int64_t o, int64_t out, int64_t in) { return o * in / out; }
int64_t adaptive_end(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

// Window bounds of every output column, computed once per call: two 64-bit
// divisions per output would otherwise cost more than the window itself.
struct AdaptiveCols {
  std::vector<int64_t> lo, hi;
  AdaptiveCols(int64_t out, int64_t in) : lo(out), hi(out) {
    for (int64_t o = 0; o < out; ++o) {
      lo[o] = adaptive_start(o, out, in);
      hi[o] = adaptive_end(o, out, in);
    }
  }
};

// Every output cell's window as in-plane offsets, for the AVX2 path that pools
// 8 planes at once (pool.h, avx2_impl::AdaptiveTaps). Built only when 8-plane
// blocks exist and the plane and the table are small enough for per-task
// scratch: then `planes8` is the number of planes that path covers.
struct AdaptiveTable {
  std::vector<int32_t> off, start;
  std::vector<float> ext;
  int64_t planes8 = 0;

  AdaptiveTable(const PoolGeom& g, bool vec) {
    const int64_t ip = g.in_plane(), op = g.out_plane();
    int64_t span[3] = {0, 0, 0};  // summed window lengths per dimension
    for (int dim = 0; dim < 3; ++dim)
      for (int64_t o = 0; o < g.out[dim]; ++o)
        span[dim] += adaptive_end(o, g.out[dim], g.in[dim]) - adaptive_start(o, g.out[dim], g.in[dim]);
    const int64_t taps = span[0] * span[1] * span[2];
    if (!vec || g.planes < 8 || op <= 1 || ip > (1 << 13) || op > (1 << 13) || taps > (1 << 20)) return;
    planes8 = g.planes / 8 * 8;
    off.reserve(taps);
    start.reserve(op + 1);
    ext.reserve(3 * op);
    for (int64_t od = 0; od < g.out[0]; ++od) {
      const int64_t d0 = adaptive_start(od, g.out[0], g.in[0]), d1 = adaptive_end(od, g.out[0], g.in[0]);
      for (int64_t oh = 0; oh < g.out[1]; ++oh) {
        const int64_t h0 = adaptive_start(oh, g.out[1], g.in[1]), h1 = adaptive_end(oh, g.out[1], g.in[1]);
        for (int64_t ow = 0; ow < g.out[2]; ++ow) {
          const int64_t w0 = adaptive_start(ow, g.out[2], g.in[2]), w1 = adaptive_end(ow, g.out[2], g.in[2]);
          start.push_back(static_cast<int32_t>(off.size()));
          for (int64_t id = d0; id < d1; ++id)
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) off.push_back(static_cast<int32_t>((id * g.in[1] + ih) * g.in[2] + iw));
          ext.insert(ext.end(), {float(d1 - d0), float(h1 - h0), float(w1 - w0)});
        }
      }
    }
    start.push_back(static_cast<int32_t>(off.size()));
  }
  avx2_impl::AdaptiveTaps taps() const { return {off.data(), start.data(), ext.data()}; }
  // Blocks of 8 planes per task: at least ~32k floats touched.
  int64_t grain(const PoolGeom& g) const {
    return std::max<int64_t>(1, (1 << 15) / (8 * (g.in_plane() + static_cast<int64_t>(off.size()))));
  }
};

// 32-byte aligned float scratch of one task.
class Scratch {
 public:
  explicit Scratch(int64_t n) : buf_(static_cast<size_t>(n) + 8) {}
  float* data() {
    const auto a = reinterpret_cast<std::uintptr_t>(buf_.data());
    return reinterpret_cast<float*>((a + 31) & ~std::uintptr_t(31));
  }

 private:
  std::vector<float> buf_;
};

// Tracks the first bad position seen by any thread.
struct FirstBad {
  std::atomic<int64_t> pos{std::numeric_limits<int64_t>::max()};
  void note(int64_t at) {
    int64_t cur = pos.load(std::memory_order_relaxed);
    while (at < cur && !pos.compare_exchange_weak(cur, at, std::memory_order_relaxed)) {
    }
  }
  int64_t result() const {
    int64_t v = pos.load();
    return v == std::numeric_limits<int64_t>::max() ? -1 : v;
  }
};

}  // namespace

int64_t pool_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t eff = d * (k - 1) + 1;
  int64_t out = floor_div(in + 2 * p - eff + (ceil_mode ? s - 1 : 0), s) + 1;
  // A last window starting inside the right padding is dropped (PyTorch).
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// ---- max pooling --------------------------------------------------------------

namespace {

// Float32 max pooling without indices on AVX-512 (pool_avx512.cpp). False where
// the geometry is not covered or the reduced rows would not fit per-task scratch.
bool max_pool_forward_separable(const PoolGeom& g, const float* x, float* y) {
  const AxisWindows wd(g, 0), wh(g, 1);
  const int64_t nslots = wd.extent * wh.extent, OWp = (g.out[2] + 15) / 16 * 16;
  if (!avx512_impl::max_pool_rows_supported(g) || nslots * OWp > (int64_t(1) << 22)) return false;
  parallel_for(0, g.planes * g.out[0] * g.out[1], row_grain(g, g.k[0] * g.k[1] * g.k[2]), [&](int64_t b, int64_t e) {
    Scratch hbuf(nslots * OWp);
    std::vector<int64_t> tags(nslots, -1);
    avx512_impl::max_pool_rows(g, wd.view(), wh.view(), x, y, b, e, hbuf.data(), tags.data());
  });
  return true;
}

}  // namespace

template <class T>
void max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices) {
  if constexpr (is_f32<T>) {
    if (!indices && use_avx512() && max_pool_forward_separable(g, x, y)) return;
  }
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t taps = g.k[0] * g.k[1] * g.k[2];
  int64_t in_lo, in_hi;
  interior_columns(g, g.d[2] * (g.k[2] - 1) + 1, &in_lo, &in_hi);
  // The vector kernel tracks indices in int32 lanes.
  const bool vec = is_f32<T> && use_avx2() && g.in_plane() < (int64_t(1) << 31);
  // Rows with fewer interior windows than one 8-wide block (a 16-wide map pooled 3x3/2 has
  // 7 of 8) would all take the scalar loop. Their window rows are copied into scratch rows
  // of width Wp with -inf columns for the padding, where the block runs over the whole row;
  // its indices are mapped back to the plane, and the border windows are then redone by the
  // scalar loop, which knows their initial index (the first in-bounds element).
  // A power of two, so mapping an index back is a shift and a mask, not two divisions.
  int64_t Wp = 16;
  while (Wp < std::max(g.p[2] + g.in[2], (OW - 1) * g.s[2] + g.d[2] * (g.k[2] - 1) + 1) + 16) Wp *= 2;
  int wp_shift = 0;
  while ((int64_t(1) << wp_shift) < Wp) ++wp_shift;
  const bool padded = vec && in_hi - in_lo < 8 && OW >= 8 && g.k[0] * g.k[1] * Wp < (int64_t(1) << 24);
  parallel_for(0, g.planes * OD * OH, row_grain(g, taps), [&](int64_t b, int64_t e) {
    std::vector<int64_t> rows(g.k[0] * g.k[1]), scratch_rows;
    std::vector<float> scratch;
    if (padded) {
      scratch.assign(g.k[0] * g.k[1] * Wp, -std::numeric_limits<float>::infinity());
      for (int64_t i = 0; i < g.k[0] * g.k[1]; ++i) scratch_rows.push_back(i * Wp);
    }
    for (int64_t r = b; r < e; ++r) {
      const int64_t plane = r / (OD * OH), od = r / OH % OD, oh = r % OH;
      const T* xp = x + plane * g.in_plane();
      T* yr = y + r * OW;
      int64_t* ir = indices ? indices + r * OW : nullptr;
      const int64_t nrows = window_rows(g, od, oh, rows.data());
      // Initial index of every window: its first in-bounds (d, h), as PyTorch.
      const int64_t row0 = (first_nonneg(od * g.s[0] - g.p[0], g.d[0]) * g.in[1] +
                            first_nonneg(oh * g.s[1] - g.p[1], g.d[1])) * g.in[2];
      int64_t ow = 0;
      if constexpr (is_f32<T>) {
        if (padded && nrows > 0) {
          for (int64_t w = 0; w < nrows; ++w)
            std::memcpy(scratch.data() + w * Wp + g.p[2], xp + rows[w], sizeof(float) * g.in[2]);
          // (0 written: a stride the kernel leaves to the scalar loop.)
          if (avx2_impl::max_pool_row(scratch.data(), scratch_rows.data(), nrows, 0, OW, Wp, g.s[2], 0, g.k[2],
                                      g.d[2], yr, ir) == OW) {
            if (ir)
              for (int64_t o = in_lo; o < in_hi; ++o) ir[o] = rows[ir[o] >> wp_shift] + (ir[o] & (Wp - 1)) - g.p[2];
            for (; ow < in_lo; ++ow) max_window(g, xp, rows.data(), nrows, row0, ow, yr + ow, ir ? ir + ow : ir);
            ow = in_hi;
          }
        } else if (vec && nrows > 0) {
          for (; ow < in_lo; ++ow) max_window(g, xp, rows.data(), nrows, row0, ow, yr + ow, ir ? ir + ow : ir);
          ow += avx2_impl::max_pool_row(xp, rows.data(), nrows, ow, in_hi, g.in[2], g.s[2], g.p[2], g.k[2],
                                        g.d[2], yr + ow, ir ? ir + ow : ir);
        }
      }
      for (; ow < OW; ++ow) max_window(g, xp, rows.data(), nrows, row0, ow, yr + ow, ir ? ir + ow : ir);
    }
  });
}

template <class T>
int64_t max_pool_backward(const PoolGeom& g, const T* gy, const int64_t* indices, T* gx, bool skip_out_of_range) {
  const int64_t ip = g.in_plane(), op = g.out_plane();
  FirstBad bad;
  parallel_for(0, g.planes, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, ip + op)),
               [&](int64_t b, int64_t e) {
                 std::memset(gx + b * ip, 0, sizeof(T) * (e - b) * ip);
                 for (int64_t pl = b; pl < e; ++pl) {
                   T* gxp = gx + pl * ip;
                   const T* gyp = gy + pl * op;
                   const int64_t* idx = indices + pl * op;
                   for (int64_t o = 0; o < op; ++o) {
                     const int64_t i = idx[o];
                     if (i < 0 || i >= ip) {
                       if (skip_out_of_range) continue;
                       bad.note(pl * op + o);
                       return;
                     }
                     gxp[i] += gyp[o];
                   }
                 }
               });
  return bad.result();
}

// ---- average pooling ----------------------------------------------------------

template <class T>
void avg_pool_forward(const PoolGeom& g, const T* x, T* y, bool include_pad, int64_t override_div) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  int64_t in_lo, in_hi;
  interior_columns(g, g.k[2], &in_lo, &in_hi);
  const bool vec = is_f32<T> && use_avx2();
  parallel_for(0, g.planes * OD * OH, row_grain(g, g.k[0] * g.k[1] * g.k[2]), [&](int64_t b, int64_t e) {
    std::vector<int64_t> rows(g.k[0] * g.k[1]);
    for (int64_t r = b; r < e; ++r) {
      const int64_t plane = r / (OD * OH), od = r / OH % OD, oh = r % OH;
      const T* xp = x + plane * g.in_plane();
      T* yr = y + r * OW;
      const AvgSpan sd = avg_span(od, g.k[0], g.s[0], g.p[0], g.in[0]);
      const AvgSpan sh = avg_span(oh, g.k[1], g.s[1], g.p[1], g.in[1]);
      const int64_t nrows = window_rows(g, od, oh, rows.data());
      auto one = [&](int64_t ow) {
        const AvgSpan sw = avg_span(ow, g.k[2], g.s[2], g.p[2], g.in[2]);
        // A window wholly in the padding (possible with ceil_mode) stays 0, as PyTorch.
        if (nrows == 0 || sw.lo >= sw.hi) {
          yr[ow] = T(0);
          return;
        }
        T acc = 0;
        for (int64_t i = 0; i < nrows; ++i)
          for (int64_t iw = sw.lo; iw < sw.hi; ++iw) acc += xp[rows[i] + iw];
        yr[ow] = acc / avg_divisor<T>(sd, sh, sw, include_pad, override_div);
      };
      int64_t ow = 0;
      if constexpr (is_f32<T>) {
        if (vec && nrows > 0 && in_lo < in_hi) {
          for (; ow < in_lo; ++ow) one(ow);
          // Interior windows span k columns whichever way padding is counted.
          const AvgSpan full{0, g.k[2], g.k[2]};
          const float div = avg_divisor<float>(sd, sh, full, include_pad, override_div);
          ow += avx2_impl::avg_pool_row(xp, rows.data(), nrows, ow, in_hi, g.in[2], g.s[2], g.p[2], g.k[2], div,
                                        yr + ow);
        }
      }
      for (; ow < OW; ++ow) one(ow);
    }
  });
}

// Organised by input row: each row of grad_input accumulates, while it sits in
// L1, the (grad_output / divisor) of the output rows whose windows cover it,
// one kernel tap at a time (for a fixed tap the output columns hit distinct
// inputs, so the adds pipeline and vectorise instead of chaining through one
// element). grad_input is streamed once, and rows of one plane can go to
// different threads. Terms reach an element in tap order rather than PyTorch's
// output order, so float results agree to rounding, not to the bit.
template <class T>
void avg_pool_backward(const PoolGeom& g, const T* gy, T* gx, bool include_pad, int64_t override_div) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const int64_t op = g.out_plane();
  const int64_t kw_n = g.k[2], sw = g.s[2], pw = g.p[2];
  // The divisor is a product of per-dimension factors (or the override).
  auto factor = [&](int dim, int64_t o) {
    const AvgSpan sp = avg_span(o, g.k[dim], g.s[dim], g.p[dim], g.in[dim]);
    return include_pad ? sp.padded : sp.hi - sp.lo;
  };
  std::vector<T> fw(OW);
  for (int64_t ow = 0; ow < OW; ++ow) fw[ow] = T(factor(2, ow));
  std::vector<T> delta(static_cast<size_t>(g.planes * op));
  parallel_for(0, g.planes * OD * OH, row_grain(g, 2), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t od = r / OH % OD, oh = r % OH;
      const T fdh = T(factor(0, od) * factor(1, oh));
      const T* gyr = gy + r * OW;
      T* dr = delta.data() + r * OW;
      if (override_div > 0) {
        for (int64_t ow = 0; ow < OW; ++ow) dr[ow] = gyr[ow] / T(override_div);
      } else {
        // Products of integers below 2^24 are exact, so this is gy / T(fd*fh*fw).
        for (int64_t ow = 0; ow < OW; ++ow) dr[ow] = gyr[ow] / (fdh * fw[ow]);
      }
    }
  });
  // Outputs [lo, hi] whose window o*s - p + [0, k) covers input position i.
  auto covering = [](int64_t i, int64_t k, int64_t s, int64_t p, int64_t out, int64_t* lo, int64_t* hi) {
    *lo = std::max<int64_t>(0, floor_div(i + p - k, s) + 1);
    *hi = std::min<int64_t>(out - 1, floor_div(i + p, s));
  };
  // For tap kw, the output columns [lo, hi) whose tap lands inside the row.
  std::vector<int64_t> tap_lo(kw_n), tap_hi(kw_n);
  for (int64_t kw = 0; kw < kw_n; ++kw) {
    tap_lo[kw] = std::min<int64_t>(OW, std::max<int64_t>(0, floor_div(pw - kw + sw - 1, sw)));
    tap_hi[kw] = std::max<int64_t>(tap_lo[kw], std::min<int64_t>(OW, floor_div(IW - 1 + pw - kw, sw) + 1));
  }
  parallel_for(0, g.planes * ID * IH, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, IW)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   const int64_t plane = r / (ID * IH), id = r / IH % ID, ih = r % IH;
                   int64_t d0, d1, h0, h1;
                   covering(id, g.k[0], g.s[0], g.p[0], OD, &d0, &d1);
                   covering(ih, g.k[1], g.s[1], g.p[1], OH, &h0, &h1);
                   const T* dp = delta.data() + plane * op;
                   T* __restrict__ row = gx + r * IW;
                   std::fill(row, row + IW, T(0));
                   for (int64_t od = d0; od <= d1; ++od)
                     for (int64_t oh = h0; oh <= h1; ++oh) {
                       const T* __restrict__ drow = dp + (od * OH + oh) * OW;
                       for (int64_t kw = 0; kw < kw_n; ++kw) {
                         const int64_t shift = kw - pw;
                         if (sw == 1) {
                           for (int64_t ow = tap_lo[kw]; ow < tap_hi[kw]; ++ow) row[ow + shift] += drow[ow];
                         } else {
                           for (int64_t ow = tap_lo[kw]; ow < tap_hi[kw]; ++ow) row[ow * sw + shift] += drow[ow];
                         }
                       }
                     }
                 }
               });
}

// ---- adaptive pooling ---------------------------------------------------------

template <class T>
void adaptive_avg_pool_forward(const PoolGeom& g, const T* x, T* y) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const bool vec = is_f32<T> && use_avx2();
  if (g.out_plane() == 1) {
    // Global pooling: one contiguous sum per plane.
    const int64_t ip = g.in_plane();
    const T ext_d = T(ID), ext_h = T(IH), ext_w = T(IW);
    parallel_for(0, g.planes, std::max<int64_t>(8, (1 << 14) / ip), [&](int64_t b, int64_t e) {
      bool done = false;
      if constexpr (is_f32<T>) {
        if (vec) {
          avx2_impl::sum_planes(x + b * ip, e - b, ip, y + b);
          done = true;
        }
      }
      if (!done)
        for (int64_t pl = b; pl < e; ++pl) {
          T acc = 0;
          for (int64_t i = 0; i < ip; ++i) acc += x[pl * ip + i];
          y[pl] = acc;
        }
      // Divided one extent at a time, as PyTorch.
      for (int64_t pl = b; pl < e; ++pl) y[pl] = y[pl] / ext_d / ext_h / ext_w;
    });
    return;
  }
  const AdaptiveTable tab(g, vec);
  if constexpr (is_f32<T>) {
    if (tab.planes8 > 0) {
      const int64_t ip = g.in_plane(), op = g.out_plane();
      parallel_for(0, tab.planes8 / 8, tab.grain(g), [&](int64_t b, int64_t e) {
        Scratch s(8 * (ip + 2 * op));
        for (int64_t blk = b; blk < e; ++blk)
          avx2_impl::adaptive_avg_planes8(x + blk * 8 * ip, ip, op, tab.taps(), s.data(), y + blk * 8 * op);
      });
    }
  }
  // The planes left over (all of them without AVX2 or for large planes), one output row per task.
  const int64_t taps = (ID / OD + 1) * (IH / OH + 1) * (IW / OW + 1);
  const AdaptiveCols cols(OW, IW);
  parallel_for(tab.planes8 * OD * OH, g.planes * OD * OH, row_grain(g, taps), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t plane = r / (OD * OH), od = r / OH % OD, oh = r % OH;
      const T* xp = x + plane * g.in_plane();
      const int64_t d0 = adaptive_start(od, OD, ID), d1 = adaptive_end(od, OD, ID);
      const int64_t h0 = adaptive_start(oh, OH, IH), h1 = adaptive_end(oh, OH, IH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = cols.lo[ow], w1 = cols.hi[ow];
        T acc = 0;
        for (int64_t id = d0; id < d1; ++id)
          for (int64_t ih = h0; ih < h1; ++ih) {
            const T* row = xp + (id * IH + ih) * IW;
            if constexpr (is_f32<T>) {
              if (vec && w1 - w0 >= 16) {
                acc += avx2_impl::sum(row + w0, w1 - w0);
                continue;
              }
            }
            for (int64_t iw = w0; iw < w1; ++iw) acc += row[iw];
          }
        // Divided one extent at a time, as PyTorch, for the same rounding.
        y[r * OW + ow] = acc / T(d1 - d0) / T(h1 - h0) / T(w1 - w0);
      }
    }
  });
}

template <class T>
void adaptive_avg_pool_backward(const PoolGeom& g, const T* gy, T* gx) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const int64_t ip = g.in_plane(), op = g.out_plane();
  if (op == 1) {
    // Global pooling: every element of a plane gets the same share.
    parallel_for(0, g.planes, std::max<int64_t>(1, (1 << 15) / ip), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) std::fill(gx + pl * ip, gx + (pl + 1) * ip, gy[pl] / T(ID) / T(IH) / T(IW));
    });
    return;
  }
  const AdaptiveTable tab(g, is_f32<T> && use_avx2());
  if constexpr (is_f32<T>) {
    if (tab.planes8 > 0) {
      parallel_for(0, tab.planes8 / 8, tab.grain(g), [&](int64_t b, int64_t e) {
        Scratch s(8 * (ip + 2 * op));
        for (int64_t blk = b; blk < e; ++blk)
          avx2_impl::adaptive_avg_backward_planes8(gy + blk * 8 * op, ip, op, tab.taps(), s.data(), gx + blk * 8 * ip);
      });
    }
  }
  const AdaptiveCols cols(OW, IW);
  parallel_for(tab.planes8, g.planes, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, ip + op)),
               [&](int64_t b, int64_t e) {
                 std::memset(gx + b * ip, 0, sizeof(T) * (e - b) * ip);
                 for (int64_t pl = b; pl < e; ++pl) {
                   T* gxp = gx + pl * ip;
                   const T* gyp = gy + pl * op;
                   for (int64_t od = 0; od < OD; ++od) {
                     const int64_t d0 = adaptive_start(od, OD, ID), d1 = adaptive_end(od, OD, ID);
                     for (int64_t oh = 0; oh < OH; ++oh) {
                       const int64_t h0 = adaptive_start(oh, OH, IH), h1 = adaptive_end(oh, OH, IH);
                       for (int64_t ow = 0; ow < OW; ++ow) {
                         const int64_t w0 = cols.lo[ow], w1 = cols.hi[ow];
                         const T delta = gyp[(od * OH + oh) * OW + ow] / T(d1 - d0) / T(h1 - h0) / T(w1 - w0);
                         for (int64_t id = d0; id < d1; ++id)
                           for (int64_t ih = h0; ih < h1; ++ih) {
                             T* row = gxp + (id * IH + ih) * IW;
                             for (int64_t iw = w0; iw < w1; ++iw) row[iw] += delta;
                           }
                       }
                     }
                   }
                 }
               });
}

template <class T>
void adaptive_max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices) {
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const bool vec = is_f32<T> && use_avx2();
  if constexpr (is_f32<T>) {
    if (vec && g.out_plane() == 1 && g.in_plane() < (int64_t(1) << 31)) {
      // Global max pooling: one contiguous argmax per plane.
      const int64_t ip = g.in_plane();
      parallel_for(0, g.planes, std::max<int64_t>(1, (1 << 14) / ip), [&](int64_t b, int64_t e) {
        for (int64_t pl = b; pl < e; ++pl) avx2_impl::argmax(x + pl * ip, ip, y + pl, indices + pl);
      });
      return;
    }
  }
  const AdaptiveTable tab(g, vec);
  if constexpr (is_f32<T>) {
    if (tab.planes8 > 0) {
      const int64_t ip = g.in_plane(), op = g.out_plane();
      parallel_for(0, tab.planes8 / 8, tab.grain(g), [&](int64_t b, int64_t e) {
        Scratch s(8 * (ip + 2 * op));
        for (int64_t blk = b; blk < e; ++blk)
          avx2_impl::adaptive_max_planes8(x + blk * 8 * ip, ip, op, tab.taps(), s.data(), y + blk * 8 * op,
                                          indices + blk * 8 * op);
      });
    }
  }
  const int64_t taps = (ID / OD + 1) * (IH / OH + 1) * (IW / OW + 1);
  const AdaptiveCols cols(OW, IW);
  parallel_for(tab.planes8 * OD * OH, g.planes * OD * OH, row_grain(g, taps), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t plane = r / (OD * OH), od = r / OH % OD, oh = r % OH;
      const T* xp = x + plane * g.in_plane();
      const int64_t d0 = adaptive_start(od, OD, ID), d1 = adaptive_end(od, OD, ID);
      const int64_t h0 = adaptive_start(oh, OH, IH), h1 = adaptive_end(oh, OH, IH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = cols.lo[ow], w1 = cols.hi[ow];
        T best = -std::numeric_limits<T>::infinity();
        int64_t bi = (d0 * IH + h0) * IW + w0;
        for (int64_t id = d0; id < d1; ++id)
          for (int64_t ih = h0; ih < h1; ++ih) {
            const int64_t off = (id * IH + ih) * IW;
            if constexpr (is_f32<T>) {
              if (vec && w1 - w0 >= 16) {
                // The row's own scan-order winner, folded into the running one by the same rule.
                float m;
                int64_t at;
                avx2_impl::argmax(xp + off + w0, w1 - w0, &m, &at);
                if (m > best || std::isnan(m)) {
                  best = m;
                  bi = off + w0 + at;
                }
                continue;
              }
            }
            for (int64_t iw = w0; iw < w1; ++iw) {
              const T v = xp[off + iw];
              const bool take = (v > best) | (v != v);
              best = take ? v : best;
              bi = take ? off + iw : bi;
            }
          }
        y[r * OW + ow] = best;
        indices[r * OW + ow] = bi;
      }
    }
  });
}

// ---- max-unpooling ------------------------------------------------------------

template <class T>
int64_t max_unpool_forward(const PoolGeom& g, const T* x, const int64_t* indices, T* y) {
  const int64_t ip = g.in_plane(), op = g.out_plane();
  FirstBad bad;
  parallel_for(0, g.planes, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, ip + op)),
               [&](int64_t b, int64_t e) {
                 std::memset(y + b * op, 0, sizeof(T) * (e - b) * op);
                 for (int64_t pl = b; pl < e; ++pl) {
                   T* yp = y + pl * op;
                   const T* xp = x + pl * ip;
                   const int64_t* idx = indices + pl * ip;
                   for (int64_t i = 0; i < ip; ++i) {
                     const int64_t at = idx[i];
                     if (at < 0 || at >= op) {
                       bad.note(pl * ip + i);
                       return;
                     }
                     yp[at] = xp[i];
                   }
                 }
               });
  return bad.result();
}

template <class T>
int64_t max_unpool_backward(const PoolGeom& g, const T* gy, const int64_t* indices, T* gx) {
  const int64_t ip = g.in_plane(), op = g.out_plane();
  FirstBad bad;
  parallel_for(0, g.planes, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, ip)), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const T* gyp = gy + pl * op;
      const int64_t* idx = indices + pl * ip;
      T* gxp = gx + pl * ip;
      for (int64_t i = 0; i < ip; ++i) {
        const int64_t at = idx[i];
        if (at < 0 || at >= op) {
          bad.note(pl * ip + i);
          return;
        }
        gxp[i] = gyp[at];
      }
    }
  });
  return bad.result();
}

#define CNNFAST_INSTANTIATE(T)                                                                    \
  template void max_pool_forward<T>(const PoolGeom&, const T*, T*, int64_t*);                   \
  template int64_t max_pool_backward<T>(const PoolGeom&, const T*, const int64_t*, T*, bool);   \
  template void avg_pool_forward<T>(const PoolGeom&, const T*, T*, bool, int64_t);              \
  template void avg_pool_backward<T>(const PoolGeom&, const T*, T*, bool, int64_t);             \
  template void adaptive_avg_pool_forward<T>(const PoolGeom&, const T*, T*);                    \
  template void adaptive_avg_pool_backward<T>(const PoolGeom&, const T*, T*);                   \
  template void adaptive_max_pool_forward<T>(const PoolGeom&, const T*, T*, int64_t*);          \
  template int64_t max_unpool_forward<T>(const PoolGeom&, const T*, const int64_t*, T*);        \
  template int64_t max_unpool_backward<T>(const PoolGeom&, const T*, const int64_t*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
int64_t max_pool_row(const float*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                     int64_t, float*, int64_t*) {
  return 0;
}
int64_t avg_pool_row(const float*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                     float, float*) {
  return 0;
}
float sum(const float*, int64_t) { return 0; }
void sum_planes(const float*, int64_t, int64_t, float*) {}
void argmax(const float*, int64_t, float*, int64_t*) {}
void adaptive_avg_planes8(const float*, int64_t, int64_t, const AdaptiveTaps&, float*, float*) {}
void adaptive_max_planes8(const float*, int64_t, int64_t, const AdaptiveTaps&, float*, float*, int64_t*) {}
void adaptive_avg_backward_planes8(const float*, int64_t, int64_t, const AdaptiveTaps&, float*, float*) {}
}  // namespace avx2_impl
#endif
#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
bool max_pool_rows_supported(const PoolGeom&) { return false; }
void max_pool_rows(const PoolGeom&, const WindowAxis&, const WindowAxis&, const float*, float*, int64_t, int64_t,
                   float*, int64_t*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
