// CUDA bindings of the loss family into cnnfast._C.cuda, names and arguments as
// bind_loss.cpp: l1/mse/huber/smooth_l1, cross_entropy (class-index targets),
// nll_loss, binary_cross_entropy(_with_logits). Forward returns the loss as a
// CUDA array ('none': per element / per sample; 'mean'/'sum': 0-d), computed and
// kept on the device; backward takes grad_output as a CUDA array. Target range
// errors are found by the kernels and read back (one synchronisation).
// multi_margin_loss and triplet_margin_loss too. cross_entropy takes int64
// class indices or float class probabilities (input's shape and dtype), as on the CPU.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include <algorithm>
#include <climits>
#include <cmath>

#include "bind/device_array.h"
#include "bind/loss_params.h"
#include "cuda/allocator.h"
#include "cuda/loss.cuh"
#include "cuda/memory.h"

namespace cnnfast::bind {
namespace {

using cpu::Pointwise;
using Ints = std::vector<int64_t>;

enum class Red { None, Mean, Sum };

Red parse_reduction(const std::string& r) {
  if (r == "none") return Red::None;
  if (r == "mean") return Red::Mean;
  if (r == "sum") return Red::Sum;
  throw ValueError(cat("reduction: expected 'none', 'mean' or 'sum', got '", r, "'"));
}

// acc[0]: loss sum, acc[1]: 'mean' denominator, then the bad-position word. Freed
// while kernels that use it may still be queued: the caching allocator hands the
// block out again only to work queued later on the same library stream.
struct Scratch {
  void* p;
  Scratch() : p(cuda::device_malloc(3 * sizeof(double))) {
    cuda::memset_device(p, 0, 2 * sizeof(double));
    cuda::memset_device(bad(), 0xFF, sizeof(unsigned long long));
  }
  ~Scratch() { cuda::device_free(p); }
  double* acc() const { return static_cast<double*>(p); }
  unsigned long long* bad() const { return reinterpret_cast<unsigned long long*>(static_cast<double*>(p) + 2); }
  int64_t bad_position() const {
    unsigned long long v = 0;
    cuda::copy_to_host(&v, bad(), sizeof v);
    return v == ULLONG_MAX ? -1 : static_cast<int64_t>(v);
  }
};

// ignore_index == INT64_MIN: the loss has no ignore_index (multi_margin).
void throw_bad_target(const DeviceArray& target, int64_t pos, int64_t C, int64_t ignore_index) {
  int64_t v = 0;
  cuda::copy_to_host(&v, static_cast<const int64_t*>(target.data) + pos, sizeof v);
  throw ValueError(cat("target: expected class indices in [0, ", C, ")",
                       ignore_index == INT64_MIN ? std::string() : cat(" or ignore_index=", ignore_index), ", got ", v,
                       " at flat position ", pos));
}

void check_pair(const DeviceArray& x, const DeviceArray& t) {
  device_input(x, "input");
  device_float_dtype(t, "target");
  require_same_typestr(x, "input", t, "target");
  require_device_shape(t, "target", x.shape);
}

// 'none': elem itself; else a new 0-d array = acc[0] / denominator.
template <class T>
DeviceArray finish(Red red, const DeviceArray& elem, const Scratch& s, const std::string& typestr, bool device_denom,
                   double host_denom) {
  if (red == Red::None) return elem;
  DeviceArray out = empty_device({}, typestr);
  cuda::loss_finalize<T>(s.acc(), red == Red::Mean && device_denom ? s.acc() + 1 : nullptr,
                         red == Red::Mean ? host_denom : 1.0, dmptr<T>(out));
  return out;
}

cuda::LossGrad grad_of(const DeviceArray& gy, const DeviceArray& like, Red red, const Ints& elem_shape,
                       double host_denom, const double* dev_denom) {
  device_float_dtype(gy, "grad_output");
  require_same_typestr(like, "input", gy, "grad_output");
  cuda::LossGrad g;
  g.grad = gy.data;
  if (red == Red::None) {
    require_device_shape(gy, "grad_output", elem_shape);
    g.per_elem = true;
    return g;
  }
  CNNFAST_CHECK(gy.size() == 1, ValueError, "grad_output: expected one value for reduction '",
                red == Red::Mean ? "mean" : "sum", "', got shape ", shape_str(gy.shape));
  if (red == Red::Mean) {
    g.denom_host = host_denom;
    g.denom_dev = dev_denom;
  }
  return g;
}

DeviceArray pointwise_fwd(Pointwise kind, const py::object& xo, const py::object& to, const std::string& reduction,
                          double param) {
  Red red = parse_reduction(reduction);
  DeviceArray x = as_device_array(xo, "input"), t = as_device_array(to, "target");
  check_pair(x, t);
  DeviceArray elem;
  if (red == Red::None) elem = empty_device(x.shape, x.typestr);
  Scratch s;
  DeviceArray out;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::pointwise_loss_forward<T>(kind, dptr<T>(x), dptr<T>(t), red == Red::None ? dmptr<T>(elem) : nullptr,
                                    x.size(), param, s.acc());
    out = finish<T>(red, elem, s, x.typestr, false, double(x.size()));
  });
  return out;
}

