// Dropping kernel taps that only ever read padding (conv_internal.h, TapWindow).
#include <algorithm>
#include <vector>

#include "core/parallel.h"
#include "cpu/conv_internal.h"

namespace cnnfast::cpu::conv_detail {

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

namespace {

// Where each tap of the window sits in the full kernel.
std::vector<int64_t> window_taps(const ConvShape& s, const TapWindow& t) {
  std::vector<int64_t> at;
  at.reserve(size_t(t.s.k_size()));
  for (int64_t a = 0; a < t.s.k[0]; ++a)
    for (int64_t b = 0; b < t.s.k[1]; ++b)
      for (int64_t e = 0; e < t.s.k[2]; ++e)
        at.push_back(((a + t.lo[0]) * s.k[1] + b + t.lo[1]) * s.k[2] + e + t.lo[2]);
  return at;
}

}  // namespace

// The window's taps of w (K, Cg, k) -> wc (K, Cg, window) when `to_window`, or
// the adjoint, w[taps of the window] += wc, otherwise.
template <class T>
void copy_window(const ConvShape& s, const TapWindow& t, T* w, T* wc, bool to_window) {
  const int64_t rows = s.K * s.Cg(), kk = s.k_size(), kw = t.s.k_size();
  const std::vector<int64_t> at = window_taps(s, t);
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

template <class T>
void expand_window(const ConvShape& s, const TapWindow& t, T* w, const T* wc) {
  const int64_t rows = s.K * s.Cg(), kk = s.k_size(), kw = t.s.k_size();
  std::vector<int64_t> at = window_taps(s, t);
  // Blocks of rows small enough to stay in L1 between the zeroing and the tap-major
  // strided writes, so memory sees each line of w written once.
  const int64_t block = std::max<int64_t>(1, 4096 / kk);
  parallel_for(0, rows, std::max<int64_t>(block, 16384 / kk), [&](int64_t r0, int64_t r1) {
    for (int64_t b0 = r0; b0 < r1; b0 += block) {
      const int64_t b1 = std::min(r1, b0 + block);
      std::fill(w + b0 * kk, w + b1 * kk, T(0));
      for (int64_t i = 0; i < kw; ++i) {
        T* to = w + at[i];
        const T* from = wc + i;
        for (int64_t r = b0; r < b1; ++r) to[r * kk] = from[r * kw];
      }
    }
  });
}

template void copy_window<float>(const ConvShape&, const TapWindow&, float*, float*, bool);
template void copy_window<double>(const ConvShape&, const TapWindow&, double*, double*, bool);
template void expand_window<float>(const ConvShape&, const TapWindow&, float*, const float*);
template void expand_window<double>(const ConvShape&, const TapWindow&, double*, const double*);

}  // namespace cnnfast::cpu::conv_detail
