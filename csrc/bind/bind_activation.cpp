// Bindings for the activation family, for both devices: relu, leaky_relu, elu, sigmoid,
// tanh, silu and (log_)softmax, forward and backward. The first array argument's device
// picks the kernels: a NumPy array runs csrc/cpu/activation.*, a CUDA array (in a CUDA
// build) csrc/cuda/activation.*; the same functions are registered in cnnfast._C and
// cnnfast._C.cuda. The axis split of softmax is computed once for both.
#include "bind/array.h"
#include "bind/device_dispatch.h"
#include "bind/elementwise.h"
#include "bind/families.h"
#include "cpu/activation.h"

#if CNNFAST_WITH_CUDA
#include "cuda/activation.cuh"
#endif

namespace cnnfast::bind {
namespace {

using cpu::Activation;

py::array elementwise_forward(Activation act, const py::array& x, double param, const py::object& out) {
  return elementwise_map(x, out, [&](const auto* xp, auto* yp, int64_t n) {
    cpu::activation_forward(act, xp, yp, n, param);
  });
}

py::array elementwise_backward(Activation act, const py::array& grad_y, const py::array& saved,
                               const char* saved_name, double param, const py::object& out) {
  return elementwise_map_backward(grad_y, saved, saved_name, out, [&](const auto* gp, const auto* sp, auto* op, int64_t n) {
    cpu::activation_backward(act, gp, sp, op, n, param);
  });
}

struct AxisSplit {
  int64_t outer = 1, dim = 1, inner = 1;
};

AxisSplit split_axis(const std::vector<int64_t>& shape, int64_t axis) {
  const int nd = static_cast<int>(shape.size());
  int ax = normalize_axis(axis, nd, "axis");
  AxisSplit s;
  for (int i = 0; i < nd; ++i) {
    if (i < ax) s.outer *= shape[i];
    else if (i == ax) s.dim = shape[i];
    else s.inner *= shape[i];
  }
  return s;
}

py::array softmax_fwd(const py::array& x, int64_t axis, bool log, const py::object& out) {
  DType dt = input(x, "x");
  require_ndim(x, "x", 1, 32);
  require_nonempty(x, "x");
  AxisSplit s = split_axis(shape_of(x), axis);
  py::array y = elementwise_output(out, "out", x, {{&x, "x"}});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::softmax_forward<T>(xp, yp, s.outer, s.dim, s.inner, log);
  });
  return y;
}

py::array softmax_bwd(const py::array& gy, const py::array& y, int64_t axis, bool log, const py::object& out) {
  DType dt = input(gy, "grad_output");
  input(y, "output");
  require_same_dtype(gy, "grad_output", y, "output");
  require_ndim(gy, "grad_output", 1, 32);
  require_nonempty(gy, "grad_output");
  require_shape(y, "output", shape_of(gy));
  AxisSplit s = split_axis(shape_of(gy), axis);
  py::array gx = elementwise_output(out, "out", gy, {{&gy, "grad_output"}, {&y, "output"}});
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    const T* yp = cptr<T>(y);
    T* op = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::softmax_backward<T>(gp, yp, op, s.outer, s.dim, s.inner, log);
  });
  return gx;
}

#if CNNFAST_WITH_CUDA
DeviceArray device_forward(Activation act, const py::object& xo, double param, const py::object& out) {
  DeviceArray x = as_device_array(xo, "x");
  DType dt = device_input(x, "x");
  DeviceArray y = device_output(out, "out", x);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    cuda::activation_forward<T>(act, dptr<T>(x), dmptr<T>(y), x.size(), param);
  });
  return y;
}

DeviceArray device_backward(Activation act, const py::object& go, const py::object& so, const char* saved,
                            double param, const py::object& out) {
  DeviceArray g = as_device_array(go, "grad_output");
  DeviceArray s = device_array(so, saved, "grad_output");
  DType dt = device_input(g, "grad_output");
  require_same(g, "grad_output", s, saved);
  DeviceArray gx = device_output(out, "out", g);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    cuda::activation_backward<T>(act, dptr<T>(g), dptr<T>(s), dmptr<T>(gx), g.size(), param);
  });
  return gx;
}

DeviceArray device_softmax_fwd(const py::object& xo, int64_t axis, bool log, const py::object& out) {
  DeviceArray x = as_device_array(xo, "x");
  DType dt = device_input(x, "x");
  require_device_ndim(x, "x", 1, 32);
  AxisSplit s = split_axis(x.shape, axis);
  DeviceArray y = device_output(out, "out", x);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    cuda::softmax_forward<T>(dptr<T>(x), dmptr<T>(y), s.outer, s.dim, s.inner, log);
  });
  return y;
}

DeviceArray device_softmax_bwd(const py::object& go, const py::object& yo, int64_t axis, bool log,
                               const py::object& out) {
  DeviceArray g = as_device_array(go, "grad_output");
  DeviceArray y = device_array(yo, "output", "grad_output");
  DType dt = device_input(g, "grad_output");
  require_same(g, "grad_output", y, "output");
  require_device_ndim(g, "grad_output", 1, 32);
  AxisSplit s = split_axis(g.shape, axis);
  DeviceArray gx = device_output(out, "out", g);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    cuda::softmax_backward<T>(dptr<T>(g), dptr<T>(y), dmptr<T>(gx), s.outer, s.dim, s.inner, log);
  });
  return gx;
}
#endif

