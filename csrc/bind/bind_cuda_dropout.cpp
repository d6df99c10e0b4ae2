// CUDA bindings of the dropout family into cnnfast._C.cuda, names and
// arguments as bind_dropout.cpp. The key is made on the host with the CPU's
// cpu::dropout_key, so for the same (seed, offset, p) the GPU drops exactly the
// elements the CPU drops.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include "bind/device_array.h"
#include "cuda/dropout.cuh"

namespace cnnfast::bind {
namespace {

void check_p(double p) {
  CNNFAST_CHECK(p >= 0.0 && p <= 1.0, ValueError, "p: expected a dropout probability in [0, 1], got ", p);
}

DeviceArray apply(const py::object& xo, const char* name, double p, uint64_t seed, uint64_t offset, bool feature,
                  const py::object& out) {
  DeviceArray x = as_device_array(xo, name);
  DType dt = device_input(x, name);
  check_p(p);
  int64_t inner = 1;
  if (feature) {
    require_device_ndim(x, name, 2, 32);
    for (size_t i = 2; i < x.shape.size(); ++i) inner *= x.shape[i];
  }
  DeviceArray y = device_output(out, "out", x);
  const cpu::DropoutKey key = cpu::dropout_key(seed, offset, p);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::dropout_apply<T>(dptr<T>(x), dmptr<T>(y), x.size(), inner, p, key);
  });
  return y;
}

}  // namespace

void bind_cuda_dropout(py::module_& cu) {
  using py::arg;
  auto none = py::none();
  cu.def("dropout_forward",
         [](const py::object& x, double p, uint64_t seed, uint64_t offset, const py::object& out) {
           return apply(x, "input", p, seed, offset, false, out);
         },
         arg("input"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none,
         "GPU inverted dropout, the CPU's mask for the same (seed, offset). out may be input.");
  cu.def("dropout_backward",
         [](const py::object& gy, double p, uint64_t seed, uint64_t offset, const py::object& out) {
           return apply(gy, "grad_output", p, seed, offset, false, out);
         },
         arg("grad_output"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none);
  cu.def("feature_dropout_forward",
         [](const py::object& x, double p, uint64_t seed, uint64_t offset, const py::object& out) {
           return apply(x, "input", p, seed, offset, true, out);
         },
         arg("input"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none);
  cu.def("feature_dropout_backward",
         [](const py::object& gy, double p, uint64_t seed, uint64_t offset, const py::object& out) {
           return apply(gy, "grad_output", p, seed, offset, true, out);
         },
         arg("grad_output"), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none);
  cu.def("dropout_mask",
         [](int64_t n, double p, uint64_t seed, uint64_t offset) {
           CNNFAST_CHECK(n >= 1, ValueError, "n: expected a positive mask length, got ", n);
           check_p(p);
           DeviceArray mask = empty_device({n}, "|u1");
           const cpu::DropoutKey key = cpu::dropout_key(seed, offset, p);
           py::gil_scoped_release nogil;
           cuda::dropout_mask(static_cast<uint8_t*>(mask.data), n, key);
           return mask;
         },
         arg("n"), arg("p"), arg("seed"), arg("offset"), "The keep mask (uint8 DeviceArray) of positions 0..n-1.");
}

}  // namespace cnnfast::bind
#endif
