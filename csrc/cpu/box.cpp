// Box kernels (see box.h for the box convention and the formulas), threaded
// over rows of the IoU matrix / over pairs / over the boxes NMS may suppress.
// There is no hand-written AVX2 path: the matrix and suppression loops are
// written branch-free over coordinate arrays so the compiler vectorises them, with
// CIoU's aspect angles hoisted out of the pair loop (what that bought: benchmarks/RESULTS.md, "Design measurements"). GCC only
// turns the selects into vector blends when floating-point operations may not
// trap; nothing here reads the FP exception flags, so CMakeLists.txt compiles this
// file alone with -fno-trapping-math.
#include "cpu/box.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>

#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// 4 / pi^2, CIoU's normalisation of the squared aspect-angle difference.
constexpr double kFourOverPiSq = 0.40528473456935108578;

template <class T>
T clamp0(T v) {
  return v > T(0) ? v : T(0);
}

// The value of one variant for one pair, corners given one by one so the matrix
// loop can read b from separate coordinate arrays. Zero denominators are replaced
// by 1 before dividing and the ratio is then selected away (or is 0/1 already:
// a zero union implies a zero intersection, a zero enclosing area a zero union),
// which keeps the loop free of branches and lets the compiler vectorise it.
// theta_a, theta_b: atan2(w, h) of each box, used by CIoU only; the matrix loop
// computes them once per box instead of once per pair.
template <class T>
inline T aspect_angle(T x1, T y1, T x2, T y2) {
  return std::atan2(clamp0(x2 - x1), clamp0(y2 - y1));
}

template <BoxIoU K, class T>
inline T pair_value(T ax1, T ay1, T ax2, T ay2, T bx1, T by1, T bx2, T by2, T theta_a, T theta_b) {
  const T wa = clamp0(ax2 - ax1), ha = clamp0(ay2 - ay1);
  const T wb = clamp0(bx2 - bx1), hb = clamp0(by2 - by1);
  const T iw = clamp0(std::min(ax2, bx2) - std::max(ax1, bx1));
  const T ih = clamp0(std::min(ay2, by2) - std::max(ay1, by1));
  const T inter = iw * ih;
  const T uni = wa * ha + wb * hb - inter;
  const T iou = inter / (uni > T(0) ? uni : T(1));
  if constexpr (K == BoxIoU::IoU) {
    return iou;
  } else {
    const T cw = clamp0(std::max(ax2, bx2) - std::min(ax1, bx1));
    const T ch = clamp0(std::max(ay2, by2) - std::min(ay1, by1));
    if constexpr (K == BoxIoU::GIoU) {
      const T c = cw * ch;
      return iou - (c - uni) / (c > T(0) ? c : T(1));
    } else {
      const T dx = (ax1 + ax2 - bx1 - bx2) * T(0.5);
      const T dy = (ay1 + ay2 - by1 - by2) * T(0.5);
      const T c2 = cw * cw + ch * ch;
      // Inverted boxes can have c2 = 0 with distinct centres: the select is needed here.
      const T pen = (dx * dx + dy * dy) / (c2 > T(0) ? c2 : T(1));
      T value = iou - (c2 > T(0) ? pen : T(0));
      if constexpr (K == BoxIoU::CIoU) {
        const T dtheta = theta_b - theta_a;
        const T v = T(kFourOverPiSq) * dtheta * dtheta;
        const T den = T(1) - iou + v;  // >= 0; 0 only when iou = 1 and v = 0, where alpha v = 0
        value -= v * v / (den > T(0) ? den : T(1));
      }
      return value;
    }
  }
}

template <BoxIoU K, class T>
inline T pair_value(const T* a, const T* b) {
  T ta = 0, tb = 0;
  if constexpr (K == BoxIoU::CIoU) {
    ta = aspect_angle(a[0], a[1], a[2], a[3]);
    tb = aspect_angle(b[0], b[1], b[2], b[3]);
  }
  return pair_value<K, T>(a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], ta, tb);
}

