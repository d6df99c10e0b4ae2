// Bindings for the bfloat16 kernels (csrc/cpu/bf16.h): float32 accumulation, float32 outputs.
//
//   conv_forward_bf16(x, weight, bias, stride, padding, dilation, groups) -> y (float32)
//   conv_backward_bf16(grad_output, x, weight, stride, padding, dilation, groups,
//                      need_input=True, need_weight=True, need_bias=True) -> float32 grads
//   linear_forward_bf16(x, weight, bias) / linear_backward_bf16(grad_output, x, weight, ...)
//   gemm_bf16(a, b, trans_a=False, trans_b=False) -> float32
//   bf16_path() / set_bf16_path(name) / bf16_paths() / amx_permission() / amx_peak_gflops(threads)
//   to_bfloat16(a) -> ml_dtypes.bfloat16 array (round to nearest even)
//
// x, weight and grad_output are all float32 (rounded to bfloat16 while packed) or all
// ml_dtypes.bfloat16 (read as their uint16 bits); bias is float32.
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "bind/array.h"
#include "bind/conv_params.h"
#include "bind/families.h"
#include "core/parallel.h"
#include "cpu/bf16.h"
#include "cpu/epilogue.h"

namespace cnnfast::bind {
namespace {

using cpu::ConvShape;

bool is_bf16(const py::array& a) { return a.itemsize() == 2 && dtype_name(a) == "bfloat16"; }

// float32 or bfloat16 and C-contiguous; float16 and others are TypeErrors naming the argument.
bool bf16_input(const py::array& a, const char* name) {
  const bool bf = is_bf16(a);
  CNNFAST_CHECK(bf || a.dtype().is(py::dtype::of<float>()), TypeError, name,
                ": expected a float32 or bfloat16 (ml_dtypes.bfloat16) array, got dtype ", dtype_name(a),
                dtype_name(a) == "float16" ? " (float16 has no kernels; use bfloat16 or float32)" : "");
  require_contiguous(a, name);
  return bf;
}

py::dtype bf16_dtype() { return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")); }
py::dtype f32() { return py::dtype::of<float>(); }

template <class F>
void dispatch_bf16(bool bf, F&& f) {
  if (bf) f(uint16_t());
  else f(float());
}

template <class T>
const T* cp(const py::array& a) { return static_cast<const T*>(a.data()); }
float* mp(py::array& a) { return static_cast<float*>(a.mutable_data()); }

void same_kind(const py::array& a, const char* na, const py::array& b, const char* nb) {
  CNNFAST_CHECK(a.dtype().is(b.dtype()), TypeError, nb, ": expected dtype ", dtype_name(a), " (the dtype of ", na,
                "), got ", dtype_name(b), "; mixed dtypes are not cast silently");
}

const float* bias_ptr(const py::object& bias, int64_t channels, py::array& keep) {
  if (bias.is_none()) return nullptr;
  CNNFAST_CHECK(py::isinstance<py::array>(bias), TypeError, "bias: expected a float32 NumPy array or None");
  keep = bias.cast<py::array>();
  require_dtype(keep, "bias", f32());
  require_contiguous(keep, "bias");
  require_shape(keep, "bias", {channels});
  return cp<float>(keep);
}

ConvShape shape_of_conv(const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
                        const ConvPads& padding, const std::vector<int64_t>& dilation, int64_t groups, int& nd,
                        bool& bf) {
  bf = bf16_input(x, "x");
  bf16_input(w, "weight");
  same_kind(x, "x", w, "weight");
  require_ndim(x, "x", 3, 5);
  require_ndim(w, "weight", int(x.ndim()), int(x.ndim()));
  for (int i = 0; i < x.ndim(); ++i)
    CNNFAST_CHECK(x.shape(i) > 0 && w.shape(i) > 0, ValueError, "x, weight: expected non-zero sizes, got ",
                  shape_str(shape_of(x)), " and ", shape_str(shape_of(w)));
  nd = int(x.ndim()) - 2;
  return conv_shape_from(shape_of(x), shape_of(w), stride, padding, dilation, groups, nd);
}


// The inference output pass (cpu/epilogue.h) after a bf16 product: y = act(y + residual),
// residual float32 of y's shape (the outputs are float32 whatever the inputs).
struct OutputPass {
  cpu::Epilogue e;
  py::array keep;
  OutputPass(const py::object& residual, const std::string& activation, double alpha, double beta,
             const std::vector<int64_t>& y_shape) {
    e.act = cpu::parse_epilogue_act(activation);
    e.alpha = alpha;
    e.beta = beta;
    if (residual.is_none()) return;
    CNNFAST_CHECK(py::isinstance<py::array>(residual), TypeError, "residual: expected a float32 NumPy array or None");
    keep = residual.cast<py::array>();
    require_dtype(keep, "residual", f32());
    require_contiguous(keep, "residual");
    require_shape(keep, "residual", y_shape);
    e.residual = keep.data();
  }
  void apply(py::array& y) const {
    if (e.empty()) return;
    float* yp = static_cast<float*>(y.mutable_data());
    const int64_t n = y.size();
    py::gil_scoped_release nogil;
    cpu::apply_epilogue<float>(yp, n, e);
  }
};

py::array conv_fwd(const py::array& x, const py::array& w, const py::object& bias, const std::vector<int64_t>& stride,
                   const ConvPads& padding, const std::vector<int64_t>& dilation, int64_t groups,
                   const py::object& residual, const std::string& activation, double alpha, double beta) {
  int nd = 0;
  bool bf = false;
  const ConvShape s = shape_of_conv(x, w, stride, padding, dilation, groups, nd, bf);
  py::array keep;
  const float* bp = bias_ptr(bias, s.K, keep);
  const std::vector<int64_t> y_shape = nd_shape(s.N, s.K, s.out, nd);
  const OutputPass out(residual, activation, alpha, beta, y_shape);
  py::array y = new_array_of(f32(), y_shape);
  float* yp = mp(y);
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cp<T>(x);
    const T* wp = cp<T>(w);
    py::gil_scoped_release nogil;
    cpu::conv_forward_bf16<T>(s, xp, wp, bp, yp);
  });
  out.apply(y);
  return y;
}

using Grads = std::tuple<py::object, py::object, py::object>;

void sum_bias(const py::array& gy, bool bf, int64_t N, int64_t C, int64_t S, float* gb) {
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* g = cp<T>(gy);
    py::gil_scoped_release nogil;
    parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < S; ++i) {
            if constexpr (std::is_same_v<T, float>) acc += g[(n * C + c) * S + i];
            else acc += cpu::bf16_to_float(g[(n * C + c) * S + i]);
          }
        gb[c] += float(acc);
      }
    });
  });
}

