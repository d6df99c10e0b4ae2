// Bindings for the fused optimizer updates, for both devices: sgd_step, adam_step,
// adagrad_step, rmsprop_step (CPU: csrc/cpu/optim.*, GPU: csrc/cuda/optim.*) and
// adadelta_step (CPU only). Every array is updated in place: param and the state
// buffers must be C-contiguous (writeable on the host), of param's dtype and shape;
// grad must match param's dtype and shape. The hyper-parameter checks and the option
// structs (core/op_params.h) are shared; param's device picks the kernels, and every
// other array of the call must live there too. Registered in cnnfast._C and _C.cuda.
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "bind/array.h"
#include "bind/device_dispatch.h"
#include "bind/families.h"
#include "core/op_params.h"
#include "core/parallel.h"
#include "cpu/optim.h"

#if CNNFAST_WITH_CUDA
#include "cuda/optim.cuh"
#endif

namespace cnnfast::bind {
namespace {

DType check_param(const py::array& param, const py::array& grad) {
  DType dt = input(param, "param");
  require_writeable(param, "param");
  input(grad, "grad");
  require_same_dtype(param, "param", grad, "grad");
  require_shape(grad, "grad", shape_of(param));
  return dt;
}

// An optional state buffer: None allowed only when not required.
py::object check_state(const py::object& obj, const char* name, const py::array& param, bool required) {
  if (obj.is_none()) {
    CNNFAST_CHECK(!required, ValueError, name, ": expected an array for these options, got None");
    return obj;
  }
  CNNFAST_CHECK(py::isinstance<py::array>(obj), TypeError, name, ": expected a NumPy array or None, got ",
                py::str(py::type::of(obj)).cast<std::string>());
  py::array a = obj.cast<py::array>();
  input(a, name);
  require_same_dtype(param, "param", a, name);
  require_writeable(a, name);
  require_shape(a, name, shape_of(param));
  return a;
}

template <class T>
T* state_ptr(const py::object& obj) {
  if (obj.is_none()) return nullptr;
  py::array a = obj.cast<py::array>();
  return mptr<T>(a);
}

// The update writes param and every state buffer while reading grad: any two of
// them sharing memory would feed one buffer's new values into another's update
// (Adam with exp_avg and exp_avg_sq on one array), a wrong answer with no error.
void check_disjoint(const py::array& param, const py::array& grad,
                    std::initializer_list<std::pair<const py::object*, const char*>> states) {
  std::vector<std::pair<py::array, const char*>> written{{param, "param"}};
  for (const auto& [obj, name] : states)
    if (!obj->is_none()) written.emplace_back(obj->cast<py::array>(), name);
  for (size_t i = 0; i < written.size(); ++i) {
    require_no_overlap(written[i].first, written[i].second, grad, "grad", false);
    for (size_t j = 0; j < i; ++j)
      require_no_overlap(written[i].first, written[i].second, written[j].first, written[j].second, false);
  }
}

// A non-finite hyper-parameter turns every updated value into inf or NaN, and the
// scalar and AVX2 paths order their operations differently, so they would not even
// agree on which: refused, as torch.optim's constructors refuse them.
void check_finite(std::initializer_list<std::pair<const char*, double>> values) {
  for (const auto& [name, v] : values)
    CNNFAST_CHECK(std::isfinite(v), ValueError, name, ": expected a finite value, got ", v);
}

void check_step(int64_t step) { CNNFAST_CHECK(step >= 1, ValueError, "step: expected an integer >= 1, got ", step); }

void sgd_host(py::array param, const py::array& grad, const py::object& momentum_buffer, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  DType dt = check_param(param, grad);
  py::object buf = check_state(momentum_buffer, "momentum_buffer", param, momentum != 0.0);
  check_disjoint(param, grad, {{&buf, "momentum_buffer"}});
  check_finite({{"lr", lr}, {"momentum", momentum}, {"dampening", dampening}, {"weight_decay", weight_decay}});
  SgdOptions o{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
  const int64_t n = param.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = mptr<T>(param);
    const T* g = cptr<T>(grad);
    T* b = state_ptr<T>(buf);
    py::gil_scoped_release nogil;
    cpu::sgd_step<T>(p, g, b, n, o);
  });
}

void adam_host(py::array param, const py::array& grad, const py::object& exp_avg, const py::object& exp_avg_sq,
          const py::object& max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2, double eps,
          double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay) {
  DType dt = check_param(param, grad);
  check_step(step);
  py::object m = check_state(exp_avg, "exp_avg", param, true);
  py::object v = check_state(exp_avg_sq, "exp_avg_sq", param, true);
  py::object vmax = check_state(max_exp_avg_sq, "max_exp_avg_sq", param, amsgrad);
  check_disjoint(param, grad, {{&m, "exp_avg"}, {&v, "exp_avg_sq"}, {&vmax, "max_exp_avg_sq"}});
  check_finite({{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}, {"weight_decay", weight_decay}});
  AdamOptions o{lr, beta1, beta2, eps, weight_decay, step, amsgrad, maximize, decoupled_weight_decay};
  const int64_t n = param.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = mptr<T>(param);
    const T* g = cptr<T>(grad);
    T *mp = state_ptr<T>(m), *vp = state_ptr<T>(v), *xp = state_ptr<T>(vmax);
    py::gil_scoped_release nogil;
    cpu::adam_step<T>(p, g, mp, vp, xp, n, o);
  });
}

