// Bindings for the convolution family (csrc/cpu/conv.h, gemm.h, winograd.h).
//
//   conv_forward(x, weight, bias, stride, padding, dilation, groups, algo="auto") -> y
//   conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
//                 need_input=True, need_weight=True, need_bias=True, algo="auto")
//       -> (grad_x | None, grad_weight | None, grad_bias | None)
//   conv_transpose_forward(x, weight, bias, stride, padding, output_padding, dilation, groups, algo="auto")
//   conv_transpose_backward(grad_output, x, weight, stride, padding, output_padding, dilation, groups,
//                           need_input=True, need_weight=True, need_bias=True, algo="auto")
//   linear_forward(x, weight, bias) / linear_backward(grad_output, x, weight, need_input, need_weight, need_bias)
//   gemm(a, b, trans_a=False, trans_b=False) -> op(a) @ op(b)
//   fma_peak_gflops(threads, level="best") -> measured float32 FMA GFLOP/s
//
// x has rank 3, 4 or 5 (1-D, 2-D, 3-D); stride / dilation hold one int per
// spatial dim, padding one (start, end) pair per spatial dim (the functional
// layer resolves ints, "same", "valid" and "full" into pairs).
#include <pybind11/stl.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bind/array.h"
#include "bind/conv_params.h"
#include "bind/families.h"
#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "cpu/conv.h"
#include "cpu/conv_grouped.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_nchw16c.h"
#include "cpu/epilogue.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"
#include "cpu/prepack.h"
#include "cpu/squeeze_excite.h"

namespace cnnfast::bind {
namespace {

using cpu::ConvAlgo;
using cpu::ConvShape;
using Pairs = std::vector<std::vector<int64_t>>;

ConvAlgo parse_algo(const std::string& a) {
  if (a == "auto") return ConvAlgo::Auto;
  if (a == "gemm") return ConvAlgo::Gemm;
  if (a == "winograd") return ConvAlgo::Winograd;
  throw ValueError(cat("algo: expected 'auto', 'gemm' or 'winograd', got '", a, "'"));
}

void check_winograd(ConvAlgo algo, const ConvShape& s, int nd) {
  CNNFAST_CHECK(algo != ConvAlgo::Winograd || (nd == 2 && cpu::winograd_applicable(s)), ValueError,
                "algo: 'winograd' needs a 2-D convolution with a 3x3 kernel, stride 1 and dilation 1, got ", nd,
                "-D kernel (", s.k[0], ", ", s.k[1], ", ", s.k[2], "), stride (", s.stride[1], ", ", s.stride[2],
                "), dilation (", s.dil[1], ", ", s.dil[2], ")");
}

// Common checks of x and weight; returns the number of spatial dims.
int check_x_weight(const py::array& x, const py::array& w, const char* xname) {
  input(x, xname);
  input(w, "weight");
  require_same_dtype(x, xname, w, "weight");
  require_ndim(x, xname, 3, 5);
  CNNFAST_CHECK(w.ndim() == x.ndim(), ValueError, "weight: expected ", x.ndim(), " dimensions (like ", xname,
                "), got shape ", shape_str(shape_of(w)));
  for (int i = 0; i < x.ndim(); ++i)
    CNNFAST_CHECK(x.shape(i) > 0, ValueError, xname, ": expected non-zero sizes, got shape ", shape_str(shape_of(x)));
  for (int i = 0; i < w.ndim(); ++i)
    CNNFAST_CHECK(w.shape(i) > 0, ValueError, "weight: expected non-zero sizes, got shape ",
                  shape_str(shape_of(w)));
  return int(x.ndim()) - 2;
}

void check_bias(const py::object& bias, const py::array& like, int64_t channels, const char* name = "bias") {
  if (bias.is_none()) return;
  CNNFAST_CHECK(py::isinstance<py::array>(bias), TypeError, name, ": expected a NumPy array or None, got ",
                py::str(py::type::of(bias)).cast<std::string>());
  py::array b = bias.cast<py::array>();
  input(b, name);
  require_same_dtype(like, "x", b, name);
  require_shape(b, name, {channels});
}

// The shape of a convolution from x (N, C, in...) and weight (K, C/g, k...).
ConvShape conv_shape(const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
                     const Pairs& padding, const std::vector<int64_t>& dilation, int64_t groups, int& nd) {
  nd = check_x_weight(x, w, "x");
  return conv_shape_from(shape_of(x), shape_of(w), stride, padding, dilation, groups, nd);
}

// The convolution whose backward-data pass is this transposed convolution:
// x (N, Cin, in) is that convolution's output, weight (Cin, Cout/g, k) its weight.
ConvShape transpose_shape(const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
                          const Pairs& padding, const std::vector<int64_t>& output_padding,
                          const std::vector<int64_t>& dilation, int64_t groups, int& nd) {
  nd = check_x_weight(x, w, "x");
  ConvShape s;
  fill_params(s, nd, stride, padding, dilation, groups);
  CNNFAST_CHECK(int(output_padding.size()) == nd, ValueError, "output_padding: expected ", nd, " values, got ",
                output_padding.size());
  s.N = x.shape(0);
  s.K = x.shape(1);
  CNNFAST_CHECK(w.shape(0) == s.K, ValueError, "weight: expected shape[0] == x channels (", s.K, "), got shape ",
                shape_str(shape_of(w)));
  CNNFAST_CHECK(s.K % groups == 0, ValueError, "x: expected channels (", s.K, ") divisible by groups=", groups);
  s.C = w.shape(1) * groups;
  for (int i = 0; i < nd; ++i) {
    const int d = 3 - nd + i;
    const int64_t op = output_padding[i];
    CNNFAST_CHECK(op >= 0 && (op < s.stride[d] || op < s.dil[d]), ValueError,
                  "output_padding: expected values smaller than stride or dilation, got ", op, " with stride ",
                  s.stride[d], " and dilation ", s.dil[d]);
    s.out[d] = x.shape(2 + i);
    s.k[d] = w.shape(2 + i);
    s.in[d] = conv_transpose_out_extent(s, d, op, i);
  }
  return s;
}

// The optional output pass of conv_forward / linear_forward (cpu/epilogue.h):
// residual must match y exactly; it is only read.
cpu::Epilogue epilogue_of(const py::object& residual, const std::string& activation, double alpha, double beta,
                          const py::array& x, const std::vector<int64_t>& y_shape) {
  cpu::Epilogue e;
  e.act = cpu::parse_epilogue_act(activation);
  e.alpha = alpha;
  e.beta = beta;
  if (!residual.is_none()) {
    CNNFAST_CHECK(py::isinstance<py::array>(residual), TypeError, "residual: expected a NumPy array or None, got ",
                  py::str(py::type::of(residual)).cast<std::string>());
    py::array r = residual.cast<py::array>();
    input(r, "residual");
    require_same_dtype(x, "x", r, "residual");
    require_shape(r, "residual", y_shape);
    e.residual = r.data();
  }
  return e;
}

// ConvPacked(weight, groups): the weight packed once for conv_forward(packed=).
std::shared_ptr<cpu::ConvPacked> conv_pack(const py::array& w, int64_t groups) {
  input(w, "weight");
  require_ndim(w, "weight", 3, 5);
  CNNFAST_CHECK(py::dtype::of<float>().is(w.dtype()), TypeError, "weight: ConvPacked expects float32, got ",
                py::str(w.dtype()).cast<std::string>());
  CNNFAST_CHECK(groups >= 1 && w.shape(0) % groups == 0, ValueError, "groups: expected a positive divisor of ",
                "weight.shape[0] (", w.shape(0), "), got ", groups);
  int64_t kk = 1;
  for (int i = 2; i < w.ndim(); ++i) kk *= w.shape(i);
  CNNFAST_CHECK(w.shape(1) > 0 && kk > 0 && w.shape(0) > 0, ValueError, "weight: expected non-zero sizes, got shape ",
                shape_str(shape_of(w)));
  const float* wp = cptr<float>(w);
  py::gil_scoped_release nogil;
  return std::make_shared<cpu::ConvPacked>(wp, w.shape(0), w.shape(1), kk, groups);
}

py::array conv_fwd(const py::array& x, const py::array& w, const py::object& bias, const std::vector<int64_t>& stride,
                   const Pairs& padding, const std::vector<int64_t>& dilation, int64_t groups,
                   const std::string& algo_name, const py::object& residual, const std::string& activation,
                   double alpha, double beta, const py::object& packed_obj, const py::object& out) {
  int nd = 0;
  ConvShape s = conv_shape(x, w, stride, padding, dilation, groups, nd);
  check_bias(bias, x, s.K);
  ConvAlgo algo = parse_algo(algo_name);
  check_winograd(algo, s, nd);
  const std::vector<int64_t> y_shape = nd_shape(s.N, s.K, s.out, nd);
  const cpu::Epilogue epi = epilogue_of(residual, activation, alpha, beta, x, y_shape);
  py::array y = output(out, "out", x, y_shape);
  py::array b = bias.is_none() ? py::array() : bias.cast<py::array>();
  if (!out.is_none()) {
    // Every output element reads a window of x and all of w: no overlap at all, not even in place.
    require_no_overlap(y, "out", x, "x", false);
    require_no_overlap(y, "out", w, "weight", false);
    if (!bias.is_none()) require_no_overlap(y, "out", b, "bias", false);
    if (!residual.is_none()) require_no_overlap(y, "out", residual.cast<py::array>(), "residual", false);
  }
  const cpu::ConvPacked* packed = nullptr;
  if (!packed_obj.is_none()) {
    CNNFAST_CHECK(py::isinstance<cpu::ConvPacked>(packed_obj), TypeError,
                  "packed: expected a ConvPacked or None, got ",
                  py::str(py::type::of(packed_obj)).cast<std::string>());
    packed = &packed_obj.cast<const cpu::ConvPacked&>();
    CNNFAST_CHECK(packed->K() == s.K && packed->Cg() == s.Cg() && packed->kk() == s.k_size() &&
                      packed->groups() == s.groups,
                  ValueError, "packed: packed for another weight shape or groups (", packed->K(), " x ", packed->Cg(),
                  " x ", packed->kk(), ", groups ", packed->groups(), ")");
  }
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    const T* bp = bias.is_none() ? nullptr : cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::conv_forward_fused<T>(s, xp, wp, bp, yp, algo, epi, packed);
  });
  return y;
}