Grads conv_bwd(const py::array& gy, const py::array& x, const py::array& w, const std::vector<int64_t>& stride,
               const ConvPads& padding, const std::vector<int64_t>& dilation, int64_t groups, bool need_input,
               bool need_weight, bool need_bias) {
  int nd = 0;
  bool bf = false;
  const ConvShape s = shape_of_conv(x, w, stride, padding, dilation, groups, nd, bf);
  bf16_input(gy, "grad_output");
  same_kind(x, "x", gy, "grad_output");
  require_shape(gy, "grad_output", nd_shape(s.N, s.K, s.out, nd));
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  py::array gxa, gwa, gba;
  if (need_input) gxa = new_array_of(f32(), shape_of(x));
  // grad_w is written whole by the kernel, with the threads: no memset here.
  if (need_weight) gwa = new_array_of(f32(), shape_of(w));
  if (need_bias) {
    gba = new_array_of(f32(), {s.K});
    std::memset(gba.mutable_data(), 0, gba.nbytes());
  }
  float* gxp = need_input ? mp(gxa) : nullptr;
  float* gwp = need_weight ? mp(gwa) : nullptr;
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* gyp = cp<T>(gy);
    const T* xp = cp<T>(x);
    const T* wp = cp<T>(w);
    py::gil_scoped_release nogil;
    if (gxp) cpu::conv_backward_data_bf16<T>(s, gyp, wp, gxp);
    if (gwp) cpu::conv_backward_weight_bf16<T>(s, gyp, xp, gwp);
  });
  if (need_bias) sum_bias(gy, bf, s.N, s.K, s.out_size(), mp(gba));
  if (need_input) gx = gxa;
  if (need_weight) gw = gwa;
  if (need_bias) gb = gba;
  return {gx, gw, gb};
}

bool check_linear(const py::array& x, const py::array& w) {
  const bool bf = bf16_input(x, "x");
  bf16_input(w, "weight");
  same_kind(x, "x", w, "weight");
  require_ndim(x, "x", 2, 2);
  require_ndim(w, "weight", 2, 2);
  CNNFAST_CHECK(w.shape(1) == x.shape(1) && x.shape(1) > 0 && w.shape(0) > 0, ValueError,
                "weight: expected shape (out_features > 0, ", x.shape(1), "), got ", shape_str(shape_of(w)));
  return bf;
}

