// Bindings for the normalisation family, for both devices: argument checks,
// output allocation, GIL release. Parameter gradients come back as fresh arrays
// (zero-filled, then accumulated into by the kernel); the autograd layer adds
// them to .grad. The first array's device picks host:: (csrc/cpu/norm.*) or dev::
// (csrc/cuda/norm.*, CUDA builds; running statistics updated in place on the
// device); registered in cnnfast._C and cnnfast._C.cuda.
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "bind/array.h"
#include "bind/device_dispatch.h"
#include "bind/families.h"
#include "cpu/norm.h"

#if CNNFAST_WITH_CUDA
#include "cuda/memory.h"
#include "cuda/norm.cuh"
#endif

namespace cnnfast::bind {

// Scalar options checked the same way for both devices.
void check_eps(double eps) {
  CNNFAST_CHECK(eps >= 0 && std::isfinite(eps), ValueError, "eps: expected a finite value >= 0, got ", eps);
}

void check_lrn(int64_t size, double alpha, double beta, double k) {
  CNNFAST_CHECK(size >= 1, ValueError, "size: expected a window of at least 1 channel, got ", size);
  CNNFAST_CHECK(std::isfinite(alpha) && std::isfinite(beta) && std::isfinite(k), ValueError,
                "alpha, beta, k: expected finite values, got ", alpha, ", ", beta, ", ", k);
}

namespace host {

struct NCS {
  int64_t N = 1, C = 1, S = 1;
};

// x: (N, C, *spatial) viewed as (N, C, S).
NCS ncs_of(const py::array& x, const char* name, int min_ndim) {
  require_ndim(x, name, min_ndim, 32);
  require_nonempty(x, name);
  NCS v;
  v.N = x.shape(0);
  v.C = x.shape(1);
  for (int i = 2; i < x.ndim(); ++i) v.S *= x.shape(i);
  return v;
}

// An optional (C,)-shaped parameter of x's dtype; nullptr when None.
template <class T>
const T* opt_param(const py::object& o, const char* name, const py::array& x, int64_t len) {
  if (o.is_none()) return nullptr;
  CNNFAST_CHECK(py::isinstance<py::array>(o), TypeError, name, ": expected a NumPy array or None, got ",
                py::str(py::type::of(o)).cast<std::string>());
  py::array a = o.cast<py::array>();
  input(a, name);
  require_same_dtype(x, "input", a, name);
  require_shape(a, name, {len});
  return cptr<T>(a);
}

template <class T>
T* opt_state(const py::object& o, const char* name, const py::array& x, int64_t len) {
  if (o.is_none()) return nullptr;
  const T* p = opt_param<T>(o, name, x, len);
  py::array a = o.cast<py::array>();
  require_writeable(a, name);
  return const_cast<T*>(p);
}

// running_mean / running_var are written while input, weight and bias are read:
// none of them may share memory with another (a running_mean that is a view of
// input would change the statistics other threads are still reading).
void check_state_disjoint(const py::object& running_mean, const py::object& running_var, const py::array& x,
                          const py::object& weight, const py::object& bias) {
  std::vector<std::pair<py::array, const char*>> read{{x, "input"}};
  for (auto [o, n] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}})
    if (!o->is_none()) read.emplace_back(o->cast<py::array>(), n);
  std::vector<std::pair<py::array, const char*>> written;
  for (auto [o, n] : {std::pair{&running_mean, "running_mean"}, std::pair{&running_var, "running_var"}})
    if (!o->is_none()) written.emplace_back(o->cast<py::array>(), n);
  for (size_t i = 0; i < written.size(); ++i) {
    for (const auto& [r, rn] : read) require_no_overlap(written[i].first, written[i].second, r, rn, false);
    for (size_t j = 0; j < i; ++j)
      require_no_overlap(written[i].first, written[i].second, written[j].first, written[j].second, false);
  }
}

void check_grad(const py::array& gy, const py::array& x) {
  input(gy, "grad_output");
  require_same_dtype(x, "input", gy, "grad_output");
  require_shape(gy, "grad_output", shape_of(x));
}

// ---- BatchNorm ---------------------------------------------------------------

