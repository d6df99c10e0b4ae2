// CUDA bindings of the convolution family (csrc/cuda/conv.cuh) into
// cnnfast._C.cuda, with the names and argument order of bind_conv.cpp:
//
//   conv_forward(x, weight, bias, stride, padding, dilation, groups, algo="auto", allow_tf32=None)
//   conv_backward(grad_output, x, weight, stride, padding, dilation, groups,
//                 need_input=True, need_weight=True, need_bias=True, algo="auto", allow_tf32=None)
//   conv_transpose_forward / conv_transpose_backward (as on the CPU)
//   linear_forward(x, weight, bias, allow_tf32=None) / linear_backward(...)
//   gemm(a, b, trans_a=False, trans_b=False, allow_tf32=None)
//
// Arrays are CUDA arrays (DeviceArray, __cuda_array_interface__ or DLPack).
// algo is accepted for signature compatibility ('auto' or 'gemm'; the GPU has
// one implicit-GEMM algorithm). allow_tf32=None follows cnnfast.cuda.set_allow_tf32
// (off by default): exact FP32 unless TF32 is asked for.
#include "bind/cuda_families.h"

#if CNNFAST_WITH_CUDA
#include <pybind11/stl.h>

#include <tuple>

#include "bind/conv_params.h"
#include "bind/device_array.h"
#include "cuda/conv.cuh"
#include "cuda/memory.h"