// squeeze_excite_forward: x (N, C, *spatial); w1 (R, C, 1...) ; w2 (C, R, 1...).
py::array se_fwd(const py::array& x, const py::array& w1, const py::object& b1, const py::array& w2,
                 const py::object& b2, const std::string& act1, double alpha1, double beta1, const std::string& act2,
                 double alpha2, double beta2) {
  input(x, "x");
  input(w1, "w1");
  input(w2, "w2");
  require_same_dtype(x, "x", w1, "w1");
  require_same_dtype(x, "x", w2, "w2");
  CNNFAST_CHECK(x.ndim() >= 3, ValueError, "x: expected (N, C, *spatial), got shape ", shape_str(shape_of(x)));
  const int64_t N = x.shape(0), C = x.shape(1);
  int64_t S = 1;
  for (int i = 2; i < x.ndim(); ++i) S *= x.shape(i);
  CNNFAST_CHECK(N > 0 && C > 0 && S > 0, ValueError, "x: expected non-zero sizes, got shape ", shape_str(shape_of(x)));
  CNNFAST_CHECK(w1.ndim() >= 2 && w1.shape(1) == C && w1.size() == w1.shape(0) * C, ValueError,
                "w1: expected (R, ", C, ", 1, ...), got shape ", shape_str(shape_of(w1)));
  const int64_t R = w1.shape(0);
  CNNFAST_CHECK(R > 0 && w2.ndim() >= 2 && w2.shape(0) == C && w2.shape(1) == R && w2.size() == C * R, ValueError,
                "w2: expected (", C, ", ", R, ", 1, ...), got shape ", shape_str(shape_of(w2)));
  check_bias(b1, x, R, "b1");
  check_bias(b2, x, C, "b2");
  cpu::Epilogue e1, e2;
  e1.act = cpu::parse_epilogue_act(act1);
  e1.alpha = alpha1;
  e1.beta = beta1;
  e2.act = cpu::parse_epilogue_act(act2);
  e2.alpha = alpha2;
  e2.beta = beta2;
  py::array y = new_array(x, shape_of(x));
  py::array b1a = b1.is_none() ? py::array() : b1.cast<py::array>();
  py::array b2a = b2.is_none() ? py::array() : b2.cast<py::array>();
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* w1p = cptr<T>(w1);
    const T* w2p = cptr<T>(w2);
    const T* b1p = b1.is_none() ? nullptr : cptr<T>(b1a);
    const T* b2p = b2.is_none() ? nullptr : cptr<T>(b2a);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::squeeze_excite_forward<T>(xp, yp, N, C, S, w1p, b1p, R, w2p, b2p, e1, e2);
  });
  return y;
}

using Grads = std::tuple<py::object, py::object, py::object>;

// Zeroes a fresh gradient buffer for the accumulating kernels on the pool's threads,
// with the GIL released: a ResNet-18 step allocates 45 MB of weight gradients, and
// one memset per layer under the GIL was serial time that no thread count shortened.
template <class T>
void zero_parallel(T* p, int64_t n) {
  parallel_for(0, n, int64_t(1) << 16, [=](int64_t b, int64_t e) { std::memset(p + b, 0, sizeof(T) * (e - b)); });
}

// Shared by conv_backward and conv_transpose_backward: `transposed` swaps the
// roles (the transposed layer's x is the convolution's output side).
Grads backward_common(const ConvShape& s, int nd, bool transposed, const py::array& gy, const py::array& x,
                      const py::array& w, bool need_input, bool need_weight, bool need_bias, ConvAlgo algo,
                      const py::object& grad_weight_out = py::none()) {
  input(gy, "grad_output");
  require_same_dtype(x, "x", gy, "grad_output");
  const std::vector<int64_t> y_shape =
      transposed ? nd_shape(s.N, s.C, s.in, nd) : nd_shape(s.N, s.K, s.out, nd);
  require_shape(gy, "grad_output", y_shape);
  check_winograd(algo, s, nd);
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  py::array gxa, gwa, gba;
  if (need_input) gxa = new_array(x, shape_of(x));
  if (need_weight) {  // written or zeroed below, in parallel
    gwa = output(grad_weight_out, "grad_weight_out", x, shape_of(w));
    if (!grad_weight_out.is_none())
      for (const auto& [in, in_name] : {std::pair{&gy, "grad_output"}, {&x, "x"}, {&w, "weight"}})
        require_no_overlap(gwa, "grad_weight_out", *in, in_name, false);
  } else {
    CNNFAST_CHECK(grad_weight_out.is_none(), ValueError, "grad_weight_out: given, but need_weight is False");
  }
  const int64_t gw_count = need_weight ? int64_t(gwa.size()) : 0;
  const int64_t bias_channels = transposed ? s.C : s.K;
  if (need_bias) gba = new_zeros(x, {bias_channels});
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* gyp = cptr<T>(gy);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    T* gxp = need_input ? mptr<T>(gxa) : nullptr;
    T* gwp = need_weight ? mptr<T>(gwa) : nullptr;
    T* gbp = need_bias ? mptr<T>(gba) : nullptr;
    py::gil_scoped_release nogil;
    if (gwp && transposed) zero_parallel(gwp, gw_count);
    if (!transposed) {
      if (gxp) cpu::conv_backward_data<T>(s, gyp, wp, gxp, algo);
      if (gwp) cpu::conv_backward_weight_fresh<T>(s, gyp, xp, gwp, algo);
      if (gbp) cpu::bias_backward<T>(gyp, gbp, s.N, s.K, s.out_size());
    } else {
      // The transposed layer is conv^T: its input gradient is the convolution of
      // grad_output, and its weight gradient pairs grad_output (the convolution's
      // input side) with x (the convolution's output side).
      if (gxp) cpu::conv_forward<T>(s, gyp, wp, static_cast<const T*>(nullptr), gxp, algo);
      if (gwp) cpu::conv_backward_weight<T>(s, xp, gyp, gwp, algo);
      if (gbp) cpu::bias_backward<T>(gyp, gbp, s.N, s.C, s.in_size());
    }
  });
  if (need_input) gx = gxa;
  if (need_weight) gw = gwa;
  if (need_bias) gb = gba;
  return {gx, gw, gb};
}

