// The CUDA side of cnnfast._C, as the submodule cnnfast._C.cuda: a device array
// type that speaks __cuda_array_interface__ and DLPack (so PyTorch and CuPy
// tensors pass in and out without copies), the caching allocator's counters, and
// the GPU kernels under the same names and argument order as the CPU ones.
// Built without CUDA, only device_count() (always 0) exists.
#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/families.h"

#if CNNFAST_WITH_CUDA
#include <memory>

#include "cuda/activation.cuh"
#include "cuda/allocator.h"
#include "cuda/dlpack.h"
#include "cuda/memory.h"
#include "cuda/runtime.h"
#endif

namespace cnnfast::bind {

#if CNNFAST_WITH_CUDA
namespace {

struct DeviceArray {
  std::shared_ptr<void> holder;  // frees our memory, or keeps a foreign owner alive
  void* data = nullptr;
  std::vector<int64_t> shape;
  std::string typestr;  // NumPy array-interface type string, e.g. "<f4"
  int device = 0;

  int64_t size() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  std::size_t itemsize() const { return static_cast<std::size_t>(std::stoi(typestr.substr(2))); }
  std::size_t nbytes() const { return static_cast<std::size_t>(size()) * itemsize(); }
  py::dtype dtype() const { return py::dtype(typestr); }
};

// Keeps a Python object alive for as long as a DeviceArray views its memory.
std::shared_ptr<void> hold_python_object(py::object owner) {
  auto* boxed = new py::object(std::move(owner));
  return std::shared_ptr<void>(boxed, [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

DeviceArray empty_device(const std::vector<int64_t>& shape, const std::string& typestr) {
  DeviceArray a;
  a.shape = shape;
  a.typestr = typestr;
  for (int64_t s : shape) CNNFAST_CHECK(s >= 0, ValueError, "shape: expected non-negative sizes, got ", shape_str(shape));
  void* p = cuda::device_malloc(a.nbytes());
  a.holder = std::shared_ptr<void>(p, [](void* q) { cuda::device_free(q); });
  a.data = p;
  return a;
}

std::string typestr_of(const py::dtype& dt) {
  std::string kind(1, dt.kind());
  const char order = dt.itemsize() == 1 ? '|' : '<';
  return std::string(1, order) + kind + std::to_string(dt.itemsize());
}

DeviceArray from_numpy(const py::array& host) {
  require_contiguous(host, "array");
  DeviceArray a = empty_device(shape_of(host), typestr_of(host.dtype()));
  cuda::copy_to_device(a.data, host.data(), a.nbytes());
  return a;
}

py::array to_numpy(const DeviceArray& a) {
  std::vector<py::ssize_t> s(a.shape.begin(), a.shape.end());
  py::array host(a.dtype(), s);
  cuda::copy_to_host(host.mutable_data(), a.data, a.nbytes());
  return host;
}

DeviceArray from_cuda_array_interface(const py::object& obj) {
  py::dict cai = obj.attr("__cuda_array_interface__");
  DeviceArray a;
  for (auto v : cai["shape"].cast<py::tuple>()) a.shape.push_back(v.cast<int64_t>());
  a.typestr = cai["typestr"].cast<std::string>();
  py::tuple data = cai["data"].cast<py::tuple>();
  a.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    // Only C-contiguous strides are accepted: kernels index densely.
    auto strides = cai["strides"].cast<std::vector<int64_t>>();
    int64_t expect = static_cast<int64_t>(a.itemsize());
    for (int i = static_cast<int>(a.shape.size()) - 1; i >= 0; --i) {
      CNNFAST_CHECK(a.shape[i] <= 1 || strides[i] == expect, ValueError,
                    "array: expected a C-contiguous CUDA array, got strides ", shape_str(strides));
      expect *= a.shape[i];
    }
  }
  if (cai.contains("stream") && !cai["stream"].is_none()) cuda::wait_for_foreign_stream(cai["stream"].cast<long long>());
  a.holder = hold_python_object(obj);
  return a;
}

const char* kDLTensorName = "dltensor";
const char* kUsedDLTensorName = "used_dltensor";

DeviceArray from_dlpack(const py::object& obj) {
  py::object capsule = obj.attr("__dlpack__")(py::arg("stream") = reinterpret_cast<uintptr_t>(cuda::stream_handle()));
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kDLTensorName));
  if (!managed) throw py::error_already_set();
  const DLTensor& t = managed->dl_tensor;
  CNNFAST_CHECK(t.device.device_type == kDLCUDA, ValueError, "array: expected a CUDA DLPack tensor, got device type ",
                t.device.device_type);
  DeviceArray a;
  a.shape.assign(t.shape, t.shape + t.ndim);
  const char kind = t.dtype.code == kDLFloat ? 'f' : t.dtype.code == kDLInt ? 'i' : t.dtype.code == kDLBool ? 'b' : 'u';
  const int bytes = t.dtype.bits / 8;
  a.typestr = std::string(1, bytes == 1 ? '|' : '<') + kind + std::to_string(bytes);
  if (t.strides) {
    int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      CNNFAST_CHECK(t.shape[i] <= 1 || t.strides[i] == expect, ValueError,
                    "array: expected a C-contiguous DLPack tensor");
      expect *= t.shape[i];
    }
  }
  a.data = static_cast<char*>(t.data) + t.byte_offset;
  a.device = t.device.device_id;
  PyCapsule_SetName(capsule.ptr(), kUsedDLTensorName);
  a.holder = std::shared_ptr<void>(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  return a;
}

DeviceArray as_device_array(const py::object& obj, const char* name) {
  if (py::isinstance<DeviceArray>(obj)) return obj.cast<DeviceArray>();
  if (py::hasattr(obj, "__cuda_array_interface__")) return from_cuda_array_interface(obj);
  if (py::hasattr(obj, "__dlpack__")) return from_dlpack(obj);
  throw TypeError(cat(name, ": expected a CUDA array (cnnfast DeviceArray, or an object with "
                            "__cuda_array_interface__ or __dlpack__), got ",
                      py::str(py::type::of(obj)).cast<std::string>()));
}

// The exported DLPack tensor owns a copy of the shape and a reference to the array.
struct ExportContext {
  DeviceArray array;
  std::vector<int64_t> shape;
};

py::capsule to_dlpack(const DeviceArray& a) {
  cuda::synchronize();  // the consumer's stream may not order after ours
  auto* ctx = new ExportContext{a, a.shape};
  auto* m = new DLManagedTensor{};
  m->dl_tensor.data = a.data;
  m->dl_tensor.device = DLDevice{kDLCUDA, a.device};
  m->dl_tensor.ndim = static_cast<int32_t>(a.shape.size());
  const char kind = a.typestr[1];
  m->dl_tensor.dtype = DLDataType{static_cast<uint8_t>(kind == 'f' ? kDLFloat : kind == 'i' ? kDLInt
                                                       : kind == 'b' ? kDLBool : kDLUInt),
                                  static_cast<uint8_t>(a.itemsize() * 8), 1};
  m->dl_tensor.shape = ctx->shape.data();
  m->dl_tensor.strides = nullptr;
  m->manager_ctx = ctx;
  m->deleter = [](DLManagedTensor* self) {
    delete static_cast<ExportContext*>(self->manager_ctx);
    delete self;
  };
  // A capsule never consumed (still named "dltensor") frees the tensor itself.
  return py::capsule(m, kDLTensorName, [](PyObject* cap) {
    if (PyCapsule_IsValid(cap, kDLTensorName)) {
      auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kDLTensorName));
      if (mt && mt->deleter) mt->deleter(mt);
    }
  });
}