// Runs f with the kind as a compile-time constant, so each kind gets its own loop.
template <class F>
void with_kind(BoxIoU kind, F&& f) {
  switch (kind) {
    case BoxIoU::IoU: return f(std::integral_constant<BoxIoU, BoxIoU::IoU>{});
    case BoxIoU::GIoU: return f(std::integral_constant<BoxIoU, BoxIoU::GIoU>{});
    case BoxIoU::DIoU: return f(std::integral_constant<BoxIoU, BoxIoU::DIoU>{});
    case BoxIoU::CIoU: return f(std::integral_constant<BoxIoU, BoxIoU::CIoU>{});
  }
}

// d max(0, hi - lo) spread onto hi and lo; nothing flows through the clamp at 0.
template <class T>
void clamp_diff_grad(T raw, T g, T& g_hi, T& g_lo) {
  if (raw > T(0)) {
    g_hi += g;
    g_lo -= g;
  }
}

// Reverse-mode derivative of pair_value, written step by step in the forward's
// order so each adjoint can be checked against the line it differentiates.
template <class T>
void pair_grad(BoxIoU kind, T g, const T* a, const T* b, T* ga, T* gb) {
  for (int k = 0; k < 4; ++k) ga[k] = gb[k] = T(0);
  const T wa_raw = a[2] - a[0], ha_raw = a[3] - a[1], wb_raw = b[2] - b[0], hb_raw = b[3] - b[1];
  const T wa = clamp0(wa_raw), ha = clamp0(ha_raw), wb = clamp0(wb_raw), hb = clamp0(hb_raw);
  // Ties between a and b go to a, the first argument, in every min/max below.
  const bool a_x2_min = a[2] <= b[2], a_x1_max = a[0] >= b[0];
  const bool a_y2_min = a[3] <= b[3], a_y1_max = a[1] >= b[1];
  const T iw_raw = (a_x2_min ? a[2] : b[2]) - (a_x1_max ? a[0] : b[0]);
  const T ih_raw = (a_y2_min ? a[3] : b[3]) - (a_y1_max ? a[1] : b[1]);
  const T iw = clamp0(iw_raw), ih = clamp0(ih_raw);
  const T inter = iw * ih;
  const T uni = wa * ha + wb * hb - inter;
  const T iou = uni > T(0) ? inter / uni : T(0);

  T g_iou = g, g_uni = 0, g_cw = 0, g_ch = 0, g_wa = 0, g_ha = 0, g_wb = 0, g_hb = 0;
  const bool a_x2_max = a[2] >= b[2], a_x1_min = a[0] <= b[0];
  const bool a_y2_max = a[3] >= b[3], a_y1_min = a[1] <= b[1];
  const T cw_raw = (a_x2_max ? a[2] : b[2]) - (a_x1_min ? a[0] : b[0]);
  const T ch_raw = (a_y2_max ? a[3] : b[3]) - (a_y1_min ? a[1] : b[1]);
  const T cw = clamp0(cw_raw), ch = clamp0(ch_raw);
  T g_dx = 0, g_dy = 0;
  if (kind == BoxIoU::GIoU) {
    // value = iou - 1 + uni / c
    const T c = cw * ch;
    if (c > T(0)) {
      g_uni += g / c;
      const T g_c = -g * uni / (c * c);
      g_cw += g_c * ch;
      g_ch += g_c * cw;
    }
  } else if (kind == BoxIoU::DIoU || kind == BoxIoU::CIoU) {
    const T dx = (a[0] + a[2] - b[0] - b[2]) * T(0.5);
    const T dy = (a[1] + a[3] - b[1] - b[3]) * T(0.5);
    const T c2 = cw * cw + ch * ch;
    if (c2 > T(0)) {
      const T d2 = dx * dx + dy * dy;
      const T g_d2 = -g / c2;
      const T g_c2 = g * d2 / (c2 * c2);
      g_dx += g_d2 * T(2) * dx;
      g_dy += g_d2 * T(2) * dy;
      g_cw += g_c2 * T(2) * cw;
      g_ch += g_c2 * T(2) * ch;
    }
    if (kind == BoxIoU::CIoU) {
      const T dtheta = std::atan2(wb, hb) - std::atan2(wa, ha);
      const T v = T(kFourOverPiSq) * dtheta * dtheta;
      const T den = T(1) - iou + v;
      if (den > T(0)) {
        // value -= Q with Q = v^2 / den: dQ/dv = (2 v den - v^2) / den^2, dQ/diou = v^2 / den^2.
        const T g_v = -g * (T(2) * v * den - v * v) / (den * den);
        g_iou -= g * v * v / (den * den);
        const T g_dtheta = g_v * T(kFourOverPiSq) * T(2) * dtheta;
        // d atan2(w, h) = (h dw - w dh) / (w^2 + h^2)
        const T ra = wa * wa + ha * ha, rb = wb * wb + hb * hb;
        if (rb > T(0)) {
          g_wb += g_dtheta * hb / rb;
          g_hb -= g_dtheta * wb / rb;
        }
        if (ra > T(0)) {
          g_wa -= g_dtheta * ha / ra;
          g_ha += g_dtheta * wa / ra;
        }
      }
    }
  }
  ga[0] += g_dx * T(0.5);
  ga[2] += g_dx * T(0.5);
  gb[0] -= g_dx * T(0.5);
  gb[2] -= g_dx * T(0.5);
  ga[1] += g_dy * T(0.5);
  ga[3] += g_dy * T(0.5);
  gb[1] -= g_dy * T(0.5);
  gb[3] -= g_dy * T(0.5);
  // Enclosing box sides.
  T gcx2 = 0, gcx1 = 0, gcy2 = 0, gcy1 = 0;
  clamp_diff_grad(cw_raw, g_cw, gcx2, gcx1);
  clamp_diff_grad(ch_raw, g_ch, gcy2, gcy1);
  (a_x2_max ? ga : gb)[2] += gcx2;
  (a_x1_min ? ga : gb)[0] += gcx1;
  (a_y2_max ? ga : gb)[3] += gcy2;
  (a_y1_min ? ga : gb)[1] += gcy1;
  // iou = inter / uni, uni = area_a + area_b - inter.
  T g_inter = 0;
  if (uni > T(0)) {
    g_inter += g_iou / uni;
    g_uni -= g_iou * inter / (uni * uni);
  }
  g_wa += g_uni * ha;
  g_ha += g_uni * wa;
  g_wb += g_uni * hb;
  g_hb += g_uni * wb;
  g_inter -= g_uni;
  T gix2 = 0, gix1 = 0, giy2 = 0, giy1 = 0;
  clamp_diff_grad(iw_raw, g_inter * ih, gix2, gix1);
  clamp_diff_grad(ih_raw, g_inter * iw, giy2, giy1);
  (a_x2_min ? ga : gb)[2] += gix2;
  (a_x1_max ? ga : gb)[0] += gix1;
  (a_y2_min ? ga : gb)[3] += giy2;
  (a_y1_max ? ga : gb)[1] += giy1;
  clamp_diff_grad(wa_raw, g_wa, ga[2], ga[0]);
  clamp_diff_grad(ha_raw, g_ha, ga[3], ga[1]);
  clamp_diff_grad(wb_raw, g_wb, gb[2], gb[0]);
  clamp_diff_grad(hb_raw, g_hb, gb[3], gb[1]);
}