void adagrad_host(py::array param, const py::array& grad, const py::object& state_sum, int64_t step, double lr,
             double lr_decay, double weight_decay, double eps, bool maximize) {
  DType dt = check_param(param, grad);
  check_step(step);
  py::object s = check_state(state_sum, "state_sum", param, true);
  check_disjoint(param, grad, {{&s, "state_sum"}});
  check_finite({{"lr", lr}, {"lr_decay", lr_decay}, {"weight_decay", weight_decay}, {"eps", eps}});
  AdagradOptions o{lr, lr_decay, weight_decay, eps, step, maximize};
  const int64_t n = param.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = mptr<T>(param);
    const T* g = cptr<T>(grad);
    T* sp = state_ptr<T>(s);
    py::gil_scoped_release nogil;
    cpu::adagrad_step<T>(p, g, sp, n, o);
  });
}

void rmsprop_host(py::array param, const py::array& grad, const py::object& square_avg, const py::object& grad_avg,
             const py::object& momentum_buffer, double lr, double alpha, double eps, double weight_decay,
             double momentum, bool centered, bool maximize) {
  DType dt = check_param(param, grad);
  py::object sq = check_state(square_avg, "square_avg", param, true);
  py::object ga = check_state(grad_avg, "grad_avg", param, centered);
  py::object buf = check_state(momentum_buffer, "momentum_buffer", param, momentum > 0.0);
  check_disjoint(param, grad, {{&sq, "square_avg"}, {&ga, "grad_avg"}, {&buf, "momentum_buffer"}});
  check_finite({{"lr", lr}, {"alpha", alpha}, {"eps", eps}, {"weight_decay", weight_decay}, {"momentum", momentum}});
  RmspropOptions o{lr, alpha, eps, weight_decay, momentum, centered, maximize};
  const int64_t n = param.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = mptr<T>(param);
    const T* g = cptr<T>(grad);
    T *sp = state_ptr<T>(sq), *gp = centered ? state_ptr<T>(ga) : nullptr;
    T* bp = momentum > 0.0 ? state_ptr<T>(buf) : nullptr;
    py::gil_scoped_release nogil;
    cpu::rmsprop_step<T>(p, g, sp, gp, bp, n, o);
  });
}