py::tuple batch_norm_fwd(const py::array& x, const py::object& weight, const py::object& bias,
                         const py::object& running_mean, const py::object& running_var, bool training,
                         double momentum, double eps) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_eps(eps);
  if (training) {
    CNNFAST_CHECK(d.N * d.S > 1, ValueError,
                  "input: Expected more than 1 value per channel when training, got input size ", shape_str(shape_of(x)));
  } else {
    CNNFAST_CHECK(!running_mean.is_none(), ValueError, "running_mean: must be defined in evaluation mode");
    CNNFAST_CHECK(!running_var.is_none(), ValueError, "running_var: must be defined in evaluation mode");
  }
  py::array y = new_array(x, shape_of(x));
  py::array sm = new_array(x, {d.C}), sr = new_array(x, {d.C});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.C);
    const T* b = opt_param<T>(bias, "bias", x, d.C);
    // Inference only reads the statistics, so read-only arrays (an ONNX graph's
    // inputs, a memory-mapped checkpoint) are accepted there.
    T* rm = training ? opt_state<T>(running_mean, "running_mean", x, d.C)
                     : const_cast<T*>(opt_param<T>(running_mean, "running_mean", x, d.C));
    T* rv = training ? opt_state<T>(running_var, "running_var", x, d.C)
                     : const_cast<T*>(opt_param<T>(running_var, "running_var", x, d.C));
    if (training) check_state_disjoint(running_mean, running_var, x, weight, bias);
    const T* xp = cptr<T>(x);
    T *yp = mptr<T>(y), *smp = mptr<T>(sm), *srp = mptr<T>(sr);
    py::gil_scoped_release nogil;
    cpu::batch_norm_forward<T>(xp, yp, d.N, d.C, d.S, w, b, rm, rv, training, momentum, eps, smp, srp);
  });
  return py::make_tuple(y, sm, sr);
}

py::tuple batch_norm_bwd(const py::array& gy, const py::array& x, const py::object& weight, const py::array& sm,
                         const py::array& sr, bool training) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_grad(gy, x);
  for (auto [a, n] : {std::pair{&sm, "save_mean"}, std::pair{&sr, "save_rstd"}}) {
    input(*a, n);
    require_same_dtype(x, "input", *a, n);
    require_shape(*a, n, {d.C});
  }
  py::array gx = new_array(x, shape_of(x));
  py::array gw = new_zeros(x, {d.C}), gb = new_zeros(x, {d.C});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.C);
    const T *gp = cptr<T>(gy), *xp = cptr<T>(x), *mp = cptr<T>(sm), *rp = cptr<T>(sr);
    T *gxp = mptr<T>(gx), *gwp = mptr<T>(gw), *gbp = mptr<T>(gb);
    py::gil_scoped_release nogil;
    cpu::batch_norm_backward<T>(gp, xp, gxp, d.N, d.C, d.S, w, mp, rp, training, gwp, gbp);
  });
  return py::make_tuple(gx, gw, gb);
}

// ---- GroupNorm / InstanceNorm ---------------------------------------------------

py::tuple group_norm_fwd(const py::array& x, int64_t G, const py::object& weight, const py::object& bias, double eps) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_eps(eps);
  CNNFAST_CHECK(G > 0 && d.C % G == 0, ValueError,
                "num_groups: expected a positive divisor of the number of channels ", d.C, ", got ", G,
                " (input shape ", shape_str(shape_of(x)), ")");
  py::array y = new_array(x, shape_of(x));
  py::array mean = new_array(x, {d.N, G}), rstd = new_array(x, {d.N, G});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.C);
    const T* b = opt_param<T>(bias, "bias", x, d.C);
    const T* xp = cptr<T>(x);
    T *yp = mptr<T>(y), *mp = mptr<T>(mean), *rp = mptr<T>(rstd);
    py::gil_scoped_release nogil;
    cpu::group_norm_forward<T>(xp, yp, d.N, d.C, d.S, G, w, b, eps, mp, rp, nullptr);
  });
  return py::make_tuple(y, mean, rstd);
}

py::tuple group_norm_bwd(const py::array& gy, const py::array& x, int64_t G, const py::object& weight,
                         const py::array& mean, const py::array& rstd) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_grad(gy, x);
  CNNFAST_CHECK(G > 0 && d.C % G == 0, ValueError,
                "num_groups: expected a positive divisor of the number of channels ", d.C, ", got ", G);
  for (auto [a, n] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
    input(*a, n);
    require_same_dtype(x, "input", *a, n);
    require_shape(*a, n, {d.N, G});
  }
  py::array gx = new_array(x, shape_of(x));
  py::array gw = new_zeros(x, {d.C}), gb = new_zeros(x, {d.C});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.C);
    const T *gp = cptr<T>(gy), *xp = cptr<T>(x), *mp = cptr<T>(mean), *rp = cptr<T>(rstd);
    T *gxp = mptr<T>(gx), *gwp = mptr<T>(gw), *gbp = mptr<T>(gb);
    py::gil_scoped_release nogil;
    cpu::group_norm_backward<T>(gp, xp, gxp, d.N, d.C, d.S, G, w, mp, rp, gwp, gbp);
  });
  return py::make_tuple(gx, gw, gb);
}

