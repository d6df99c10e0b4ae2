// Bounding-box kernels for detection: IoU and its GIoU/DIoU/CIoU variants as a
// pairwise (N, M) matrix or on matched pairs (N,) with the gradient, greedy
// non-max suppression (plain and per class) and soft-NMS. Tensor-free.
//
// Box convention (every function here): corners (x1, y1, x2, y2) in continuous
// coordinates, a box covering [x1, x2) x [y1, y2). Width = max(0, x2 - x1) and
// height = max(0, y2 - y1), so a point, a line or an inverted box has area 0
// (no "+1" pixel rule). Where a ratio's denominator is 0 the ratio is taken as 0:
// IoU of two zero-area boxes is 0 (even identical ones), the GIoU and DIoU
// penalties vanish when the enclosing box has zero area / zero diagonal, and
// CIoU's alpha = v / (1 - IoU + v) is 0 when 1 - IoU + v = 0. The aspect term
// uses atan2(w, h), which is defined for h = 0 and equals 0 for w = h = 0.
//
//   iou  = I / U
//   giou = iou - (C - U) / C                    C: area of the smallest enclosing box
//   diou = iou - d^2 / c^2                      d: centre distance, c: enclosing diagonal
//   ciou = diou - alpha v,  v = 4/pi^2 (atan2(wb, hb) - atan2(wa, ha))^2
//
// Gradient contract: box_iou_pairs_backward writes (=) the gradients of both box
// sets; it is the exact derivative of the forward (alpha is differentiated too,
// unlike implementations that treat it as a constant), with the subgradient of
// max/min taken on the first argument at ties.
//
// NMS is greedy over boxes sorted by decreasing score with a stable sort, so on
// equal scores the lower index is visited (and kept) first. A box is suppressed
// when its IoU with a kept box is >= iou_threshold (the CS-230 rule; torchvision
// suppresses only on > threshold).
#pragma once
#include <cstdint>
#include <vector>

namespace cnnfast::cpu {

enum class BoxIoU { IoU, GIoU, DIoU, CIoU };

// a: (n, 4), b: (m, 4) -> out: (n, m), out[i, j] = variant(a[i], b[j]).
template <class T>
void box_iou_forward(BoxIoU kind, const T* a, int64_t n, const T* b, int64_t m, T* out);

// a, b: (n, 4) matched pairs -> out: (n,), out[i] = variant(a[i], b[i]).
template <class T>
void box_iou_pairs_forward(BoxIoU kind, const T* a, const T* b, int64_t n, T* out);

// grad_out: (n,) -> grad_a, grad_b: (n, 4), written (=).
template <class T>
void box_iou_pairs_backward(BoxIoU kind, const T* grad_out, const T* a, const T* b, int64_t n, T* grad_a,
                            T* grad_b);

// boxes: (n, 4), scores: (n,), labels: (n,) or nullptr (one class). Returns the
// kept indices in decreasing score order; a box is only suppressed by a kept box
// of the same label. Boxes with score < score_threshold are dropped first.
template <class T>
std::vector<int64_t> nms(const T* boxes, const T* scores, const int64_t* labels, int64_t n, double iou_threshold,
                         double score_threshold);

// Soft-NMS (Bodla et al., 2017): repeatedly keep the highest current score
// (lower index on ties) and decay the others by their IoU with it:
//   linear:   s *= 1 - iou           when iou >= iou_threshold
//   gaussian: s *= exp(-iou^2 / sigma)
// A box whose decayed score falls below score_threshold is dropped. labels as
// in nms. Returns the kept indices in selection order; new_scores (n,) receives
// every box's final score (dropped boxes keep the score at which they fell out).
template <class T>
std::vector<int64_t> soft_nms(const T* boxes, const T* scores, const int64_t* labels, int64_t n, bool gaussian,
                              double sigma, double iou_threshold, double score_threshold, T* new_scores);

}  // namespace cnnfast::cpu