Grads conv_bwd(const py::array& gy, const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
               const Pairs& padding, const std::vector<int64_t>& dilation, int64_t groups, bool need_input,
               bool need_weight, bool need_bias, const std::string& algo_name, const py::object& grad_weight_out) {
  int nd = 0;
  ConvShape s = conv_shape(x, w, stride, padding, dilation, groups, nd);
  return backward_common(s, nd, false, gy, x, w, need_input, need_weight, need_bias, parse_algo(algo_name),
                         grad_weight_out);
}

py::array convt_fwd(const py::array& x, const py::array& w, const py::object& bias,
                    const std::vector<int64_t>& stride, const Pairs& padding,
                    const std::vector<int64_t>& output_padding, const std::vector<int64_t>& dilation, int64_t groups,
                    const std::string& algo_name) {
  int nd = 0;
  ConvShape s = transpose_shape(x, w, stride, padding, output_padding, dilation, groups, nd);
  check_bias(bias, x, s.C);
  ConvAlgo algo = parse_algo(algo_name);
  check_winograd(algo, s, nd);
  py::array y = new_array(x, nd_shape(s.N, s.C, s.in, nd));
  py::array b = bias.is_none() ? py::array() : bias.cast<py::array>();
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    const T* bp = bias.is_none() ? nullptr : cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    cpu::conv_backward_data<T>(s, xp, wp, yp, algo);
    if (bp) cpu::bias_forward<T>(yp, bp, s.N, s.C, s.in_size());
  });
  return y;
}

Grads convt_bwd(const py::array& gy, const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
                const Pairs& padding, const std::vector<int64_t>& output_padding,
                const std::vector<int64_t>& dilation, int64_t groups, bool need_input, bool need_weight,
                bool need_bias, const std::string& algo_name) {
  int nd = 0;
  ConvShape s = transpose_shape(x, w, stride, padding, output_padding, dilation, groups, nd);
  return backward_common(s, nd, true, gy, x, w, need_input, need_weight, need_bias, parse_algo(algo_name));
}

void check_linear(const py::array& x, const py::array& w) {
  input(x, "x");
  input(w, "weight");
  require_same_dtype(x, "x", w, "weight");
  require_ndim(x, "x", 2, 2);
  require_ndim(w, "weight", 2, 2);
  CNNFAST_CHECK(w.shape(1) == x.shape(1), ValueError, "weight: expected shape (out_features, ", x.shape(1),
                "), got ", shape_str(shape_of(w)));
  CNNFAST_CHECK(x.shape(1) > 0 && w.shape(0) > 0, ValueError, "weight: expected non-zero sizes, got ",
                shape_str(shape_of(w)));
}

py::array linear_fwd(const py::array& x, const py::array& w, const py::object& bias, const py::object& residual,
                     const std::string& activation, double alpha, double beta) {
  check_linear(x, w);
  const int64_t M = x.shape(0), in = x.shape(1), out = w.shape(0);
  check_bias(bias, x, out);
  const cpu::Epilogue epi = epilogue_of(residual, activation, alpha, beta, x, {M, out});
  py::array y = new_array(x, {M, out});
  py::array b = bias.is_none() ? py::array() : bias.cast<py::array>();
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    const T* bp = bias.is_none() ? nullptr : cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    if constexpr (std::is_same_v<T, float>) {
      if (cpu::linear_forward_gemv(xp, wp, bp, yp, M, in, out, epi)) return;
    }
    cpu::linear_forward<T>(xp, wp, bp, yp, M, in, out);
    cpu::apply_epilogue<T>(yp, M * out, epi);
  });
  return y;
}

Grads linear_bwd(const py::array& gy, const py::array& x, const py::array& w, bool need_input, bool need_weight,
                 bool need_bias) {
  check_linear(x, w);
  input(gy, "grad_output");
  require_same_dtype(x, "x", gy, "grad_output");
  const int64_t M = x.shape(0), in = x.shape(1), out = w.shape(0);
  require_shape(gy, "grad_output", {M, out});
  py::array gxa, gwa, gba;
  if (need_input) gxa = new_array(x, {M, in});
  if (need_weight) gwa = new_zeros(x, {out, in});
  if (need_bias) gba = new_zeros(x, {out});
  dispatch_float(float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* gyp = cptr<T>(gy);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    T* gxp = need_input ? mptr<T>(gxa) : nullptr;
    T* gwp = need_weight ? mptr<T>(gwa) : nullptr;
    T* gbp = need_bias ? mptr<T>(gba) : nullptr;
    py::gil_scoped_release nogil;
    cpu::linear_backward<T>(gyp, xp, wp, gxp, gwp, gbp, M, in, out);
  });
  return {need_input ? py::object(gxa) : py::none(), need_weight ? py::object(gwa) : py::none(),
          need_bias ? py::object(gba) : py::none()};
}

py::array gemm_op(const py::array& a, const py::array& b, bool trans_a, bool trans_b) {
  input(a, "a");
  input(b, "b");
  require_same_dtype(a, "a", b, "b");
  require_ndim(a, "a", 2, 2);
  require_ndim(b, "b", 2, 2);
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  CNNFAST_CHECK(K == Kb, ValueError, "b: expected ", K, " rows in op(b) to match op(a)'s columns, got ", Kb);
  py::array c = new_array(a, {M, N});
  const int64_t lda = a.shape(1), ldb = b.shape(1);
  dispatch_float(float_dtype(a, "a"), [&](auto tag) {
    using T = decltype(tag);
    const T* ap = cptr<T>(a);
    const T* bp = cptr<T>(b);
    T* cp = mptr<T>(c);
    py::gil_scoped_release nogil;
    cpu::gemm<T>(M, N, K, ap, trans_a ? 1 : lda, trans_a ? lda : 1, bp, trans_b ? 1 : ldb, trans_b ? ldb : 1, cp, N,
                 false);
  });
  return c;
}

}  // namespace

// The layer of a shape-only query (_conv_auto_plan, _conv_live_window), its arguments checked.
ConvShape queried_shape(const char* what, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                        const std::vector<int64_t>& stride, const ConvPads& padding,
                        const std::vector<int64_t>& dilation, int64_t groups) {
  CNNFAST_CHECK(x.size() >= 3 && x.size() <= 5 && w.size() == x.size(), ValueError, what,
                ": expected x and weight shapes of equal rank 3-5, got ", shape_str(x), " and ", shape_str(w));
  CNNFAST_CHECK(groups >= 1, ValueError, what, ": expected groups >= 1, got ", groups);
  return conv_shape_from(x, w, stride, padding, dilation, groups, static_cast<int>(x.size()) - 2);
}

// Which kernel Auto runs for each pass of a float32 layer, for the training-memory
// estimate (cnnfast.utils.summary): im2col + GEMM and Winograd borrow large workspaces,
// the channel-vector tiles ("kvec") a packed weight and a bordered image per thread, the
// weight-streaming small-map passes ("smallmap") a bordered batch or an im2col column
// block per thread, the row tiles ("rows") a bordered batch, the direct and depthwise kernels next to none.
py::dict conv_auto_plan(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                        const std::vector<int64_t>& stride, const ConvPads& padding,
                        const std::vector<int64_t>& dilation, int64_t groups) {
  const ConvShape s = queried_shape("_conv_auto_plan", x, w, stride, padding, dilation, groups);
  using cpu::conv_detail::Pass;
  auto name = [&](Pass pass) -> const char* {
    if (cpu::conv_detail::is_depthwise(s)) return "depthwise";
    if (pass == Pass::Forward && cpu::conv_detail::kvec_rows_forward_pays(s)) return "rows";
    if (pass == Pass::Data && cpu::conv_detail::kvec_rows_data_pays(s)) return "rows";
    if (pass == Pass::Forward && cpu::conv_detail::smallmap_forward_pays(s)) return "smallmap";
    if (pass == Pass::Data && cpu::conv_detail::smallmap_data_pays(s)) return "smallmap";
    if (pass == Pass::Weight && cpu::conv_detail::smallmap_weight_pays(s)) return "smallmap";
    if (pass == Pass::Forward && cnnfast::use_avx512() && cpu::stem_pays(s)) return "stem";
    if (pass == Pass::Forward && cpu::conv_detail::kvec_taps_pays(s)) return "kvec";
    if (pass == Pass::Data && cpu::conv_detail::kvec_taps_data_pays(s)) return "kvec";
    if (pass == Pass::Weight && cpu::conv_detail::kvec_weight_pays(s)) return "kvec";
    if (cpu::conv_detail::grouped_direct_applicable(s, pass)) return "direct";
    const ConvAlgo a = pass == Pass::Forward ? cpu::choose_forward_algo(s, true) : cpu::choose_algo(s, true);
    if (pass == Pass::Forward && a == ConvAlgo::Gemm && cpu::kvec_eager_pays(s))
      return "kvec";  // through im2col columns, the weights packed per call
    return a == ConvAlgo::Winograd ? "winograd" : "gemm";
  };
  py::dict d;
  d["forward"] = name(Pass::Forward);
  d["grad_input"] = name(Pass::Data);
  d["grad_weight"] = name(Pass::Weight);
  // A frozen graph's forward (weights packed once) takes those tiles on more layers.
  d["frozen_forward_kvec"] = !cpu::conv_detail::is_depthwise(s) && cpu::conv_detail::kvec_taps_pays(s, true);
  return d;
}