// Rows per chunk so that a chunk holds about this many pairs.
constexpr int64_t kPairGrain = 1 << 14;

// The smallest T whose double value is >= thr, so that comparing in T gives the
// same answer as comparing the IoU, widened to double, with thr.
template <class T>
T threshold_as(double thr) {
  T t = static_cast<T>(thr);
  if (static_cast<double>(t) < thr) t = std::nextafter(t, std::numeric_limits<T>::infinity());
  return t;
}

// Indices with score >= score_threshold (NaN scores fail the test and are
// dropped), stably sorted by decreasing score.
template <class T>
std::vector<int64_t> candidates(const T* scores, int64_t n, double score_threshold) {
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (static_cast<double>(scores[i]) >= score_threshold) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return scores[x] > scores[y]; });
  return order;
}

}  // namespace

template <class T>
void box_iou_forward(BoxIoU kind, const T* a, int64_t n, const T* b, int64_t m, T* out) {
  // b's corners as four separate arrays: the inner loop then reads unit-stride
  // vectors instead of an interleaved (m, 4) layout.
  std::vector<T> soa(static_cast<size_t>(5 * m));
  for (int64_t j = 0; j < m; ++j) {
    for (int k = 0; k < 4; ++k) soa[static_cast<size_t>(k * m + j)] = b[4 * j + k];
    if (kind == BoxIoU::CIoU)
      soa[static_cast<size_t>(4 * m + j)] = aspect_angle(b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]);
  }
  const T *bx1 = soa.data(), *by1 = bx1 + m, *bx2 = by1 + m, *by2 = bx2 + m, *tb = by2 + m;
  with_kind(kind, [&](auto kc) {
    constexpr BoxIoU K = decltype(kc)::value;
    parallel_for(0, n, std::max<int64_t>(1, kPairGrain / std::max<int64_t>(m, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        const T ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
        const T ta = K == BoxIoU::CIoU ? aspect_angle(ax1, ay1, ax2, ay2) : T(0);
        T* row = out + i * m;
        for (int64_t j = 0; j < m; ++j)
          row[j] = pair_value<K, T>(ax1, ay1, ax2, ay2, bx1[j], by1[j], bx2[j], by2[j], ta, tb[j]);
      }
    });
  });
}