// ---- kernels ------------------------------------------------------------------------

DType device_float_dtype(const DeviceArray& a, const char* name) {
  if (a.typestr == "<f4") return DType::F32;
  if (a.typestr == "<f8") return DType::F64;
  throw TypeError(cat(name, ": expected a float32 or float64 CUDA array, got typestr ", a.typestr));
}

DeviceArray device_output(const py::object& out, const char* name, const DeviceArray& like) {
  if (out.is_none()) return empty_device(like.shape, like.typestr);
  DeviceArray o = as_device_array(out, name);
  CNNFAST_CHECK(o.typestr == like.typestr, TypeError, name, ": expected typestr ", like.typestr, ", got ", o.typestr);
  CNNFAST_CHECK(o.shape == like.shape, ValueError, name, ": expected shape ", shape_str(like.shape), ", got ",
                shape_str(o.shape));
  return o;
}

void require_same(const DeviceArray& a, const char* na, const DeviceArray& b, const char* nb) {
  CNNFAST_CHECK(a.typestr == b.typestr, TypeError, nb, ": expected typestr ", a.typestr, " (that of ", na, "), got ",
                b.typestr);
  CNNFAST_CHECK(a.shape == b.shape, ValueError, nb, ": expected shape ", shape_str(a.shape), ", got ",
                shape_str(b.shape));
}

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
  bind_cuda_activation(cu);
#else
  cu.def("device_count", [] { return 0; }, "This build has no CUDA backend: always 0.");
  cu.def("device_name", [](int) -> std::string { return ""; }, py::arg("index") = 0);
#endif
}

}  // namespace cnnfast::bind