namespace cnnfast::bind {
namespace {

using cpu::ConvShape;
using Ints = std::vector<int64_t>;
using Pairs = std::vector<std::vector<int64_t>>;

bool resolve_tf32(const py::object& allow) { return allow.is_none() ? cuda::allow_tf32() : allow.cast<bool>(); }

void check_algo(const std::string& a) {
  CNNFAST_CHECK(a == "auto" || a == "gemm", ValueError,
                "algo: expected 'auto' or 'gemm' on the GPU (one implicit-GEMM algorithm), got '", a, "'");
}

int check_x_weight(const DeviceArray& x, const DeviceArray& w, const char* xname) {
  device_float_dtype(x, xname);
  device_float_dtype(w, "weight");
  require_same_typestr(x, xname, w, "weight");
  require_device_ndim(x, xname, 3, 5);
  CNNFAST_CHECK(w.shape.size() == x.shape.size(), ValueError, "weight: expected ", x.shape.size(),
                " dimensions (like ", xname, "), got shape ", shape_str(w.shape));
  for (int64_t v : x.shape)
    CNNFAST_CHECK(v > 0, ValueError, xname, ": expected non-zero sizes, got shape ", shape_str(x.shape));
  for (int64_t v : w.shape)
    CNNFAST_CHECK(v > 0, ValueError, "weight: expected non-zero sizes, got shape ", shape_str(w.shape));
  return int(x.shape.size()) - 2;
}

void check_supported(const ConvShape& s) {
  CNNFAST_CHECK(cuda::conv_shape_supported(s), ValueError,
                "x: problem too large for the CUDA convolution (N*spatial and C*kernel must stay below 2^31)");
}

ConvShape conv_shape(const DeviceArray& x, const DeviceArray& w, const Ints& stride, const Pairs& padding,
                     const Ints& dilation, int64_t groups, int& nd) {
  nd = check_x_weight(x, w, "x");
  const ConvShape s = conv_shape_from(x.shape, w.shape, stride, padding, dilation, groups, nd);
  check_supported(s);
  return s;
}


ConvShape transpose_shape(const DeviceArray& x, const DeviceArray& w, const Ints& stride, const Pairs& padding,
                          const Ints& output_padding, const Ints& dilation, int64_t groups, int& nd) {
  nd = check_x_weight(x, w, "x");
  ConvShape s;
  fill_params(s, nd, stride, padding, dilation, groups);
  CNNFAST_CHECK(int(output_padding.size()) == nd, ValueError, "output_padding: expected ", nd, " values, got ",
                output_padding.size());
  s.N = x.shape[0];
  s.K = x.shape[1];
  CNNFAST_CHECK(w.shape[0] == s.K, ValueError, "weight: expected shape[0] == x channels (", s.K, "), got shape ",
                shape_str(w.shape));
  CNNFAST_CHECK(s.K % groups == 0, ValueError, "x: expected channels (", s.K, ") divisible by groups=", groups);
  s.C = w.shape[1] * groups;
  for (int i = 0; i < nd; ++i) {
    const int d = 3 - nd + i;
    const int64_t op = output_padding[i];
    CNNFAST_CHECK(op >= 0 && (op < s.stride[d] || op < s.dil[d]), ValueError,
                  "output_padding: expected values smaller than stride or dilation, got ", op, " with stride ",
                  s.stride[d], " and dilation ", s.dil[d]);
    s.out[d] = x.shape[2 + i];
    s.k[d] = w.shape[2 + i];
    s.in[d] = conv_transpose_out_extent(s, d, op, i);
  }
  check_supported(s);
  return s;
}

DeviceArray checked_bias(const py::object& bias, const DeviceArray& like, int64_t channels) {
  if (bias.is_none()) return DeviceArray{};
  DeviceArray b = as_device_array(bias, "bias");
  require_same_typestr(like, "x", b, "bias");
  require_device_shape(b, "bias", {channels});
  return b;
}

DeviceArray zeros_like_shape(const Ints& shape, const std::string& typestr) {
  DeviceArray a = empty_device(shape, typestr);
  if (a.nbytes()) cuda::memset_device(a.data, 0, a.nbytes());
  return a;
}

DeviceArray conv_fwd(const py::object& xo, const py::object& wo, const py::object& bias, const Ints& stride,
                     const Pairs& padding, const Ints& dilation, int64_t groups, const std::string& algo,
                     const py::object& allow) {
  DeviceArray x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  int nd = 0;
  ConvShape s = conv_shape(x, w, stride, padding, dilation, groups, nd);
  DeviceArray b = checked_bias(bias, x, s.K);
  check_algo(algo);
  const bool tf32 = resolve_tf32(allow);
  DeviceArray y = empty_device(nd_shape(s.N, s.K, s.out, nd), x.typestr);
  dispatch_float(device_float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::conv_forward<T>(s, dptr<T>(x), dptr<T>(w), dmptr<T>(y), tf32);
    if (b.data) cuda::bias_forward<T>(dmptr<T>(y), dptr<T>(b), s.N, s.K, s.out_size());
  });
  return y;
}

using Grads = std::tuple<py::object, py::object, py::object>;

Grads backward_common(const ConvShape& s, int nd, bool transposed, const DeviceArray& gy, const DeviceArray& x,
                      const DeviceArray& w, bool need_input, bool need_weight, bool need_bias, bool tf32) {
  device_float_dtype(gy, "grad_output");
  require_same_typestr(x, "x", gy, "grad_output");
  require_device_shape(gy, "grad_output", transposed ? nd_shape(s.N, s.C, s.in, nd) : nd_shape(s.N, s.K, s.out, nd));
  DeviceArray gx, gw, gb;
  if (need_input) gx = empty_device(x.shape, x.typestr);
  if (need_weight) gw = zeros_like_shape(w.shape, x.typestr);
  if (need_bias) gb = zeros_like_shape({transposed ? s.C : s.K}, x.typestr);
  dispatch_float(device_float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    const T* gyp = dptr<T>(gy);
    const T* xp = dptr<T>(x);
    const T* wp = dptr<T>(w);
    py::gil_scoped_release nogil;
    if (!transposed) {
      if (need_input) cuda::conv_backward_data<T>(s, gyp, wp, dmptr<T>(gx), tf32);
      if (need_weight) cuda::conv_backward_weight<T>(s, gyp, xp, dmptr<T>(gw), tf32);
      if (need_bias) cuda::bias_backward<T>(gyp, dmptr<T>(gb), s.N, s.K, s.out_size());
    } else {
      // conv^T: its input gradient is the convolution of grad_output; its weight
      // gradient pairs grad_output (the convolution's input side) with x.
      if (need_input) cuda::conv_forward<T>(s, gyp, wp, dmptr<T>(gx), tf32);
      if (need_weight) cuda::conv_backward_weight<T>(s, xp, gyp, dmptr<T>(gw), tf32);
      if (need_bias) cuda::bias_backward<T>(gyp, dmptr<T>(gb), s.N, s.C, s.in_size());
    }
  });
  auto obj = [](bool need, const DeviceArray& a) { return need ? py::cast(a) : py::object(py::none()); };
  return {obj(need_input, gx), obj(need_weight, gw), obj(need_bias, gb)};
}

