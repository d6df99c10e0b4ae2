// Bindings for the pooling family (csrc/cpu/pool.h), registered once per
// spatial rank: max_pool{1,2,3}d, avg_pool{1,2,3}d, adaptive_avg_pool{1,2,3}d,
// adaptive_max_pool{1,2,3}d and max_unpool{1,2,3}d, each _forward/_backward.
//
// Arrays are batched, (N, C, *spatial) with len(spatial) = 1, 2 or 3; the
// functional layer adds the batch axis to unbatched input. Every geometry rule
// PyTorch enforces (padding at most half the kernel size, output size at
// least 1, unpool indices inside the output plane) is checked here, so no
// argument reachable from Python makes a kernel read or write out of bounds.
//
// One binding for both devices: the first array's device picks host:: (csrc/cpu/pool.*)
// or dev:: (csrc/cuda/pool.*, CUDA builds), both on the geometry of pool_geometry.h;
// indices must live with the data. Registered in cnnfast._C and cnnfast._C.cuda.
#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/device_dispatch.h"
#include "bind/families.h"
#include "bind/pool_geometry.h"
#include "cpu/pool.h"

#if CNNFAST_WITH_CUDA
#include "cuda/pool.cuh"
#endif

namespace cnnfast::bind {
namespace host {

// (N, C, *spatial) of rank D+2, float, contiguous, no zero extent.
void pooled_input(const py::array& x, int D, const char* name) {
  input(x, name);
  require_ndim(x, name, D + 2, D + 2);
  require_nonempty(x, name);
}

void require_indices(const py::array& idx, const char* name, const Ints& shape) {
  require_dtype(idx, name, py::dtype::of<int64_t>());
  require_contiguous(idx, name);
  require_shape(idx, name, shape);
}

Ints checked_input_size(const Ints& input_size, int D) {
  return checked_ints(input_size, D + 2, "input_size", 1);
}

void require_grad_shape(const py::array& gy, const Ints& expected) {
  require_shape(gy, "grad_output", expected);
}

void throw_bad_index(const py::array& idx, int64_t pos, int64_t limit, const char* what) {
  const int64_t v = static_cast<const int64_t*>(idx.data())[pos];
  throw ValueError(cat("indices: expected values in [0, ", limit, ") (", what, "), got ", v, " at flat position ",
                       pos));
}

// ---- max pooling --------------------------------------------------------------

py::tuple max_pool_fwd(int D, const py::array& x, const Ints& k, const Ints& s, const Ints& p, const Ints& d,
                       bool ceil_mode, bool return_indices) {
  pooled_input(x, D, "input");
  const Ints xs = shape_of(x);
  PoolGeom g = window_geom(xs, D, make_window(D, k, s, p, d), ceil_mode);
  const Ints ys = full_shape(g, xs, D);
  py::array y = new_array(x, ys);
  py::object idx_out = py::none();
  int64_t* ip = nullptr;
  if (return_indices) {
    py::array_t<int64_t> idx = new_array_of(py::dtype::of<int64_t>(), ys, "indices");
    ip = idx.mutable_data();
    idx_out = idx;
  }
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::max_pool_forward<T>(g, xp, yp, ip);
  });
  return py::make_tuple(y, idx_out);
}

// Shared by max_pool and adaptive_max_pool: scatter grad_output to indices.
py::array scatter_bwd(int D, const py::array& gy, const py::array& idx, const Ints& input_size,
                      bool skip_out_of_range) {
  DType dt = input(gy, "grad_output");
  require_ndim(gy, "grad_output", D + 2, D + 2);
  require_nonempty(gy, "grad_output");
  const Ints is = checked_input_size(input_size, D);
  const Ints gs = shape_of(gy);
  CNNFAST_CHECK(gs[0] == is[0] && gs[1] == is[1], ValueError, "grad_output: expected batch and channels ",
                shape_str(Ints{is[0], is[1]}), " (from input_size), got shape ", shape_str(gs));
  require_indices(idx, "indices", gs);
  PoolGeom g = geom_from(is, D);
  for (int i = 0; i < D; ++i) g.out[3 - D + i] = gs[2 + i];
  py::array gx = new_array(gy, is);
  int64_t bad = -1;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    const int64_t* ip = cptr<int64_t>(idx);
    T* xp = mptr<T>(gx);
    py::gil_scoped_release nogil;
    bad = cpu::max_pool_backward<T>(g, gp, ip, xp, skip_out_of_range);
  });
  if (bad >= 0) throw_bad_index(idx, bad, g.in_plane(), "flat offsets into one input plane");
  return gx;
}

