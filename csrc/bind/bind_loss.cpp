// Bindings for the loss family (csrc/cpu/loss.h): argument checks (shapes,
// dtypes, reduction names, class-index targets in range), the 'mean' division,
// and the GIL release. Forward functions return the loss ('none': per element or
// per sample; 'mean'/'sum': a 0-d array of the input's dtype). Backward functions
// take grad_output of the loss's shape and return the input gradient(s).
#include <cmath>
#include <cstring>

#include "bind/array.h"
#include "bind/families.h"
#include "bind/loss_params.h"
#include "cpu/loss.h"

namespace cnnfast::bind {
namespace {

using cpu::Pointwise;

enum class Red { None, Mean, Sum };

Red parse_reduction(const std::string& r) {
  if (r == "none") return Red::None;
  if (r == "mean") return Red::Mean;
  if (r == "sum") return Red::Sum;
  throw ValueError(cat("reduction: expected 'none', 'mean' or 'sum', got '", r, "'"));
}

// The loss array: elem for 'none', else a 0-d array holding sum (/ denom for 'mean').
py::array finish(Red red, const py::array& like, py::array elem, double sum, double denom) {
  if (red == Red::None) return elem;
  py::array out = new_array(like, {});
  const double v = red == Red::Mean ? sum / denom : sum;
  if (like.dtype().is(py::dtype::of<float>()))
    *static_cast<float*>(out.mutable_data()) = static_cast<float>(v);
  else
    *static_cast<double*>(out.mutable_data()) = v;
  return out;
}

// The upstream gradient: per element for 'none' (shape checked), else one value
// divided by the 'mean' denominator.
struct Grad {
  py::array arr;
  bool per_elem = false;
  double scalar = 0;
};

Grad grad_of(const py::array& gy, const py::array& like, Red red, const std::vector<int64_t>& elem_shape,
             double denom) {
  input(gy, "grad_output");
  require_same_dtype(like, "input", gy, "grad_output");
  Grad g;
  g.arr = gy;
  if (red == Red::None) {
    require_shape(gy, "grad_output", elem_shape);
    g.per_elem = true;
    return g;
  }
  CNNFAST_CHECK(gy.size() == 1, ValueError, "grad_output: expected one value for reduction '",
                red == Red::Mean ? "mean" : "sum", "', got shape ", shape_str(shape_of(gy)));
  g.scalar = like.dtype().is(py::dtype::of<float>()) ? double(*static_cast<const float*>(gy.data()))
                                                     : *static_cast<const double*>(gy.data());
  if (red == Red::Mean) g.scalar /= denom;
  return g;
}

template <class T>
const T* gptr(const Grad& g) {
  return g.per_elem ? cptr<T>(g.arr) : nullptr;
}

void check_pair(const py::array& x, const py::array& t) {
  input(x, "input");
  input(t, "target");
  require_same_dtype(x, "input", t, "target");
  require_nonempty(x, "input");
  require_shape(t, "target", shape_of(x));
}

// ---- pointwise regression losses ----------------------------------------------------

py::array pointwise_fwd(Pointwise kind, const py::array& x, const py::array& t, const std::string& reduction,
                        double param) {
  Red red = parse_reduction(reduction);
  check_pair(x, t);
  DType dt = float_dtype(x, "input");
  py::array elem = red == Red::None ? new_array(x, shape_of(x)) : py::array();
  double sum = 0;
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T *xp = cptr<T>(x), *tp = cptr<T>(t);
    T* ep = red == Red::None ? mptr<T>(elem) : nullptr;
    py::gil_scoped_release nogil;
    sum = cpu::pointwise_loss_forward<T>(kind, xp, tp, ep, n, param);
  });
  return finish(red, x, elem, sum, double(n));
}

py::array pointwise_bwd(Pointwise kind, const py::array& gy, const py::array& x, const py::array& t,
                        const std::string& reduction, double param) {
  Red red = parse_reduction(reduction);
  check_pair(x, t);
  DType dt = float_dtype(x, "input");
  Grad g = grad_of(gy, x, red, shape_of(x), double(x.size()));
  py::array gx = new_array(x, shape_of(x));
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T *xp = cptr<T>(x), *tp = cptr<T>(t), *gp = gptr<T>(g);
    T* out = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::pointwise_loss_backward<T>(kind, gp, g.scalar, xp, tp, out, n, param);
  });
  return gx;
}

