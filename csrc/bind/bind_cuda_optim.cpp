// CUDA bindings of the fused optimizer updates into cnnfast._C.cuda, names and
// arguments as bind_optim.cpp: sgd_step, adam_step, adagrad_step, rmsprop_step
// update param and its state CUDA arrays in place.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include "bind/device_array.h"
#include "cuda/optim.cuh"

namespace cnnfast::bind {
namespace {

DType check_param(const DeviceArray& param, const DeviceArray& grad) {
  DType dt = device_float_dtype(param, "param");
  device_float_dtype(grad, "grad");
  require_same_typestr(param, "param", grad, "grad");
  require_device_shape(grad, "grad", param.shape);
  return dt;
}

// An optional state buffer: None allowed only when not required (then data == nullptr).
DeviceArray check_state(const py::object& obj, const char* name, const DeviceArray& param, bool required) {
  if (obj.is_none()) {
    CNNFAST_CHECK(!required, ValueError, name, ": expected an array for these options, got None");
    return DeviceArray{};
  }
  DeviceArray a = as_device_array(obj, name);
  require_same_typestr(param, "param", a, name);
  require_device_shape(a, name, param.shape);
  return a;
}

void check_step(int64_t step) { CNNFAST_CHECK(step >= 1, ValueError, "step: expected an integer >= 1, got ", step); }

void sgd(const py::object& po, const py::object& go, const py::object& momentum_buffer, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  DeviceArray param = as_device_array(po, "param"), grad = as_device_array(go, "grad");
  DType dt = check_param(param, grad);
  DeviceArray buf = check_state(momentum_buffer, "momentum_buffer", param, momentum != 0.0);
  cpu::SgdOptions o{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::sgd_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(buf), param.size(), o);
  });
}

void adam(const py::object& po, const py::object& go, const py::object& exp_avg, const py::object& exp_avg_sq,
          const py::object& max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2, double eps,
          double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay) {
  DeviceArray param = as_device_array(po, "param"), grad = as_device_array(go, "grad");
  DType dt = check_param(param, grad);
  check_step(step);
  DeviceArray m = check_state(exp_avg, "exp_avg", param, true);
  DeviceArray v = check_state(exp_avg_sq, "exp_avg_sq", param, true);
  DeviceArray vmax = check_state(max_exp_avg_sq, "max_exp_avg_sq", param, amsgrad);
  cpu::AdamOptions o{lr, beta1, beta2, eps, weight_decay, step, amsgrad, maximize, decoupled_weight_decay};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adam_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(m), dmptr<T>(v), amsgrad ? dmptr<T>(vmax) : nullptr,
                       param.size(), o);
  });
}

void adagrad(const py::object& po, const py::object& go, const py::object& state_sum, int64_t step, double lr,
             double lr_decay, double weight_decay, double eps, bool maximize) {
  DeviceArray param = as_device_array(po, "param"), grad = as_device_array(go, "grad");
  DType dt = check_param(param, grad);
  check_step(step);
  DeviceArray s = check_state(state_sum, "state_sum", param, true);
  cpu::AdagradOptions o{lr, lr_decay, weight_decay, eps, step, maximize};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adagrad_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(s), param.size(), o);
  });
}

void rmsprop(const py::object& po, const py::object& go, const py::object& square_avg, const py::object& grad_avg,
             const py::object& momentum_buffer, double lr, double alpha, double eps, double weight_decay,
             double momentum, bool centered, bool maximize) {
  DeviceArray param = as_device_array(po, "param"), grad = as_device_array(go, "grad");
  DType dt = check_param(param, grad);
  DeviceArray sq = check_state(square_avg, "square_avg", param, true);
  DeviceArray ga = check_state(grad_avg, "grad_avg", param, centered);
  DeviceArray buf = check_state(momentum_buffer, "momentum_buffer", param, momentum > 0.0);
  cpu::RmspropOptions o{lr, alpha, eps, weight_decay, momentum, centered, maximize};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::rmsprop_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(sq), centered ? dmptr<T>(ga) : nullptr,
                          momentum > 0.0 ? dmptr<T>(buf) : nullptr, param.size(), o);
  });
}

}  // namespace

void bind_cuda_optim(py::module_& cu) {
  using py::arg;
  cu.def("sgd_step", &sgd, "GPU SGD update of param (and momentum_buffer) in place.", arg("param"), arg("grad"),
         arg("momentum_buffer"), py::kw_only(), arg("lr"), arg("momentum") = 0.0, arg("dampening") = 0.0,
         arg("weight_decay") = 0.0, arg("nesterov") = false, arg("maximize") = false, arg("first_step") = false);
  cu.def("adam_step", &adam, "GPU Adam/AdamW update in place; step counts from 1.", arg("param"), arg("grad"),
         arg("exp_avg"), arg("exp_avg_sq"), arg("max_exp_avg_sq"), py::kw_only(), arg("step"), arg("lr"),
         arg("beta1") = 0.9, arg("beta2") = 0.999, arg("eps") = 1e-8, arg("weight_decay") = 0.0,
         arg("amsgrad") = false, arg("maximize") = false, arg("decoupled_weight_decay") = false);
  cu.def("adagrad_step", &adagrad, "GPU Adagrad update in place; step counts from 1.", arg("param"), arg("grad"),
         arg("state_sum"), py::kw_only(), arg("step"), arg("lr"), arg("lr_decay") = 0.0, arg("weight_decay") = 0.0,
         arg("eps") = 1e-10, arg("maximize") = false);
  cu.def("rmsprop_step", &rmsprop, "GPU RMSprop update in place.", arg("param"), arg("grad"), arg("square_avg"),
         arg("grad_avg"), arg("momentum_buffer"), py::kw_only(), arg("lr"), arg("alpha") = 0.99, arg("eps") = 1e-8,
         arg("weight_decay") = 0.0, arg("momentum") = 0.0, arg("centered") = false, arg("maximize") = false);
}

}  // namespace cnnfast::bind
#endif
