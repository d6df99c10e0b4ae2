// The CUDA side of cnnfast._C, as the submodule cnnfast._C.cuda: a device array
// type that speaks __cuda_array_interface__ and DLPack (so PyTorch and CuPy
// tensors pass in and out without copies), the caching allocator's counters, and
// the GPU kernels under the same names and argument order as the CPU ones.
// Built without CUDA, only device_count() (always 0) exists.
#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/families.h"

#if CNNFAST_WITH_CUDA
#include "bind/cuda_families.h"
#include "bind/device_array.h"
#include "cuda/activation.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/runtime.h"
#endif

namespace cnnfast::bind {

#if CNNFAST_WITH_CUDA
namespace {

void bind_cuda_activation(py::module_& cu) {
  using cpu::Activation;
  struct Op {
    const char* name;
    Activation act;
    const char* saved;
    const char* param;
    double default_param;
  };
  const Op ops[] = {{"relu", Activation::ReLU, "x", nullptr, 0.0},
                    {"leaky_relu", Activation::LeakyReLU, "x", "negative_slope", 0.01},
                    {"elu", Activation::ELU, "x", "alpha", 1.0},
                    {"sigmoid", Activation::Sigmoid, "output", nullptr, 0.0},
                    {"tanh", Activation::Tanh, "output", nullptr, 0.0},
                    {"silu", Activation::SiLU, "x", nullptr, 0.0}};
  for (const Op& op : ops) {
    Activation act = op.act;
    const char* saved = op.saved;
    auto fwd = [act](const py::object& xo, double param, const py::object& out) {
      DeviceArray x = as_device_array(xo, "x");
      DType dt = device_float_dtype(x, "x");
      CNNFAST_CHECK(x.size() > 0, ValueError, "x: expected a non-empty array, got shape ", shape_str(x.shape));
      DeviceArray y = device_output(out, "out", x);
      dispatch_float(dt, [&](auto tag) {
        using T = decltype(tag);
        cuda::activation_forward<T>(act, static_cast<const T*>(x.data), static_cast<T*>(y.data), x.size(), param);
      });
      return y;
    };
    auto bwd = [act, saved](const py::object& go, const py::object& so, double param, const py::object& out) {
      DeviceArray g = as_device_array(go, "grad_output");
      DeviceArray s = as_device_array(so, saved);
      DType dt = device_float_dtype(g, "grad_output");
      require_same(g, "grad_output", s, saved);
      CNNFAST_CHECK(g.size() > 0, ValueError, "grad_output: expected a non-empty array");
      DeviceArray gx = device_output(out, "out", g);
      dispatch_float(dt, [&](auto tag) {
        using T = decltype(tag);
        cuda::activation_backward<T>(act, static_cast<const T*>(g.data), static_cast<const T*>(s.data),
                                     static_cast<T*>(gx.data), g.size(), param);
      });
      return gx;
    };
    std::string name = op.name;
    if (op.param) {
      cu.def((name + "_forward").c_str(), fwd, py::arg("x"), py::arg(op.param) = op.default_param, py::kw_only(),
             py::arg("out") = py::none());
      cu.def((name + "_backward").c_str(), bwd, py::arg("grad_output"), py::arg(saved),
             py::arg(op.param) = op.default_param, py::kw_only(), py::arg("out") = py::none());
    } else {
      cu.def((name + "_forward").c_str(),
             [fwd](const py::object& x, const py::object& out) { return fwd(x, 0.0, out); }, py::arg("x"),
             py::kw_only(), py::arg("out") = py::none());
      cu.def((name + "_backward").c_str(),
             [bwd](const py::object& g, const py::object& s, const py::object& out) { return bwd(g, s, 0.0, out); },
             py::arg("grad_output"), py::arg(saved), py::kw_only(), py::arg("out") = py::none());
    }
  }
  for (bool log : {false, true}) {
    std::string name = log ? "log_softmax" : "softmax";
    auto split = [](const DeviceArray& a, int64_t axis, int64_t& outer, int64_t& dim, int64_t& inner) {
      const int64_t nd = static_cast<int64_t>(a.shape.size());
      CNNFAST_CHECK(nd >= 1, ValueError, "x: expected at least 1 dimension, got 0");
      int ax = normalize_axis(axis, nd, "axis");
      outer = dim = inner = 1;
      for (int i = 0; i < nd; ++i) (i < ax ? outer : i == ax ? dim : inner) *= a.shape[i];
    };
    cu.def((name + "_forward").c_str(),
           [log, split](const py::object& xo, int64_t axis, const py::object& out) {
             DeviceArray x = as_device_array(xo, "x");
             DType dt = device_float_dtype(x, "x");
             CNNFAST_CHECK(x.size() > 0, ValueError, "x: expected a non-empty array");
             int64_t outer, dim, inner;
             split(x, axis, outer, dim, inner);
             DeviceArray y = device_output(out, "out", x);
             dispatch_float(dt, [&](auto tag) {
               using T = decltype(tag);
               cuda::softmax_forward<T>(static_cast<const T*>(x.data), static_cast<T*>(y.data), outer, dim, inner, log);
             });
             return y;
           },
           py::arg("x"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = py::none());
    cu.def((name + "_backward").c_str(),
           [log, split](const py::object& go, const py::object& yo, int64_t axis, const py::object& out) {
             DeviceArray g = as_device_array(go, "grad_output");
             DeviceArray y = as_device_array(yo, "output");
             DType dt = device_float_dtype(g, "grad_output");
             require_same(g, "grad_output", y, "output");
             CNNFAST_CHECK(g.size() > 0, ValueError, "grad_output: expected a non-empty array");
             int64_t outer, dim, inner;
             split(g, axis, outer, dim, inner);
             DeviceArray gx = device_output(out, "out", g);
             dispatch_float(dt, [&](auto tag) {
               using T = decltype(tag);
               cuda::softmax_backward<T>(static_cast<const T*>(g.data), static_cast<const T*>(y.data),
                                         static_cast<T*>(gx.data), outer, dim, inner, log);
             });
             return gx;
           },
           py::arg("grad_output"), py::arg("output"), py::arg("axis") = -1, py::kw_only(), py::arg("out") = py::none());
  }
}

cuda::Elem elem_of(const DeviceArray& a, const char* name) {
  static const std::pair<const char*, cuda::Elem> known[] = {{"<f4", cuda::Elem::F32}, {"<f8", cuda::Elem::F64},
                                                             {"<i4", cuda::Elem::I32}, {"<i8", cuda::Elem::I64},
                                                             {"|u1", cuda::Elem::U8},  {"|b1", cuda::Elem::Bool}};
  for (const auto& [s, e] : known)
    if (a.typestr == s) return e;
  throw TypeError(cat(name, ": CUDA arrays of typestr ", a.typestr, " are not supported (float32/64, int32/64, "
                            "uint8, bool)"));
}

DeviceArray out_like(const py::object& out, const DeviceArray& like) {
  if (out.is_none()) return empty_device(like.shape, like.typestr);
  DeviceArray o = as_device_array(out, "out");
  CNNFAST_CHECK(o.typestr == like.typestr && o.size() == like.size(), ValueError, "out: expected ",
                like.size(), " elements of typestr ", like.typestr, ", got ", o.size(), " of ", o.typestr);
  return o;
}

// The device layer's primitives (cnnfast._device.DeviceArray over cnnfast.cuda's backend).
void bind_cuda_array_ops(py::module_& cu) {
  using py::arg;
  cu.def("reshape_view", [](const DeviceArray& a, const std::vector<int64_t>& shape) {
    DeviceArray v = a;  // shares the memory and its owner
    v.shape = shape;
    CNNFAST_CHECK(v.size() == a.size(), ValueError, "reshape_view: cannot view ", a.size(), " elements as shape ",
                  shape_str(shape));
    return v;
  }, arg("a"), arg("shape"));
  cu.def("copy", [](const DeviceArray& a, const py::object& out) {
    DeviceArray o = out_like(out, a);
    if (o.data != a.data) cuda::copy_device_to_device(o.data, a.data, a.nbytes());
    return o;
  }, arg("a"), py::kw_only(), arg("out") = py::none());
  cu.def("fill", [](const DeviceArray& a, double value) { cuda::fill(elem_of(a, "a"), a.data, value, a.size()); },
         arg("a"), arg("value"));
  cu.def("binary", [](const std::string& op, const DeviceArray& a, const py::object& b, const py::object& out) {
    static const std::pair<const char*, cuda::BinaryOp> ops[] = {
        {"add", cuda::BinaryOp::Add}, {"sub", cuda::BinaryOp::Sub},   {"mul", cuda::BinaryOp::Mul},
        {"div", cuda::BinaryOp::Div}, {"rsub", cuda::BinaryOp::RSub}, {"rdiv", cuda::BinaryOp::RDiv}};
    const cuda::BinaryOp* code = nullptr;
    for (const auto& [name, c] : ops)
      if (op == name) code = &c;
    CNNFAST_CHECK(code, ValueError, "binary: unknown op '", op, "'");
    const cuda::Elem t = elem_of(a, "a");
    CNNFAST_CHECK(t != cuda::Elem::Bool && t != cuda::Elem::U8, TypeError, "binary: not for typestr ", a.typestr);
    const void* bp = nullptr;
    double scalar = 0.0;
    DeviceArray bd;
    if (py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b)) {
      scalar = b.cast<double>();
    } else {
      bd = as_device_array(b, "b");
      require_same_typestr(a, "a", bd, "b");
      CNNFAST_CHECK(bd.shape == a.shape, ValueError, "binary: b has shape ", shape_str(bd.shape), ", a has ",
                    shape_str(a.shape));
      bp = bd.data;
    }
    DeviceArray o = out_like(out, a);
    cuda::binary(*code, t, a.data, bp, scalar, o.data, a.size());
    return o;
  }, arg("op"), arg("a"), arg("b"), py::kw_only(), arg("out") = py::none());
  cu.def("sum_all", [](const DeviceArray& a) {
    DeviceArray o = empty_device({}, a.typestr);
    cuda::sum_all(elem_of(a, "a"), a.data, o.data, a.size());
    return o;
  }, arg("a"), "The sum of every element, as a 0-d device array (accumulated in double or int64).");
  cu.def("count_nonfinite", [](const DeviceArray& a) { return cuda::count_nonfinite(elem_of(a, "a"), a.data, a.size()); },
         arg("a"));
  cu.def("cast", [](const DeviceArray& a, const py::object& dtype) {
    DeviceArray o = empty_device(a.shape, typestr_of(py::dtype::from_args(dtype)));
    cuda::cast(elem_of(a, "a"), a.data, elem_of(o, "dtype"), o.data, a.size());
    return o;
  }, arg("a"), arg("dtype"));
}

}  // namespace
#endif

void bind_cuda(py::module_& m) {
  py::module_ cu = m.def_submodule("cuda", "CUDA kernels and device arrays (same names as the CPU kernels)");
#if CNNFAST_WITH_CUDA
  cu.def("device_count", &cuda::device_count, "Usable CUDA devices; 0 when there is no GPU or no driver.");
  cu.def("device_name", &cuda::device_name, py::arg("index") = 0);
  cu.def("memory_allocated", &cuda::memory_allocated, "Bytes held by live device arrays.");
  cu.def("memory_reserved", &cuda::memory_reserved, "Bytes obtained from the driver (live + cached).");
  cu.def("empty_cache", &cuda::empty_cache, "Return cached device blocks to the driver.");
  cu.def("synchronize", &cuda::synchronize, "Wait for every kernel cnnfast queued.");

  py::class_<DeviceArray>(cu, "DeviceArray", "A C-contiguous array in GPU memory.")
      .def_property_readonly("shape", [](const DeviceArray& a) { return py::tuple(py::cast(a.shape)); })
      .def_property_readonly("dtype", &DeviceArray::dtype)
      .def_property_readonly("ndim", [](const DeviceArray& a) { return a.shape.size(); })
      .def_property_readonly("size", &DeviceArray::size)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("device", [](const DeviceArray& a) { return a.device; })
      .def_property_readonly("data_ptr", [](const DeviceArray& a) { return reinterpret_cast<uintptr_t>(a.data); })
      .def("numpy", &to_numpy, "Copy to a new NumPy array.")
      .def("__len__", [](const DeviceArray& a) {
        CNNFAST_CHECK(!a.shape.empty(), TypeError, "len() of a 0-d array");
        return a.shape[0];
      })
      .def_property_readonly("__cuda_array_interface__",
                             [](const DeviceArray& a) {
                               py::dict d;
                               d["shape"] = py::tuple(py::cast(a.shape));
                               d["typestr"] = a.typestr;
                               d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(a.data), false);
                               d["strides"] = py::none();
                               d["version"] = 3;
                               d["stream"] = reinterpret_cast<uintptr_t>(cuda::stream_handle());
                               return d;
                             })
      .def("__dlpack__", [](const DeviceArray& a, const py::object&) { return to_dlpack(a); },
           py::arg("stream") = py::none())
      .def("__dlpack_device__", [](const DeviceArray& a) { return py::make_tuple(int(kDLCUDA), a.device); })
      .def("__repr__", [](const DeviceArray& a) {
        return cat("DeviceArray(shape=", shape_str(a.shape), ", dtype=", a.typestr, ", device=cuda:", a.device, ")");
      });

  cu.def("empty", [](const std::vector<int64_t>& shape, const py::object& dtype) {
    return empty_device(shape, typestr_of(py::dtype::from_args(dtype)));
  }, py::arg("shape"), py::arg("dtype") = py::dtype::of<float>());
  cu.def("from_numpy", &from_numpy, py::arg("array"), "Copy a C-contiguous NumPy array to the GPU.");
  cu.def("as_device_array", [](const py::object& obj) { return as_device_array(obj, "array"); }, py::arg("array"),
         "View a CUDA array (DeviceArray, __cuda_array_interface__ or DLPack) without copying.");
  bind_cuda_array_ops(cu);
  bind_cuda_activation(cu);
  bind_cuda_conv(cu);
  bind_cuda_pool(cu);
  bind_dropout_device(cu);
  bind_cuda_norm(cu);
  bind_cuda_loss(cu);
  bind_cuda_optim(cu);
#else
  cu.def("device_count", [] { return 0; }, "This build has no CUDA backend: always 0.");
  cu.def("device_name", [](int) -> std::string { return ""; }, py::arg("index") = 0);
#endif
}

}  // namespace cnnfast::bind
