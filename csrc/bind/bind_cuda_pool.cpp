// CUDA bindings of the pooling family into cnnfast._C.cuda: max_pool, avg_pool,
// adaptive_avg_pool, adaptive_max_pool and max_unpool in 1-3 spatial dims, with
// the names, arguments and geometry checks of bind_pool.cpp (PyTorch's rules),
// on CUDA arrays; indices are int64 CUDA arrays.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include <pybind11/stl.h>

#include "bind/device_array.h"
#include "bind/pool_geometry.h"
#include "cuda/pool.cuh"

namespace cnnfast::bind {
namespace {

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
  DeviceArray gy = as_device_array(go, "grad_output"), idx = as_device_array(io, "indices");
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
  DeviceArray x = as_device_array(xo, "input"), idx = as_device_array(io, "indices");
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
    throw_bad_index(idx, bad, g.out_plane(), cat("flat offsets into one output plane of size ", shape_str(output_size)));
  return y;
}

DeviceArray unpool_bwd(int D, const py::object& go, const py::object& io) {
  DeviceArray gy = as_device_array(go, "grad_output"), idx = as_device_array(io, "indices");
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

}  // namespace

void bind_cuda_pool(py::module_& cu) {
  using py::arg;
  for (int D = 1; D <= 3; ++D) {
    const std::string sfx = std::to_string(D) + "d";
    cu.def(("max_pool" + sfx + "_forward").c_str(),
           [D](const py::object& x, const Ints& k, const Ints& s, const Ints& p, const Ints& d, bool ceil_mode,
               bool return_indices) { return max_pool_fwd(D, x, k, s, p, d, ceil_mode, return_indices); },
           arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
           arg("dilation") = Ints(D, 1), arg("ceil_mode") = false, arg("return_indices") = true);
    cu.def(("max_pool" + sfx + "_backward").c_str(),
           [D](const py::object& gy, const py::object& idx, const Ints& input_size, bool skip) {
             return scatter_bwd(D, gy, idx, input_size, skip);
           },
           arg("grad_output"), arg("indices"), arg("input_size"), py::kw_only(), arg("skip_out_of_range") = false);
    cu.def(("avg_pool" + sfx + "_forward").c_str(),
           [D](const py::object& x, const Ints& k, const Ints& s, const Ints& p, bool ceil_mode, bool cip,
               const py::object& div) { return avg_pool_fwd(D, x, k, s, p, ceil_mode, cip, div); },
           arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
           arg("ceil_mode") = false, arg("count_include_pad") = true, arg("divisor_override") = py::none());
    cu.def(("avg_pool" + sfx + "_backward").c_str(),
           [D](const py::object& gy, const Ints& input_size, const Ints& k, const Ints& s, const Ints& p,
               bool ceil_mode, bool cip, const py::object& div) {
             return avg_pool_bwd(D, gy, input_size, k, s, p, ceil_mode, cip, div);
           },
           arg("grad_output"), arg("input_size"), arg("kernel_size"), arg("stride") = Ints{},
           arg("padding") = Ints(D, 0), arg("ceil_mode") = false, arg("count_include_pad") = true,
           arg("divisor_override") = py::none());
    cu.def(("adaptive_avg_pool" + sfx + "_forward").c_str(),
           [D](const py::object& x, const Ints& os) { return adaptive_avg_fwd(D, x, os); }, arg("input"),
           arg("output_size"));
    cu.def(("adaptive_avg_pool" + sfx + "_backward").c_str(),
           [D](const py::object& gy, const Ints& input_size) { return adaptive_avg_bwd(D, gy, input_size); },
           arg("grad_output"), arg("input_size"));
    cu.def(("adaptive_max_pool" + sfx + "_forward").c_str(),
           [D](const py::object& x, const Ints& os) { return adaptive_max_fwd(D, x, os); }, arg("input"),
           arg("output_size"));
    cu.def(("adaptive_max_pool" + sfx + "_backward").c_str(),
           [D](const py::object& gy, const py::object& idx, const Ints& input_size) {
             return scatter_bwd(D, gy, idx, input_size, false);
           },
           arg("grad_output"), arg("indices"), arg("input_size"));
    cu.def(("max_unpool" + sfx + "_forward").c_str(),
           [D](const py::object& x, const py::object& idx, const Ints& os) { return unpool_fwd(D, x, idx, os); },
           arg("input"), arg("indices"), arg("output_size"));
    cu.def(("max_unpool" + sfx + "_backward").c_str(),
           [D](const py::object& gy, const py::object& idx) { return unpool_bwd(D, gy, idx); }, arg("grad_output"),
           arg("indices"));
  }
}

}  // namespace cnnfast::bind
#endif