// ---- average pooling ----------------------------------------------------------

py::array avg_pool_fwd(int D, const py::array& x, const Ints& k, const Ints& s, const Ints& p, bool ceil_mode,
                       bool count_include_pad, const py::object& divisor_override) {
  pooled_input(x, D, "input");
  const Ints xs = shape_of(x);
  PoolGeom g = window_geom(xs, D, make_window(D, k, s, p, Ints(D, 1)), ceil_mode);
  avg3d_input_check(D, xs, k);
  const int64_t div = divisor_of(divisor_override);
  py::array y = new_array(x, full_shape(g, xs, D));
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::avg_pool_forward<T>(g, xp, yp, count_include_pad, div);
  });
  return y;
}

py::array avg_pool_bwd(int D, const py::array& gy, const Ints& input_size, const Ints& k, const Ints& s,
                       const Ints& p, bool ceil_mode, bool count_include_pad, const py::object& divisor_override) {
  DType dt = input(gy, "grad_output");
  const Ints is = checked_input_size(input_size, D);
  PoolGeom g = window_geom(is, D, make_window(D, k, s, p, Ints(D, 1)), ceil_mode);
  avg3d_input_check(D, is, k);
  require_grad_shape(gy, full_shape(g, is, D));
  const int64_t div = divisor_of(divisor_override);
  py::array gx = new_array(gy, is);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    T* xp = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::avg_pool_backward<T>(g, gp, xp, count_include_pad, div);
  });
  return gx;
}

// ---- adaptive pooling ---------------------------------------------------------

py::array adaptive_avg_fwd(int D, const py::array& x, const Ints& output_size) {
  pooled_input(x, D, "input");
  const Ints xs = shape_of(x);
  PoolGeom g = adaptive_geom(xs, D, output_size);
  py::array y = new_array(x, full_shape(g, xs, D));
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::adaptive_avg_pool_forward<T>(g, xp, yp);
  });
  return y;
}

py::array adaptive_avg_bwd(int D, const py::array& gy, const Ints& input_size) {
  DType dt = input(gy, "grad_output");
  require_ndim(gy, "grad_output", D + 2, D + 2);
  require_nonempty(gy, "grad_output");
  const Ints is = checked_input_size(input_size, D);
  const Ints gs = shape_of(gy);
  PoolGeom g = adaptive_geom(is, D, Ints(gs.begin() + 2, gs.end()));
  require_grad_shape(gy, full_shape(g, is, D));
  py::array gx = new_array(gy, is);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    T* xp = mptr<T>(gx);
    py::gil_scoped_release nogil;
    cpu::adaptive_avg_pool_backward<T>(g, gp, xp);
  });
  return gx;
}

py::tuple adaptive_max_fwd(int D, const py::array& x, const Ints& output_size) {
  pooled_input(x, D, "input");
  const Ints xs = shape_of(x);
  PoolGeom g = adaptive_geom(xs, D, output_size);
  const Ints ys = full_shape(g, xs, D);
  py::array y = new_array(x, ys);
  py::array_t<int64_t> idx = new_array_of(py::dtype::of<int64_t>(), ys, "indices");
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    int64_t* ip = idx.mutable_data();
    py::gil_scoped_release nogil;
    cpu::adaptive_max_pool_forward<T>(g, xp, yp, ip);
  });
  return py::make_tuple(y, idx);
}

// ---- max-unpooling ------------------------------------------------------------

py::array unpool_fwd(int D, const py::array& x, const py::array& idx, const Ints& output_size) {
  pooled_input(x, D, "input");
  const Ints xs = shape_of(x);
  require_indices(idx, "indices", xs);
  PoolGeom g = adaptive_geom(xs, D, output_size);
  py::array y = new_array(x, full_shape(g, xs, D));
  int64_t bad = -1;
  dispatch_float(float_dtype(x, "input"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const int64_t* ip = cptr<int64_t>(idx);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    bad = cpu::max_unpool_forward<T>(g, xp, ip, yp);
  });
  if (bad >= 0) throw_bad_index(idx, bad, g.out_plane(), cat("flat offsets into one output plane of size ",
                                                              shape_str(output_size)).c_str());
  return y;
}

