// Bindings for csrc/cpu/activation_extra.h: gelu, gelu_tanh, hardswish,
// hardsigmoid, relu6, mish, softplus. Each backward takes the forward's input x.
#include <cmath>
#include <string>

#include "bind/array.h"
#include "bind/elementwise.h"
#include "bind/families.h"
#include "cpu/activation_extra.h"

namespace cnnfast::bind {
namespace {

using cpu::ExtraActivation;

void check_softplus(double beta, double threshold) {
  CNNFAST_CHECK(std::isfinite(beta) && beta != 0.0, ValueError, "beta: expected a finite non-zero value, got ", beta);
  CNNFAST_CHECK(!std::isnan(threshold), ValueError, "threshold: expected a number, got nan");
}

py::array extra_forward(ExtraActivation act, const py::array& x, double beta, double threshold,
                        const py::object& out) {
  return elementwise_map(x, out, [&](const auto* xp, auto* yp, int64_t n) {
    cpu::extra_activation_forward(act, xp, yp, n, beta, threshold);
  });
}

py::array extra_backward(ExtraActivation act, const py::array& gy, const py::array& x, double beta, double threshold,
                         const py::object& out) {
  return elementwise_map_backward(gy, x, "x", out, [&](const auto* gp, const auto* xp, auto* op, int64_t n) {
    cpu::extra_activation_backward(act, gp, xp, op, n, beta, threshold);
  });
}

}  // namespace

void bind_activation_extra(py::module_& m) {
  auto none = py::none();
  struct Plain {
    const char* name;
    ExtraActivation act;
    const char* formula;
  };
  for (Plain p : {Plain{"gelu", ExtraActivation::GELU, "x * Phi(x), Phi the standard normal CDF (exact, erf form)"},
                  Plain{"gelu_tanh", ExtraActivation::GELUTanh,
                        "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GELU's tanh approximation)"},
                  Plain{"hardswish", ExtraActivation::Hardswish, "x * relu6(x + 3) / 6"},
                  Plain{"hardsigmoid", ExtraActivation::Hardsigmoid, "relu6(x + 3) / 6"},
                  Plain{"relu6", ExtraActivation::ReLU6, "min(max(x, 0), 6)"},
                  Plain{"mish", ExtraActivation::Mish, "x * tanh(softplus(x))"},
                  Plain{"erf", ExtraActivation::Erf, "the error function 2/sqrt(pi) * integral_0^x exp(-t^2) dt"}}) {
    ExtraActivation act = p.act;
    m.def((std::string(p.name) + "_forward").c_str(),
          [act](const py::array& x, const py::object& out) { return extra_forward(act, x, 1.0, 20.0, out); },
          py::arg("x"), py::kw_only(), py::arg("out") = none,
          (std::string(p.name) + "(x) = " + p.formula + " elementwise; x: any shape, float32/float64.").c_str());
    m.def((std::string(p.name) + "_backward").c_str(),
          [act](const py::array& gy, const py::array& x, const py::object& out) {
            return extra_backward(act, gy, x, 1.0, 20.0, out);
          },
          py::arg("grad_output"), py::arg("x"), py::kw_only(), py::arg("out") = none,
          (std::string("grad_input of ") + p.name + " from grad_output and the forward's input x (same shape).")
              .c_str());
  }
  m.def("softplus_forward",
        [](const py::array& x, double beta, double threshold, const py::object& out) {
          check_softplus(beta, threshold);
          return extra_forward(ExtraActivation::Softplus, x, beta, threshold, out);
        },
        py::arg("x"), py::arg("beta") = 1.0, py::arg("threshold") = 20.0, py::kw_only(), py::arg("out") = none,
        "softplus(x) = log(1 + exp(beta x)) / beta, or x where beta x > threshold; x: any shape.");
  m.def("softplus_backward",
        [](const py::array& gy, const py::array& x, double beta, double threshold, const py::object& out) {
          check_softplus(beta, threshold);
          return extra_backward(ExtraActivation::Softplus, gy, x, beta, threshold, out);
        },
        py::arg("grad_output"), py::arg("x"), py::arg("beta") = 1.0, py::arg("threshold") = 20.0, py::kw_only(),
        py::arg("out") = none, "grad_input of softplus from grad_output and the forward's input x.");
}

}  // namespace cnnfast::bind