DeviceArray pointwise_bwd(Pointwise kind, const py::object& go, const py::object& xo, const py::object& to,
                          const std::string& reduction, double param) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "input"),
              t = as_device_array(to, "target");
  check_pair(x, t);
  cuda::LossGrad g = grad_of(gy, x, red, x.shape, double(x.size()), nullptr);
  DeviceArray gx = empty_device(x.shape, x.typestr);
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::pointwise_loss_backward<T>(kind, g, dptr<T>(x), dptr<T>(t), dmptr<T>(gx), x.size(), param);
  });
  return gx;
}

struct NCS {
  int64_t N = 1, C = 1, S = 1;
};

NCS class_layout(const DeviceArray& x) {
  device_input(x, "input");
  require_device_ndim(x, "input", 2, 32);
  NCS d;
  d.N = x.shape[0];
  d.C = x.shape[1];
  for (size_t i = 2; i < x.shape.size(); ++i) d.S *= x.shape[i];
  return d;
}

Ints sample_shape(const DeviceArray& x) {
  Ints s = x.shape;
  s.erase(s.begin() + 1);
  return s;
}

DeviceArray index_target(const py::object& to, const DeviceArray& x) {
  DeviceArray t = as_device_array(to, "target");
  CNNFAST_CHECK(t.typestr == "<i8", TypeError, "target: expected int64 class indices, got typestr ", t.typestr);
  require_device_shape(t, "target", sample_shape(x));
  return t;
}

DeviceArray class_weight(const py::object& o, const DeviceArray& x, int64_t C) {
  if (o.is_none()) return DeviceArray{};
  DeviceArray w = as_device_array(o, "weight");
  require_same_typestr(x, "input", w, "weight");
  require_device_shape(w, "weight", {C});
  return w;
}

void check_smoothing(double ls) {
  CNNFAST_CHECK(ls >= 0.0 && ls <= 1.0, ValueError, "label_smoothing: expected a value in [0, 1], got ", ls);
}

py::tuple ce_fwd(const py::object& xo, const py::object& to, const py::object& weight, int64_t ignore_index,
                 const std::string& reduction, double ls) {
  Red red = parse_reduction(reduction);
  DeviceArray x = as_device_array(xo, "input");
  NCS d = class_layout(x);
  check_smoothing(ls);
  DeviceArray w = class_weight(weight, x, d.C);
  DeviceArray elem, lse = empty_device(sample_shape(x), x.typestr), out;
  if (red == Red::None) elem = empty_device(sample_shape(x), x.typestr);
  Scratch s;
  DeviceArray tp = as_device_array(to, "target");
  if (tp.typestr == x.typestr) {  // class probabilities: the 'mean' divisor is N*S
    require_device_shape(tp, "target", x.shape);
    dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
      using T = decltype(tag);
      py::gil_scoped_release nogil;
      cuda::cross_entropy_prob_forward<T>(dptr<T>(x), dptr<T>(tp), w.data ? dptr<T>(w) : nullptr,
                                          red == Red::None ? dmptr<T>(elem) : nullptr, dmptr<T>(lse), d.N, d.C, d.S,
                                          ls, s.acc());
      out = finish<T>(red, elem, s, x.typestr, false, double(d.N * d.S));
    });
    return py::make_tuple(out, lse);
  }
  DeviceArray t = index_target(to, x);
  int64_t bad = -1;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::cross_entropy_forward<T>(dptr<T>(x), dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr,
                                   red == Red::None ? dmptr<T>(elem) : nullptr, dmptr<T>(lse), d.N, d.C, d.S,
                                   ignore_index, ls, s.acc(), s.bad());
    bad = s.bad_position();
    if (bad < 0) out = finish<T>(red, elem, s, x.typestr, true, 0.0);
  });
  if (bad >= 0) throw_bad_target(t, bad, d.C, ignore_index);
  return py::make_tuple(out, lse);
}