void adadelta_host(py::array param, const py::array& grad, const py::object& square_avg, const py::object& acc_delta,
              double lr, double rho, double eps, double weight_decay, bool maximize) {
  DType dt = check_param(param, grad);
  py::object sq = check_state(square_avg, "square_avg", param, true);
  py::object acc = check_state(acc_delta, "acc_delta", param, true);
  check_disjoint(param, grad, {{&sq, "square_avg"}, {&acc, "acc_delta"}});
  check_finite({{"lr", lr}, {"rho", rho}, {"eps", eps}, {"weight_decay", weight_decay}});
  AdadeltaOptions o{lr, rho, eps, weight_decay, maximize};
  const int64_t n = param.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* p = mptr<T>(param);
    const T* g = cptr<T>(grad);
    T *sp = state_ptr<T>(sq), *ap = state_ptr<T>(acc);
    py::gil_scoped_release nogil;
    cpu::adadelta_step<T>(p, g, sp, ap, n, o);
  });
}

#if CNNFAST_WITH_CUDA
DType check_param_device(const DeviceArray& param, const DeviceArray& grad) {
  DType dt = device_float_dtype(param, "param");
  device_float_dtype(grad, "grad");
  require_same_typestr(param, "param", grad, "grad");
  require_device_shape(grad, "grad", param.shape);
  return dt;
}

// An optional state buffer on the device: None allowed only when not required (then data == nullptr).
DeviceArray check_state_device(const py::object& obj, const char* name, const DeviceArray& param, bool required) {
  if (obj.is_none()) {
    CNNFAST_CHECK(!required, ValueError, name, ": expected an array for these options, got None");
    return DeviceArray{};
  }
  DeviceArray a = device_array(obj, name, "param");
  require_same_typestr(param, "param", a, name);
  require_device_shape(a, name, param.shape);
  return a;
}

void sgd_device(const py::object& po, const py::object& go, const py::object& momentum_buffer, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                bool first_step) {
  DeviceArray param = as_device_array(po, "param"), grad = device_array(go, "grad", "param");
  DType dt = check_param_device(param, grad);
  DeviceArray buf = check_state_device(momentum_buffer, "momentum_buffer", param, momentum != 0.0);
  check_finite({{"lr", lr}, {"momentum", momentum}, {"dampening", dampening}, {"weight_decay", weight_decay}});
  SgdOptions o{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::sgd_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(buf), param.size(), o);
  });
}

void adam_device(const py::object& po, const py::object& go, const py::object& exp_avg, const py::object& exp_avg_sq,
                 const py::object& max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay) {
  DeviceArray param = as_device_array(po, "param"), grad = device_array(go, "grad", "param");
  DType dt = check_param_device(param, grad);
  check_step(step);
  DeviceArray m = check_state_device(exp_avg, "exp_avg", param, true);
  DeviceArray v = check_state_device(exp_avg_sq, "exp_avg_sq", param, true);
  DeviceArray vmax = check_state_device(max_exp_avg_sq, "max_exp_avg_sq", param, amsgrad);
  check_finite({{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}, {"weight_decay", weight_decay}});
  AdamOptions o{lr, beta1, beta2, eps, weight_decay, step, amsgrad, maximize, decoupled_weight_decay};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adam_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(m), dmptr<T>(v), amsgrad ? dmptr<T>(vmax) : nullptr,
                       param.size(), o);
  });
}

void adagrad_device(const py::object& po, const py::object& go, const py::object& state_sum, int64_t step, double lr,
                    double lr_decay, double weight_decay, double eps, bool maximize) {
  DeviceArray param = as_device_array(po, "param"), grad = device_array(go, "grad", "param");
  DType dt = check_param_device(param, grad);
  check_step(step);
  DeviceArray s = check_state_device(state_sum, "state_sum", param, true);
  check_finite({{"lr", lr}, {"lr_decay", lr_decay}, {"weight_decay", weight_decay}, {"eps", eps}});
  AdagradOptions o{lr, lr_decay, weight_decay, eps, step, maximize};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adagrad_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(s), param.size(), o);
  });
}

