// The checks and dispatch shared by every elementwise kernel binding: y = f(x), and
// grad_x = f'(grad_y, saved) with `saved` of grad_y's shape. The kernel is a generic
// callable (const T* in..., T* out, int64_t n) run with the GIL released.
#pragma once
#include "bind/array.h"

namespace cnnfast::bind {

template <class Kernel>
py::array elementwise_map(const py::array& x, const py::object& out, Kernel kernel) {
  DType dt = input(x, "x");
  require_nonempty(x, "x");
  py::array y = elementwise_output(out, "out", x, {{&x, "x"}});
  const int64_t n = x.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    kernel(xp, yp, n);
  });
  return y;
}

template <class Kernel>
py::array elementwise_map_backward(const py::array& gy, const py::array& saved, const char* saved_name,
                                   const py::object& out, Kernel kernel) {
  DType dt = input(gy, "grad_output");
  input(saved, saved_name);
  require_same_dtype(gy, "grad_output", saved, saved_name);
  require_nonempty(gy, "grad_output");
  require_shape(saved, saved_name, shape_of(gy));
  py::array gx = elementwise_output(out, "out", gy, {{&gy, "grad_output"}, {&saved, saved_name}});
  const int64_t n = gy.size();
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    const T* sp = cptr<T>(saved);
    T* op = mptr<T>(gx);
    py::gil_scoped_release nogil;
    kernel(gp, sp, op, n);
  });
  return gx;
}

}  // namespace cnnfast::bind
