// Bindings for the activation family (csrc/cpu/activation.h).
#include "bind/array.h"
#include "bind/elementwise.h"
#include "bind/families.h"
#include "cpu/activation.h"

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

AxisSplit split_axis(const py::array& a, int64_t axis) {
  int ax = normalize_axis(axis, a.ndim(), "axis");
  AxisSplit s;
  for (int i = 0; i < a.ndim(); ++i) {
    if (i < ax) s.outer *= a.shape(i);
    else if (i == ax) s.dim = a.shape(i);
    else s.inner *= a.shape(i);
  }
  return s;
}

py::array softmax_fwd(const py::array& x, int64_t axis, bool log, const py::object& out) {
  DType dt = input(x, "x");
  require_ndim(x, "x", 1, 32);
  require_nonempty(x, "x");
  AxisSplit s = split_axis(x, axis);
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
  AxisSplit s = split_axis(gy, axis);
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
          [act](const py::array& x, const py::object& out) { return elementwise_forward(act, x, 0.0, out); },
          py::arg("x"), py::kw_only(), py::arg("out") = none,
          (std::string(p.name) + "(x) elementwise; x: any shape, float32/float64. Returns y of x's shape.").c_str());
    m.def((std::string(p.name) + "_backward").c_str(),
          [act, saved](const py::array& gy, const py::array& s, const py::object& out) {
            return elementwise_backward(act, gy, s, saved, 0.0, out);
          },
          py::arg("grad_output"), py::arg(saved), py::kw_only(), py::arg("out") = none,
          (std::string("grad_input of ") + p.name + " from grad_output and the saved " + saved + " (same shape).")
              .c_str());
  }
  m.def("leaky_relu_forward",
        [](const py::array& x, double slope, const py::object& out) {
          return elementwise_forward(Activation::LeakyReLU, x, slope, out);
        },
        py::arg("x"), py::arg("negative_slope") = 0.01, py::kw_only(), py::arg("out") = none);
  m.def("leaky_relu_backward",
        [](const py::array& gy, const py::array& x, double slope, const py::object& out) {
          return elementwise_backward(Activation::LeakyReLU, gy, x, "x", slope, out);
        },
        py::arg("grad_output"), py::arg("x"), py::arg("negative_slope") = 0.01, py::kw_only(), py::arg("out") = none);
  m.def("elu_forward",
        [](const py::array& x, double alpha, const py::object& out) {
          return elementwise_forward(Activation::ELU, x, alpha, out);
        },
        py::arg("x"), py::arg("alpha") = 1.0, py::kw_only(), py::arg("out") = none);
  m.def("elu_backward",
        [](const py::array& gy, const py::array& x, double alpha, const py::object& out) {
          return elementwise_backward(Activation::ELU, gy, x, "x", alpha, out);
        },
        py::arg("grad_output"), py::arg("x"), py::arg("alpha") = 1.0, py::kw_only(), py::arg("out") = none);
  for (bool log : {false, true}) {
    std::string name = log ? "log_softmax" : "softmax";
    m.def((name + "_forward").c_str(),
          [log](const py::array& x, int64_t axis, const py::object& out) { return softmax_fwd(x, axis, log, out); },
          py::arg("x"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = none,
          (name + " over one axis of x (any rank >= 1).").c_str());
    m.def((name + "_backward").c_str(),
          [log](const py::array& gy, const py::array& y, int64_t axis, const py::object& out) {
            return softmax_bwd(gy, y, axis, log, out);
          },
          py::arg("grad_output"), py::arg("output"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = none,
          (name + " gradient from grad_output and the forward's output.").c_str());
  }
}

}  // namespace cnnfast::bind
