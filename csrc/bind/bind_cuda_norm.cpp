// CUDA bindings of the normalisation family into cnnfast._C.cuda, names and
// arguments as bind_norm.cpp: batch_norm, group_norm, instance_norm, layer_norm
// and local_response_norm, _forward / _backward, on CUDA arrays. Running
// statistics (CUDA arrays) are updated in place on the device.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include <cmath>

#include "bind/device_array.h"
#include "cuda/memory.h"
#include "cuda/norm.cuh"

namespace cnnfast::bind {
namespace {

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
  DeviceArray a = as_device_array(o, name);
  require_same_typestr(x, "input", a, name);
  require_device_shape(a, name, {len});
  return a;
}

template <class T>
const T* cp(const DeviceArray& a) {
  return static_cast<const T*>(a.data);
}
template <class T>
T* mp(const DeviceArray& a) {
  return static_cast<T*>(a.data);
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

void check_eps(double eps) {
  CNNFAST_CHECK(eps >= 0 && std::isfinite(eps), ValueError, "eps: expected a finite value >= 0, got ", eps);
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
    cuda::batch_norm_forward<T>(cp<T>(x), mp<T>(y), d.N, d.C, d.S, cp<T>(w), cp<T>(b), mp<T>(rm), mp<T>(rv), training,
                                momentum, eps, mp<T>(sm), mp<T>(sr));
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
    cuda::batch_norm_backward<T>(cp<T>(gy), cp<T>(x), mp<T>(gx), d.N, d.C, d.S, cp<T>(w), cp<T>(sm), cp<T>(sr),
                                 training, mp<T>(gw), mp<T>(gb));
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
    cuda::group_norm_forward<T>(cp<T>(x), mp<T>(y), d.N, d.C, d.S, G, cp<T>(w), cp<T>(b), eps, mp<T>(mean),
                                mp<T>(rstd), nullptr);
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
    cuda::group_norm_backward<T>(cp<T>(gy), cp<T>(x), mp<T>(gx), d.N, d.C, d.S, G, cp<T>(w), cp<T>(mean),
                                 cp<T>(rstd), mp<T>(gw), mp<T>(gb));
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
    cuda::group_norm_forward<T>(cp<T>(x), mp<T>(y), d.N, d.C, d.S, d.C, cp<T>(w), cp<T>(b), eps, mp<T>(mean),
                                mp<T>(rstd), mp<T>(var));
    cuda::instance_norm_update_running<T>(cp<T>(mean), cp<T>(var), mp<T>(rm), mp<T>(rv), d.N, d.C, d.S, momentum);
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
    cuda::layer_norm_forward<T>(cp<T>(x), mp<T>(y), d.R, d.L, cp<T>(w), cp<T>(b), eps, mp<T>(mean), mp<T>(rstd));
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
    cuda::layer_norm_backward<T>(cp<T>(gy), cp<T>(x), mp<T>(gx), d.R, d.L, cp<T>(w), cp<T>(mean), cp<T>(rstd),
                                 need_params ? mp<T>(gw) : nullptr, need_params ? mp<T>(gb) : nullptr);
  });
  return py::make_tuple(gx, gw, gb);
}

void check_lrn(int64_t size, double alpha, double beta, double k) {
  CNNFAST_CHECK(size >= 1, ValueError, "size: expected a window of at least 1 channel, got ", size);
  CNNFAST_CHECK(std::isfinite(alpha) && std::isfinite(beta) && std::isfinite(k), ValueError,
                "alpha, beta, k: expected finite values, got ", alpha, ", ", beta, ", ", k);
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
    cuda::lrn_forward<T>(cp<T>(x), mp<T>(y), mp<T>(den), d.N, d.C, d.S, size, alpha, beta, k);
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
    cuda::lrn_backward<T>(cp<T>(gy), cp<T>(x), cp<T>(y), cp<T>(den), mp<T>(gx), d.N, d.C, d.S, size, alpha, beta);
  });
  return gx;
}

}  // namespace

void bind_cuda_norm(py::module_& cu) {
  using py::arg;
  auto none = py::none();
  cu.def("batch_norm_forward", &batch_norm_fwd, arg("input"), arg("weight") = none, arg("bias") = none,
         arg("running_mean") = none, arg("running_var") = none, arg("training") = false, arg("momentum") = 0.1,
         arg("eps") = 1e-5, "GPU BatchNorm; returns (y, save_mean, save_rstd); running stats updated in place.");
  cu.def("batch_norm_backward", &batch_norm_bwd, arg("grad_output"), arg("input"), arg("weight"), arg("save_mean"),
         arg("save_rstd"), arg("training"));
  cu.def("group_norm_forward", &group_norm_fwd, arg("input"), arg("num_groups"), arg("weight") = none,
         arg("bias") = none, arg("eps") = 1e-5);
  cu.def("group_norm_backward",
         [](const py::object& gy, const py::object& x, int64_t G, const py::object& w, const py::object& m,
            const py::object& r) {
           CNNFAST_CHECK(G > 0, ValueError, "num_groups: expected a positive divisor of the number of channels, got ",
                         G);
           return group_norm_bwd(gy, x, G, w, m, r, 2);
         },
         arg("grad_output"), arg("input"), arg("num_groups"), arg("weight"), arg("mean"), arg("rstd"));
  cu.def("instance_norm_forward", &instance_norm_fwd, arg("input"), arg("weight") = none, arg("bias") = none,
         arg("running_mean") = none, arg("running_var") = none, arg("momentum") = 0.1, arg("eps") = 1e-5);
  cu.def("instance_norm_backward",
         [](const py::object& gy, const py::object& x, const py::object& w, const py::object& m, const py::object& r) {
           return group_norm_bwd(gy, x, 0, w, m, r, 3);
         },
         arg("grad_output"), arg("input"), arg("weight"), arg("mean"), arg("rstd"));
  cu.def("layer_norm_forward", &layer_norm_fwd, arg("input"), arg("normalized_ndim"), arg("weight") = none,
         arg("bias") = none, arg("eps") = 1e-5);
  cu.def("layer_norm_backward", &layer_norm_bwd, arg("grad_output"), arg("input"), arg("normalized_ndim"),
         arg("weight"), arg("mean"), arg("rstd"), arg("need_param_grads") = true);
  cu.def("local_response_norm_forward", &lrn_fwd, arg("input"), arg("size"), arg("alpha") = 1e-4, arg("beta") = 0.75,
         arg("k") = 1.0);
  cu.def("local_response_norm_backward", &lrn_bwd, arg("grad_output"), arg("input"), arg("output"), arg("denom"),
         arg("size"), arg("alpha") = 1e-4, arg("beta") = 0.75);
}

}  // namespace cnnfast::bind
#endif