// InstanceNorm with input statistics: GroupNorm with one channel per group, plus
// the running statistics (the per-sample statistics averaged over the batch).
py::tuple instance_norm_fwd(const py::array& x, const py::object& weight, const py::object& bias,
                            const py::object& running_mean, const py::object& running_var, double momentum,
                            double eps) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_eps(eps);
  CNNFAST_CHECK(d.S > 1, ValueError, "input: Expected more than 1 spatial element when training, got input size ",
                shape_str(shape_of(x)));
  py::array y = new_array(x, shape_of(x));
  py::array mean = new_array(x, {d.N, d.C}), rstd = new_array(x, {d.N, d.C}), var = new_array(x, {d.N, d.C});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.C);
    const T* b = opt_param<T>(bias, "bias", x, d.C);
    T* rm = opt_state<T>(running_mean, "running_mean", x, d.C);
    T* rv = opt_state<T>(running_var, "running_var", x, d.C);
    check_state_disjoint(running_mean, running_var, x, weight, bias);
    const T* xp = cptr<T>(x);
    T *yp = mptr<T>(y), *mp = mptr<T>(mean), *rp = mptr<T>(rstd), *vp = mptr<T>(var);
    py::gil_scoped_release nogil;
    cpu::group_norm_forward<T>(xp, yp, d.N, d.C, d.S, d.C, w, b, eps, mp, rp, vp);
    const double unbias = double(d.S) / double(d.S - 1);
    for (int64_t c = 0; c < d.C; ++c) {
      double sm = 0, sv = 0;
      for (int64_t n = 0; n < d.N; ++n) {
        sm += mp[n * d.C + c];
        sv += vp[n * d.C + c];
      }
      if (rm) rm[c] = static_cast<T>((1 - momentum) * rm[c] + momentum * sm / double(d.N));
      if (rv) rv[c] = static_cast<T>((1 - momentum) * rv[c] + momentum * unbias * sv / double(d.N));
    }
  });
  return py::make_tuple(y, mean, rstd);
}

// ---- LayerNorm -------------------------------------------------------------------

struct RL {
  int64_t R = 1, L = 1;
};

RL rl_of(const py::array& x, int64_t normalized_ndim) {
  require_nonempty(x, "input");
  CNNFAST_CHECK(normalized_ndim >= 1 && normalized_ndim <= x.ndim(), ValueError,
                "normalized_ndim: expected 1 to ", x.ndim(), " (the rank of input ", shape_str(shape_of(x)),
                "), got ", normalized_ndim);
  RL v;
  for (int i = 0; i < x.ndim(); ++i) (i < x.ndim() - normalized_ndim ? v.R : v.L) *= x.shape(i);
  return v;
}

std::vector<int64_t> lead_shape(const py::array& x, int64_t normalized_ndim) {
  auto s = shape_of(x);
  return std::vector<int64_t>(s.begin(), s.end() - normalized_ndim);
}

py::tuple layer_norm_fwd(const py::array& x, int64_t nd, const py::object& weight, const py::object& bias,
                         double eps) {
  DType dt = input(x, "input");
  RL d = rl_of(x, nd);
  check_eps(eps);
  py::array y = new_array(x, shape_of(x));
  py::array mean = new_array(x, lead_shape(x, nd)), rstd = new_array(x, lead_shape(x, nd));
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.L);
    const T* b = opt_param<T>(bias, "bias", x, d.L);
    const T* xp = cptr<T>(x);
    T *yp = mptr<T>(y), *mp = mptr<T>(mean), *rp = mptr<T>(rstd);
    py::gil_scoped_release nogil;
    cpu::layer_norm_forward<T>(xp, yp, d.R, d.L, w, b, eps, mp, rp);
  });
  return py::make_tuple(y, mean, rstd);
}

