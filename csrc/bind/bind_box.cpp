// Bindings for the box family (csrc/cpu/box.h): IoU variants as a matrix or on
// matched pairs (with the gradient), NMS and soft-NMS. Box sets are (N, 4)
// float32/float64 arrays in corner format; N = 0 is allowed (an empty set gives
// an empty result), since detectors routinely have no box above threshold.
// NMS has no backward: selection is not differentiable.
#include <cmath>
#include <limits>

#include "bind/array.h"
#include "bind/families.h"
#include "cpu/box.h"

namespace cnnfast::bind {
namespace {

using cpu::BoxIoU;

BoxIoU parse_kind(const std::string& k) {
  if (k == "iou") return BoxIoU::IoU;
  if (k == "giou") return BoxIoU::GIoU;
  if (k == "diou") return BoxIoU::DIoU;
  if (k == "ciou") return BoxIoU::CIoU;
  throw ValueError(cat("kind: expected 'iou', 'giou', 'diou' or 'ciou', got '", k, "'"));
}

DType box_set(const py::array& a, const char* name) {
  DType dt = input(a, name);
  CNNFAST_CHECK(a.ndim() == 2 && a.shape(1) == 4, ValueError, name,
                ": expected boxes of shape (N, 4) as (x1, y1, x2, y2), got shape ", shape_str(shape_of(a)));
  return dt;
}

void require_finite(double v, const char* name) {
  CNNFAST_CHECK(std::isfinite(v), ValueError, name, ": expected a finite number, got ", v);
}

// scores (N,) of the boxes' dtype and optional labels (N,) int64.
const int64_t* check_scores_labels(const py::array& boxes, const py::array& scores, const py::object& labels) {
  input(scores, "scores");
  require_same_dtype(boxes, "boxes", scores, "scores");
  require_shape(scores, "scores", {boxes.shape(0)});
  if (labels.is_none()) return nullptr;
  CNNFAST_CHECK(py::isinstance<py::array>(labels), TypeError, "labels: expected a NumPy int64 array or None, got ",
                py::str(py::type::of(labels)).cast<std::string>());
  py::array l = labels.cast<py::array>();
  require_dtype(l, "labels", py::dtype::of<int64_t>());
  require_contiguous(l, "labels");
  require_shape(l, "labels", {boxes.shape(0)});
  return static_cast<const int64_t*>(l.data());
}

py::array index_array(const std::vector<int64_t>& keep) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(keep.size()));
  std::copy(keep.begin(), keep.end(), out.mutable_data());
  return out;
}

py::array iou_matrix(const py::array& a, const py::array& b, const std::string& kind) {
  BoxIoU k = parse_kind(kind);
  DType dt = box_set(a, "boxes1");
  box_set(b, "boxes2");
  require_same_dtype(a, "boxes1", b, "boxes2");
  const int64_t n = a.shape(0), m = b.shape(0);
  py::array out = new_array(a, {n, m});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* ap = cptr<T>(a);
    const T* bp = cptr<T>(b);
    T* op = mptr<T>(out);
    py::gil_scoped_release nogil;
    cpu::box_iou_forward<T>(k, ap, n, bp, m, op);
  });
  return out;
}

void check_pairs(const py::array& a, const py::array& b) {
  box_set(a, "boxes1");
  box_set(b, "boxes2");
  require_same_dtype(a, "boxes1", b, "boxes2");
  require_shape(b, "boxes2", shape_of(a));
}

py::array iou_pairs(const py::array& a, const py::array& b, const std::string& kind) {
  BoxIoU k = parse_kind(kind);
  check_pairs(a, b);
  const int64_t n = a.shape(0);
  py::array out = new_array(a, {n});
  dispatch_float(float_dtype(a, "boxes1"), [&](auto tag) {
    using T = decltype(tag);
    const T* ap = cptr<T>(a);
    const T* bp = cptr<T>(b);
    T* op = mptr<T>(out);
    py::gil_scoped_release nogil;
    cpu::box_iou_pairs_forward<T>(k, ap, bp, n, op);
  });
  return out;
}

py::tuple iou_pairs_grad(const py::array& gy, const py::array& a, const py::array& b, const std::string& kind) {
  BoxIoU k = parse_kind(kind);
  check_pairs(a, b);
  input(gy, "grad_output");
  require_same_dtype(a, "boxes1", gy, "grad_output");
  const int64_t n = a.shape(0);
  require_shape(gy, "grad_output", {n});
  py::array ga = new_array(a, {n, 4}), gb = new_array(a, {n, 4});
  dispatch_float(float_dtype(a, "boxes1"), [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    const T* ap = cptr<T>(a);
    const T* bp = cptr<T>(b);
    T* gap = mptr<T>(ga);
    T* gbp = mptr<T>(gb);
    py::gil_scoped_release nogil;
    cpu::box_iou_pairs_backward<T>(k, gp, ap, bp, n, gap, gbp);
  });
  return py::make_tuple(ga, gb);
}