// ---- class-index targets ------------------------------------------------------------

struct NCS {
  int64_t N = 1, C = 1, S = 1;
};

NCS class_layout(const py::array& x) {
  require_ndim(x, "input", 2, 32);
  require_nonempty(x, "input");
  NCS d;
  d.N = x.shape(0);
  d.C = x.shape(1);
  for (int i = 2; i < x.ndim(); ++i) d.S *= x.shape(i);
  return d;
}

std::vector<int64_t> sample_shape(const py::array& x) {
  std::vector<int64_t> s = shape_of(x);
  s.erase(s.begin() + 1);
  return s;
}

// target: int64 of input's shape without the class dim, values in [0, C) or ignore_index.
void check_index_target(const py::array& target, const py::array& x, int64_t C, int64_t ignore_index,
                        bool allow_ignore) {
  require_dtype(target, "target", py::dtype::of<int64_t>());
  require_contiguous(target, "target");
  require_shape(target, "target", sample_shape(x));
  const int64_t* t = cptr<int64_t>(target);
  for (int64_t i = 0; i < target.size(); ++i) {
    if (allow_ignore && t[i] == ignore_index) continue;
    CNNFAST_CHECK(t[i] >= 0 && t[i] < C, ValueError, "target: expected class indices in [0, ", C, ")",
                  allow_ignore ? cat(" or ignore_index=", ignore_index) : std::string(), ", got ", t[i],
                  " at flat position ", i);
  }
}

template <class T>
const T* class_weight(const py::object& o, const py::array& x, int64_t C) {
  if (o.is_none()) return nullptr;
  CNNFAST_CHECK(py::isinstance<py::array>(o), TypeError, "weight: expected a NumPy array or None, got ",
                py::str(py::type::of(o)).cast<std::string>());
  py::array w = o.cast<py::array>();
  input(w, "weight");
  require_same_dtype(x, "input", w, "weight");
  require_shape(w, "weight", {C});
  return cptr<T>(w);
}

// The 'mean' divisor of index-target losses: the summed weight of the kept targets.
template <class T>
double index_denom(const py::array& target, const T* w, int64_t ignore_index) {
  const int64_t* t = cptr<int64_t>(target);
  double d = 0;
  for (int64_t i = 0; i < target.size(); ++i)
    if (t[i] != ignore_index) d += w ? double(w[t[i]]) : 1.0;
  return d;
}

void check_smoothing(double ls) {
  CNNFAST_CHECK(ls >= 0.0 && ls <= 1.0, ValueError, "label_smoothing: expected a value in [0, 1], got ", ls);
}

bool is_prob_target(const py::array& target) {
  return target.dtype().is(py::dtype::of<float>()) || target.dtype().is(py::dtype::of<double>());
}

py::tuple ce_fwd(const py::array& x, const py::array& target, const py::object& weight, int64_t ignore_index,
                 const std::string& reduction, double ls) {
  Red red = parse_reduction(reduction);
  DType dt = input(x, "input");
  NCS d = class_layout(x);
  check_smoothing(ls);
  const bool prob = is_prob_target(target);
  if (prob) {
    check_pair(x, target);
  } else {
    check_index_target(target, x, d.C, ignore_index, true);
  }
  py::array elem = red == Red::None ? new_array(x, sample_shape(x)) : py::array();
  py::array lse = new_array(x, sample_shape(x));
  double sum = 0, denom = double(d.N * d.S);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, d.C);
    const T* xp = cptr<T>(x);
    T *ep = red == Red::None ? mptr<T>(elem) : nullptr, *lp = mptr<T>(lse);
    if (prob) {
      const T* tp = cptr<T>(target);
      py::gil_scoped_release nogil;
      sum = cpu::cross_entropy_prob_forward<T>(xp, tp, w, ep, lp, d.N, d.C, d.S, ls);
    } else {
      const int64_t* tp = cptr<int64_t>(target);
      py::gil_scoped_release nogil;
      sum = cpu::cross_entropy_forward<T>(xp, tp, w, ep, lp, d.N, d.C, d.S, ignore_index, ls, &denom);
    }
  });
  return py::make_tuple(finish(red, x, elem, sum, denom), lse);
}