template <class T>
void box_iou_pairs_forward(BoxIoU kind, const T* a, const T* b, int64_t n, T* out) {
  with_kind(kind, [&](auto kc) {
    constexpr BoxIoU K = decltype(kc)::value;
    parallel_for(0, n, kPairGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) out[i] = pair_value<K, T>(a + 4 * i, b + 4 * i);
    });
  });
}

template <class T>
void box_iou_pairs_backward(BoxIoU kind, const T* grad_out, const T* a, const T* b, int64_t n, T* grad_a,
                            T* grad_b) {
  parallel_for(0, n, kPairGrain / 4, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      pair_grad(kind, grad_out[i], a + 4 * i, b + 4 * i, grad_a + 4 * i, grad_b + 4 * i);
  });
}

template <class T>
std::vector<int64_t> nms(const T* boxes, const T* scores, const int64_t* labels, int64_t n, double iou_threshold,
                         double score_threshold) {
  const std::vector<int64_t> order = candidates(scores, n, score_threshold);
  const int64_t c = static_cast<int64_t>(order.size());
  // The candidates in score order as coordinate arrays, and their labels as
  // dense 32-bit ids (0 without labels; SSE2 has no 64-bit compare), so the
  // suppression loop is unit-stride, branch-free and vectorised.
  std::vector<T> soa(static_cast<size_t>(4 * c));
  std::vector<int32_t> lab(static_cast<size_t>(c), 0);
  T *x1 = soa.data(), *y1 = x1 + c, *x2 = y1 + c, *y2 = x2 + c;
  for (int64_t q = 0; q < c; ++q) {
    const T* b = boxes + 4 * order[q];
    x1[q] = b[0], y1[q] = b[1], x2[q] = b[2], y2[q] = b[3];
  }
  if (labels) {
    std::vector<int64_t> ids(static_cast<size_t>(c));
    for (int64_t q = 0; q < c; ++q) ids[q] = labels[order[q]];
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int64_t q = 0; q < c; ++q)
      lab[q] = static_cast<int32_t>(std::lower_bound(ids.begin(), ids.end(), labels[order[q]]) - ids.begin());
  }
  const T thr = threshold_as<T>(iou_threshold);
  std::vector<int32_t> suppressed(static_cast<size_t>(c), 0);  // 32-bit, like the float lanes
  std::vector<int64_t> keep;
  for (int64_t p = 0; p < c; ++p) {
    if (suppressed[p]) continue;
    keep.push_back(order[p]);
    const T ax1 = x1[p], ay1 = y1[p], ax2 = x2[p], ay2 = y2[p];
    const int32_t lp = lab[p];
    // Only later (lower-scored) boxes can still be suppressed; each chunk
    // writes its own flags, so the split cannot change the result.
    parallel_for(p + 1, c, 4096, [&](int64_t q0, int64_t q1) {
      // Local copies: pointers read through the closure could alias the flags
      // written below, which would keep the loop from vectorising.
      const T *bx1 = x1, *by1 = y1, *bx2 = x2, *by2 = y2;
      const int32_t* lq = lab.data();
      int32_t* sup = suppressed.data();
      for (int64_t q = q0; q < q1; ++q) {
        const T iou = pair_value<BoxIoU::IoU, T>(ax1, ay1, ax2, ay2, bx1[q], by1[q], bx2[q], by2[q], T(0), T(0));
        sup[q] |= static_cast<int32_t>(iou >= thr) & static_cast<int32_t>(lq[q] == lp);
      }
    });
  }
  return keep;
}