Grads conv_bwd(const py::object& go, const py::object& xo, const py::object& wo, const Ints& stride,
               const Pairs& padding, const Ints& dilation, int64_t groups, bool need_input, bool need_weight,
               bool need_bias, const std::string& algo, const py::object& allow) {
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  int nd = 0;
  ConvShape s = conv_shape(x, w, stride, padding, dilation, groups, nd);
  check_algo(algo);
  return backward_common(s, nd, false, gy, x, w, need_input, need_weight, need_bias, resolve_tf32(allow));
}

DeviceArray convt_fwd(const py::object& xo, const py::object& wo, const py::object& bias, const Ints& stride,
                      const Pairs& padding, const Ints& output_padding, const Ints& dilation, int64_t groups,
                      const std::string& algo, const py::object& allow) {
  DeviceArray x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  int nd = 0;
  ConvShape s = transpose_shape(x, w, stride, padding, output_padding, dilation, groups, nd);
  DeviceArray b = checked_bias(bias, x, s.C);
  check_algo(algo);
  const bool tf32 = resolve_tf32(allow);
  DeviceArray y = empty_device(nd_shape(s.N, s.C, s.in, nd), x.typestr);
  dispatch_float(device_float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::conv_backward_data<T>(s, dptr<T>(x), dptr<T>(w), dmptr<T>(y), tf32);
    if (b.data) cuda::bias_forward<T>(dmptr<T>(y), dptr<T>(b), s.N, s.C, s.in_size());
  });
  return y;
}

Grads convt_bwd(const py::object& go, const py::object& xo, const py::object& wo, const Ints& stride,
                const Pairs& padding, const Ints& output_padding, const Ints& dilation, int64_t groups,
                bool need_input, bool need_weight, bool need_bias, const std::string& algo, const py::object& allow) {
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  int nd = 0;
  ConvShape s = transpose_shape(x, w, stride, padding, output_padding, dilation, groups, nd);
  check_algo(algo);
  return backward_common(s, nd, true, gy, x, w, need_input, need_weight, need_bias, resolve_tf32(allow));
}

void check_linear(const DeviceArray& x, const DeviceArray& w) {
  device_float_dtype(x, "x");
  device_float_dtype(w, "weight");
  require_same_typestr(x, "x", w, "weight");
  require_device_ndim(x, "x", 2, 2);
  require_device_ndim(w, "weight", 2, 2);
  CNNFAST_CHECK(w.shape[1] == x.shape[1], ValueError, "weight: expected shape (out_features, ", x.shape[1], "), got ",
                shape_str(w.shape));
  CNNFAST_CHECK(x.shape[1] > 0 && w.shape[0] > 0, ValueError, "weight: expected non-zero sizes, got ",
                shape_str(w.shape));
}

DeviceArray linear_fwd(const py::object& xo, const py::object& wo, const py::object& bias, const py::object& allow) {
  DeviceArray x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  check_linear(x, w);
  const int64_t M = x.shape[0], in = x.shape[1], out = w.shape[0];
  DeviceArray b = checked_bias(bias, x, out);
  const bool tf32 = resolve_tf32(allow);
  DeviceArray y = empty_device({M, out}, x.typestr);
  dispatch_float(device_float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::linear_forward<T>(dptr<T>(x), dptr<T>(w), b.data ? dptr<T>(b) : nullptr, dmptr<T>(y), M, in, out, tf32);
  });
  return y;
}

Grads linear_bwd(const py::object& go, const py::object& xo, const py::object& wo, bool need_input, bool need_weight,
                 bool need_bias, const py::object& allow) {
  DeviceArray gy = as_device_array(go, "grad_output"), x = as_device_array(xo, "x"), w = as_device_array(wo, "weight");
  check_linear(x, w);
  device_float_dtype(gy, "grad_output");
  require_same_typestr(x, "x", gy, "grad_output");
  const int64_t M = x.shape[0], in = x.shape[1], out = w.shape[0];
  require_device_shape(gy, "grad_output", {M, out});
  const bool tf32 = resolve_tf32(allow);
  DeviceArray gx, gw, gb;
  if (need_input) gx = empty_device({M, in}, x.typestr);
  if (need_weight) gw = zeros_like_shape({out, in}, x.typestr);
  if (need_bias) gb = zeros_like_shape({out}, x.typestr);
  dispatch_float(device_float_dtype(x, "x"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::linear_backward<T>(dptr<T>(gy), dptr<T>(x), dptr<T>(w), need_input ? dmptr<T>(gx) : nullptr,
                             need_weight ? dmptr<T>(gw) : nullptr, need_bias ? dmptr<T>(gb) : nullptr, M, in, out,
                             tf32);
  });
  auto obj = [](bool need, const DeviceArray& a) { return need ? py::cast(a) : py::object(py::none()); };
  return {obj(need_input, gx), obj(need_weight, gw), obj(need_bias, gb)};
}