// The window of live kernel taps of a layer (cpu::conv_detail::live_tap_window), so that
// autograd can cut a layer's weight down to it once per step and reuse the cut for
// grad_x: None when no tap is dead (or none is live), else (lo, hi, padding) per
// spatial dim, the weight's taps lo..hi-1 with that padding giving the same output.
py::object conv_live_window(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                            const std::vector<int64_t>& stride, const ConvPads& padding,
                            const std::vector<int64_t>& dilation, int64_t groups) {
  const ConvShape s = queried_shape("_conv_live_window", x, w, stride, padding, dilation, groups);
  const int nd = static_cast<int>(x.size()) - 2;
  const cpu::conv_detail::TapWindow t = cpu::conv_detail::live_tap_window(s);
  if (!t.trimmed || t.empty) return py::none();
  py::list lo, hi, pads;
  for (int d = 3 - nd; d < 3; ++d) {
    lo.append(t.lo[d]);
    hi.append(t.lo[d] + t.s.k[d]);
    pads.append(py::make_tuple(t.s.pad0[d], t.s.pad1[d]));
  }
  return py::make_tuple(lo, hi, pads);
}

// weight[:, :, lo0:hi0, lo1:hi1, ...] as a new contiguous float32 array, copied by the
// threads: NumPy's strided copy of a 2x2 window out of a 512x256x3x3 weight took 1.3 ms,
// a sizeable part of a ResNet-18 step at 32x32 (its last layers run on 1x1 and 2x2 maps).
py::array conv_weight_window(const py::array& weight, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
  CNNFAST_CHECK(weight.dtype().is(py::dtype::of<float>()), TypeError, "weight: expected float32, got ",
                dtype_name(weight));
  require_contiguous(weight, "weight");
  const int nd = static_cast<int>(weight.ndim()) - 2;
  CNNFAST_CHECK(nd >= 1 && nd <= 3 && lo.size() == size_t(nd) && hi.size() == size_t(nd), ValueError,
                "lo, hi: expected one bound per spatial dim of a rank 3-5 weight");
  int64_t k[3] = {1, 1, 1}, l[3] = {0, 0, 0}, h[3] = {1, 1, 1};
  for (int d = 0; d < nd; ++d) {
    k[3 - nd + d] = weight.shape(2 + d);
    l[3 - nd + d] = lo[size_t(d)];
    h[3 - nd + d] = hi[size_t(d)];
    CNNFAST_CHECK(0 <= lo[size_t(d)] && lo[size_t(d)] < hi[size_t(d)] && hi[size_t(d)] <= weight.shape(2 + d),
                  ValueError, "lo, hi: expected 0 <= lo < hi <= kernel size in every dim");
  }
  std::vector<py::ssize_t> shape{weight.shape(0), weight.shape(1)};
  for (int d = 0; d < nd; ++d) shape.push_back(hi[size_t(d)] - lo[size_t(d)]);
  py::array out = new_array_of(py::dtype::of<float>(), shape);
  const float* src = static_cast<const float*>(weight.data());
  float* dst = static_cast<float*>(out.mutable_data());
  const int64_t rows = weight.shape(0) * weight.shape(1), ks = k[0] * k[1] * k[2];
  const int64_t od = h[0] - l[0], oh = h[1] - l[1], ow = h[2] - l[2], os = od * oh * ow;
  std::vector<int64_t> at;  // the window's taps within a row of the weight
  for (int64_t a = 0; a < od; ++a)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) at.push_back(((l[0] + a) * k[1] + l[1] + i) * k[2] + l[2] + j);
  py::gil_scoped_release nogil;
  // One strided stream per call where the window is one tap (a 3x3 layer on a 1x1 map:
  // 512x512 took 1.0-1.8 ms cold through a per-row loop nest, as long as reading the
  // 9.4 MB weight twice over).
  parallel_for(0, rows, 4096, [&](int64_t b, int64_t e) {
    if (os == 1) {
      const float* from = src + at[0];
      for (int64_t r = b; r < e; ++r) dst[r] = from[r * ks];
      return;
    }
    for (int64_t r = b; r < e; ++r) {
      const float* from = src + r * ks;
      float* to = dst + r * os;
      for (int64_t t = 0; t < os; ++t) to[t] = from[at[size_t(t)]];
    }
  });
  return out;
}

namespace {

// A run of consecutive float32 convolutions of a frozen graph's plan (inference/_plan.py),
// executed in one call. Every step is checked once, when added, for the input shape the
// plan was made for; a call then only looks up its inputs and writes its outputs in the
// plan's value list and runs the kernels without the GIL. Between two convolutions the
// plan's Python loop and conv_forward's argument checks ran on cold caches after each
// layer (~5 us a step inside MobileNet-V2 at batch 1 against ~1 us repeated).
class FrozenConvChain {
 public:
  void add(int64_t in_slot, int64_t residual_slot, int64_t out_slot, const std::vector<int64_t>& x_shape,
           const py::array& w, const py::object& bias, const std::vector<int64_t>& stride, const Pairs& padding,
           const std::vector<int64_t>& dilation, int64_t groups, const std::string& activation, double alpha,
           double beta, const py::object& packed, const py::object& buffer) {
    CNNFAST_CHECK(in_slot >= 0 && out_slot >= 0 && residual_slot >= -1, ValueError,
                  "FrozenConvChain.add: slots must be >= 0 (residual_slot -1 for none)");
    input(w, "weight");
    CNNFAST_CHECK(py::dtype::of<float>().is(w.dtype()), TypeError, "weight: FrozenConvChain runs float32, got ",
                  py::str(w.dtype()).cast<std::string>());
    require_ndim(w, "weight", 3, 5);
    const int nd = int(w.ndim()) - 2;
    CNNFAST_CHECK(int(x_shape.size()) == nd + 2, ValueError, "x_shape: expected ", nd + 2, " sizes, got ",
                  x_shape.size());
    for (int64_t v : x_shape) CNNFAST_CHECK(v > 0, ValueError, "x_shape: expected positive sizes");
    Step st;
    st.s = conv_shape_from(x_shape, shape_of(w), stride, padding, dilation, groups, nd);
    st.x_shape = x_shape;
    st.y_shape = nd_shape(st.s.N, st.s.K, st.s.out, nd);
    if (!bias.is_none()) {
      CNNFAST_CHECK(py::isinstance<py::array>(bias), TypeError, "bias: expected a NumPy array or None");
      st.b = bias.cast<py::array>();
      st.has_bias = true;
      input(st.b, "bias");
      require_same_dtype(w, "weight", st.b, "bias");
      require_shape(st.b, "bias", {st.s.K});
    }
    if (!packed.is_none()) {  // None: depthwise layers, which the plain kernels take
      CNNFAST_CHECK(py::isinstance<cpu::ConvPacked>(packed), TypeError, "packed: expected a ConvPacked or None");
      st.packed = packed.cast<std::shared_ptr<cpu::ConvPacked>>();
      CNNFAST_CHECK(st.packed->K() == st.s.K && st.packed->Cg() == st.s.Cg() && st.packed->kk() == st.s.k_size() &&
                        st.packed->groups() == st.s.groups,
                    ValueError, "packed: packed for another weight shape or groups");
    }
    st.e = activation_of(activation, alpha, beta);
    st.w = w;
    if (nd == 2 && cpu::nchw16c_conv_applicable(st.s)) {
      const bool dw = cpu::nchw16c_is_depthwise(st.s);
      const float* b = st.has_bias ? cptr<float>(st.b) : nullptr;
      if (dw) {
        const int64_t padded = cpu::nchw16c_blocks(st.s.C) * cpu::kBlockLanes;
        st.blocked_w.resize(size_t(padded * st.s.k_size()));
        st.blocked_b.resize(size_t(padded));
        cpu::nchw16c_pack_depthwise(cptr<float>(w), b, st.s.C, st.s.k_size(), st.blocked_w.data(),
                                    st.blocked_b.data());
        st.blockable = st.depthwise = true;
      } else if (st.packed) {
        // The 32-channel groups' bias, zero past K (the tiles load whole vectors).
        st.blocked_b.assign(size_t((st.s.K + 31) / 32 * 32), 0.0f);
        if (b) std::copy_n(b, st.s.K, st.blocked_b.begin());
        st.blockable = true;
      }
    }
    push(std::move(st), buffer, in_slot, residual_slot, out_slot);
  }