// Checks the targets and leaves the 'mean' denominator in s.acc()[1].
template <class T>
void index_denominator(const DeviceArray& t, const DeviceArray& w, int64_t C, int64_t ignore_index, Scratch& s) {
  int64_t bad = -1;
  {
    py::gil_scoped_release nogil;
    cuda::index_target_denominator<T>(dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr, t.size(), C, ignore_index,
                                      s.acc(), s.bad());
    bad = s.bad_position();
  }
  if (bad >= 0) throw_bad_target(t, bad, C, ignore_index);
}

DeviceArray ce_bwd(const py::object& go, const py::object& xo, const py::object& to, const py::object& lseo,
                   const py::object& weight, int64_t ignore_index, const std::string& reduction, double ls) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "input");
  NCS d = class_layout(x);
  check_smoothing(ls);
  DeviceArray w = class_weight(weight, x, d.C), lse = as_device_array(lseo, "lse");
  require_same_typestr(x, "input", lse, "lse");
  require_device_shape(lse, "lse", sample_shape(x));
  DeviceArray gx = empty_device(x.shape, x.typestr);
  DeviceArray tp = as_device_array(to, "target");
  if (tp.typestr == x.typestr) {
    require_device_shape(tp, "target", x.shape);
    cuda::LossGrad g = grad_of(gy, x, red, sample_shape(x), double(d.N * d.S), nullptr);
    dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
      using T = decltype(tag);
      py::gil_scoped_release nogil;
      cuda::cross_entropy_prob_backward<T>(g, dptr<T>(x), dptr<T>(tp), w.data ? dptr<T>(w) : nullptr, dptr<T>(lse),
                                           dmptr<T>(gx), d.N, d.C, d.S, ls);
    });
    return gx;
  }
  DeviceArray t = index_target(to, x);
  Scratch s;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    index_denominator<T>(t, w, d.C, ignore_index, s);
    cuda::LossGrad g = grad_of(gy, x, red, sample_shape(x), 0.0, s.acc() + 1);
    py::gil_scoped_release nogil;
    cuda::cross_entropy_backward<T>(g, dptr<T>(x), dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr, dptr<T>(lse),
                                    dmptr<T>(gx), d.N, d.C, d.S, ignore_index, ls);
  });
  return gx;
}

DeviceArray nll_fwd(const py::object& xo, const py::object& to, const py::object& weight, int64_t ignore_index,
                    const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray x = as_device_array(xo, "input");
  NCS d = class_layout(x);
  DeviceArray t = index_target(to, x), w = class_weight(weight, x, d.C);
  DeviceArray elem, out;
  if (red == Red::None) elem = empty_device(sample_shape(x), x.typestr);
  Scratch s;
  int64_t bad = -1;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::nll_loss_forward<T>(dptr<T>(x), dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr,
                              red == Red::None ? dmptr<T>(elem) : nullptr, d.N, d.C, d.S, ignore_index, s.acc(),
                              s.bad());
    bad = s.bad_position();
    if (bad < 0) out = finish<T>(red, elem, s, x.typestr, true, 0.0);
  });
  if (bad >= 0) throw_bad_target(t, bad, d.C, ignore_index);
  return out;
}

DeviceArray nll_bwd(const py::object& go, const py::object& xo, const py::object& to, const py::object& weight,
                    int64_t ignore_index, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "input");
  NCS d = class_layout(x);
  DeviceArray t = index_target(to, x), w = class_weight(weight, x, d.C);
  DeviceArray gx = empty_device(x.shape, x.typestr);
  Scratch s;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    index_denominator<T>(t, w, d.C, ignore_index, s);
    cuda::LossGrad g = grad_of(gy, x, red, sample_shape(x), 0.0, s.acc() + 1);
    py::gil_scoped_release nogil;
    cuda::nll_loss_backward<T>(g, dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr, dmptr<T>(gx), d.N, d.C, d.S,
                               ignore_index);
  });
  return gx;
}