py::tuple layer_norm_bwd(const py::array& gy, const py::array& x, int64_t nd, const py::object& weight,
                         const py::array& mean, const py::array& rstd, bool need_params) {
  DType dt = input(x, "input");
  RL d = rl_of(x, nd);
  check_grad(gy, x);
  for (auto [a, n] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
    input(*a, n);
    require_same_dtype(x, "input", *a, n);
    CNNFAST_CHECK(a->size() == d.R, ValueError, n, ": expected ", d.R, " values, got shape ",
                  shape_str(shape_of(*a)));
  }
  py::array gx = new_array(x, shape_of(x));
  py::array gw = new_zeros(x, {d.L}), gb = new_zeros(x, {d.L});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* w = opt_param<T>(weight, "weight", x, d.L);
    const T *gp = cptr<T>(gy), *xp = cptr<T>(x), *mp = cptr<T>(mean), *rp = cptr<T>(rstd);
    T *gxp = mptr<T>(gx), *gwp = need_params ? mptr<T>(gw) : nullptr, *gbp = need_params ? mptr<T>(gb) : nullptr;
    py::gil_scoped_release nogil;
    cpu::layer_norm_backward<T>(gp, xp, gxp, d.R, d.L, w, mp, rp, gwp, gbp);
  });
  return py::make_tuple(gx, gw, gb);
}

// ---- LRN -----------------------------------------------------------------------

py::tuple lrn_fwd(const py::array& x, int64_t size, double alpha, double beta, double k) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_lrn(size, alpha, beta, k);
  py::array y = new_array(x, shape_of(x)), den = new_array(x, shape_of(x));
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T *yp = mptr<T>(y), *dp = mptr<T>(den);
    py::gil_scoped_release nogil;
    cpu::lrn_forward<T>(xp, yp, dp, d.N, d.C, d.S, size, alpha, beta, k);
  });
  return py::make_tuple(y, den);
}

py::array lrn_bwd(const py::array& gy, const py::array& x, const py::array& y, const py::array& den, int64_t size,
                  double alpha, double beta) {
  DType dt = input(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_grad(gy, x);
  check_lrn(size, alpha, beta, 1.0);
  for (auto [a, n] : {std::pair{&y, "output"}, std::pair{&den, "denom"}}) {
    input(*a, n);
    require_same_dtype(x, "input", *a, n);
    require_shape(*a, n, shape_of(x));
  }
  py::array gx = new_array(x, shape_of(x));
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T *gp = cptr<T>(gy), *xp = cptr<T>(x), *yp = cptr<T>(y), *dp = cptr<T>(den);
    T* gxp = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::lrn_backward<T>(gp, xp, yp, dp, gxp, d.N, d.C, d.S, size, alpha, beta);
  });
  return gx;
}

}  // namespace host

#if CNNFAST_WITH_CUDA
namespace dev {

using Ints = std::vector<int64_t>;

struct NCS {
  int64_t N = 1, C = 1, S = 1;
};

NCS ncs_of(const DeviceArray& x, const char* name, int min_ndim) {
  require_device_ndim(x, name, min_ndim, 32);
  CNNFAST_CHECK(x.size() > 0, ValueError, name, ": expected a non-empty array, got shape ", shape_str(x.shape));
  NCS v;
  v.N = x.shape[0];
  v.C = x.shape[1];
  for (size_t i = 2; i < x.shape.size(); ++i) v.S *= x.shape[i];
  return v;
}

// An optional (len,) parameter of x's dtype; data == nullptr when None.
DeviceArray opt_param(const py::object& o, const char* name, const DeviceArray& x, int64_t len) {
  if (o.is_none()) return DeviceArray{};
  DeviceArray a = device_array(o, name, "input");
  require_same_typestr(x, "input", a, name);
  require_device_shape(a, name, {len});
  return a;
}

DeviceArray zeros(const Ints& shape, const std::string& typestr) {
  DeviceArray a = empty_device(shape, typestr);
  if (a.nbytes()) cuda::memset_device(a.data, 0, a.nbytes());
  return a;
}

void check_grad(const DeviceArray& gy, const DeviceArray& x) {
  device_float_dtype(gy, "grad_output");
  require_same_typestr(x, "input", gy, "grad_output");
  require_device_shape(gy, "grad_output", x.shape);
}

void check_saved(const DeviceArray& a, const char* name, const DeviceArray& x, const Ints& shape) {
  require_same_typestr(x, "input", a, name);
  require_device_shape(a, name, shape);
}

py::tuple batch_norm_fwd(const py::object& xo, const py::object& weight, const py::object& bias,
                         const py::object& running_mean, const py::object& running_var, bool training,
                         double momentum, double eps) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_eps(eps);
  if (training) {
    CNNFAST_CHECK(d.N * d.S > 1, ValueError,
                  "input: Expected more than 1 value per channel when training, got input size ", shape_str(x.shape));
  } else {
    CNNFAST_CHECK(!running_mean.is_none(), ValueError, "running_mean: must be defined in evaluation mode");
    CNNFAST_CHECK(!running_var.is_none(), ValueError, "running_var: must be defined in evaluation mode");
  }
  DeviceArray w = opt_param(weight, "weight", x, d.C), b = opt_param(bias, "bias", x, d.C);
  DeviceArray rm = opt_param(running_mean, "running_mean", x, d.C), rv = opt_param(running_var, "running_var", x, d.C);
  DeviceArray y = empty_device(x.shape, x.typestr), sm = empty_device({d.C}, x.typestr),
              sr = empty_device({d.C}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::batch_norm_forward<T>(dptr<T>(x), dmptr<T>(y), d.N, d.C, d.S, dptr<T>(w), dptr<T>(b), dmptr<T>(rm), dmptr<T>(rv), training,
                                momentum, eps, dmptr<T>(sm), dmptr<T>(sr));
  });
  return py::make_tuple(y, sm, sr);
}