  // A squeeze-and-excitation block (squeeze_excite_forward's arguments) on x of x_shape.
  void add_squeeze_excite(int64_t in_slot, int64_t out_slot, const std::vector<int64_t>& x_shape,
                          const py::array& w1, const py::object& b1, const py::array& w2, const py::object& b2,
                          const std::string& act1, double alpha1, double beta1, const std::string& act2,
                          double alpha2, double beta2, const py::object& buffer) {
    CNNFAST_CHECK(in_slot >= 0 && out_slot >= 0, ValueError, "FrozenConvChain.add_squeeze_excite: slots must be >= 0");
    CNNFAST_CHECK(x_shape.size() >= 3, ValueError, "x_shape: expected (N, C, *spatial)");
    for (int64_t v : x_shape) CNNFAST_CHECK(v > 0, ValueError, "x_shape: expected positive sizes");
    for (const auto& [a, name] : {std::pair<const py::array*, const char*>{&w1, "w1"}, {&w2, "w2"}}) {
      input(*a, name);
      CNNFAST_CHECK(py::dtype::of<float>().is(a->dtype()), TypeError, name, ": FrozenConvChain runs float32");
    }
    Step st;
    st.se = true;
    st.s.N = x_shape[0];
    st.s.C = x_shape[1];
    st.spatial = 1;
    for (size_t i = 2; i < x_shape.size(); ++i) st.spatial *= x_shape[i];
    st.se_rows = w1.shape(0);
    CNNFAST_CHECK(w1.ndim() == 2 && w1.shape(1) == st.s.C && w2.ndim() == 2 && w2.shape(0) == st.s.C &&
                      w2.shape(1) == st.se_rows,
                  ValueError, "w1, w2: expected (R, ", st.s.C, ") and (", st.s.C, ", R)");
    st.x_shape = x_shape;
    st.y_shape = x_shape;
    for (const auto& [b, arr, has, n, name] :
         {std::tuple<const py::object*, py::array*, bool*, int64_t, const char*>{&b1, &st.b, &st.has_bias, st.se_rows, "b1"},
          {&b2, &st.b2, &st.has_bias2, st.s.C, "b2"}}) {
      if (b->is_none()) continue;
      CNNFAST_CHECK(py::isinstance<py::array>(*b), TypeError, name, ": expected a NumPy array or None");
      *arr = b->cast<py::array>();
      *has = true;
      input(*arr, name);
      require_same_dtype(w1, "w1", *arr, name);
      require_shape(*arr, name, {n});
    }
    st.e = activation_of(act1, alpha1, beta1);
    st.e2 = activation_of(act2, alpha2, beta2);
    st.w = w1;
    st.w2 = w2;
    st.blockable = x_shape.size() == 4;
    push(std::move(st), buffer, in_slot, -1, out_slot);
  }

  // Only these of the chain's output slots are read after it (the plan knows; without
  // this call, all are): the others may stay in the blocked layout only.
  void keep(const std::vector<int64_t>& slots) {
    keep_ = std::set<int64_t>(slots.begin(), slots.end());
    keep_all_ = false;
    schedule_built_ = false;
  }

  // How many depthwise steps make their input band by band now, from the 1x1 step
  // before them or by packing NCHW (for tests).
  int64_t banded() {
    if (!blocked()) return 0;
    int64_t n = 0;
    for (const Step& st : steps_) n += st.fused_expand || st.pack_in_bands;
    return n;
  }
  // How many squeeze-excite steps leave their scaling to the next 1x1 step (for tests).
  int64_t scales_fused() {
    if (!blocked()) return 0;
    int64_t n = 0;
    for (const Step& st : steps_) n += st.scales_only;
    return n;
  }

  // "auto" (the rules of build_schedule), "nchw16c" (wherever a depthwise layer makes it
  // possible: tests) or "nchw".
  void set_layout(const std::string& layout) {
    CNNFAST_CHECK(layout == "auto" || layout == "nchw16c" || layout == "nchw", ValueError,
                  "layout: expected 'auto', 'nchw16c' or 'nchw', got '", layout, "'");
    layout_ = layout;
    schedule_built_ = false;
  }

  // Whether run() takes the NCHW16c kernels now (for tests and benchmarks).
  bool blocked() {
    build_schedule();
    return blocked_on_ && cnnfast::use_avx512() && !blocked_disabled();
  }

  void run(py::list values) {
    const size_t n = steps_.size();
    std::vector<const float*> xs(n), rs(n, nullptr);
    std::vector<float*> ys(n);
    std::vector<std::pair<int64_t, const float*>> made;  // slots written by this chain
    std::vector<py::array> copies;                       // contiguous copies of strided inputs
    auto fetch = [&](int64_t slot, const std::vector<int64_t>& shape, const char* name) -> const float* {
      for (auto it = made.rbegin(); it != made.rend(); ++it)
        if (it->first == slot) return it->second;
      CNNFAST_CHECK(slot < int64_t(values.size()), ValueError, name, ": no value in slot ", slot);
      py::object o = values[size_t(slot)];
      CNNFAST_CHECK(py::isinstance<py::array>(o), TypeError, name, ": expected a NumPy array, got ",
                    py::str(py::type::of(o)).cast<std::string>());
      py::array a = o.cast<py::array>();
      CNNFAST_CHECK(py::dtype::of<float>().is(a.dtype()), TypeError, name, ": expected float32, got ",
                    py::str(a.dtype()).cast<std::string>());
      require_shape(a, name, shape);
      // A view (a Split's output) or a misaligned array: a contiguous copy, as the
      // Python steps make one (inference._contiguous).
      if (!(a.flags() & py::array::c_style) || reinterpret_cast<std::uintptr_t>(a.data()) % alignof(float)) {
        copies.push_back(py::module_::import("numpy").attr("ascontiguousarray")(a).cast<py::array>());
        a = copies.back();
      }
      return cptr<float>(a);
    };
    for (size_t i = 0; i < n; ++i) {
      Step& st = steps_[i];
      xs[i] = fetch(st.in, st.x_shape, "x");
      if (st.res >= 0) rs[i] = fetch(st.res, st.y_shape, "residual");
      py::array y = st.has_buffer ? st.buffer : new_array_of(py::dtype::of<float>(), st.y_shape);
      CNNFAST_CHECK(st.out < int64_t(values.size()), ValueError, "out: no slot ", st.out);
      values[size_t(st.out)] = y;
      ys[i] = mptr<float>(y);
      made.emplace_back(st.out, ys[i]);
    }
    const bool blocked = this->blocked();
    if (blocked && arena_floats_ > arena_size_) {
      arena_ = aligned_alloc_array<float>(arena_floats_);
      arena_size_ = arena_floats_;
    }
    py::gil_scoped_release nogil;
    for (size_t i = 0; i < n; ++i) {
      const Step& st = steps_[i];
      if (blocked && st.blockable) {
        if (!st.fused_into_next)
          run_blocked(i, st.fused_expand || st.scaled_input ? xs[i - 1] : xs[i], rs[i], ys[i]);
        continue;
      }
      if (st.se) {
        cpu::squeeze_excite_forward<float>(xs[i], ys[i], st.s.N, st.s.C, st.spatial, cptr<float>(st.w),
                                           st.has_bias ? cptr<float>(st.b) : nullptr, st.se_rows, cptr<float>(st.w2),
                                           st.has_bias2 ? cptr<float>(st.b2) : nullptr, st.e, st.e2);
        continue;
      }
      cpu::Epilogue e = st.e;
      e.residual = rs[i];
      cpu::conv_forward_fused<float>(st.s, xs[i], cptr<float>(st.w), st.has_bias ? cptr<float>(st.b) : nullptr, ys[i],
                                     ConvAlgo::Auto, e, st.packed.get());
    }
  }

