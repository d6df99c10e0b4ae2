// DeviceArray (a C-contiguous array in GPU memory that speaks
// __cuda_array_interface__ and DLPack) and the argument helpers every
// bind_cuda_<family>.cpp uses: as_device_array (no copy), device_output,
// device_float_dtype, require_same. Included only when CNNFAST_WITH_CUDA.
#pragma once
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bind/array.h"
#include "cuda/allocator.h"
#include "cuda/dlpack.h"
#include "cuda/memory.h"

namespace cnnfast::bind {

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
inline std::shared_ptr<void> hold_python_object(py::object owner) {
  auto* boxed = new py::object(std::move(owner));
  return std::shared_ptr<void>(boxed, [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

inline DeviceArray empty_device(const std::vector<int64_t>& shape, const std::string& typestr) {
  DeviceArray a;
  a.shape = shape;
  a.typestr = typestr;
  for (int64_t s : shape) CNNFAST_CHECK(s >= 0, ValueError, "shape: expected non-negative sizes, got ", shape_str(shape));
  void* p = cuda::device_malloc(a.nbytes());
  a.holder = std::shared_ptr<void>(p, [](void* q) { cuda::device_free(q); });
  a.data = p;
  return a;
}

inline std::string typestr_of(const py::dtype& dt) {
  std::string kind(1, dt.kind());
  const char order = dt.itemsize() == 1 ? '|' : '<';
  return std::string(1, order) + kind + std::to_string(dt.itemsize());
}

inline DeviceArray from_numpy(const py::array& host) {
  require_contiguous(host, "array");
  DeviceArray a = empty_device(shape_of(host), typestr_of(host.dtype()));
  cuda::copy_to_device(a.data, host.data(), a.nbytes());
  return a;
}

inline py::array to_numpy(const DeviceArray& a) {
  std::vector<py::ssize_t> s(a.shape.begin(), a.shape.end());
  py::array host(a.dtype(), s);
  cuda::copy_to_host(host.mutable_data(), a.data, a.nbytes());
  return host;
}

inline DeviceArray from_cuda_array_interface(const py::object& obj) {
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

inline constexpr const char* kDLTensorName = "dltensor";
inline constexpr const char* kUsedDLTensorName = "used_dltensor";

inline DeviceArray from_dlpack(const py::object& obj) {
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

// Whether obj is something as_device_array takes (a NumPy array, which has __dlpack__
// too, should be checked for first by bindings that take both).
inline bool is_cuda_array_like(const py::object& obj) {
  if (py::isinstance<DeviceArray>(obj) || py::hasattr(obj, "__cuda_array_interface__")) return true;
  // DLPack alone: only a producer that says it lives on a CUDA device (a host array exporting
  // DLPack, e.g. a cnnfast CPU tensor, is not one)
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__")) return false;
  py::tuple dev = obj.attr("__dlpack_device__")();
  return dev.size() >= 1 && dev[0].cast<int>() == static_cast<int>(kDLCUDA);
}

inline DeviceArray as_device_array(const py::object& obj, const char* name) {
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

inline py::capsule to_dlpack(const DeviceArray& a) {
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

inline DType device_float_dtype(const DeviceArray& a, const char* name) {
  if (a.typestr == "<f4") return DType::F32;
  if (a.typestr == "<f8") return DType::F64;
  throw TypeError(cat(name, ": expected a float32 or float64 CUDA array, got typestr ", a.typestr));
}

inline DeviceArray device_output(const py::object& out, const char* name, const DeviceArray& like) {
  if (out.is_none()) return empty_device(like.shape, like.typestr);
  DeviceArray o = as_device_array(out, name);
  CNNFAST_CHECK(o.typestr == like.typestr, TypeError, name, ": expected typestr ", like.typestr, ", got ", o.typestr);
  CNNFAST_CHECK(o.shape == like.shape, ValueError, name, ": expected shape ", shape_str(like.shape), ", got ",
                shape_str(o.shape));
  return o;
}

inline void require_same(const DeviceArray& a, const char* na, const DeviceArray& b, const char* nb) {
  CNNFAST_CHECK(a.typestr == b.typestr, TypeError, nb, ": expected typestr ", a.typestr, " (that of ", na, "), got ",
                b.typestr);
  CNNFAST_CHECK(a.shape == b.shape, ValueError, nb, ": expected shape ", shape_str(a.shape), ", got ",
                shape_str(b.shape));
}


inline void require_same_typestr(const DeviceArray& a, const char* na, const DeviceArray& b, const char* nb) {
  CNNFAST_CHECK(a.typestr == b.typestr, TypeError, nb, ": expected typestr ", a.typestr, " (that of ", na, "), got ",
                b.typestr, "; mixed dtypes are not cast silently");
}

// Non-empty float32/float64 input; returns its dtype.
inline DType device_input(const DeviceArray& a, const char* name) {
  DType dt = device_float_dtype(a, name);
  CNNFAST_CHECK(a.size() > 0, ValueError, name, ": expected a non-empty array, got shape ", shape_str(a.shape));
  return dt;
}

inline void require_device_ndim(const DeviceArray& a, const char* name, int lo, int hi) {
  const int nd = static_cast<int>(a.shape.size());
  CNNFAST_CHECK(nd >= lo && nd <= hi, ValueError, name, ": expected ",
                lo == hi ? std::to_string(lo) : cat(lo, " to ", hi), " dimensions, got ", nd, " with shape ",
                shape_str(a.shape));
}

inline void require_device_shape(const DeviceArray& a, const char* name, const std::vector<int64_t>& expected) {
  CNNFAST_CHECK(a.shape == expected, ValueError, name, ": expected shape ", shape_str(expected), ", got ",
                shape_str(a.shape));
}

inline void require_device_typestr(const DeviceArray& a, const char* name, const std::string& typestr,
                                   const char* what) {
  CNNFAST_CHECK(a.typestr == typestr, TypeError, name, ": expected ", what, " (typestr ", typestr, "), got typestr ",
                a.typestr);
}

// An output of a given shape and typestr: new, or the caller's `out` checked.
inline DeviceArray device_output_shaped(const py::object& out, const char* name, const std::vector<int64_t>& shape,
                                        const std::string& typestr) {
  if (out.is_none()) return empty_device(shape, typestr);
  DeviceArray o = as_device_array(out, name);
  CNNFAST_CHECK(o.typestr == typestr, TypeError, name, ": expected typestr ", typestr, ", got ", o.typestr);
  require_device_shape(o, name, shape);
  return o;
}

// An optional input (None -> empty DeviceArray with data == nullptr).
inline DeviceArray optional_device_array(const py::object& obj, const char* name) {
  if (obj.is_none()) return DeviceArray{};
  return as_device_array(obj, name);
}

template <class T>
const T* dptr(const DeviceArray& a) {
  return static_cast<const T*>(a.data);
}
template <class T>
T* dmptr(const DeviceArray& a) {
  return static_cast<T*>(a.data);
}

}  // namespace cnnfast::bind