// A weight repeating along the flattened input: its shape (after leading 1s) equals input's trailing dims.
DeviceArray periodic_weight(const py::object& o, const char* name, const DeviceArray& x, int64_t* len) {
  *len = 1;
  if (o.is_none()) return DeviceArray{};
  DeviceArray w = as_device_array(o, name);
  require_same_typestr(x, "input", w, name);
  Ints s = w.shape;
  while (!s.empty() && s.front() == 1) s.erase(s.begin());
  const Ints& xs = x.shape;
  const bool ok = s.size() <= xs.size() && std::equal(s.begin(), s.end(), xs.end() - s.size());
  CNNFAST_CHECK(ok, ValueError, name, ": expected a shape equal to trailing dims of input ", shape_str(xs),
                " (after leading 1s), got ", shape_str(w.shape));
  *len = w.size();
  return w;
}

DeviceArray bce_fwd(const py::object& xo, const py::object& to, const py::object& weight, const py::object& pos_weight,
                    const std::string& reduction, bool logits) {
  Red red = parse_reduction(reduction);
  DeviceArray x = as_device_array(xo, "input"), t = as_device_array(to, "target");
  check_pair(x, t);
  int64_t wn = 1, pn = 1;
  DeviceArray w = periodic_weight(weight, "weight", x, &wn);
  DeviceArray pw = logits ? periodic_weight(pos_weight, "pos_weight", x, &pn) : DeviceArray{};
  DeviceArray elem, out;
  if (red == Red::None) elem = empty_device(x.shape, x.typestr);
  Scratch s;
  int64_t bad = -1;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::bce_forward<T>(logits, dptr<T>(x), dptr<T>(t), w.data ? dptr<T>(w) : nullptr, wn,
                         pw.data ? dptr<T>(pw) : nullptr, pn, red == Red::None ? dmptr<T>(elem) : nullptr, x.size(),
                         s.acc(), s.bad());
    if (!logits) bad = s.bad_position();
    if (bad < 0) out = finish<T>(red, elem, s, x.typestr, false, double(x.size()));
  });
  CNNFAST_CHECK(bad < 0, ValueError, "input: all elements of input should be between 0 and 1, got an element outside ",
                "at flat position ", bad);
  return out;
}

DeviceArray bce_bwd(const py::object& go, const py::object& xo, const py::object& to, const py::object& weight,
                    const py::object& pos_weight, const std::string& reduction, bool logits) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "input"),
              t = as_device_array(to, "target");
  check_pair(x, t);
  int64_t wn = 1, pn = 1;
  DeviceArray w = periodic_weight(weight, "weight", x, &wn);
  DeviceArray pw = logits ? periodic_weight(pos_weight, "pos_weight", x, &pn) : DeviceArray{};
  cuda::LossGrad g = grad_of(gy, x, red, x.shape, double(x.size()), nullptr);
  DeviceArray gx = empty_device(x.shape, x.typestr);
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::bce_backward<T>(logits, g, dptr<T>(x), dptr<T>(t), w.data ? dptr<T>(w) : nullptr, wn,
                          pw.data ? dptr<T>(pw) : nullptr, pn, dmptr<T>(gx), x.size());
  });
  return gx;
}

DeviceArray mm_fwd(const py::object& xo, const py::object& to, int p, double margin, const py::object& weight,
                   const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray x = as_device_array(xo, "input");
  device_input(x, "input");
  require_device_ndim(x, "input", 2, 2);
  CNNFAST_CHECK(p == 1 || p == 2, ValueError, "p: only p == 1 and p == 2 supported, got ", p);
  const int64_t N = x.shape[0], C = x.shape[1];
  DeviceArray t = index_target(to, x), w = class_weight(weight, x, C);
  DeviceArray elem, out;
  if (red == Red::None) elem = empty_device({N}, x.typestr);
  Scratch s;
  int64_t bad = -1;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::multi_margin_forward<T>(dptr<T>(x), dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr,
                                  red == Red::None ? dmptr<T>(elem) : nullptr, N, C, p, margin, s.acc(), s.bad());
    bad = s.bad_position();
    if (bad < 0) out = finish<T>(red, elem, s, x.typestr, false, double(N));
  });
  if (bad >= 0) throw_bad_target(t, bad, C, INT64_MIN);
  return out;
}