  int64_t size() const { return int64_t(steps_.size()); }

 private:
  struct Step {
    ConvShape s;
    std::vector<int64_t> x_shape, y_shape;
    py::array w, b, buffer;  // b and buffer only where has_bias, has_buffer
    bool has_bias = false, has_buffer = false;
    std::shared_ptr<cpu::ConvPacked> packed;
    cpu::Epilogue e;
    // Squeeze-and-excitation: w, b the first product's, w2, b2 the second's, e2 its activation.
    bool se = false, has_bias2 = false;
    py::array w2, b2;
    cpu::Epilogue e2;
    int64_t spatial = 1, se_rows = 0;
    int64_t in = 0, res = -1, out = 0;
    // The NCHW16c path (cpu/conv_nchw16c.h): whether this step has it, and its weights
    // there (depthwise: repacked with a padded bias; 1x1: the pack's kvec() with a
    // padded bias; squeeze-excite: w and w2 as they are).
    bool blockable = false, depthwise = false;
    std::vector<float> blocked_w, blocked_b;
    // Where run() finds its blocked x, residual and y in the arena (floats), and whether
    // it first packs x or the residual from NCHW and afterwards unpacks y to NCHW.
    int64_t x_at = -1, r_at = -1, y_at = -1;
    bool pack_x = false, pack_r = false, unpack_y = false;
    // A 1x1 step run by the next (depthwise) step inside its bands, and that step.
    bool fused_into_next = false, fused_expand = false;
    // A depthwise step that packs its NCHW input band by band (pack_x, no x in the arena).
    bool pack_in_bands = false;
    // A squeeze-excite step that only computes its scales (into se_scale), and the 1x1
    // step after it that applies them as it reads the block's input.
    bool scales_only = false, scaled_input = false;
    mutable std::vector<float> se_scale;
  };
  std::vector<Step> steps_;
  // run() writes the arena and the SE scales: one run of a chain at a time (a plan's
  // lock; the planned output buffers asked that already).
  std::set<int64_t> keep_;
  bool keep_all_ = true, schedule_built_ = false, blocked_on_ = false;
  std::string layout_ = "auto";
  int64_t arena_floats_ = 0, arena_size_ = 0;
  AlignedPtr<float> arena_;

  // CNNFAST_NCHW16C=0 keeps every chain on NCHW (to measure one against the other).
  static bool blocked_disabled() {
    static const bool off = [] {
      const char* v = std::getenv("CNNFAST_NCHW16C");
      return v && std::string(v) == "0";
    }();
    return off;
  }

  static int64_t spatial_of(const std::vector<int64_t>& shape) {
    int64_t p = 1;
    for (size_t d = 2; d < shape.size(); ++d) p *= shape[d];
    return p;
  }

  // Which steps run blocked and where their blocked tensors live. Chains with a
  // depthwise layer only (MobileNet, EfficientNet, ShuffleNet blocks): in ResNet's the
  // 1x1 layers alternate with 3x3 dense ones, which stay NCHW, and every switch would
  // cost a conversion. A value produced blocked is unpacked to its NCHW buffer when a
  // later NCHW step reads it or when it is kept; one read blocked but made in NCHW
  // (before the chain, or by an NCHW step) is packed at its first blocked reader.
  // Blocked tensors share one arena, reused by liveness (first fit).
  void build_schedule() {
    if (schedule_built_) return;
    schedule_built_ = true;
    blocked_on_ = false;
    bool has_depthwise = false;
    for (const Step& st : steps_) has_depthwise = has_depthwise || (st.blockable && st.depthwise);
    if (!has_depthwise || layout_ == "nchw") return;
    blocked_on_ = true;
    struct Buf {
      int64_t floats, birth, death, at = 0;
    };
    std::vector<Buf> bufs;
    std::map<int64_t, size_t> blocked_buf;  // slot -> its blocked tensor
    std::map<int64_t, size_t> made_by;      // slot -> the blocked step that made it
    auto use = [&](int64_t slot, const std::vector<int64_t>& shape, size_t i, bool& pack) -> size_t {
      auto it = blocked_buf.find(slot);
      if (it != blocked_buf.end()) {
        bufs[it->second].death = int64_t(i);
        pack = false;
        return it->second;
      }
      pack = true;
      bufs.push_back({cpu::nchw16c_floats(shape[0], shape[1], spatial_of(shape)), int64_t(i), int64_t(i)});
      blocked_buf[slot] = bufs.size() - 1;
      return bufs.size() - 1;
    };
    // An expanding 1x1 layer whose output only the next (depthwise) layer reads runs
    // inside that layer's bands (cpu::nchw16c_banded_depthwise) where the expanded
    // tensor passes the caches: its output is never stored whole.
    for (size_t i = 0; i < steps_.size(); ++i) steps_[i].fused_into_next = steps_[i].fused_expand = false;
    for (size_t i = 0; i + 1 < steps_.size(); ++i) {
      Step &a = steps_[i], &b = steps_[i + 1];
      const bool pair = a.blockable && !a.depthwise && !a.se && a.res < 0 && b.blockable && b.depthwise &&
                        b.res < 0 && b.in == a.out && a.s.K == b.s.C;
      if (!pair || keep_all_ || keep_.count(a.out) || readers(a.out) != 1 || !cpu::nchw16c_band_pays(b.s, false))
        continue;
      a.fused_into_next = b.fused_expand = true;
    }
    // A squeeze-excite block whose output only the next 1x1 layer reads: that layer
    // multiplies its weight rows by the scales as it loads them, and x * scale is never
    // written (EfficientNet-B0: 16 passes that read and wrote a whole tensor).
    for (size_t i = 0; i < steps_.size(); ++i) steps_[i].scales_only = steps_[i].scaled_input = false;
    for (size_t i = 0; i + 1 < steps_.size(); ++i) {
      Step &a = steps_[i], &b = steps_[i + 1];
      const bool pair = a.se && a.blockable && b.blockable && !b.depthwise && !b.se && !b.fused_into_next &&
                        b.in == a.out;
      if (!pair || keep_all_ || keep_.count(a.out) || readers(a.out) != 1) continue;
      a.scales_only = b.scaled_input = true;
      a.se_scale.assign(size_t(a.s.N * a.s.C), 0.0f);
    }
    std::vector<size_t> xb(steps_.size()), rb(steps_.size()), yb(steps_.size());
    for (size_t i = 0; i < steps_.size(); ++i) {
      Step& st = steps_[i];
      st.pack_x = st.pack_r = st.unpack_y = false;
      st.x_at = st.r_at = st.y_at = -1;
      if (st.fused_into_next) continue;
      if (!st.blockable) {
        for (int64_t slot : {st.in, st.res})
          if (slot >= 0 && made_by.count(slot)) steps_[made_by[slot]].unpack_y = true;
        blocked_buf.erase(st.out);
        made_by.erase(st.out);
        continue;
      }
      st.pack_in_bands = false;
      if (st.fused_expand || st.scaled_input) {
        xb[i] = use(steps_[i - 1].in, steps_[i - 1].x_shape, i, st.pack_x);
      } else if (st.depthwise && st.res < 0 && !blocked_buf.count(st.in) && readers(st.in) == 1 &&
                 cpu::nchw16c_band_pays(st.s, true)) {
        // Its NCHW input (a stem's output) is read by no other step: packed band by band
        // into L2, not whole into the arena and back.
        st.pack_x = st.pack_in_bands = true;
      } else {
        xb[i] = use(st.in, st.x_shape, i, st.pack_x);
      }
      if (st.res >= 0) rb[i] = use(st.res, st.y_shape, i, st.pack_r);
      if (st.scales_only) continue;  // no y: the next step reads x with the scales
      bufs.push_back({cpu::nchw16c_floats(st.y_shape[0], st.y_shape[1], spatial_of(st.y_shape)), int64_t(i),
                      int64_t(i)});
      yb[i] = bufs.size() - 1;
      blocked_buf[st.out] = yb[i];
      made_by[st.out] = i;
    }
    for (const auto& [slot, i] : made_by)
      if (keep_all_ || keep_.count(slot)) steps_[i].unpack_y = true;
    // First fit in birth order among the tensors alive at the same time (64-byte steps).
    arena_floats_ = 0;
    for (size_t b = 0; b < bufs.size(); ++b) {
      const int64_t need = (bufs[b].floats + 15) / 16 * 16;
      std::vector<std::pair<int64_t, int64_t>> taken;
      for (size_t o = 0; o < b; ++o)
        if (bufs[o].birth <= bufs[b].death && bufs[b].birth <= bufs[o].death)
          taken.emplace_back(bufs[o].at, (bufs[o].floats + 15) / 16 * 16);
      std::sort(taken.begin(), taken.end());
      int64_t at = 0;
      for (const auto& [start, size] : taken) {
        if (at + need <= start) break;
        at = std::max(at, start + size);
      }
      bufs[b].at = at;
      arena_floats_ = std::max(arena_floats_, at + need);
    }
    // Short chains between a Split and a Concat (ShuffleNet's three-layer branches) pay a
    // conversion at each end for a few layers: slower than NCHW there (ShuffleNet-V2
    // batch 8, 2 threads: 11.1 -> 13.6 ms). Blocked only where the layers outnumber the
    // conversions four to one (MobileNet-V2: 51 layers, 2 conversions).
    int64_t layers = 0, conversions = 0;
    for (const Step& st : steps_)
      if (st.blockable) layers += 1, conversions += st.pack_x + st.pack_r + st.unpack_y;
    if (layout_ == "auto" && layers < 4 * conversions) {
      blocked_on_ = false;
      return;
    }
    for (size_t i = 0; i < steps_.size(); ++i) {
      Step& st = steps_[i];
      if (!st.blockable || st.fused_into_next) continue;
      if (!st.pack_in_bands) st.x_at = bufs[xb[i]].at;
      if (st.res >= 0) st.r_at = bufs[rb[i]].at;
      if (!st.scales_only) st.y_at = bufs[yb[i]].at;
    }
  }