py::array ce_bwd(const py::array& gy, const py::array& x, const py::array& target, const py::array& lse,
                 const py::object& weight, int64_t ignore_index, const std::string& reduction, double ls) {
  Red red = parse_reduction(reduction);
  DType dt = input(x, "input");
  NCS d = class_layout(x);
  check_smoothing(ls);
  const bool prob = is_prob_target(target);
  if (prob) {
    check_pair(x, target);
  } else {
    check_index_target(target, x, d.C, ignore_index, true);
  }
  input(lse, "lse");
  require_same_dtype(x, "input", lse, "lse");
  require_shape(lse, "lse", sample_shape(x));
  py::array gx = new_array(x, shape_of(x));
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, d.C);
    const double denom = prob ? double(d.N * d.S) : index_denom<T>(target, w, ignore_index);
    Grad g = grad_of(gy, x, red, sample_shape(x), denom);
    const T *xp = cptr<T>(x), *lp = cptr<T>(lse), *gp = gptr<T>(g);
    T* out = mptr<T>(gx);
    if (prob) {
      const T* tp = cptr<T>(target);
      py::gil_scoped_release nogil;
      cpu::cross_entropy_prob_backward<T>(gp, g.scalar, xp, tp, w, lp, out, d.N, d.C, d.S, ls);
    } else {
      const int64_t* tp = cptr<int64_t>(target);
      py::gil_scoped_release nogil;
      cpu::cross_entropy_backward<T>(gp, g.scalar, xp, tp, w, lp, out, d.N, d.C, d.S, ignore_index, ls);
    }
  });
  return gx;
}

py::array nll_fwd(const py::array& x, const py::array& target, const py::object& weight, int64_t ignore_index,
                  const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DType dt = input(x, "input");
  NCS d = class_layout(x);
  check_index_target(target, x, d.C, ignore_index, true);
  py::array elem = red == Red::None ? new_array(x, sample_shape(x)) : py::array();
  double sum = 0, denom = 0;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, d.C);
    const T* xp = cptr<T>(x);
    const int64_t* tp = cptr<int64_t>(target);
    T* ep = red == Red::None ? mptr<T>(elem) : nullptr;
    py::gil_scoped_release nogil;
    sum = cpu::nll_loss_forward<T>(xp, tp, w, ep, d.N, d.C, d.S, ignore_index, &denom);
  });
  return finish(red, x, elem, sum, denom);
}

py::array nll_bwd(const py::array& gy, const py::array& x, const py::array& target, const py::object& weight,
                  int64_t ignore_index, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DType dt = input(x, "input");
  NCS d = class_layout(x);
  check_index_target(target, x, d.C, ignore_index, true);
  py::array gx = new_array(x, shape_of(x));
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, d.C);
    Grad g = grad_of(gy, x, red, sample_shape(x), index_denom<T>(target, w, ignore_index));
    const int64_t* tp = cptr<int64_t>(target);
    const T* gp = gptr<T>(g);
    T* out = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::nll_loss_backward<T>(gp, g.scalar, tp, w, out, d.N, d.C, d.S, ignore_index);
  });
  return gx;
}

// ---- binary cross-entropy --------------------------------------------------------

// A weight that repeats along the flattened input: after dropping leading 1s its
// shape must equal input's trailing dims (the Python layer broadcasts others).
template <class T>
const T* periodic_weight(const py::object& o, const char* name, const py::array& x, int64_t* len) {
  *len = 1;
  if (o.is_none()) return nullptr;
  CNNFAST_CHECK(py::isinstance<py::array>(o), TypeError, name, ": expected a NumPy array or None, got ",
                py::str(py::type::of(o)).cast<std::string>());
  py::array w = o.cast<py::array>();
  input(w, name);
  require_same_dtype(x, "input", w, name);
  std::vector<int64_t> s = shape_of(w);
  while (!s.empty() && s.front() == 1) s.erase(s.begin());
  std::vector<int64_t> xs = shape_of(x);
  const bool ok = s.size() <= xs.size() && std::equal(s.begin(), s.end(), xs.end() - s.size());
  CNNFAST_CHECK(ok, ValueError, name, ": expected a shape equal to trailing dims of input ", shape_str(xs),
                " (after leading 1s), got ", shape_str(shape_of(w)));
  *len = w.size();
  return cptr<T>(w);
}

