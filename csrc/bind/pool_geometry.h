// Pooling geometry shared by the CPU and CUDA bindings (bind_pool.cpp and
// bind_cuda_pool.cpp): argument checks and output extents that do not depend on
// where the arrays live, so both backends accept and reject the same arguments.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bind/array.h"
#include "cpu/pool.h"

namespace cnnfast::bind {

using Ints = std::vector<int64_t>;
using cpu::PoolGeom;

// Sizes beyond 2^31 are rejected so no window arithmetic can overflow int64.
constexpr int64_t kMaxExtent = int64_t(1) << 31;

inline Ints checked_ints(const Ints& v, int D, const char* name, int64_t min_value) {
  CNNFAST_CHECK(static_cast<int>(v.size()) == D, ValueError, name, ": expected ", D, " values, got ", v.size(),
                " ", shape_str(v));
  for (int64_t e : v) {
    CNNFAST_CHECK(e >= min_value, ValueError, name, ": expected values >= ", min_value, ", got ", shape_str(v));
    CNNFAST_CHECK(e < kMaxExtent, ValueError, name, ": expected values below 2^31, got ", shape_str(v));
  }
  return v;
}

// Geometry with the D spatial dims right-aligned into the 3 of PoolGeom.
inline PoolGeom geom_from(const Ints& in_shape, int D) {
  PoolGeom g;
  g.planes = in_shape[0] * in_shape[1];
  for (int i = 0; i < D; ++i) g.in[3 - D + i] = in_shape[2 + i];
  return g;
}

inline Ints full_shape(const PoolGeom& g, const Ints& in_shape, int D) {
  Ints s{in_shape[0], in_shape[1]};
  for (int i = 0; i < D; ++i) s.push_back(g.out[3 - D + i]);
  return s;
}

struct Window {
  Ints k, s, p, d;
};

// Validates kernel/stride/padding/dilation and fills the output extents.
inline PoolGeom window_geom(const Ints& in_shape, int D, const Window& w, bool ceil_mode) {
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

inline Window make_window(int D, const Ints& k, const Ints& s, const Ints& p, const Ints& d) {
  Window w;
  w.k = checked_ints(k, D, "kernel_size", 1);
  w.s = s.empty() ? w.k : checked_ints(s, D, "stride", 1);
  w.p = checked_ints(p, D, "padding", 0);
  w.d = checked_ints(d, D, "dilation", 1);
  return w;
}

// PyTorch's avg_pool3d (only the 3-D one) also wants the unpadded input to hold a whole kernel.
inline void avg3d_input_check(int D, const Ints& in_shape, const Ints& k) {
  if (D != 3) return;
  for (int i = 0; i < 3; ++i)
    CNNFAST_CHECK(in_shape[2 + i] >= k[i], ValueError, "input: avg_pool3d needs spatial size ",
                  shape_str(Ints(in_shape.begin() + 2, in_shape.end())), " at least kernel_size ", shape_str(k));
}

inline int64_t divisor_of(const py::object& divisor_override) {
  if (divisor_override.is_none()) return 0;
  CNNFAST_CHECK(py::isinstance<py::int_>(divisor_override), TypeError,
                "divisor_override: expected an integer or None, got ",
                py::str(py::type::of(divisor_override)).cast<std::string>());
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(divisor_override.ptr(), &overflow);
  CNNFAST_CHECK(overflow == 0, ValueError, "divisor_override: expected a value that fits in 64 bits, got ",
                py::str(divisor_override).cast<std::string>());
  CNNFAST_CHECK(v != 0, ValueError, "divisor_override: expected a non-zero integer or None, got 0");
  CNNFAST_CHECK(v > 0, ValueError, "divisor_override: expected a positive integer or None, got ", v);
  return v;
}

inline PoolGeom adaptive_geom(const Ints& in_shape, int D, const Ints& output_size) {
  PoolGeom g = geom_from(in_shape, D);
  const Ints os = checked_ints(output_size, D, "output_size", 1);
  for (int i = 0; i < D; ++i) g.out[3 - D + i] = os[i];
  return g;
}

}  // namespace cnnfast::bind
