// Bindings for csrc/cpu/resample.h: resample_forward / resample_backward on
// (N, C, [[D,] H,] W) maps with one (index, weight) table pair per spatial axis; and
// for csrc/cpu/shuffle.h: channel_shuffle_forward / channel_shuffle_backward.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/families.h"
#include "cpu/resample.h"
#include "cpu/shuffle.h"

namespace cnnfast::bind {
namespace {

constexpr const char* kIndexName[3] = {"index_d", "index_h", "index_w"};
constexpr const char* kWeightName[3] = {"weight_d", "weight_h", "weight_w"};

struct Tables {
  py::object index[3], weight[3];
};

// Checks one axis' tables against its input extent; returns (out, taps).
std::pair<int64_t, int64_t> check_axis(const py::object& io, const py::object& wo, int axis, int64_t in,
                                       const py::array& x) {
  CNNFAST_CHECK(!io.is_none() && py::isinstance<py::array>(io), TypeError, kIndexName[axis],
                ": expected an int64 NumPy array of shape (out, taps)");
  CNNFAST_CHECK(!wo.is_none() && py::isinstance<py::array>(wo), TypeError, kWeightName[axis],
                ": expected a NumPy array of shape (out, taps)");
  py::array idx = io.cast<py::array>(), w = wo.cast<py::array>();
  require_dtype(idx, kIndexName[axis], py::dtype::of<int64_t>());
  require_contiguous(idx, kIndexName[axis]);
  require_aligned(idx, kIndexName[axis]);
  require_ndim(idx, kIndexName[axis], 2, 2);
  require_nonempty(idx, kIndexName[axis]);
  input(w, kWeightName[axis]);
  require_same_dtype(x, "x", w, kWeightName[axis]);
  require_shape(w, kWeightName[axis], shape_of(idx));
  const int64_t out = idx.shape(0), taps = idx.shape(1);
  // The AVX2 path gathers with 32-bit offsets into the row and the tables.
  CNNFAST_CHECK(taps <= 16 && out * taps < (int64_t(1) << 29), ValueError, kIndexName[axis],
                ": expected at most 16 taps and fewer than 2^29 entries, got shape (", out, ", ", taps, ")");
  CNNFAST_CHECK(in < (int64_t(1) << 31), ValueError, "x: spatial extents must be below 2^31");
  const int64_t* p = static_cast<const int64_t*>(idx.data());
  for (int64_t i = 0; i < out * taps; ++i)
    CNNFAST_CHECK(p[i] >= 0 && p[i] < in, ValueError, kIndexName[axis], ": entry ", i, " is ", p[i],
                  ", outside [0, ", in, ")");
  return {out, taps};
}

template <class T>
cpu::AxisTable<T> table(const py::object& io, const py::object& wo, int64_t in, std::pair<int64_t, int64_t> ot) {
  cpu::AxisTable<T> t;
  t.in = in;
  t.out = ot.first;
  t.taps = ot.second;
  t.index = static_cast<const int64_t*>(io.cast<py::array>().data());
  t.weight = static_cast<const T*>(wo.cast<py::array>().data());
  return t;
}

// Validates the tables for a map with spatial extents `in` (1-3 of them); fills
// out_spatial. Axes that the map does not have must be given as None.
std::vector<std::pair<int64_t, int64_t>> check_tables(const Tables& t, const std::vector<int64_t>& in,
                                                      const py::array& like) {
  const int nsp = static_cast<int>(in.size());
  std::vector<std::pair<int64_t, int64_t>> ot(3, {1, 1});
  for (int a = 0; a < 3; ++a) {
    const int k = a - (3 - nsp);  // index into the spatial dims, < 0 for an absent axis
    if (k < 0) {
      CNNFAST_CHECK(t.index[a].is_none() && t.weight[a].is_none(), ValueError, kIndexName[a], ": a ", nsp,
                    "-D map has no such axis; pass None");
      continue;
    }
    ot[a] = check_axis(t.index[a], t.weight[a], a, in[k], like);
  }
  return ot;
}

template <class T>
void run(bool forward, const py::array& src, py::array& dst, int64_t planes, const Tables& t,
         const std::vector<int64_t>& in, const std::vector<std::pair<int64_t, int64_t>>& ot) {
  const int nsp = static_cast<int>(in.size());
  static const int64_t one_i = 0;
  static const T one_w = T(1);
  cpu::AxisTable<T> ax[3];
  for (int a = 0; a < 3; ++a) {
    const int k = a - (3 - nsp);
    if (k < 0) {
      ax[a].index = &one_i;
      ax[a].weight = &one_w;
    } else {
      ax[a] = table<T>(t.index[a], t.weight[a], in[k], ot[a]);
    }
  }
  const T* s = cptr<T>(src);
  T* d = mptr<T>(dst);
  py::gil_scoped_release nogil;
  if (forward)
    cpu::resample_forward<T>(s, d, planes, ax[0], ax[1], ax[2]);
  else
    cpu::resample_backward<T>(s, d, planes, ax[0], ax[1], ax[2]);
}

py::array resample_fwd(const py::array& x, const Tables& t) {
  DType dt = input(x, "x");
  require_ndim(x, "x", 3, 5);
  require_nonempty(x, "x");
  std::vector<int64_t> shape = shape_of(x), in(shape.begin() + 2, shape.end());
  auto ot = check_tables(t, in, x);
  std::vector<int64_t> ys{shape[0], shape[1]};
  for (int a = 3 - static_cast<int>(in.size()); a < 3; ++a) ys.push_back(ot[a].first);
  py::array y = new_array(x, ys);
  dispatch_float(dt, [&](auto tag) { run<decltype(tag)>(true, x, y, shape[0] * shape[1], t, in, ot); });
  return y;
}

py::array resample_bwd(const py::array& gy, const std::vector<int64_t>& input_shape, const Tables& t) {
  DType dt = input(gy, "grad_output");
  require_ndim(gy, "grad_output", 3, 5);
  require_nonempty(gy, "grad_output");
  CNNFAST_CHECK(static_cast<int64_t>(input_shape.size()) == gy.ndim(), ValueError, "input_shape: expected ",
                gy.ndim(), " sizes (the rank of grad_output), got ", input_shape.size());
  for (size_t i = 0; i < input_shape.size(); ++i)
    CNNFAST_CHECK(input_shape[i] > 0, ValueError, "input_shape: expected positive sizes, got ", input_shape[i]);
  CNNFAST_CHECK(input_shape[0] == gy.shape(0) && input_shape[1] == gy.shape(1), ValueError,
                "input_shape: N and C must match grad_output's");
  std::vector<int64_t> in(input_shape.begin() + 2, input_shape.end());
  auto ot = check_tables(t, in, gy);
  std::vector<int64_t> ys{input_shape[0], input_shape[1]};
  for (int a = 3 - static_cast<int>(in.size()); a < 3; ++a) ys.push_back(ot[a].first);
  require_shape(gy, "grad_output", ys);
  py::array gx = new_array(gy, input_shape, "grad_input");
  dispatch_float(dt, [&](auto tag) { run<decltype(tag)>(false, gy, gx, input_shape[0] * input_shape[1], t, in, ot); });
  return gx;
}

// backward: the inverse permutation, a shuffle by C / groups.
py::array channel_shuffle(const py::array& x, int64_t groups, bool backward) {
  const char* name = backward ? "grad_output" : "x";
  input(x, name);
  require_aligned(x, name);
  require_ndim(x, name, 3, 5);
  const int64_t N = x.shape(0), C = x.shape(1);
  CNNFAST_CHECK(groups > 0, ValueError, "groups: expected a positive int, got ", groups);
  CNNFAST_CHECK(C % groups == 0, ValueError, name, ": expected a channel count divisible by groups=", groups,
                ", got shape ", shape_str(shape_of(x)));
  py::array y = new_array(x, shape_of(x), backward ? "grad_input" : "output");
  const int64_t S = x.size() / std::max<int64_t>(1, N * C);
  const int64_t g = backward ? C / groups : groups;
  if (x.size() > 0) cpu::channel_shuffle(x.data(), y.mutable_data(), N, g, C / g, S, x.itemsize());
  return y;
}

}  // namespace

void bind_resample(py::module_& m) {
  m.def("channel_shuffle_forward", [](const py::array& x, int64_t groups) { return channel_shuffle(x, groups, false); },
        py::arg("x"), py::arg("groups"),
        "x: (N, groups*k, *spatial) with 1 to 3 spatial axes. Returns y of x's shape with "
        "y[:, j*groups + i] = x[:, i*k + j] (ShuffleNet's channel shuffle).");
  m.def("channel_shuffle_backward",
        [](const py::array& gy, int64_t groups) { return channel_shuffle(gy, groups, true); },
        py::arg("grad_output"), py::arg("groups"),
        "grad_input of channel_shuffle_forward with the same groups: the inverse permutation of grad_output.");
  auto none = py::none();
  m.def("resample_forward",
        [](const py::array& x, const py::object& index_w, const py::object& weight_w, const py::object& index_h,
           const py::object& weight_h, const py::object& index_d, const py::object& weight_d) {
          Tables t{{index_d, index_h, index_w}, {weight_d, weight_h, weight_w}};
          return resample_fwd(x, t);
        },
        py::arg("x"), py::arg("index_w"), py::arg("weight_w"), py::arg("index_h") = none,
        py::arg("weight_h") = none, py::arg("index_d") = none, py::arg("weight_d") = none,
        "x: (N, C, W), (N, C, H, W) or (N, C, D, H, W). index_*: (out, taps) int64 source positions along that "
        "axis, weight_*: (out, taps) of x's dtype; y[.., d, h, w] = sum of wd*wh*ww * x[.., id, ih, iw]. "
        "Returns y: (N, C, out_d?, out_h?, out_w).");
  m.def("resample_backward",
        [](const py::array& gy, const std::vector<int64_t>& input_shape, const py::object& index_w,
           const py::object& weight_w, const py::object& index_h, const py::object& weight_h,
           const py::object& index_d, const py::object& weight_d) {
          Tables t{{index_d, index_h, index_w}, {weight_d, weight_h, weight_w}};
          return resample_bwd(gy, input_shape, t);
        },
        py::arg("grad_output"), py::arg("input_shape"), py::arg("index_w"), py::arg("weight_w"),
        py::arg("index_h") = none, py::arg("weight_h") = none, py::arg("index_d") = none,
        py::arg("weight_d") = none,
        "grad_input (input_shape) of resample_forward with the same tables, from grad_output.");
}

}  // namespace cnnfast::bind
