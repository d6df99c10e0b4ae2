// Bindings for the dropout family (csrc/cpu/dropout.h): dropout_* (one mask
// draw per element) and feature_dropout_* (one per (n, c) plane of a batched
// (N, C, *) array), plus dropout_mask for inspecting the mask. The key is
// (seed, offset); the same key in forward and backward gives the same mask.
#include "bind/array.h"
#include "bind/families.h"
#include "cpu/dropout.h"

namespace cnnfast::bind {
namespace {

void check_p(double p) {
  CNNFAST_CHECK(p >= 0.0 && p <= 1.0, ValueError, "p: expected a dropout probability in [0, 1], got ", p);
}

// inner: how many consecutive elements share one mask draw.
py::array apply(const py::array& x, const char* name, double p, uint64_t seed, uint64_t offset, bool feature,
                const py::object& out) {
  DType dt = input(x, name);
  require_nonempty(x, name);
  check_p(p);
  int64_t inner = 1;
  if (feature) {
    require_ndim(x, name, 2, 32);
    for (int i = 2; i < x.ndim(); ++i) inner *= x.shape(i);
  }
  py::array y = elementwise_output(out, "out", x, {{&x, name}});
  const int64_t n = x.size();
  const cpu::DropoutKey key = cpu::dropout_key(seed, offset, p);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::dropout_apply<T>(xp, yp, n, inner, p, key);
  });
  return y;
}

}  // namespace

void bind_dropout(py::module_& m) {
  using py::arg;
  auto none = py::none();
  m.def("dropout_forward",
        [](const py::array& x, double p, uint64_t seed, uint64_t offset, const py::object& out) {
          return apply(x, "input", p, seed, offset, false, out);
        },
        arg("input"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none,
        "Elementwise inverted dropout of input (any shape): kept values times 1/(1-p). out may be input.");
  m.def("dropout_backward",
        [](const py::array& gy, double p, uint64_t seed, uint64_t offset, const py::object& out) {
          return apply(gy, "grad_output", p, seed, offset, false, out);
        },
        arg("grad_output"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none,
        "grad_input: grad_output times the forward's mask (recomputed from seed, offset) and 1/(1-p).");
  m.def("feature_dropout_forward",
        [](const py::array& x, double p, uint64_t seed, uint64_t offset, const py::object& out) {
          return apply(x, "input", p, seed, offset, true, out);
        },
        arg("input"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none,
        "Channel dropout of input (N, C, *): whole (n, c) planes kept (times 1/(1-p)) or zeroed.");
  m.def("feature_dropout_backward",
        [](const py::array& gy, double p, uint64_t seed, uint64_t offset, const py::object& out) {
          return apply(gy, "grad_output", p, seed, offset, true, out);
        },
        arg("grad_output"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none);
  m.def("dropout_mask",
        [](int64_t n, double p, uint64_t seed, uint64_t offset) {
          CNNFAST_CHECK(n >= 1, ValueError, "n: expected a positive mask length, got ", n);
          check_p(p);
          py::array_t<uint8_t> mask = new_array_of(py::dtype::of<uint8_t>(), {n}, "n");
          const cpu::DropoutKey key = cpu::dropout_key(seed, offset, p);
          uint8_t* mp = mask.mutable_data();
          py::gil_scoped_release nogil;
          cpu::dropout_mask(mp, n, key);
          return mask;
        },
        arg("n"), arg("p"), arg("seed"), arg("offset"),
        "The keep mask (uint8, 1 = kept) of mask positions 0..n-1 for this key, as dropout applies it.");
}

}  // namespace cnnfast::bind