DeviceArray gemm_op(const py::object& ao, const py::object& bo, bool trans_a, bool trans_b, const py::object& allow) {
  DeviceArray a = as_device_array(ao, "a"), b = as_device_array(bo, "b");
  device_float_dtype(a, "a");
  device_float_dtype(b, "b");
  require_same_typestr(a, "a", b, "b");
  require_device_ndim(a, "a", 2, 2);
  require_device_ndim(b, "b", 2, 2);
  const int64_t M = trans_a ? a.shape[1] : a.shape[0], K = trans_a ? a.shape[0] : a.shape[1];
  const int64_t Kb = trans_b ? b.shape[1] : b.shape[0], N = trans_b ? b.shape[0] : b.shape[1];
  CNNFAST_CHECK(K == Kb, ValueError, "b: expected ", K, " rows in op(b) to match op(a)'s columns, got ", Kb);
  const bool tf32 = resolve_tf32(allow);
  DeviceArray c = empty_device({M, N}, a.typestr);
  const int64_t lda = a.shape[1], ldb = b.shape[1];
  dispatch_float(device_float_dtype(a, "a"), [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    cuda::gemm<T>(M, N, K, dptr<T>(a), trans_a ? 1 : lda, trans_a ? lda : 1, dptr<T>(b), trans_b ? 1 : ldb,
                  trans_b ? ldb : 1, dmptr<T>(c), N, false, tf32);
  });
  return c;
}

}  // namespace

void bind_cuda_conv(py::module_& cu) {
  using py::arg;
  const auto none = py::none();
  cu.def("set_allow_tf32", &cuda::set_allow_tf32, arg("allow"),
         "Default for allow_tf32=None: let float32 convolutions, linear layers and GEMMs use TF32 tensor cores.");
  cu.def("get_allow_tf32", &cuda::allow_tf32);
  cu.def("conv_forward", &conv_fwd, arg("x"), arg("weight"), arg("bias"), arg("stride"), arg("padding"),
         arg("dilation"), arg("groups"), arg("algo") = "auto", arg("allow_tf32") = none,
         "GPU convolution, as cnnfast._C.conv_forward; allow_tf32: None (global default), False (exact), True.");
  cu.def("conv_backward", &conv_bwd, arg("grad_output"), arg("x"), arg("weight"), arg("stride"), arg("padding"),
         arg("dilation"), arg("groups"), arg("need_input") = true, arg("need_weight") = true, arg("need_bias") = true,
         arg("algo") = "auto", arg("allow_tf32") = none,
         "Gradients of conv_forward: (grad_x | None, grad_weight | None, grad_bias | None).");
  cu.def("conv_transpose_forward", &convt_fwd, arg("x"), arg("weight"), arg("bias"), arg("stride"), arg("padding"),
         arg("output_padding"), arg("dilation"), arg("groups"), arg("algo") = "auto", arg("allow_tf32") = none);
  cu.def("conv_transpose_backward", &convt_bwd, arg("grad_output"), arg("x"), arg("weight"), arg("stride"),
         arg("padding"), arg("output_padding"), arg("dilation"), arg("groups"), arg("need_input") = true,
         arg("need_weight") = true, arg("need_bias") = true, arg("algo") = "auto", arg("allow_tf32") = none);
  cu.def("linear_forward", &linear_fwd, arg("x"), arg("weight"), arg("bias"), arg("allow_tf32") = none,
         "x (M, in), weight (out, in), bias (out,) or None -> y (M, out).");
  cu.def("linear_backward", &linear_bwd, arg("grad_output"), arg("x"), arg("weight"), arg("need_input") = true,
         arg("need_weight") = true, arg("need_bias") = true, arg("allow_tf32") = none);
  cu.def("gemm", &gemm_op, arg("a"), arg("b"), arg("trans_a") = false, arg("trans_b") = false,
         arg("allow_tf32") = none, "op(a) @ op(b) on the GPU tiles.");
}

}  // namespace cnnfast::bind
#endif