void check_probabilities(const py::array& x) {
  auto in_range = [&](auto tag) {
    using T = decltype(tag);
    const T* p = cptr<T>(x);
    for (int64_t i = 0; i < x.size(); ++i)
      CNNFAST_CHECK(p[i] >= T(0) && p[i] <= T(1), ValueError,
                    "input: all elements of input should be between 0 and 1, got ", p[i], " at flat position ", i);
  };
  dispatch_float(float_dtype(x, "input"), in_range);
}

py::array bce_fwd(const py::array& x, const py::array& t, const py::object& weight, const py::object& pos_weight,
                  const std::string& reduction, bool logits) {
  Red red = parse_reduction(reduction);
  check_pair(x, t);
  DType dt = float_dtype(x, "input");
  if (!logits) check_probabilities(x);
  py::array elem = red == Red::None ? new_array(x, shape_of(x)) : py::array();
  double sum = 0;
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    int64_t wn, pn;
    const T* w = periodic_weight<T>(weight, "weight", x, &wn);
    const T* pw = periodic_weight<T>(pos_weight, "pos_weight", x, &pn);
    const T *xp = cptr<T>(x), *tp = cptr<T>(t);
    T* ep = red == Red::None ? mptr<T>(elem) : nullptr;
    py::gil_scoped_release nogil;
    sum = logits ? cpu::bce_logits_forward<T>(xp, tp, w, wn, pw, pn, ep, n) : cpu::bce_forward<T>(xp, tp, w, wn, ep, n);
  });
  return finish(red, x, elem, sum, double(n));
}

py::array bce_bwd(const py::array& gy, const py::array& x, const py::array& t, const py::object& weight,
                  const py::object& pos_weight, const std::string& reduction, bool logits) {
  Red red = parse_reduction(reduction);
  check_pair(x, t);
  DType dt = float_dtype(x, "input");
  Grad g = grad_of(gy, x, red, shape_of(x), double(x.size()));
  py::array gx = new_array(x, shape_of(x));
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    int64_t wn, pn;
    const T* w = periodic_weight<T>(weight, "weight", x, &wn);
    const T* pw = periodic_weight<T>(pos_weight, "pos_weight", x, &pn);
    const T *xp = cptr<T>(x), *tp = cptr<T>(t), *gp = gptr<T>(g);
    T* out = mptr<T>(gx);
    py::gil_scoped_release nogil;
    if (logits)
      cpu::bce_logits_backward<T>(gp, g.scalar, xp, tp, w, wn, pw, pn, out, n);
    else
      cpu::bce_backward<T>(gp, g.scalar, xp, tp, w, wn, out, n);
  });
  return gx;
}

// ---- multi-margin -------------------------------------------------------------------

void check_margin_args(const py::array& x, const py::array& target, int p, int64_t* N, int64_t* C) {
  input(x, "input");
  require_ndim(x, "input", 2, 2);
  require_nonempty(x, "input");
  CNNFAST_CHECK(p == 1 || p == 2, ValueError, "p: only p == 1 and p == 2 supported, got ", p);
  *N = x.shape(0);
  *C = x.shape(1);
  check_index_target(target, x, *C, 0, false);
}

py::array mm_fwd(const py::array& x, const py::array& target, int p, double margin, const py::object& weight,
                 const std::string& reduction) {
  Red red = parse_reduction(reduction);
  int64_t N, C;
  check_margin_args(x, target, p, &N, &C);
  py::array elem = red == Red::None ? new_array(x, {N}) : py::array();
  double sum = 0;
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, C);
    const T* xp = cptr<T>(x);
    const int64_t* tp = cptr<int64_t>(target);
    T* ep = red == Red::None ? mptr<T>(elem) : nullptr;
    py::gil_scoped_release nogil;
    sum = cpu::multi_margin_forward<T>(xp, tp, w, ep, N, C, p, margin);
  });
  return finish(red, x, elem, sum, double(N));
}

py::array mm_bwd(const py::array& gy, const py::array& x, const py::array& target, int p, double margin,
                 const py::object& weight, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  int64_t N, C;
  check_margin_args(x, target, p, &N, &C);
  Grad g = grad_of(gy, x, red, {N}, double(N));
  py::array gx = new_array(x, shape_of(x));
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* w = class_weight<T>(weight, x, C);
    const T *xp = cptr<T>(x), *gp = gptr<T>(g);
    const int64_t* tp = cptr<int64_t>(target);
    T* out = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::multi_margin_backward<T>(gp, g.scalar, xp, tp, w, out, N, C, p, margin);
  });
  return gx;
}