py::tuple batch_norm_bwd(const py::object& go, const py::object& xo, const py::object& weight, const py::object& smo,
                         const py::object& sro, bool training) {
  DeviceArray x = as_device_array(xo, "input"), gy = as_device_array(go, "grad_output");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_grad(gy, x);
  DeviceArray sm = as_device_array(smo, "save_mean"), sr = as_device_array(sro, "save_rstd");
  check_saved(sm, "save_mean", x, {d.C});
  check_saved(sr, "save_rstd", x, {d.C});
  DeviceArray w = opt_param(weight, "weight", x, d.C);
  DeviceArray gx = empty_device(x.shape, x.typestr), gw = zeros({d.C}, x.typestr), gb = zeros({d.C}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::batch_norm_backward<T>(dptr<T>(gy), dptr<T>(x), dmptr<T>(gx), d.N, d.C, d.S, dptr<T>(w), dptr<T>(sm), dptr<T>(sr),
                                 training, dmptr<T>(gw), dmptr<T>(gb));
  });
  return py::make_tuple(gx, gw, gb);
}

void check_groups(const NCS& d, int64_t G) {
  CNNFAST_CHECK(G > 0 && d.C % G == 0, ValueError,
                "num_groups: expected a positive divisor of the number of channels ", d.C, ", got ", G);
}

py::tuple group_norm_fwd(const py::object& xo, int64_t G, const py::object& weight, const py::object& bias,
                         double eps) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 2);
  check_eps(eps);
  check_groups(d, G);
  DeviceArray w = opt_param(weight, "weight", x, d.C), b = opt_param(bias, "bias", x, d.C);
  DeviceArray y = empty_device(x.shape, x.typestr), mean = empty_device({d.N, G}, x.typestr),
              rstd = empty_device({d.N, G}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::group_norm_forward<T>(dptr<T>(x), dmptr<T>(y), d.N, d.C, d.S, G, dptr<T>(w), dptr<T>(b), eps, dmptr<T>(mean),
                                dmptr<T>(rstd), nullptr);
  });
  return py::make_tuple(y, mean, rstd);
}

py::tuple group_norm_bwd(const py::object& go, const py::object& xo, int64_t G, const py::object& weight,
                         const py::object& meano, const py::object& rstdo, int min_ndim) {
  DeviceArray x = as_device_array(xo, "input"), gy = as_device_array(go, "grad_output");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", min_ndim);
  if (G <= 0) G = d.C;  // InstanceNorm: one channel per group
  check_grad(gy, x);
  check_groups(d, G);
  DeviceArray mean = as_device_array(meano, "mean"), rstd = as_device_array(rstdo, "rstd");
  check_saved(mean, "mean", x, {d.N, G});
  check_saved(rstd, "rstd", x, {d.N, G});
  DeviceArray w = opt_param(weight, "weight", x, d.C);
  DeviceArray gx = empty_device(x.shape, x.typestr), gw = zeros({d.C}, x.typestr), gb = zeros({d.C}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::group_norm_backward<T>(dptr<T>(gy), dptr<T>(x), dmptr<T>(gx), d.N, d.C, d.S, G, dptr<T>(w), dptr<T>(mean),
                                 dptr<T>(rstd), dmptr<T>(gw), dmptr<T>(gb));
  });
  return py::make_tuple(gx, gw, gb);
}