  // How many steps read the slot (as x or as residual).
  int64_t readers(int64_t slot) const {
    int64_t n = 0;
    for (const Step& st : steps_) n += (st.in == slot) + (st.res == slot);
    return n;
  }

  void run_blocked(size_t i, const float* x, const float* r, float* y) {
    const Step& st = steps_[i];
    float* xb = st.x_at >= 0 ? arena_.get() + st.x_at : nullptr;
    float* yb = st.y_at >= 0 ? arena_.get() + st.y_at : nullptr;
    float* rb = st.res >= 0 ? arena_.get() + st.r_at : nullptr;
    const std::vector<int64_t>& x_shape = st.fused_expand || st.scaled_input ? steps_[i - 1].x_shape : st.x_shape;
    const int64_t N = x_shape[0], P_in = spatial_of(x_shape), P_out = spatial_of(st.y_shape);
    if (st.pack_x && !st.pack_in_bands) cpu::nchw16c_pack(x, N, x_shape[1], P_in, xb);
    if (st.pack_r) cpu::nchw16c_pack(r, N, st.y_shape[1], P_out, rb);
    if (st.fused_expand) {
      const Step& ex = steps_[i - 1];
      cpu::nchw16c_banded_depthwise(&ex.s, xb, ex.packed->kvec(), ex.blocked_b.data(), ex.e, st.s,
                                    st.blocked_w.data(), st.blocked_b.data(), yb, st.e);
    } else if (st.pack_in_bands) {
      cpu::nchw16c_banded_depthwise(nullptr, x, nullptr, nullptr, st.e, st.s, st.blocked_w.data(),
                                    st.blocked_b.data(), yb, st.e);
    } else if (st.scales_only) {
      cpu::nchw16c_squeeze_excite_scales(xb, N, st.s.C, P_in, cptr<float>(st.w),
                                         st.has_bias ? cptr<float>(st.b) : nullptr, st.se_rows, cptr<float>(st.w2),
                                         st.has_bias2 ? cptr<float>(st.b2) : nullptr, st.e, st.e2,
                                         st.se_scale.data());
    } else if (st.se) {
      cpu::nchw16c_squeeze_excite(xb, yb, N, st.s.C, P_in, cptr<float>(st.w),
                                  st.has_bias ? cptr<float>(st.b) : nullptr, st.se_rows, cptr<float>(st.w2),
                                  st.has_bias2 ? cptr<float>(st.b2) : nullptr, st.e, st.e2);
    } else {
      cpu::Epilogue e = st.e;
      e.residual = rb;
      cpu::nchw16c_conv_forward(st.s, xb, st.depthwise ? st.blocked_w.data() : st.packed->kvec(), st.blocked_b.data(),
                                yb, e, st.scaled_input ? steps_[i - 1].se_scale.data() : nullptr);
    }
    if (st.unpack_y) cpu::nchw16c_unpack(yb, N, st.y_shape[1], P_out, y);
  }

  static cpu::Epilogue activation_of(const std::string& act, double alpha, double beta) {
    cpu::Epilogue e;
    e.act = cpu::parse_epilogue_act(act);
    e.alpha = alpha;
    e.beta = beta;
    return e;
  }
  // A checked step with its slots and planned output buffer (y's shape, float32, writable,
  // apart from the weight), if any.
  void push(Step st, const py::object& buffer, int64_t in, int64_t residual, int64_t out) {
    if (!buffer.is_none()) {
      st.buffer = output(buffer, "buffer", st.w, st.y_shape);
      st.has_buffer = true;
      require_no_overlap(st.buffer, "buffer", st.w, "weight", false);
    }
    st.in = in;
    st.res = residual;
    st.out = out;
    steps_.push_back(std::move(st));
    schedule_built_ = false;
  }
};

}  // namespace