void rmsprop_device(const py::object& po, const py::object& go, const py::object& square_avg,
                    const py::object& grad_avg, const py::object& momentum_buffer, double lr, double alpha,
                    double eps, double weight_decay, double momentum, bool centered, bool maximize) {
  DeviceArray param = as_device_array(po, "param"), grad = device_array(go, "grad", "param");
  DType dt = check_param_device(param, grad);
  DeviceArray sq = check_state_device(square_avg, "square_avg", param, true);
  DeviceArray ga = check_state_device(grad_avg, "grad_avg", param, centered);
  DeviceArray buf = check_state_device(momentum_buffer, "momentum_buffer", param, momentum > 0.0);
  check_finite({{"lr", lr}, {"alpha", alpha}, {"eps", eps}, {"weight_decay", weight_decay}, {"momentum", momentum}});
  RmspropOptions o{lr, alpha, eps, weight_decay, momentum, centered, maximize};
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::rmsprop_step<T>(dmptr<T>(param), dptr<T>(grad), dmptr<T>(sq), centered ? dmptr<T>(ga) : nullptr,
                          momentum > 0.0 ? dmptr<T>(buf) : nullptr, param.size(), o);
  });
}
#define STEP_ON_DEVICE(call) call
#else
#define STEP_ON_DEVICE(call) (void)0  // (on_host has thrown)
#endif

// The entry points: param's device picks the kernels.
void sgd(const py::object& param, const py::object& grad, const py::object& momentum_buffer, double lr,
         double momentum, double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  if (on_host(param, "param"))
    return sgd_host(param.cast<py::array>(), host_array(grad, "grad", "param"), momentum_buffer, lr, momentum,
                    dampening, weight_decay, nesterov, maximize, first_step);
  STEP_ON_DEVICE(sgd_device(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov,
                               maximize, first_step));
}

void adam(const py::object& param, const py::object& grad, const py::object& exp_avg, const py::object& exp_avg_sq,
          const py::object& max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2, double eps,
          double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay) {
  if (on_host(param, "param"))
    return adam_host(param.cast<py::array>(), host_array(grad, "grad", "param"), exp_avg, exp_avg_sq,
                     max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
                     decoupled_weight_decay);
  STEP_ON_DEVICE(adam_device(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                                weight_decay, amsgrad, maximize, decoupled_weight_decay));
}

void adagrad(const py::object& param, const py::object& grad, const py::object& state_sum, int64_t step, double lr,
             double lr_decay, double weight_decay, double eps, bool maximize) {
  if (on_host(param, "param"))
    return adagrad_host(param.cast<py::array>(), host_array(grad, "grad", "param"), state_sum, step, lr, lr_decay,
                        weight_decay, eps, maximize);
  STEP_ON_DEVICE(adagrad_device(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, maximize));
}

void rmsprop(const py::object& param, const py::object& grad, const py::object& square_avg,
             const py::object& grad_avg, const py::object& momentum_buffer, double lr, double alpha, double eps,
             double weight_decay, double momentum, bool centered, bool maximize) {
  if (on_host(param, "param"))
    return rmsprop_host(param.cast<py::array>(), host_array(grad, "grad", "param"), square_avg, grad_avg,
                        momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered, maximize);
  STEP_ON_DEVICE(rmsprop_device(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay,
                                   momentum, centered, maximize));
}

void adadelta(const py::object& param, const py::object& grad, const py::object& square_avg,
              const py::object& acc_delta, double lr, double rho, double eps, double weight_decay, bool maximize) {
  if (on_host(param, "param"))
    return adadelta_host(param.cast<py::array>(), host_array(grad, "grad", "param"), square_avg, acc_delta, lr,
                         rho, eps, weight_decay, maximize);
  throw TypeError("param: adadelta_step has no CUDA kernel yet; step this parameter on the CPU");
}
#undef STEP_ON_DEVICE