// ---- triplet margin -------------------------------------------------------------------

void check_triplet(const py::array& a, const py::array& p, const py::array& n, double norm_p) {
  input(a, "anchor");
  require_ndim(a, "anchor", 2, 2);
  require_nonempty(a, "anchor");
  for (auto [arr, name] : {std::pair{&p, "positive"}, std::pair{&n, "negative"}}) {
    input(*arr, name);
    require_same_dtype(a, "anchor", *arr, name);
    require_shape(*arr, name, shape_of(a));
  }
  CNNFAST_CHECK(norm_p > 0 && std::isfinite(norm_p), ValueError, "p: expected a finite norm degree > 0, got ", norm_p);
}

py::array tm_fwd(const py::array& a, const py::array& p, const py::array& n, double margin, double norm_p, double eps,
                 bool swap, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  check_triplet(a, p, n, norm_p);
  const int64_t N = a.shape(0), D = a.shape(1);
  py::array elem = red == Red::None ? new_array(a, {N}) : py::array();
  double sum = 0;
  dispatch_float(float_dtype(a, "anchor"), [&](auto tag) {
    using T = decltype(tag);
    const T *ap = cptr<T>(a), *pp = cptr<T>(p), *np_ = cptr<T>(n);
    T* ep = red == Red::None ? mptr<T>(elem) : nullptr;
    py::gil_scoped_release nogil;
    sum = cpu::triplet_margin_forward<T>(ap, pp, np_, ep, N, D, margin, norm_p, eps, swap);
  });
  return finish(red, a, elem, sum, double(N));
}

py::tuple tm_bwd(const py::array& gy, const py::array& a, const py::array& p, const py::array& n, double margin,
                 double norm_p, double eps, bool swap, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  check_triplet(a, p, n, norm_p);
  const int64_t N = a.shape(0), D = a.shape(1);
  Grad g = grad_of(gy, a, red, {N}, double(N));
  py::array ga = new_array(a, shape_of(a)), gp = new_array(a, shape_of(a)), gn = new_array(a, shape_of(a));
  dispatch_float(float_dtype(a, "anchor"), [&](auto tag) {
    using T = decltype(tag);
    const T *ap = cptr<T>(a), *pp = cptr<T>(p), *np_ = cptr<T>(n), *gyp = gptr<T>(g);
    T *gap = mptr<T>(ga), *gpp = mptr<T>(gp), *gnp = mptr<T>(gn);
    py::gil_scoped_release nogil;
    cpu::triplet_margin_backward<T>(gyp, g.scalar, ap, pp, np_, gap, gpp, gnp, N, D, margin, norm_p, eps, swap);
  });
  return py::make_tuple(ga, gp, gn);
}

}  // namespace