py::tuple instance_norm_fwd(const py::object& xo, const py::object& weight, const py::object& bias,
                            const py::object& running_mean, const py::object& running_var, double momentum,
                            double eps) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_eps(eps);
  CNNFAST_CHECK(d.S > 1, ValueError, "input: Expected more than 1 spatial element when training, got input size ",
                shape_str(x.shape));
  DeviceArray w = opt_param(weight, "weight", x, d.C), b = opt_param(bias, "bias", x, d.C);
  DeviceArray rm = opt_param(running_mean, "running_mean", x, d.C), rv = opt_param(running_var, "running_var", x, d.C);
  DeviceArray y = empty_device(x.shape, x.typestr), mean = empty_device({d.N, d.C}, x.typestr),
              rstd = empty_device({d.N, d.C}, x.typestr), var = empty_device({d.N, d.C}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::group_norm_forward<T>(dptr<T>(x), dmptr<T>(y), d.N, d.C, d.S, d.C, dptr<T>(w), dptr<T>(b), eps, dmptr<T>(mean),
                                dmptr<T>(rstd), dmptr<T>(var));
    cuda::instance_norm_update_running<T>(dptr<T>(mean), dptr<T>(var), dmptr<T>(rm), dmptr<T>(rv), d.N, d.C, d.S, momentum);
  });
  return py::make_tuple(y, mean, rstd);
}

struct RL {
  int64_t R = 1, L = 1;
};

RL rl_of(const DeviceArray& x, int64_t nd) {
  CNNFAST_CHECK(x.size() > 0, ValueError, "input: expected a non-empty array, got shape ", shape_str(x.shape));
  const int64_t rank = int64_t(x.shape.size());
  CNNFAST_CHECK(nd >= 1 && nd <= rank, ValueError, "normalized_ndim: expected 1 to ", rank, " (the rank of input ",
                shape_str(x.shape), "), got ", nd);
  RL v;
  for (int64_t i = 0; i < rank; ++i) (i < rank - nd ? v.R : v.L) *= x.shape[i];
  return v;
}

py::tuple layer_norm_fwd(const py::object& xo, int64_t nd, const py::object& weight, const py::object& bias,
                         double eps) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = device_float_dtype(x, "input");
  RL d = rl_of(x, nd);
  check_eps(eps);
  const Ints lead(x.shape.begin(), x.shape.end() - nd);
  DeviceArray w = opt_param(weight, "weight", x, d.L), b = opt_param(bias, "bias", x, d.L);
  DeviceArray y = empty_device(x.shape, x.typestr), mean = empty_device(lead, x.typestr),
              rstd = empty_device(lead, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::layer_norm_forward<T>(dptr<T>(x), dmptr<T>(y), d.R, d.L, dptr<T>(w), dptr<T>(b), eps, dmptr<T>(mean), dmptr<T>(rstd));
  });
  return py::make_tuple(y, mean, rstd);
}

py::tuple layer_norm_bwd(const py::object& go, const py::object& xo, int64_t nd, const py::object& weight,
                         const py::object& meano, const py::object& rstdo, bool need_params) {
  DeviceArray x = as_device_array(xo, "input"), gy = as_device_array(go, "grad_output");
  DType dt = device_float_dtype(x, "input");
  RL d = rl_of(x, nd);
  check_grad(gy, x);
  DeviceArray mean = as_device_array(meano, "mean"), rstd = as_device_array(rstdo, "rstd");
  for (auto [a, n] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
    require_same_typestr(x, "input", *a, n);
    CNNFAST_CHECK(a->size() == d.R, ValueError, n, ": expected ", d.R, " values, got shape ", shape_str(a->shape));
  }
  DeviceArray w = opt_param(weight, "weight", x, d.L);
  DeviceArray gx = empty_device(x.shape, x.typestr), gw = zeros({d.L}, x.typestr), gb = zeros({d.L}, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::layer_norm_backward<T>(dptr<T>(gy), dptr<T>(x), dmptr<T>(gx), d.R, d.L, dptr<T>(w), dptr<T>(mean), dptr<T>(rstd),
                                 need_params ? dmptr<T>(gw) : nullptr, need_params ? dmptr<T>(gb) : nullptr);
  });
  return py::make_tuple(gx, gw, gb);
}

py::tuple lrn_fwd(const py::object& xo, int64_t size, double alpha, double beta, double k) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_lrn(size, alpha, beta, k);
  DeviceArray y = empty_device(x.shape, x.typestr), den = empty_device(x.shape, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::lrn_forward<T>(dptr<T>(x), dmptr<T>(y), dmptr<T>(den), d.N, d.C, d.S, size, alpha, beta, k);
  });
  return py::make_tuple(y, den);
}