py::array unpool_bwd(int D, const py::array& gy, const py::array& idx) {
  DType dt = input(gy, "grad_output");
  require_ndim(gy, "grad_output", D + 2, D + 2);
  require_nonempty(gy, "grad_output");
  CNNFAST_CHECK(idx.ndim() == D + 2, ValueError, "indices: expected ", D + 2, " dimensions, got ", idx.ndim());
  const Ints is = shape_of(idx), gs = shape_of(gy);
  CNNFAST_CHECK(is[0] == gs[0] && is[1] == gs[1], ValueError, "indices: expected batch and channels ",
                shape_str(Ints{gs[0], gs[1]}), " (from grad_output), got shape ", shape_str(is));
  require_indices(idx, "indices", is);
  require_nonempty(idx, "indices");
  PoolGeom g = adaptive_geom(is, D, Ints(gs.begin() + 2, gs.end()));
  py::array gx = new_array(gy, is);
  int64_t bad = -1;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(gy);
    const int64_t* ip = cptr<int64_t>(idx);
    T* xp = mptr<T>(gx);
    py::gil_scoped_release nogil;
    bad = cpu::max_unpool_backward<T>(g, gp, ip, xp);
  });
  if (bad >= 0) throw_bad_index(idx, bad, g.out_plane(), "flat offsets into one grad_output plane");
  return gx;
}

}  // namespace host

#if CNNFAST_WITH_CUDA
namespace dev {

DType pooled_input(const DeviceArray& x, int D, const char* name) {
  DType dt = device_input(x, name);
  require_device_ndim(x, name, D + 2, D + 2);
  return dt;
}

void require_indices(const DeviceArray& idx, const char* name, const Ints& shape) {
  require_device_typestr(idx, name, "<i8", "int64 indices");
  require_device_shape(idx, name, shape);
}

Ints checked_input_size(const Ints& input_size, int D) { return checked_ints(input_size, D + 2, "input_size", 1); }

[[noreturn]] void throw_bad_index(const DeviceArray& idx, int64_t pos, int64_t limit, const std::string& what) {
  int64_t v = 0;
  cuda::copy_to_host(&v, static_cast<const int64_t*>(idx.data) + pos, sizeof v);
  throw ValueError(cat("indices: expected values in [0, ", limit, ") (", what, "), got ", v, " at flat position ",
                       pos));
}

py::tuple max_pool_fwd(int D, const py::object& xo, const Ints& k, const Ints& s, const Ints& p, const Ints& d,
                       bool ceil_mode, bool return_indices) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = pooled_input(x, D, "input");
  PoolGeom g = window_geom(x.shape, D, make_window(D, k, s, p, d), ceil_mode);
  const Ints ys = full_shape(g, x.shape, D);
  DeviceArray y = empty_device(ys, x.typestr);
  DeviceArray idx;
  if (return_indices) idx = empty_device(ys, "<i8");
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::max_pool_forward<T>(g, dptr<T>(x), dmptr<T>(y), return_indices ? dmptr<int64_t>(idx) : nullptr);
  });
  return py::make_tuple(y, return_indices ? py::cast(idx) : py::object(py::none()));
}

DeviceArray scatter_bwd(int D, const py::object& go, const py::object& io, const Ints& input_size, bool skip) {
  DeviceArray gy = as_device_array(go, "grad_output"), idx = device_array(io, "indices", "grad_output");
  DType dt = device_input(gy, "grad_output");
  require_device_ndim(gy, "grad_output", D + 2, D + 2);
  const Ints is = checked_input_size(input_size, D);
  const Ints& gs = gy.shape;
  CNNFAST_CHECK(gs[0] == is[0] && gs[1] == is[1], ValueError, "grad_output: expected batch and channels ",
                shape_str(Ints{is[0], is[1]}), " (from input_size), got shape ", shape_str(gs));
  require_indices(idx, "indices", gs);
  PoolGeom g = geom_from(is, D);
  for (int i = 0; i < D; ++i) g.out[3 - D + i] = gs[2 + i];
  DeviceArray gx = empty_device(is, gy.typestr);
  int64_t bad = -1;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    bad = cuda::max_pool_backward<T>(g, dptr<T>(gy), dptr<int64_t>(idx), dmptr<T>(gx), skip);
  });
  if (bad >= 0) throw_bad_index(idx, bad, g.in_plane(), "flat offsets into one input plane");
  return gx;
}