DeviceArray mm_bwd(const py::object& go, const py::object& xo, const py::object& to, int p, double margin,
                   const py::object& weight, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "input");
  device_input(x, "input");
  require_device_ndim(x, "input", 2, 2);
  CNNFAST_CHECK(p == 1 || p == 2, ValueError, "p: only p == 1 and p == 2 supported, got ", p);
  const int64_t N = x.shape[0], C = x.shape[1];
  DeviceArray t = index_target(to, x), w = class_weight(weight, x, C);
  cuda::LossGrad g = grad_of(gy, x, red, {N}, double(N), nullptr);
  DeviceArray gx = empty_device(x.shape, x.typestr);
  Scratch s;
  dispatch_float(device_float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    // The targets are checked as in the forward (ignore_index cannot match: every class is in range).
    index_denominator<T>(t, DeviceArray{}, C, INT64_MIN, s);
    py::gil_scoped_release nogil;
    cuda::multi_margin_backward<T>(g, dptr<T>(x), dptr<int64_t>(t), w.data ? dptr<T>(w) : nullptr, dmptr<T>(gx), N, C,
                                   p, margin);
  });
  return gx;
}

void check_triplet(const DeviceArray& a, const DeviceArray& p, const DeviceArray& n, double norm_p) {
  device_input(a, "anchor");
  require_device_ndim(a, "anchor", 2, 2);
  for (auto [arr, name] : {std::pair{&p, "positive"}, std::pair{&n, "negative"}}) {
    require_same_typestr(a, "anchor", *arr, name);
    require_device_shape(*arr, name, a.shape);
  }
  CNNFAST_CHECK(norm_p > 0 && std::isfinite(norm_p), ValueError, "p: expected a finite norm degree > 0, got ", norm_p);
}

DeviceArray tm_fwd(const py::object& ao, const py::object& po, const py::object& no, double margin, double norm_p,
                   double eps, bool swap, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray a = as_device_array(ao, "anchor"), p = as_device_array(po, "positive"), n = as_device_array(no, "negative");
  check_triplet(a, p, n, norm_p);
  const int64_t N = a.shape[0], D = a.shape[1];
  DeviceArray elem, out;
  if (red == Red::None) elem = empty_device({N}, a.typestr);
  Scratch s;
  dispatch_float(device_float_dtype(a, "anchor"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::triplet_margin_forward<T>(dptr<T>(a), dptr<T>(p), dptr<T>(n), red == Red::None ? dmptr<T>(elem) : nullptr,
                                    N, D, margin, norm_p, eps, swap, s.acc());
    out = finish<T>(red, elem, s, a.typestr, false, double(N));
  });
  return out;
}

py::tuple tm_bwd(const py::object& go, const py::object& ao, const py::object& po, const py::object& no,
                 double margin, double norm_p, double eps, bool swap, const std::string& reduction) {
  Red red = parse_reduction(reduction);
  DeviceArray gy = as_device_array(go, "grad_output"), a = as_device_array(ao, "anchor"),
              p = as_device_array(po, "positive"), n = as_device_array(no, "negative");
  check_triplet(a, p, n, norm_p);
  const int64_t N = a.shape[0], D = a.shape[1];
  cuda::LossGrad g = grad_of(gy, a, red, {N}, double(N), nullptr);
  DeviceArray ga = empty_device(a.shape, a.typestr), gp = empty_device(a.shape, a.typestr),
              gn = empty_device(a.shape, a.typestr);
  dispatch_float(device_float_dtype(a, "anchor"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::triplet_margin_backward<T>(g, dptr<T>(a), dptr<T>(p), dptr<T>(n), dmptr<T>(ga), dmptr<T>(gp), dmptr<T>(gn),
                                     N, D, margin, norm_p, eps, swap);
  });
  return py::make_tuple(ga, gp, gn);
}

}  // namespace