// acc = alpha * acc + beta * other, in place, in one pass over both (numpy needs two:
// a scale and an add). Averaging gradients across ranks (distributed/zero.py) is
// memory-bound: each extra pass over a 22 MB shard costs ~1.5 ms of a step.
void scale_add(py::array& acc, const py::array& other, double alpha, double beta) {
  const DType dt = input(acc, "acc");
  require_writeable(acc, "acc");
  input(other, "other");
  require_same_dtype(acc, "acc", other, "other");
  require_shape(other, "other", shape_of(acc));
  require_no_overlap(acc, "acc", other, "other", true);
  const int64_t n = acc.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    T* a = mptr<T>(acc);
    const T* b = cptr<T>(other);
    const T al = T(alpha), be = T(beta);
    py::gil_scoped_release nogil;
    // 16-byte vectors by hand: this file is built for the baseline ISA at -O2, whose
    // vectoriser left a scalar loop (4.4 ms for 22 MB, twice numpy's in-place add).
    parallel_for(0, n, int64_t(1) << 16, [=](int64_t i0, int64_t i1) {
      constexpr int L = 16 / sizeof(T);
      typedef T V __attribute__((vector_size(16)));
      const T x = al, y = be;
      int64_t i = i0;
      for (; i + L <= i1; i += L) {
        V u, v;
        std::memcpy(&u, a + i, sizeof(V));
        std::memcpy(&v, b + i, sizeof(V));
        u = x * u + y * v;
        std::memcpy(a + i, &u, sizeof(V));
      }
      for (; i < i1; ++i) a[i] = x * a[i] + y * b[i];
    });
  });
}

}  // namespace

void bind_optim(py::module_& m) {
  using py::arg;
  m.def("_scale_add", &scale_add, "acc = alpha * acc + beta * other in place (one pass; C-contiguous, same dtype "
        "and shape; other may be acc itself).", arg("acc"), arg("other"), arg("alpha"), arg("beta"));
  m.def("sgd_step", &sgd,
        "SGD update of param (and momentum_buffer) in place, as torch.optim.SGD's single-tensor step.",
        arg("param"), arg("grad"), arg("momentum_buffer"), py::kw_only(), arg("lr"), arg("momentum") = 0.0,
        arg("dampening") = 0.0, arg("weight_decay") = 0.0, arg("nesterov") = false, arg("maximize") = false,
        arg("first_step") = false);
  m.def("adam_step", &adam,
        "Adam/AdamW update of param, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad) in place; "
        "step counts from 1.",
        arg("param"), arg("grad"), arg("exp_avg"), arg("exp_avg_sq"), arg("max_exp_avg_sq"), py::kw_only(),
        arg("step"), arg("lr"), arg("beta1") = 0.9, arg("beta2") = 0.999, arg("eps") = 1e-8,
        arg("weight_decay") = 0.0, arg("amsgrad") = false, arg("maximize") = false,
        arg("decoupled_weight_decay") = false);
  m.def("adagrad_step", &adagrad, "Adagrad update of param and state_sum in place; step counts from 1.",
        arg("param"), arg("grad"), arg("state_sum"), py::kw_only(), arg("step"), arg("lr"), arg("lr_decay") = 0.0,
        arg("weight_decay") = 0.0, arg("eps") = 1e-10, arg("maximize") = false);
  m.def("rmsprop_step", &rmsprop,
        "RMSprop update of param, square_avg (grad_avg when centered, momentum_buffer when momentum > 0) in place.",
        arg("param"), arg("grad"), arg("square_avg"), arg("grad_avg"), arg("momentum_buffer"), py::kw_only(),
        arg("lr"), arg("alpha") = 0.99, arg("eps") = 1e-8, arg("weight_decay") = 0.0, arg("momentum") = 0.0,
        arg("centered") = false, arg("maximize") = false);
  m.def("adadelta_step", &adadelta, "Adadelta update of param, square_avg and acc_delta in place.", arg("param"),
        arg("grad"), arg("square_avg"), arg("acc_delta"), py::kw_only(), arg("lr") = 1.0, arg("rho") = 0.9,
        arg("eps") = 1e-6, arg("weight_decay") = 0.0, arg("maximize") = false);
}

void bind_optim_device(py::module_& cu) { bind_optim(cu); }

}  // namespace cnnfast::bind