py::array linear_fwd(const py::array& x, const py::array& w, const py::object& bias, const py::object& residual,
                     const std::string& activation, double alpha, double beta) {
  const bool bf = check_linear(x, w);
  const int64_t M = x.shape(0), in = x.shape(1), out = w.shape(0);
  const OutputPass pass(residual, activation, alpha, beta, {M, out});
  py::array keep;
  const float* bp = bias_ptr(bias, out, keep);
  py::array y = new_array_of(f32(), {M, out});
  float* yp = mp(y);
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cp<T>(x);
    const T* wp = cp<T>(w);
    py::gil_scoped_release nogil;
    cpu::gemm_bf16<T>(M, out, in, xp, in, 1, wp, 1, in, yp, out, false);
    if (bp)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t o = 0; o < out; ++o) yp[m * out + o] += bp[o];
  });
  pass.apply(y);
  return y;
}

Grads linear_bwd(const py::array& gy, const py::array& x, const py::array& w, bool need_input, bool need_weight,
                 bool need_bias) {
  const bool bf = check_linear(x, w);
  bf16_input(gy, "grad_output");
  same_kind(x, "x", gy, "grad_output");
  const int64_t M = x.shape(0), in = x.shape(1), out = w.shape(0);
  require_shape(gy, "grad_output", {M, out});
  py::array gxa, gwa, gba;
  if (need_input) gxa = new_array_of(f32(), {M, in});
  if (need_weight) gwa = new_array_of(f32(), {out, in});
  if (need_bias) {
    gba = new_array_of(f32(), {out});
    std::memset(gba.mutable_data(), 0, gba.nbytes());
  }
  float* gxp = need_input ? mp(gxa) : nullptr;
  float* gwp = need_weight ? mp(gwa) : nullptr;
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* gyp = cp<T>(gy);
    const T* xp = cp<T>(x);
    const T* wp = cp<T>(w);
    py::gil_scoped_release nogil;
    if (gxp) cpu::gemm_bf16<T>(M, in, out, gyp, out, 1, wp, in, 1, gxp, in, false);
    if (gwp) cpu::gemm_bf16<T>(out, in, M, gyp, 1, out, xp, in, 1, gwp, in, false);
  });
  if (need_bias) sum_bias(gy, bf, M, out, 1, mp(gba));
  return {need_input ? py::object(gxa) : py::none(), need_weight ? py::object(gwa) : py::none(),
          need_bias ? py::object(gba) : py::none()};
}

py::array gemm_op(const py::array& a, const py::array& b, bool trans_a, bool trans_b) {
  const bool bf = bf16_input(a, "a");
  bf16_input(b, "b");
  same_kind(a, "a", b, "b");
  require_ndim(a, "a", 2, 2);
  require_ndim(b, "b", 2, 2);
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  CNNFAST_CHECK(K == Kb, ValueError, "b: expected ", K, " rows in op(b) to match op(a)'s columns, got ", Kb);
  py::array c = new_array_of(f32(), {M, N});
  float* cptr_ = mp(c);
  const int64_t lda = a.shape(1), ldb = b.shape(1);
  dispatch_bf16(bf, [&](auto tag) {
    using T = decltype(tag);
    const T* ap = cp<T>(a);
    const T* bp = cp<T>(b);
    py::gil_scoped_release nogil;
    cpu::gemm_bf16<T>(M, N, K, ap, trans_a ? 1 : lda, trans_a ? lda : 1, bp, trans_b ? 1 : ldb, trans_b ? ldb : 1,
                      cptr_, N, false);
  });
  return c;
}

py::array to_bf16(const py::array& a) {
  require_dtype(a, "a", f32());
  require_contiguous(a, "a");
  py::array out = new_array_of(bf16_dtype(), shape_of(a));
  const float* src = cp<float>(a);
  auto* dst = static_cast<uint16_t*>(out.mutable_data());
  const int64_t n = a.size();
  {
    py::gil_scoped_release nogil;
    parallel_for(0, n, int64_t(1) << 16, [&](int64_t b, int64_t e) { cpu::bf16_round_array(src + b, dst + b, e - b); });
  }
  return out;
}

}  // namespace