void bind_cuda_loss(py::module_& cu) {
  using py::arg;
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
    cu.def((name + "_forward").c_str(),
           [kind](const py::object& x, const py::object& t, const std::string& red, double param) {
             check_pointwise_param(kind, param);
             return pointwise_fwd(kind, x, t, red, param);
           },
           arg("input"), arg("target"), arg("reduction") = "mean", arg(pname) = 1.0);
    cu.def((name + "_backward").c_str(),
           [kind](const py::object& gy, const py::object& x, const py::object& t, const std::string& red,
                  double param) { return pointwise_bwd(kind, gy, x, t, red, param); },
           arg("grad_output"), arg("input"), arg("target"), arg("reduction") = "mean", arg(pname) = 1.0);
  }
  cu.def("cross_entropy_forward", &ce_fwd, arg("input"), arg("target"), arg("weight") = none,
         arg("ignore_index") = -100, arg("reduction") = "mean", arg("label_smoothing") = 0.0,
         "GPU cross-entropy from logits, int64 class-index or class-probability targets; returns (loss, lse).");
  cu.def("cross_entropy_backward", &ce_bwd, arg("grad_output"), arg("input"), arg("target"), arg("lse"),
         arg("weight") = none, arg("ignore_index") = -100, arg("reduction") = "mean", arg("label_smoothing") = 0.0);
  cu.def("nll_loss_forward", &nll_fwd, arg("input"), arg("target"), arg("weight") = none, arg("ignore_index") = -100,
         arg("reduction") = "mean");
  cu.def("nll_loss_backward", &nll_bwd, arg("grad_output"), arg("input"), arg("target"), arg("weight") = none,
         arg("ignore_index") = -100, arg("reduction") = "mean");
  cu.def("binary_cross_entropy_with_logits_forward",
         [](const py::object& x, const py::object& t, const py::object& w, const py::object& pw, const std::string& r) {
           return bce_fwd(x, t, w, pw, r, true);
         },
         arg("input"), arg("target"), arg("weight") = none, arg("pos_weight") = none, arg("reduction") = "mean");
  cu.def("binary_cross_entropy_with_logits_backward",
         [](const py::object& gy, const py::object& x, const py::object& t, const py::object& w, const py::object& pw,
            const std::string& r) { return bce_bwd(gy, x, t, w, pw, r, true); },
         arg("grad_output"), arg("input"), arg("target"), arg("weight") = none, arg("pos_weight") = none,
         arg("reduction") = "mean");
  cu.def("binary_cross_entropy_forward",
         [](const py::object& x, const py::object& t, const py::object& w, const std::string& r) {
           return bce_fwd(x, t, w, py::none(), r, false);
         },
         arg("input"), arg("target"), arg("weight") = none, arg("reduction") = "mean");
  cu.def("binary_cross_entropy_backward",
         [](const py::object& gy, const py::object& x, const py::object& t, const py::object& w, const std::string& r) {
           return bce_bwd(gy, x, t, w, py::none(), r, false);
         },
         arg("grad_output"), arg("input"), arg("target"), arg("weight") = none, arg("reduction") = "mean");
  cu.def("multi_margin_loss_forward", &mm_fwd, arg("input"), arg("target"), arg("p") = 1, arg("margin") = 1.0,
         arg("weight") = none, arg("reduction") = "mean");
  cu.def("multi_margin_loss_backward", &mm_bwd, arg("grad_output"), arg("input"), arg("target"), arg("p") = 1,
         arg("margin") = 1.0, arg("weight") = none, arg("reduction") = "mean");
  cu.def("triplet_margin_loss_forward", &tm_fwd, arg("anchor"), arg("positive"), arg("negative"),
         arg("margin") = 1.0, arg("p") = 2.0, arg("eps") = 1e-6, arg("swap") = false, arg("reduction") = "mean");
  cu.def("triplet_margin_loss_backward", &tm_bwd, arg("grad_output"), arg("anchor"), arg("positive"),
         arg("negative"), arg("margin") = 1.0, arg("p") = 2.0, arg("eps") = 1e-6, arg("swap") = false,
         arg("reduction") = "mean");
}

}  // namespace cnnfast::bind
#endif
