// Bindings for the pooling family (csrc/cpu/pool.h), registered once per
// spatial rank: max_pool{1,2,3}d, avg_pool{1,2,3}d, adaptive_avg_pool{1,2,3}d,
// adaptive_max_pool{1,2,3}d and max_unpool{1,2,3}d, each _forward/_backward.
//
// Arrays are batched, (N, C, *spatial) with len(spatial) = 1, 2 or 3; the
// functional layer adds the batch axis to unbatched input. Every geometry rule
// PyTorch enforces (padding at most half the kernel size, output size at
// least 1, unpool indices inside the output plane) is checked here, so no
// argument reachable from Python makes a kernel read or write out of bounds.
#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/families.h"
#include "cpu/pool.h"

namespace cnnfast::bind {
namespace {

using Ints = std::vector<int64_t>;
using cpu::PoolGeom;

// Sizes beyond 2^31 are rejected so no window arithmetic below can overflow int64.
constexpr int64_t kMaxExtent = int64_t(1) << 31;

Ints checked_ints(const Ints& v, int D, const char* name, int64_t min_value) {
  CNNFAST_CHECK(static_cast<int>(v.size()) == D, ValueError, name, ": expected ", D, " values, got ", v.size(),
                " ", shape_str(v));
  for (int64_t e : v) {
    CNNFAST_CHECK(e >= min_value, ValueError, name, ": expected values >= ", min_value, ", got ", shape_str(v));
    CNNFAST_CHECK(e < kMaxExtent, ValueError, name, ": expected values below 2^31, got ", shape_str(v));
  }
  return v;
}

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

// Geometry with the D spatial dims right-aligned into the 3 of PoolGeom.
PoolGeom geom_from(const Ints& in_shape, int D) {
  PoolGeom g;
  g.planes = in_shape[0] * in_shape[1];
  for (int i = 0; i < D; ++i) g.in[3 - D + i] = in_shape[2 + i];
  return g;
}

Ints full_shape(const PoolGeom& g, const Ints& in_shape, int D) {
  Ints s{in_shape[0], in_shape[1]};
  for (int i = 0; i < D; ++i) s.push_back(g.out[3 - D + i]);
  return s;
}

struct Window {
  Ints k, s, p, d;
};

// Validates kernel/stride/padding/dilation and fills the output extents.
PoolGeom window_geom(const Ints& in_shape, int D, const Window& w, bool ceil_mode) {
  PoolGeom g = geom_from(in_shape, D);
  for (int i = 0; i < D; ++i) {
    const int j = 3 - D + i;
    g.k[j] = w.k[i];
    g.s[j] = w.s[i];
    g.p[j] = w.p[i];
    g.d[j] = w.d[i];
    // PyTorch bounds padding by half the kernel size (not the dilated extent), for max and average alike.
    CNNFAST_CHECK(w.p[i] <= w.k[i] / 2, ValueError, "padding: expected at most half of kernel_size (",
                  w.k[i] / 2, ") in dimension ", i, ", got ", shape_str(w.p));
    g.out[j] = cpu::pool_output_size(g.in[j], g.k[j], g.s[j], g.p[j], g.d[j], ceil_mode);
  }
  Ints out = full_shape(g, in_shape, D);
  for (int i = 0; i < D; ++i)
    CNNFAST_CHECK(out[2 + i] >= 1, ValueError, "input: spatial size ", shape_str(in_shape),
                  " is too small for the window (calculated output size ", shape_str(out), ")");
  return g;
}

Window make_window(int D, const Ints& k, const Ints& s, const Ints& p, const Ints& d) {
  Window w;
  w.k = checked_ints(k, D, "kernel_size", 1);
  w.s = s.empty() ? w.k : checked_ints(s, D, "stride", 1);
  w.p = checked_ints(p, D, "padding", 0);
  w.d = checked_ints(d, D, "dilation", 1);
  return w;
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
    py::array_t<int64_t> idx(std::vector<py::ssize_t>(ys.begin(), ys.end()));
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

// PyTorch's avg_pool3d (only the 3-D one) also wants the unpadded input to hold a whole kernel.
void avg3d_input_check(int D, const Ints& in_shape, const Ints& k) {
  if (D != 3) return;
  for (int i = 0; i < 3; ++i)
    CNNFAST_CHECK(in_shape[2 + i] >= k[i], ValueError, "input: avg_pool3d needs spatial size ",
                  shape_str(Ints(in_shape.begin() + 2, in_shape.end())), " at least kernel_size ", shape_str(k));
}

int64_t divisor_of(const py::object& divisor_override) {
  if (divisor_override.is_none()) return 0;
  const int64_t v = divisor_override.cast<int64_t>();
  CNNFAST_CHECK(v != 0, ValueError, "divisor_override: expected a non-zero integer or None, got 0");
  CNNFAST_CHECK(v > 0, ValueError, "divisor_override: expected a positive integer or None, got ", v);
  return v;
}

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

PoolGeom adaptive_geom(const Ints& in_shape, int D, const Ints& output_size) {
  PoolGeom g = geom_from(in_shape, D);
  const Ints os = checked_ints(output_size, D, "output_size", 1);
  for (int i = 0; i < D; ++i) g.out[3 - D + i] = os[i];
  return g;
}

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
  py::array_t<int64_t> idx(std::vector<py::ssize_t>(ys.begin(), ys.end()));
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

}  // namespace

void bind_pool(py::module_& m) {
  using py::arg;
  for (int D = 1; D <= 3; ++D) {
    const std::string sfx = std::to_string(D) + "d";
    const std::string shp = D == 1 ? "(N, C, L)" : D == 2 ? "(N, C, H, W)" : "(N, C, D, H, W)";
    m.def(("max_pool" + sfx + "_forward").c_str(),
          [D](const py::array& x, const Ints& k, const Ints& s, const Ints& p, const Ints& d, bool ceil_mode,
              bool return_indices) { return max_pool_fwd(D, x, k, s, p, d, ceil_mode, return_indices); },
          arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
          arg("dilation") = Ints(D, 1), arg("ceil_mode") = false, arg("return_indices") = true,
          ("Max pooling of input " + shp + "; stride [] means kernel_size. Returns (output, indices), indices "
           "int64 flat offsets into each input plane, or (output, None) with return_indices=False.").c_str());
    m.def(("max_pool" + sfx + "_backward").c_str(),
          [D](const py::array& gy, const py::array& idx, const Ints& input_size, bool skip) {
            return scatter_bwd(D, gy, idx, input_size, skip);
          },
          arg("grad_output"), arg("indices"), arg("input_size"), py::kw_only(), arg("skip_out_of_range") = false,
          "grad_input of input_size: grad_output summed into the positions the forward's indices name. An index "
          "outside the plane is a ValueError, or (skip_out_of_range=True) the index of a dilated window that missed "
          "the input, whose gradient goes nowhere as in PyTorch.");
    m.def(("avg_pool" + sfx + "_forward").c_str(),
          [D](const py::array& x, const Ints& k, const Ints& s, const Ints& p, bool ceil_mode, bool cip,
              const py::object& div) { return avg_pool_fwd(D, x, k, s, p, ceil_mode, cip, div); },
          arg("input"), arg("kernel_size"), arg("stride") = Ints{}, arg("padding") = Ints(D, 0),
          arg("ceil_mode") = false, arg("count_include_pad") = true, arg("divisor_override") = py::none(),
          ("Average pooling of input " + shp + ", PyTorch's divisor rules.").c_str());
    m.def(("avg_pool" + sfx + "_backward").c_str(),
          [D](const py::array& gy, const Ints& input_size, const Ints& k, const Ints& s, const Ints& p,
              bool ceil_mode, bool cip, const py::object& div) {
            return avg_pool_bwd(D, gy, input_size, k, s, p, ceil_mode, cip, div);
          },
          arg("grad_output"), arg("input_size"), arg("kernel_size"), arg("stride") = Ints{},
          arg("padding") = Ints(D, 0), arg("ceil_mode") = false, arg("count_include_pad") = true,
          arg("divisor_override") = py::none());
    m.def(("adaptive_avg_pool" + sfx + "_forward").c_str(),
          [D](const py::array& x, const Ints& os) { return adaptive_avg_fwd(D, x, os); }, arg("input"),
          arg("output_size"), ("Adaptive average pooling of input " + shp + " to output_size.").c_str());
    m.def(("adaptive_avg_pool" + sfx + "_backward").c_str(),
          [D](const py::array& gy, const Ints& input_size) { return adaptive_avg_bwd(D, gy, input_size); },
          arg("grad_output"), arg("input_size"));
    m.def(("adaptive_max_pool" + sfx + "_forward").c_str(),
          [D](const py::array& x, const Ints& os) { return adaptive_max_fwd(D, x, os); }, arg("input"),
          arg("output_size"), ("Adaptive max pooling of input " + shp + "; returns (output, indices).").c_str());
    m.def(("adaptive_max_pool" + sfx + "_backward").c_str(),
          [D](const py::array& gy, const py::array& idx, const Ints& input_size) {
            return scatter_bwd(D, gy, idx, input_size, false);
          },
          arg("grad_output"), arg("indices"), arg("input_size"));
    m.def(("max_unpool" + sfx + "_forward").c_str(),
          [D](const py::array& x, const py::array& idx, const Ints& os) { return unpool_fwd(D, x, idx, os); },
          arg("input"), arg("indices"), arg("output_size"),
          ("Max-unpooling of input " + shp + " into zeros of spatial output_size at indices.").c_str());
    m.def(("max_unpool" + sfx + "_backward").c_str(),
          [D](const py::array& gy, const py::array& idx) { return unpool_bwd(D, gy, idx); }, arg("grad_output"),
          arg("indices"), "grad_input[i] = grad_output[indices[i]] in each plane.");
  }
}

}  // namespace cnnfast::bind
