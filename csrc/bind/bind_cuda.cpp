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
#include "cuda/elementwise.cuh"
#include "cuda/runtime.h"
#endif

namespace cnnfast::bind {

#if CNNFAST_WITH_CUDA
namespace {

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
  bind_activation_device(cu);
  bind_cuda_conv(cu);
  bind_pool_device(cu);
  bind_dropout_device(cu);
  bind_norm_device(cu);
  bind_cuda_loss(cu);
  bind_optim_device(cu);
#else
  cu.def("device_count", [] { return 0; }, "This build has no CUDA backend: always 0.");
  cu.def("device_name", [](int) -> std::string { return ""; }, py::arg("index") = 0);
#endif
}

}  // namespace cnnfast::bind