void bind_conv(py::module_& m) {
  m.def("_conv_live_window", &conv_live_window, py::arg("x_shape"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "None when every kernel tap of the layer reads some input, else ([lo], [hi], [(start, end)]) per spatial "
        "dim: the window of live taps and the padding under which weight[:, :, lo:hi, ...] gives the same output.");
  m.def("_conv_weight_window", &conv_weight_window, py::arg("weight"), py::arg("lo"), py::arg("hi"),
        "weight[:, :, lo:hi, ...] (float32, C-contiguous) as a new contiguous array, copied by the threads.");
  m.def("_set_kvec_rows", &cpu::conv_detail::set_kvec_rows_mode, py::arg("mode"),
        "Whether Auto runs float32 forwards on the row tiles: -1 by its rule (default), 0 never, 1 wherever they "
        "apply (tests and A/B measurements). Returns the previous mode.");
  m.def("_conv_auto_plan", &conv_auto_plan, py::arg("x_shape"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "The kernel Auto picks for each pass of a float32 layer: {'forward', 'grad_input', 'grad_weight'} -> "
        "'gemm', 'winograd', 'kvec' (channel-vector tiles from the bordered image), 'smallmap' (weight-streaming direct passes for small maps), 'rows' (row tiles of 64 output channels, live taps only), 'stem' (the few-input-channel forward), 'direct' or 'depthwise' (used by "
        "the training-memory estimate); 'frozen_forward_kvec': whether a frozen graph's forward, with the weights "
        "packed once (packed=), takes the channel-vector tiles.");
  const char* algo_doc = " algo: 'auto' (per-shape choice: Winograd for 2-D 3x3 stride-1 layers with >= 16 "
                         "channels per group in and out (in the forward also >= 512 output positions over the batch), a direct kernel "
                         "for depthwise layers, else GEMM), "
                         "'gemm' (im2col + packed SGEMM) or 'winograd' (F(4x4,3x3); ValueError unless 2-D 3x3 "
                         "stride 1 dilation 1).";
  const char* epilogue_doc = " Inference output pass: y = activation(y + residual) with residual (y's shape) or "
                             "None and activation one of none, relu, leaky_relu (alpha: slope), clip (alpha, beta: "
                             "min, max), hardsigmoid (max(0, min(1, alpha*y + beta))), hardswish, sigmoid, silu.";
  m.def("conv_forward", &conv_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("algo") = "auto",
        py::arg("residual") = py::none(), py::arg("activation") = "none", py::arg("alpha") = 0.0,
        py::arg("beta") = 0.0, py::arg("packed") = py::none(), py::arg("out") = py::none(),
        (std::string("Convolution (cross-correlation, as PyTorch). x: (N, C, *in) with 1-3 spatial dims; "
                     "weight: (K, C/groups, *k); bias: (K,) or None; stride, dilation: one int per spatial dim; "
                     "padding: one (start, end) pair per spatial dim. Returns y (N, K, *out), "
                     "out = (in + start + end - dilation*(k-1) - 1) // stride + 1.") +
         algo_doc + epilogue_doc +
         " packed: ConvPacked(weight, groups) of this very weight (float32), reused instead of packing the "
         "weight again on each call; None packs per call. out: a C-contiguous writable array of y's shape and "
         "dtype, overlapping none of the inputs, written and returned instead of a new array (frozen graphs "
         "reuse freed buffers this way).")
            .c_str());
  py::class_<cpu::ConvPacked, std::shared_ptr<cpu::ConvPacked>>(
      m, "ConvPacked",
      "ConvPacked(weight, groups=1): a float32 convolution weight (K, C/groups, *k) packed once for the GEMM, "
      "for conv_forward(packed=...); frozen inference graphs make one per layer at freeze time. It keeps its "
      "own copy of the weight.")
      .def(py::init(&conv_pack), py::arg("weight"), py::arg("groups") = 1)
      .def_property_readonly("shape", [](const cpu::ConvPacked& p) {
        return py::make_tuple(p.K(), p.Cg(), p.kk(), p.groups());
      }, "(out channels, in channels per group, kernel taps, groups)");
  py::class_<FrozenConvChain>(
      m, "FrozenConvChain",
      "Consecutive float32 convolutions of a frozen plan (cnnfast.inference) run in one call: add() checks "
      "each step once for its input shape; run(values) reads each step's x (and residual) from the list at "
      "their slots, writes y into its planned buffer (or a new array) and stores it at its slot.")
      .def(py::init<>())
      .def("add", &FrozenConvChain::add, py::arg("in_slot"), py::arg("residual_slot"), py::arg("out_slot"),
           py::arg("x_shape"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"),
           py::arg("dilation"), py::arg("groups"), py::arg("activation"), py::arg("alpha"), py::arg("beta"),
           py::arg("packed"), py::arg("buffer"))
      .def("add_squeeze_excite", &FrozenConvChain::add_squeeze_excite, py::arg("in_slot"), py::arg("out_slot"),
           py::arg("x_shape"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("act1"),
           py::arg("alpha1"), py::arg("beta1"), py::arg("act2"), py::arg("alpha2"), py::arg("beta2"),
           py::arg("buffer"))
      .def("keep", &FrozenConvChain::keep, py::arg("slots"),
           "Only these output slots are read after the chain; the others may stay in the chain's own layout.")
      .def("set_layout", &FrozenConvChain::set_layout, py::arg("layout"),
           "'auto' (the channel-blocked layout for chains with a depthwise layer and few conversions), "
           "'nchw16c' (wherever a depthwise layer allows it) or 'nchw'.")
      .def("_banded", &FrozenConvChain::banded,
           "How many depthwise layers make their input band by band (from the 1x1 layer before them, or by "
           "packing NCHW): tests.")
      .def("_scales_fused", &FrozenConvChain::scales_fused,
           "How many squeeze-excite blocks leave their scaling to the next 1x1 layer (tests).")
      .def("blocked", &FrozenConvChain::blocked, "Whether run() takes the NCHW16c kernels (cpu/conv_nchw16c.h).")
      .def("run", &FrozenConvChain::run, py::arg("values"))
      .def("__len__", &FrozenConvChain::size);
  m.def("squeeze_excite_forward", &se_fwd, py::arg("x"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"),
        py::arg("act1") = "relu", py::arg("alpha1") = 0.0, py::arg("beta1") = 0.0, py::arg("act2") = "sigmoid",
        py::arg("alpha2") = 0.0, py::arg("beta2") = 0.0,
        "Squeeze-and-excitation in one call (inference): y = x * act2(w2 @ act1(w1 @ mean(x over space) + b1) + "
        "b2) per image and channel. x: (N, C, *spatial); w1: (R, C) or (R, C, 1, 1); w2: (C, R) or (C, R, 1, 1); "
        "b1 (R,), b2 (C,) or None; activations as conv_forward's (no residual).");
  m.def("conv_backward", &conv_bwd, py::arg("grad_output"), py::arg("x"), py::arg("weight"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("need_input") = true,
        py::arg("need_weight") = true, py::arg("need_bias") = true, py::arg("algo") = "auto",
        py::arg("grad_weight_out") = py::none(),
        "Gradients of conv_forward: returns (grad_x (N, C, *in) | None, grad_weight (K, C/groups, *k) | None, "
        "grad_bias (K,) | None), each computed only when asked for. algo picks grad_x's algorithm as for the "
        "forward (winograd applies to grad_x only); grad_weight uses im2col + GEMM, or the direct depthwise "
        "kernel under 'auto' when every group has one input channel. grad_weight_out: an array (weight's shape "
        "and dtype, C-contiguous, writeable, sharing no memory with the inputs) to write grad_weight into "
        "instead of a new one (data-parallel training hands each rank's shared slot).");
  m.def("conv_transpose_forward", &convt_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("output_padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("algo") = "auto",
        (std::string("Transposed convolution (the adjoint of conv_forward, PyTorch's conv_transposeNd). "
                     "x: (N, Cin, *in); weight: (Cin, Cout/groups, *k); bias: (Cout,) or None; padding: "
                     "(start, end) pairs. Returns y (N, Cout, *out), out = (in-1)*stride - start - end + "
                     "dilation*(k-1) + output_padding + 1.") +
         algo_doc)
            .c_str());
  m.def("conv_transpose_backward", &convt_bwd, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("stride"), py::arg("padding"), py::arg("output_padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("need_input") = true, py::arg("need_weight") = true, py::arg("need_bias") = true,
        py::arg("algo") = "auto",
        "Gradients of conv_transpose_forward: (grad_x (N, Cin, *in) | None, grad_weight (Cin, Cout/groups, *k) | "
        "None, grad_bias (Cout,) | None).");
  m.def("linear_forward", &linear_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("residual") = py::none(), py::arg("activation") = "none", py::arg("alpha") = 0.0,
        py::arg("beta") = 0.0,
        (std::string("Fully connected: x (M, in), weight (out, in), bias (out,) or None -> y (M, out) = "
                     "x @ weight.T + bias.") + epilogue_doc).c_str());
  m.def("linear_backward", &linear_bwd, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("need_input") = true, py::arg("need_weight") = true, py::arg("need_bias") = true,
        "Gradients of linear_forward: (grad_x (M, in) | None, grad_weight (out, in) | None, grad_bias (out,) | "
        "None).");
  m.def("gemm", &gemm_op, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        "op(a) @ op(b) on the library's GEMM (packed AVX-512 or AVX2 SGEMM for float32, by SIMD level, "
        "else the scalar reference); a, b: 2-D, C-contiguous, same dtype.");
  m.def(
      "fma_peak_gflops",
      [](int threads, const std::string& level) {
        // Each thread is a std::thread of its own: a careless 10**6 must not try to start them.
        CNNFAST_CHECK(threads >= 1, ValueError, "threads: expected a positive int, got ", threads);
        CNNFAST_CHECK(threads <= 1024, ValueError, "threads: expected at most 1024, got ", threads);
        const SimdLevel lvl = level == "best" ? best_simd_level() : parse_simd_level(level);
        py::gil_scoped_release nogil;
        return cpu::fma_peak_gflops(threads, lvl);
      },
      py::arg("threads"), py::arg("level") = "best",
      "float32 FMA peak of this machine in GFLOP/s, measured with our own loop at `level` "
      "('avx2', 'avx512' or 'best').");
  m.def("avx512_full_rate", &cpu::avx512_full_rate,
        "Whether this CPU retires 512-bit FMAs as fast as 256-bit ones (AVX-512 doubles its FMA peak), "
        "measured once on first use; CNNFAST_AVX512_FULL_RATE=0|1 overrides it. Convolution's algorithm "
        "choice depends on it. False without AVX-512.");
}

}  // namespace cnnfast::bind