void bind_bf16(py::module_& m) {
  m.def("conv_forward_bf16", &conv_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("residual") = py::none(),
        py::arg("activation") = "none", py::arg("alpha") = 0.0, py::arg("beta") = 0.0,
        "Convolution with bfloat16 products and float32 accumulation. x (N, C, *in) and weight (K, C/groups, *k) "
        "both float32 (rounded to bfloat16 while packed) or both ml_dtypes.bfloat16; bias float32 (K,) or None; "
        "padding: (start, end) pairs. Returns float32 y (N, K, *out). Inference output pass as conv_forward's: "
        "y = activation(y + residual), residual float32 of y's shape or None.");
  m.def("conv_backward_bf16", &conv_bwd, py::arg("grad_output"), py::arg("x"), py::arg("weight"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("need_input") = true,
        py::arg("need_weight") = true, py::arg("need_bias") = true,
        "Gradients of conv_forward_bf16 (bfloat16 products, float32 accumulation): float32 (grad_x | None, "
        "grad_weight | None, grad_bias | None). grad_output has x's dtype.");
  m.def("linear_forward_bf16", &linear_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("residual") = py::none(), py::arg("activation") = "none", py::arg("alpha") = 0.0,
        py::arg("beta") = 0.0,
        "x (M, in) @ weight (out, in).T + bias in bfloat16 products with float32 accumulation; float32 result; "
        "then activation(y + residual) as conv_forward_bf16's.");
  m.def("linear_backward_bf16", &linear_bwd, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("need_input") = true, py::arg("need_weight") = true, py::arg("need_bias") = true,
        "Gradients of linear_forward_bf16: float32 (grad_x | None, grad_weight | None, grad_bias | None).");
  m.def("gemm_bf16", &gemm_op, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        "op(a) @ op(b) with bfloat16 products and float32 accumulation; a, b both float32 or both bfloat16; "
        "float32 result.");
  m.def("to_bfloat16", &to_bf16, py::arg("a"),
        "A float32 array rounded (nearest even) to an ml_dtypes.bfloat16 array of the same shape.");
  m.def("bf16_path", [] { return cpu::bf16_path_name(cpu::bf16_path()); },
        "The bfloat16 kernel path in use: 'amx', 'avx512_bf16' or 'fallback'.");
  m.def(
      "set_bf16_path", [](const std::string& name) { cpu::set_bf16_path(cpu::parse_bf16_path(name)); },
      py::arg("path"), "Force a bfloat16 path ('amx', 'avx512_bf16', 'fallback'; ValueError if it cannot run here), or 'auto' "
      "(the default: the best path available at each call).");
  m.def("_set_bf16_direct", &cpu::set_bf16_direct, py::arg("mode"),
        "The direct AMX convolution passes (no im2col): 'auto' (the shape decides; the default), 'on' "
        "(wherever they apply: 2-D, 16+ channels and filters per group) or 'off'. For tests and A/B timings.");
  m.def("_bf16_direct", &cpu::bf16_direct, "The direct AMX passes' setting: 'auto', 'on' or 'off'.");
  m.def("bf16_paths", [] {
    std::vector<std::string> v;
    for (auto p : {cpu::Bf16Path::AMX, cpu::Bf16Path::AVX512BF16, cpu::Bf16Path::Fallback})
      if (cpu::bf16_path_available(p)) v.push_back(cpu::bf16_path_name(p));
    return v;
  }, "The bfloat16 paths this CPU, OS and SIMD level can run, fastest first.");
  m.def("amx_permission", &cpu::amx_permission_status,
        "'granted', or why the AMX tile state is not available (no AMX, refused by the OS, CNNFAST_AMX_DENY).");
  // Our own peak loops; ValueError where the path they measure cannot run.
  auto peak = [&m](const char* name, double (*fn)(int), const char* doc) {
    m.def(
        name,
        [fn](int threads) {
          CNNFAST_CHECK(threads >= 1 && threads <= 1024, ValueError, "threads: expected 1 to 1024, got ", threads);
          py::gil_scoped_release nogil;
          return fn(threads);
        },
        py::arg("threads"), doc);
  };
  peak("amx_peak_gflops", &cpu::amx_peak_gflops,
       "bfloat16 AMX peak (TDPBF16PS only) of `threads` threads in GFLOP/s, our own tile loop.");
  peak("dpbf16_peak_gflops", &cpu::dpbf16_peak_gflops,
       "bfloat16 AVX512-BF16 peak (VDPBF16PS zmm only) of `threads` threads in GFLOP/s, our own loop.");
}

}  // namespace cnnfast::bind