DeviceArray lrn_bwd(const py::object& go, const py::object& xo, const py::object& yo, const py::object& deno,
                    int64_t size, double alpha, double beta) {
  DeviceArray x = as_device_array(xo, "input"), gy = as_device_array(go, "grad_output");
  DType dt = device_float_dtype(x, "input");
  NCS d = ncs_of(x, "input", 3);
  check_grad(gy, x);
  check_lrn(size, alpha, beta, 1.0);
  DeviceArray y = as_device_array(yo, "output"), den = as_device_array(deno, "denom");
  check_saved(y, "output", x, x.shape);
  check_saved(den, "denom", x, x.shape);
  DeviceArray gx = empty_device(x.shape, x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::lrn_backward<T>(dptr<T>(gy), dptr<T>(x), dptr<T>(y), dptr<T>(den), dmptr<T>(gx), d.N, d.C, d.S, size, alpha, beta);
  });
  return gx;
}

}  // namespace dev
#endif

void bind_norm(py::module_& m) {
  auto none = py::none();
  m.def("batch_norm_forward",
        [](const py::object& x, const py::object& w, const py::object& b, const py::object& rm, const py::object& rv,
           bool training, double momentum, double eps) -> py::object {
          if (on_host(x, "input"))
            return host::batch_norm_fwd(x.cast<py::array>(), w, b, rm, rv, training, momentum, eps);
          CNNFAST_ON_DEVICE(dev::batch_norm_fwd(x, w, b, rm, rv, training, momentum, eps));
        },
        py::arg("input"), py::arg("weight") = none, py::arg("bias") = none,
        py::arg("running_mean") = none, py::arg("running_var") = none, py::arg("training") = false,
        py::arg("momentum") = 0.1, py::arg("eps") = 1e-5,
        "BatchNorm. input: (N, C, *); weight, bias, running_mean, running_var: (C,) or None. Training uses batch "
        "statistics and updates running_mean/var in place (unbiased variance). Returns (y, save_mean, save_rstd).");
  m.def("batch_norm_backward",
        [](const py::object& gy, const py::object& x, const py::object& w, const py::object& sm, const py::object& sr,
           bool training) -> py::object {
          if (on_host(gy, "grad_output"))
            return host::batch_norm_bwd(gy.cast<py::array>(), host_array(x, "input", "grad_output"), w,
                                        host_array(sm, "save_mean", "grad_output"),
                                        host_array(sr, "save_rstd", "grad_output"), training);
          CNNFAST_ON_DEVICE(dev::batch_norm_bwd(gy, x, w, sm, sr, training));
        },
        py::arg("grad_output"), py::arg("input"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_rstd"), py::arg("training"),
        "Returns (grad_input, grad_weight, grad_bias); grad_weight/grad_bias: (C,).");
  m.def("group_norm_forward",
        [](const py::object& x, int64_t G, const py::object& w, const py::object& b, double eps) -> py::object {
          if (on_host(x, "input")) return host::group_norm_fwd(x.cast<py::array>(), G, w, b, eps);
          CNNFAST_ON_DEVICE(dev::group_norm_fwd(x, G, w, b, eps));
        },
        py::arg("input"), py::arg("num_groups"), py::arg("weight") = none,
        py::arg("bias") = none, py::arg("eps") = 1e-5,
        "GroupNorm. input: (N, C, *), C divisible by num_groups; weight, bias: (C,) or None. "
        "Returns (y, mean, rstd) with mean, rstd: (N, num_groups).");
  m.def("group_norm_backward",
        [](const py::object& gy, const py::object& x, int64_t G, const py::object& w, const py::object& mean,
           const py::object& rstd) -> py::object {
          if (on_host(gy, "grad_output"))
            return host::group_norm_bwd(gy.cast<py::array>(), host_array(x, "input", "grad_output"), G, w,
                                        host_array(mean, "mean", "grad_output"),
                                        host_array(rstd, "rstd", "grad_output"));
          CNNFAST_CHECK(G > 0, ValueError, "num_groups: expected a positive divisor of the number of channels, got ",
                        G);
          CNNFAST_ON_DEVICE(dev::group_norm_bwd(gy, x, G, w, mean, rstd, 2));
        },
        py::arg("grad_output"), py::arg("input"), py::arg("num_groups"),
        py::arg("weight"), py::arg("mean"), py::arg("rstd"), "Returns (grad_input, grad_weight, grad_bias).");
  m.def("instance_norm_forward",
        [](const py::object& x, const py::object& w, const py::object& b, const py::object& rm, const py::object& rv,
           double momentum, double eps) -> py::object {
          if (on_host(x, "input")) return host::instance_norm_fwd(x.cast<py::array>(), w, b, rm, rv, momentum, eps);
          CNNFAST_ON_DEVICE(dev::instance_norm_fwd(x, w, b, rm, rv, momentum, eps));
        },
        py::arg("input"), py::arg("weight") = none,
        py::arg("bias") = none, py::arg("running_mean") = none, py::arg("running_var") = none,
        py::arg("momentum") = 0.1, py::arg("eps") = 1e-5,
        "InstanceNorm with per-(n, c) statistics. input: (N, C, *spatial), more than one spatial element. "
        "running_mean/var (C,) are updated in place when given. Returns (y, mean, rstd), mean, rstd: (N, C). "
        "Evaluation with running statistics is batch_norm_forward(training=False).");
  m.def("instance_norm_backward",
        [](const py::object& gy, const py::object& xo, const py::object& w, const py::object& mean,
           const py::object& rstd) -> py::object {
          if (on_host(gy, "grad_output")) {
            py::array x = host_array(xo, "input", "grad_output");
            require_ndim(x, "input", 3, 32);
            return host::group_norm_bwd(gy.cast<py::array>(), x, x.shape(1), w,
                                        host_array(mean, "mean", "grad_output"),
                                        host_array(rstd, "rstd", "grad_output"));
          }
          CNNFAST_ON_DEVICE(dev::group_norm_bwd(gy, xo, 0, w, mean, rstd, 3));
        },
        py::arg("grad_output"), py::arg("input"), py::arg("weight"), py::arg("mean"), py::arg("rstd"),
        "Returns (grad_input, grad_weight, grad_bias).");
  m.def("layer_norm_forward",
        [](const py::object& x, int64_t nd, const py::object& w, const py::object& b, double eps) -> py::object {
          if (on_host(x, "input")) return host::layer_norm_fwd(x.cast<py::array>(), nd, w, b, eps);
          CNNFAST_ON_DEVICE(dev::layer_norm_fwd(x, nd, w, b, eps));
        },
        py::arg("input"), py::arg("normalized_ndim"), py::arg("weight") = none,
        py::arg("bias") = none, py::arg("eps") = 1e-5,
        "LayerNorm over the last normalized_ndim dims. weight, bias: flattened (prod(normalized_shape),) or None. "
        "Returns (y, mean, rstd) with mean, rstd of the leading shape.");
  m.def("layer_norm_backward",
        [](const py::object& gy, const py::object& x, int64_t nd, const py::object& w, const py::object& mean,
           const py::object& rstd, bool need) -> py::object {
          if (on_host(gy, "grad_output"))
            return host::layer_norm_bwd(gy.cast<py::array>(), host_array(x, "input", "grad_output"), nd, w,
                                        host_array(mean, "mean", "grad_output"),
                                        host_array(rstd, "rstd", "grad_output"), need);
          CNNFAST_ON_DEVICE(dev::layer_norm_bwd(gy, x, nd, w, mean, rstd, need));
        },
        py::arg("grad_output"), py::arg("input"), py::arg("normalized_ndim"),
        py::arg("weight"), py::arg("mean"), py::arg("rstd"), py::arg("need_param_grads") = true,
        "Returns (grad_input, grad_weight, grad_bias) (the last two flattened; zeros if not requested).");
  m.def("local_response_norm_forward",
        [](const py::object& x, int64_t size, double alpha, double beta, double k) -> py::object {
          if (on_host(x, "input")) return host::lrn_fwd(x.cast<py::array>(), size, alpha, beta, k);
          CNNFAST_ON_DEVICE(dev::lrn_fwd(x, size, alpha, beta, k));
        },
        py::arg("input"), py::arg("size"), py::arg("alpha") = 1e-4,
        py::arg("beta") = 0.75, py::arg("k") = 1.0,
        "LRN across channels: y = x / (k + alpha/size * sum_window x^2)^beta. input: (N, C, *), rank >= 3. "
        "Returns (y, denom) with denom = k + alpha/size * sum_window x^2.");
  m.def("local_response_norm_backward",
        [](const py::object& gy, const py::object& x, const py::object& y, const py::object& den, int64_t size,
           double alpha, double beta) -> py::object {
          if (on_host(gy, "grad_output"))
            return host::lrn_bwd(gy.cast<py::array>(), host_array(x, "input", "grad_output"),
                                 host_array(y, "output", "grad_output"), host_array(den, "denom", "grad_output"),
                                 size, alpha, beta);
          CNNFAST_ON_DEVICE(dev::lrn_bwd(gy, x, y, den, size, alpha, beta));
        },
        py::arg("grad_output"), py::arg("input"), py::arg("output"),
        py::arg("denom"), py::arg("size"), py::arg("alpha") = 1e-4, py::arg("beta") = 0.75,
        "grad_input of LRN from the forward's input, output and denom.");
}

void bind_norm_device(py::module_& cu) { bind_norm(cu); }

}  // namespace cnnfast::bind
