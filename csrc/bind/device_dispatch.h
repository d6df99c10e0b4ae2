// How a binding that serves both devices reads its array arguments: the first array
// decides the device (a NumPy array: the CPU kernels; a CUDA array, in a CUDA build: the
// GPU kernels), and every other array must live there too, or a TypeError names it.
#pragma once
#include <type_traits>
#include <utility>

#include "bind/array.h"

#if CNNFAST_WITH_CUDA
#include "bind/device_array.h"
#endif

namespace cnnfast::bind {

// True for a NumPy array, false for a CUDA array; a TypeError naming `name` otherwise.
inline bool on_host(const py::object& x, const char* name) {
  if (py::isinstance<py::array>(x)) return true;
#if CNNFAST_WITH_CUDA
  if (is_cuda_array_like(x)) return false;
#endif
  throw TypeError(cat(name, ": expected a NumPy array", CNNFAST_WITH_CUDA ? " or a CUDA array" : "", ", got ",
                      py::str(py::type::of(x)).cast<std::string>()));
}

// A further argument of a host call: a NumPy array, or a TypeError that says the devices differ.
inline py::array host_array(const py::object& x, const char* name, const char* first) {
  CNNFAST_CHECK(py::isinstance<py::array>(x), TypeError, name, ": expected a NumPy array like ", first,
                " (all arrays of one call on one device), got ", py::str(py::type::of(x)).cast<std::string>());
  return x.cast<py::array>();
}

// A kernel's result as a Python object (a DeviceArray is cast; a tuple passes as it is).
template <class T>
py::object as_python(T&& v) {
  if constexpr (std::is_base_of_v<py::handle, std::decay_t<T>>)
    return py::reinterpret_borrow<py::object>(v);
  else
    return py::cast(std::forward<T>(v));
}

// In a binding's entry point after `if (on_host(...)) return host::f(...);`: the device call,
// or (without CUDA, where on_host has already thrown) nothing.
#if CNNFAST_WITH_CUDA
#define CNNFAST_ON_DEVICE(call) return as_python(call)
#else
#define CNNFAST_ON_DEVICE(call) return py::none()
#endif

#if CNNFAST_WITH_CUDA
// A further argument of a device call: a CUDA array, or a TypeError that says the devices differ.
inline DeviceArray device_array(const py::object& x, const char* name, const char* first) {
  CNNFAST_CHECK(!py::isinstance<py::array>(x), TypeError, name, ": expected a CUDA array like ", first,
                " (all arrays of one call on one device), got a NumPy array");
  return as_device_array(x, name);
}
#endif

}  // namespace cnnfast::bind