py::array nms_fwd(const py::array& boxes, const py::array& scores, double iou_threshold, double score_threshold,
                  const py::object& labels) {
  DType dt = box_set(boxes, "boxes");
  const int64_t* lp = check_scores_labels(boxes, scores, labels);
  require_finite(iou_threshold, "iou_threshold");
  CNNFAST_CHECK(!std::isnan(score_threshold), ValueError, "score_threshold: expected a number, got nan");
  const int64_t n = boxes.shape(0);
  std::vector<int64_t> keep;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* bp = cptr<T>(boxes);
    const T* sp = cptr<T>(scores);
    py::gil_scoped_release nogil;
    keep = cpu::nms<T>(bp, sp, lp, n, iou_threshold, score_threshold);
  });
  return index_array(keep);
}

py::tuple soft_nms_fwd(const py::array& boxes, const py::array& scores, const std::string& method, double sigma,
                       double iou_threshold, double score_threshold, const py::object& labels) {
  DType dt = box_set(boxes, "boxes");
  const int64_t* lp = check_scores_labels(boxes, scores, labels);
  CNNFAST_CHECK(method == "linear" || method == "gaussian", ValueError,
                "method: expected 'linear' or 'gaussian', got '", method, "'");
  CNNFAST_CHECK(std::isfinite(sigma) && sigma > 0, ValueError, "sigma: expected a finite number > 0, got ", sigma);
  require_finite(iou_threshold, "iou_threshold");
  CNNFAST_CHECK(!std::isnan(score_threshold), ValueError, "score_threshold: expected a number, got nan");
  const int64_t n = boxes.shape(0);
  py::array new_scores = new_array(scores, {n});
  std::vector<int64_t> keep;
  const bool gaussian = method == "gaussian";
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* bp = cptr<T>(boxes);
    const T* sp = cptr<T>(scores);
    T* np_ = mptr<T>(new_scores);
    py::gil_scoped_release nogil;
    keep = cpu::soft_nms<T>(bp, sp, lp, n, gaussian, sigma, iou_threshold, score_threshold, np_);
  });
  return py::make_tuple(index_array(keep), new_scores);
}

}  // namespace

void bind_box(py::module_& m) {
  const double no_threshold = -std::numeric_limits<double>::infinity();
  m.def("box_iou_forward", &iou_matrix, py::arg("boxes1"), py::arg("boxes2"), py::arg("kind") = "iou",
        "Pairwise IoU-type matrix. boxes1: (N, 4), boxes2: (M, 4), corners (x1, y1, x2, y2), same float dtype; "
        "kind: 'iou' | 'giou' | 'diou' | 'ciou'. Returns (N, M).");
  m.def("box_iou_pairs_forward", &iou_pairs, py::arg("boxes1"), py::arg("boxes2"), py::arg("kind") = "iou",
        "IoU-type value of matched pairs. boxes1, boxes2: (N, 4). Returns (N,).");
  m.def("box_iou_pairs_backward", &iou_pairs_grad, py::arg("grad_output"), py::arg("boxes1"), py::arg("boxes2"),
        py::arg("kind") = "iou",
        "Gradient of box_iou_pairs_forward. grad_output: (N,). Returns (grad_boxes1, grad_boxes2), each (N, 4).");
  m.def("nms_forward", &nms_fwd, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold") = 0.5,
        py::arg("score_threshold") = no_threshold, py::kw_only(), py::arg("labels") = py::none(),
        "Greedy non-max suppression. boxes: (N, 4), scores: (N,), labels: (N,) int64 or None (per-class when "
        "given). Drops scores < score_threshold, then suppresses boxes with IoU >= iou_threshold against a kept "
        "box (of the same label). Stable on ties: the lower index wins. Returns kept indices (K,) int64, by "
        "decreasing score.");
  m.def("soft_nms_forward", &soft_nms_fwd, py::arg("boxes"), py::arg("scores"), py::arg("method") = "gaussian",
        py::arg("sigma") = 0.5, py::arg("iou_threshold") = 0.3, py::arg("score_threshold") = 0.001, py::kw_only(),
        py::arg("labels") = py::none(),
        "Soft-NMS. method: 'linear' (s *= 1 - iou when iou >= iou_threshold) or 'gaussian' "
        "(s *= exp(-iou^2 / sigma)); boxes falling below score_threshold are dropped. Returns (kept indices "
        "(K,) int64 in selection order, final scores (N,)).");
}

}  // namespace cnnfast::bind