// The entry points: the first array's device picks the kernel.
py::object forward(Activation act, const py::object& x, double param, const py::object& out) {
  if (on_host(x, "x")) return elementwise_forward(act, x.cast<py::array>(), param, out);
  CNNFAST_ON_DEVICE(device_forward(act, x, param, out));
}

py::object backward(Activation act, const py::object& gy, const py::object& s, const char* saved, double param,
                    const py::object& out) {
  if (on_host(gy, "grad_output"))
    return elementwise_backward(act, gy.cast<py::array>(), host_array(s, saved, "grad_output"), saved, param, out);
  CNNFAST_ON_DEVICE(device_backward(act, gy, s, saved, param, out));
}

py::object softmax_forward(const py::object& x, int64_t axis, bool log, const py::object& out) {
  if (on_host(x, "x")) return softmax_fwd(x.cast<py::array>(), axis, log, out);
  CNNFAST_ON_DEVICE(device_softmax_fwd(x, axis, log, out));
}

py::object softmax_backward(const py::object& gy, const py::object& y, int64_t axis, bool log,
                            const py::object& out) {
  if (on_host(gy, "grad_output"))
    return softmax_bwd(gy.cast<py::array>(), host_array(y, "output", "grad_output"), axis, log, out);
  CNNFAST_ON_DEVICE(device_softmax_bwd(gy, y, axis, log, out));
}

}  // namespace

void bind_activation(py::module_& m) {
  auto none = py::none();
  struct Plain {
    const char* name;
    Activation act;
    const char* saved;
  };
  // Ops without a hyper-parameter.
  for (Plain p : {Plain{"relu", Activation::ReLU, "x"}, Plain{"sigmoid", Activation::Sigmoid, "output"},
                  Plain{"tanh", Activation::Tanh, "output"}, Plain{"silu", Activation::SiLU, "x"}}) {
    Activation act = p.act;
    const char* saved = p.saved;
    m.def((std::string(p.name) + "_forward").c_str(),
          [act](const py::object& x, const py::object& out) { return forward(act, x, 0.0, out); },
          py::arg("x"), py::kw_only(), py::arg("out") = none,
          (std::string(p.name) + "(x) elementwise; x: any shape, float32/float64. Returns y of x's shape.").c_str());
    m.def((std::string(p.name) + "_backward").c_str(),
          [act, saved](const py::object& gy, const py::object& s, const py::object& out) {
            return backward(act, gy, s, saved, 0.0, out);
          },
          py::arg("grad_output"), py::arg(saved), py::kw_only(), py::arg("out") = none,
          (std::string("grad_input of ") + p.name + " from grad_output and the saved " + saved + " (same shape).")
              .c_str());
  }
  m.def("leaky_relu_forward",
        [](const py::object& x, double slope, const py::object& out) {
          return forward(Activation::LeakyReLU, x, slope, out);
        },
        py::arg("x"), py::arg("negative_slope") = 0.01, py::kw_only(), py::arg("out") = none);
  m.def("leaky_relu_backward",
        [](const py::object& gy, const py::object& x, double slope, const py::object& out) {
          return backward(Activation::LeakyReLU, gy, x, "x", slope, out);
        },
        py::arg("grad_output"), py::arg("x"), py::arg("negative_slope") = 0.01, py::kw_only(), py::arg("out") = none);
  m.def("elu_forward",
        [](const py::object& x, double alpha, const py::object& out) {
          return forward(Activation::ELU, x, alpha, out);
        },
        py::arg("x"), py::arg("alpha") = 1.0, py::kw_only(), py::arg("out") = none);
  m.def("elu_backward",
        [](const py::object& gy, const py::object& x, double alpha, const py::object& out) {
          return backward(Activation::ELU, gy, x, "x", alpha, out);
        },
        py::arg("grad_output"), py::arg("x"), py::arg("alpha") = 1.0, py::kw_only(), py::arg("out") = none);
  for (bool log : {false, true}) {
    std::string name = log ? "log_softmax" : "softmax";
    m.def((name + "_forward").c_str(),
          [log](const py::object& x, int64_t axis, const py::object& out) {
            return softmax_forward(x, axis, log, out);
          },
          py::arg("x"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = none,
          (name + " over one axis of x (any rank >= 1).").c_str());
    m.def((name + "_backward").c_str(),
          [log](const py::object& gy, const py::object& y, int64_t axis, const py::object& out) {
            return softmax_backward(gy, y, axis, log, out);
          },
          py::arg("grad_output"), py::arg("output"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = none,
          (name + " gradient from grad_output and the forward's output.").c_str());
  }
}

void bind_activation_device(py::module_& cu) { bind_activation(cu); }

}  // namespace cnnfast::bind
