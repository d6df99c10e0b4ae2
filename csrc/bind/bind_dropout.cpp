// Bindings for the dropout family, for both devices: dropout_* (one mask draw per
// element) and feature_dropout_* (one per (n, c) plane of a batched (N, C, *) array),
// plus dropout_mask for inspecting the mask. Arguments are checked once, device-
// neutrally (core/op_params.h holds the key and the mask rule both devices apply);
// then the array's device picks the kernel: a NumPy array runs csrc/cpu/dropout.*,
// a CUDA array (DeviceArray, __cuda_array_interface__, DLPack) csrc/cuda/dropout.*.
// The same functions are registered in cnnfast._C and cnnfast._C.cuda; only
// dropout_mask, which takes no array, returns host memory from the one and device
// memory from the other. The key is (seed, offset); the same key in forward and
// backward gives the same mask, on either device.
#include "bind/array.h"
#include "bind/device_dispatch.h"
#include "bind/families.h"
#include "core/op_params.h"
#include "cpu/dropout.h"

#if CNNFAST_WITH_CUDA
#include "cuda/dropout.cuh"
#endif

namespace cnnfast::bind {
namespace {

void check_p(double p) {
  CNNFAST_CHECK(p >= 0.0 && p <= 1.0, ValueError, "p: expected a dropout probability in [0, 1], got ", p);
}

// The device-neutral part of a call: p, the key, and how many elements share a draw.
DropoutParams params(const std::vector<int64_t>& shape, const char* name, double p, uint64_t seed, uint64_t offset,
                     bool feature) {
  check_p(p);
  if (feature)
    CNNFAST_CHECK(shape.size() >= 2 && shape.size() <= 32, ValueError, name, ": expected 2 to 32 dimensions "
                  "(N, C, *), got ", shape.size(), " (shape ", shape_str(shape), ")");
  return {dropout_key(seed, offset, p), p, dropout_inner(shape.data(), static_cast<int>(shape.size()), feature)};
}

py::array apply_host(const py::array& x, const char* name, double p, uint64_t seed, uint64_t offset, bool feature,
                     const py::object& out) {
  DType dt = input(x, name);
  require_nonempty(x, name);
  const DropoutParams d = params(shape_of(x), name, p, seed, offset, feature);
  py::array y = elementwise_output(out, "out", x, {{&x, name}});
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::dropout_apply<T>(xp, yp, n, d.inner, d.p, d.key);
  });
  return y;
}

#if CNNFAST_WITH_CUDA
DeviceArray apply_device(const py::object& xo, const char* name, double p, uint64_t seed, uint64_t offset, bool feature,
                         const py::object& out) {
  DeviceArray x = as_device_array(xo, name);
  DType dt = device_input(x, name);
  const DropoutParams d = params(x.shape, name, p, seed, offset, feature);
  DeviceArray y = device_output(out, "out", x);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::dropout_apply<T>(dptr<T>(x), dmptr<T>(y), x.size(), d.inner, d.p, d.key);
  });
  return y;
}
#endif

// One entry point per op: the array's device picks the kernel.
py::object apply(const py::object& x, const char* name, double p, uint64_t seed, uint64_t offset, bool feature,
                 const py::object& out) {
  if (on_host(x, name)) return apply_host(x.cast<py::array>(), name, p, seed, offset, feature, out);
#if CNNFAST_WITH_CUDA
  return py::cast(apply_device(x, name, p, seed, offset, feature, out));
#else
  return py::none();  // (on_host has thrown)
#endif
}

void register_dropout(py::module_& m, bool device_module) {
  using py::arg;
  auto none = py::none();
  struct Op {
    const char* name;
    const char* arg;
    bool feature;
    const char* doc;
  };
  const Op ops[] = {
      {"dropout_forward", "input", false,
       "Elementwise inverted dropout of input (any shape): kept values times 1/(1-p). out may be input. "
       "A NumPy array runs on the CPU, a CUDA array on its GPU, with the same mask."},
      {"dropout_backward", "grad_output", false,
       "grad_input: grad_output times the forward's mask (recomputed from seed, offset) and 1/(1-p)."},
      {"feature_dropout_forward", "input", true,
       "Channel dropout of input (N, C, *): whole (n, c) planes kept (times 1/(1-p)) or zeroed."},
      {"feature_dropout_backward", "grad_output", true, "The gradient of feature_dropout_forward."},
  };
  for (const Op& op : ops) {
    const char* name = op.arg;
    const bool feature = op.feature;
    m.def(op.name,
          [name, feature](const py::object& x, double p, uint64_t seed, uint64_t offset, const py::object& out) {
            return apply(x, name, p, seed, offset, feature, out);
          },
          arg(op.arg), arg("p"), arg("seed"), arg("offset"), py::kw_only(), arg("out") = none, op.doc);
  }
  if (!device_module) {
    m.def("dropout_mask",
          [](int64_t n, double p, uint64_t seed, uint64_t offset) {
            CNNFAST_CHECK(n >= 1, ValueError, "n: expected a positive mask length, got ", n);
            check_p(p);
            py::array_t<uint8_t> mask = new_array_of(py::dtype::of<uint8_t>(), {n}, "n");
            const DropoutKey key = dropout_key(seed, offset, p);
            uint8_t* mp = mask.mutable_data();
            py::gil_scoped_release nogil;
            cpu::dropout_mask(mp, n, key);
            return mask;
          },
          arg("n"), arg("p"), arg("seed"), arg("offset"),
          "The keep mask (uint8, 1 = kept) of mask positions 0..n-1 for this key, as dropout applies it.");
    return;
  }
#if CNNFAST_WITH_CUDA
  m.def("dropout_mask",
        [](int64_t n, double p, uint64_t seed, uint64_t offset) {
          CNNFAST_CHECK(n >= 1, ValueError, "n: expected a positive mask length, got ", n);
          check_p(p);
          DeviceArray mask = empty_device({n}, "|u1");
          const DropoutKey key = dropout_key(seed, offset, p);
          py::gil_scoped_release nogil;
          cuda::dropout_mask(static_cast<uint8_t*>(mask.data), n, key);
          return mask;
        },
        arg("n"), arg("p"), arg("seed"), arg("offset"), "The keep mask (uint8 DeviceArray) of positions 0..n-1.");
#endif
}

}  // namespace

void bind_dropout(py::module_& m) { register_dropout(m, false); }

void bind_dropout_device(py::module_& cu) { register_dropout(cu, true); }

}  // namespace cnnfast::bind