template <class T>
std::vector<int64_t> soft_nms(const T* boxes, const T* scores, const int64_t* labels, int64_t n, bool gaussian,
                              double sigma, double iou_threshold, double score_threshold, T* new_scores) {
  for (int64_t i = 0; i < n; ++i) new_scores[i] = scores[i];
  std::vector<int64_t> active = candidates(scores, n, score_threshold);
  // Kept in index order so the arg-max scan below breaks ties on the lower index.
  std::sort(active.begin(), active.end());
  std::vector<int64_t> keep;
  while (!active.empty()) {
    size_t best = 0;
    for (size_t q = 1; q < active.size(); ++q)
      if (new_scores[active[q]] > new_scores[active[best]]) best = q;
    const int64_t i = active[best];
    keep.push_back(i);
    active.erase(active.begin() + static_cast<std::ptrdiff_t>(best));
    std::vector<int64_t> still;
    still.reserve(active.size());
    for (int64_t j : active) {
      if (!labels || labels[j] == labels[i]) {
        const double iou = static_cast<double>(pair_value<BoxIoU::IoU, T>(boxes + 4 * i, boxes + 4 * j));
        double s = static_cast<double>(new_scores[j]);
        if (gaussian) s *= std::exp(-iou * iou / sigma);
        else if (iou >= iou_threshold) s *= 1.0 - iou;
        new_scores[j] = static_cast<T>(s);
        if (!(static_cast<double>(new_scores[j]) >= score_threshold)) continue;
      }
      still.push_back(j);
    }
    active.swap(still);
  }
  return keep;
}

#define CNNFAST_INSTANTIATE(T)                                                                                    \
  template void box_iou_forward<T>(BoxIoU, const T*, int64_t, const T*, int64_t, T*);                             \
  template void box_iou_pairs_forward<T>(BoxIoU, const T*, const T*, int64_t, T*);                                \
  template void box_iou_pairs_backward<T>(BoxIoU, const T*, const T*, const T*, int64_t, T*, T*);                 \
  template std::vector<int64_t> nms<T>(const T*, const T*, const int64_t*, int64_t, double, double);              \
  template std::vector<int64_t> soft_nms<T>(const T*, const T*, const int64_t*, int64_t, bool, double, double,    \
                                            double, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)

}  // namespace cnnfast::cpu