DeviceArray avg_pool_fwd(int D, const py::object& xo, const Ints& k, const Ints& s, const Ints& p, bool ceil_mode,
                         bool cip, const py::object& divisor_override) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = pooled_input(x, D, "input");
  PoolGeom g = window_geom(x.shape, D, make_window(D, k, s, p, Ints(D, 1)), ceil_mode);
  avg3d_input_check(D, x.shape, k);
  const int64_t div = divisor_of(divisor_override);
  DeviceArray y = empty_device(full_shape(g, x.shape, D), x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::avg_pool_forward<T>(g, dptr<T>(x), dmptr<T>(y), cip, div);
  });
  return y;
}

DeviceArray avg_pool_bwd(int D, const py::object& go, const Ints& input_size, const Ints& k, const Ints& s,
                         const Ints& p, bool ceil_mode, bool cip, const py::object& divisor_override) {
  DeviceArray gy = as_device_array(go, "grad_output");
  DType dt = device_input(gy, "grad_output");
  const Ints is = checked_input_size(input_size, D);
  PoolGeom g = window_geom(is, D, make_window(D, k, s, p, Ints(D, 1)), ceil_mode);
  avg3d_input_check(D, is, k);
  require_device_shape(gy, "grad_output", full_shape(g, is, D));
  const int64_t div = divisor_of(divisor_override);
  DeviceArray gx = empty_device(is, gy.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::avg_pool_backward<T>(g, dptr<T>(gy), dmptr<T>(gx), cip, div);
  });
  return gx;
}

DeviceArray adaptive_avg_fwd(int D, const py::object& xo, const Ints& output_size) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = pooled_input(x, D, "input");
  PoolGeom g = adaptive_geom(x.shape, D, output_size);
  DeviceArray y = empty_device(full_shape(g, x.shape, D), x.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adaptive_avg_pool_forward<T>(g, dptr<T>(x), dmptr<T>(y));
  });
  return y;
}

DeviceArray adaptive_avg_bwd(int D, const py::object& go, const Ints& input_size) {
  DeviceArray gy = as_device_array(go, "grad_output");
  DType dt = device_input(gy, "grad_output");
  require_device_ndim(gy, "grad_output", D + 2, D + 2);
  const Ints is = checked_input_size(input_size, D);
  PoolGeom g = adaptive_geom(is, D, Ints(gy.shape.begin() + 2, gy.shape.end()));
  require_device_shape(gy, "grad_output", full_shape(g, is, D));
  DeviceArray gx = empty_device(is, gy.typestr);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adaptive_avg_pool_backward<T>(g, dptr<T>(gy), dmptr<T>(gx));
  });
  return gx;
}

py::tuple adaptive_max_fwd(int D, const py::object& xo, const Ints& output_size) {
  DeviceArray x = as_device_array(xo, "input");
  DType dt = pooled_input(x, D, "input");
  PoolGeom g = adaptive_geom(x.shape, D, output_size);
  const Ints ys = full_shape(g, x.shape, D);
  DeviceArray y = empty_device(ys, x.typestr), idx = empty_device(ys, "<i8");
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::adaptive_max_pool_forward<T>(g, dptr<T>(x), dmptr<T>(y), dmptr<int64_t>(idx));
  });
  return py::make_tuple(y, idx);
}

DeviceArray unpool_fwd(int D, const py::object& xo, const py::object& io, const Ints& output_size) {
  DeviceArray x = as_device_array(xo, "input"), idx = device_array(io, "indices", "input");
  DType dt = pooled_input(x, D, "input");
  require_indices(idx, "indices", x.shape);
  PoolGeom g = adaptive_geom(x.shape, D, output_size);
  DeviceArray y = empty_device(full_shape(g, x.shape, D), x.typestr);
  int64_t bad = -1;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    bad = cuda::max_unpool_forward<T>(g, dptr<T>(x), dptr<int64_t>(idx), dmptr<T>(y));
  });
  if (bad >= 0)
    throw_bad_index(idx, bad, g.out_plane(),
                    cat("flat offsets into one output plane of size ", shape_str(output_size)));
  return y;
}