void bind_loss(py::module_& m) {
  auto none = py::none();
  struct PW {
    const char* name;
    Pointwise kind;
    const char* param;
  };
  for (PW pw : {PW{"l1_loss", Pointwise::L1, nullptr}, PW{"mse_loss", Pointwise::MSE, nullptr},
                PW{"huber_loss", Pointwise::Huber, "delta"}, PW{"smooth_l1_loss", Pointwise::SmoothL1, "beta"}}) {
    Pointwise kind = pw.kind;
    std::string name = pw.name;
    const char* pname = pw.param ? pw.param : "param";
    m.def((name + "_forward").c_str(),
          [kind](const py::array& x, const py::array& t, const std::string& red, double param) {
            check_pointwise_param(kind, param);
            return pointwise_fwd(kind, x, t, red, param);
          },
          py::arg("input"), py::arg("target"), py::arg("reduction") = "mean", py::arg(pname) = 1.0,
          (name + ": input, target of one shape. Returns the loss ('none': input's shape, else 0-d).").c_str());
    m.def((name + "_backward").c_str(),
          [kind](const py::array& gy, const py::array& x, const py::array& t, const std::string& red, double param) {
            return pointwise_bwd(kind, gy, x, t, red, param);
          },
          py::arg("grad_output"), py::arg("input"), py::arg("target"), py::arg("reduction") = "mean",
          py::arg(pname) = 1.0, "grad_input; the target's gradient is its negative.");
  }
  m.def("cross_entropy_forward", &ce_fwd, py::arg("input"), py::arg("target"), py::arg("weight") = none,
        py::arg("ignore_index") = -100, py::arg("reduction") = "mean", py::arg("label_smoothing") = 0.0,
        "Cross-entropy from logits. input: (N, C, *); target: int64 (N, *) class indices, or class probabilities "
        "of input's shape and dtype. Returns (loss, lse) with lse: (N, *) the log-sum-exp per sample.");
  m.def("cross_entropy_backward", &ce_bwd, py::arg("grad_output"), py::arg("input"), py::arg("target"),
        py::arg("lse"), py::arg("weight") = none, py::arg("ignore_index") = -100, py::arg("reduction") = "mean",
        py::arg("label_smoothing") = 0.0, "grad_input of cross_entropy.");
  m.def("nll_loss_forward", &nll_fwd, py::arg("input"), py::arg("target"), py::arg("weight") = none,
        py::arg("ignore_index") = -100, py::arg("reduction") = "mean",
        "NLL on log-probabilities. input: (N, C, *); target: int64 (N, *).");
  m.def("nll_loss_backward", &nll_bwd, py::arg("grad_output"), py::arg("input"), py::arg("target"),
        py::arg("weight") = none, py::arg("ignore_index") = -100, py::arg("reduction") = "mean");
  m.def("binary_cross_entropy_with_logits_forward",
        [](const py::array& x, const py::array& t, const py::object& w, const py::object& pw, const std::string& r) {
          return bce_fwd(x, t, w, pw, r, true);
        },
        py::arg("input"), py::arg("target"), py::arg("weight") = none, py::arg("pos_weight") = none,
        py::arg("reduction") = "mean",
        "BCE from logits (softplus form). weight / pos_weight: shapes equal to trailing dims of input.");
  m.def("binary_cross_entropy_with_logits_backward",
        [](const py::array& gy, const py::array& x, const py::array& t, const py::object& w, const py::object& pw,
           const std::string& r) { return bce_bwd(gy, x, t, w, pw, r, true); },
        py::arg("grad_output"), py::arg("input"), py::arg("target"), py::arg("weight") = none,
        py::arg("pos_weight") = none, py::arg("reduction") = "mean");
  m.def("binary_cross_entropy_forward",
        [](const py::array& x, const py::array& t, const py::object& w, const std::string& r) {
          return bce_fwd(x, t, w, py::none(), r, false);
        },
        py::arg("input"), py::arg("target"), py::arg("weight") = none, py::arg("reduction") = "mean",
        "BCE on probabilities in [0, 1] (ValueError otherwise); logs clamped at -100.");
  m.def("binary_cross_entropy_backward",
        [](const py::array& gy, const py::array& x, const py::array& t, const py::object& w, const std::string& r) {
          return bce_bwd(gy, x, t, w, py::none(), r, false);
        },
        py::arg("grad_output"), py::arg("input"), py::arg("target"), py::arg("weight") = none,
        py::arg("reduction") = "mean");
  m.def("multi_margin_loss_forward", &mm_fwd, py::arg("input"), py::arg("target"), py::arg("p") = 1,
        py::arg("margin") = 1.0, py::arg("weight") = none, py::arg("reduction") = "mean",
        "Multi-class hinge. input: (N, C); target: int64 (N,).");
  m.def("multi_margin_loss_backward", &mm_bwd, py::arg("grad_output"), py::arg("input"), py::arg("target"),
        py::arg("p") = 1, py::arg("margin") = 1.0, py::arg("weight") = none, py::arg("reduction") = "mean");
  m.def("triplet_margin_loss_forward", &tm_fwd, py::arg("anchor"), py::arg("positive"), py::arg("negative"),
        py::arg("margin") = 1.0, py::arg("p") = 2.0, py::arg("eps") = 1e-6, py::arg("swap") = false,
        py::arg("reduction") = "mean", "Triplet margin loss. anchor, positive, negative: (N, D).");
  m.def("triplet_margin_loss_backward", &tm_bwd, py::arg("grad_output"), py::arg("anchor"), py::arg("positive"),
        py::arg("negative"), py::arg("margin") = 1.0, py::arg("p") = 2.0, py::arg("eps") = 1e-6,
        py::arg("swap") = false, py::arg("reduction") = "mean",
        "Returns (grad_anchor, grad_positive, grad_negative).");
}

}  // namespace cnnfast::bind