DeviceArray unpool_bwd(int D, const py::object& go, const py::object& io) {
  DeviceArray gy = as_device_array(go, "grad_output"), idx = device_array(io, "indices", "grad_output");
  DType dt = device_input(gy, "grad_output");
  require_device_ndim(gy, "grad_output", D + 2, D + 2);
  CNNFAST_CHECK(int(idx.shape.size()) == D + 2, ValueError, "indices: expected ", D + 2, " dimensions, got ",
                idx.shape.size());
  const Ints is = idx.shape, gs = gy.shape;
  CNNFAST_CHECK(is[0] == gs[0] && is[1] == gs[1], ValueError, "indices: expected batch and channels ",
                shape_str(Ints{gs[0], gs[1]}), " (from grad_output), got shape ", shape_str(is));
  require_indices(idx, "indices", is);
  CNNFAST_CHECK(idx.size() > 0, ValueError, "indices: expected a non-empty array, got shape ", shape_str(is));
  PoolGeom g = adaptive_geom(is, D, Ints(gs.begin() + 2, gs.end()));
  DeviceArray gx = empty_device(is, gy.typestr);
  int64_t bad = -1;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    bad = cuda::max_unpool_backward<T>(g, dptr<T>(gy), dptr<int64_t>(idx), dmptr<T>(gx));
  });
  if (bad >= 0) throw_bad_index(idx, bad, g.out_plane(), "flat offsets into one grad_output plane");
  return gx;
}

}  // namespace dev
#endif

void bind_pool(py::module_& m) {
  using py::arg;
  for (int D = 1; D <= 3; ++D) {
    const std::string sfx = std::to_string(D) + "d";
    const std::string shp = D == 1 ? "(N, C, L)" : D == 2 ? "(N, C, H, W)" : "(N, C, D, H, W)";
    m.def(("max_pool" + sfx + "_forward").c_str(),
          [D](const py::object& x, const Ints& k, const Ints& s, const Ints& p, const Ints& d, bool ceil_mode,
              bool return_indices) -> py::object {
            if (on_host(x, "input"))
              return host::max_pool_fwd(D, x.cast<py::array>(), k, s, p, d, ceil_mode, return_indices);
            CNNFAST_ON_DEVICE(dev::max_pool_fwd(D, x, k, s, p, d, ceil_mode, return_indices));
          },
          arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
          arg("dilation") = Ints(D, 1), arg("ceil_mode") = false, arg("return_indices") = true,
          ("Max pooling of input " + shp + "; stride [] means kernel_size. Returns (output, indices), indices "
           "int64 flat offsets into each input plane, or (output, None) with return_indices=False.").c_str());
    m.def(("max_pool" + sfx + "_backward").c_str(),
          [D](const py::object& gy, const py::object& idx, const Ints& input_size, bool skip) -> py::object {
            if (on_host(gy, "grad_output"))
              return host::scatter_bwd(D, gy.cast<py::array>(), host_array(idx, "indices", "grad_output"), input_size,
                                       skip);
            CNNFAST_ON_DEVICE(dev::scatter_bwd(D, gy, idx, input_size, skip));
          },
          arg("grad_output"), arg("indices"), arg("input_size"), py::kw_only(), arg("skip_out_of_range") = false,
          "grad_input of input_size: grad_output summed into the positions the forward's indices name. An index "
          "outside the plane is a ValueError, or (skip_out_of_range=True) the index of a dilated window that missed "
          "the input, whose gradient goes nowhere as in PyTorch.");
    m.def(("avg_pool" + sfx + "_forward").c_str(),
          [D](const py::object& x, const Ints& k, const Ints& s, const Ints& p, bool ceil_mode, bool cip,
              const py::object& div) -> py::object {
            if (on_host(x, "input"))
              return host::avg_pool_fwd(D, x.cast<py::array>(), k, s, p, ceil_mode, cip, div);
            CNNFAST_ON_DEVICE(dev::avg_pool_fwd(D, x, k, s, p, ceil_mode, cip, div));
          },
          arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
          arg("ceil_mode") = false, arg("count_include_pad") = true, arg("divisor_override") = py::none(),
          ("Average pooling of input " + shp + ", PyTorch's divisor rules.").c_str());
    m.def(("avg_pool" + sfx + "_backward").c_str(),
          [D](const py::object& gy, const Ints& input_size, const Ints& k, const Ints& s, const Ints& p,
              bool ceil_mode, bool cip, const py::object& div) -> py::object {
            if (on_host(gy, "grad_output"))
              return host::avg_pool_bwd(D, gy.cast<py::array>(), input_size, k, s, p, ceil_mode, cip, div);
            CNNFAST_ON_DEVICE(dev::avg_pool_bwd(D, gy, input_size, k, s, p, ceil_mode, cip, div));
          },
          arg("grad_output"), arg("input_size"), arg("kernel_size"), arg("stride") = Ints{},
          arg("padding") = Ints(D, 0), arg("ceil_mode") = false, arg("count_include_pad") = true,
          arg("divisor_override") = py::none());
    m.def(("adaptive_avg_pool" + sfx + "_forward").c_str(),
          [D](const py::object& x, const Ints& os) -> py::object {
            if (on_host(x, "input")) return host::adaptive_avg_fwd(D, x.cast<py::array>(), os);
            CNNFAST_ON_DEVICE(dev::adaptive_avg_fwd(D, x, os));
          },
          arg("input"),
          arg("output_size"), ("Adaptive average pooling of input " + shp + " to output_size.").c_str());
    m.def(("adaptive_avg_pool" + sfx + "_backward").c_str(),
          [D](const py::object& gy, const Ints& input_size) -> py::object {
            if (on_host(gy, "grad_output")) return host::adaptive_avg_bwd(D, gy.cast<py::array>(), input_size);
            CNNFAST_ON_DEVICE(dev::adaptive_avg_bwd(D, gy, input_size));
          },
          arg("grad_output"), arg("input_size"));
    m.def(("adaptive_max_pool" + sfx + "_forward").c_str(),
          [D](const py::object& x, const Ints& os) -> py::object {
            if (on_host(x, "input")) return host::adaptive_max_fwd(D, x.cast<py::array>(), os);
            CNNFAST_ON_DEVICE(dev::adaptive_max_fwd(D, x, os));
          },
          arg("input"),
          arg("output_size"), ("Adaptive max pooling of input " + shp + "; returns (output, indices).").c_str());
    m.def(("adaptive_max_pool" + sfx + "_backward").c_str(),
          [D](const py::object& gy, const py::object& idx, const Ints& input_size) -> py::object {
            if (on_host(gy, "grad_output"))
              return host::scatter_bwd(D, gy.cast<py::array>(), host_array(idx, "indices", "grad_output"), input_size,
                                       false);
            CNNFAST_ON_DEVICE(dev::scatter_bwd(D, gy, idx, input_size, false));
          },
          arg("grad_output"), arg("indices"), arg("input_size"));
    m.def(("max_unpool" + sfx + "_forward").c_str(),
          [D](const py::object& x, const py::object& idx, const Ints& os) -> py::object {
            if (on_host(x, "input"))
              return host::unpool_fwd(D, x.cast<py::array>(), host_array(idx, "indices", "input"), os);
            CNNFAST_ON_DEVICE(dev::unpool_fwd(D, x, idx, os));
          },
          arg("input"), arg("indices"), arg("output_size"),
          ("Max-unpooling of input " + shp + " into zeros of spatial output_size at indices.").c_str());
    m.def(("max_unpool" + sfx + "_backward").c_str(),
          [D](const py::object& gy, const py::object& idx) -> py::object {
            if (on_host(gy, "grad_output"))
              return host::unpool_bwd(D, gy.cast<py::array>(), host_array(idx, "indices", "grad_output"));
            CNNFAST_ON_DEVICE(dev::unpool_bwd(D, gy, idx));
          },
          arg("grad_output"),
          arg("indices"), "grad_input[i] = grad_output[indices[i]] in each plane.");
  }
}

void bind_pool_device(py::module_& cu) { bind_pool(cu); }

}  // namespace cnnfast::bind
