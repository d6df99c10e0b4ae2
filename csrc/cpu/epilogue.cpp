#include "cpu/epilogue.h"

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/simd.h"
#include "cpu/activation.h"
#include "cpu/epilogue_kernels.h"

namespace cnnfast::cpu {

EpilogueAct parse_epilogue_act(const std::string& name) {
  static const struct {
    const char* name;
    EpilogueAct act;
  } table[] = {{"none", EpilogueAct::None},       {"relu", EpilogueAct::ReLU},
               {"leaky_relu", EpilogueAct::LeakyReLU}, {"clip", EpilogueAct::Clip},
               {"hardsigmoid", EpilogueAct::HardSigmoid}, {"hardswish", EpilogueAct::HardSwish},
               {"sigmoid", EpilogueAct::Sigmoid}, {"silu", EpilogueAct::SiLU}};
  for (const auto& row : table)
    if (name == row.name) return row.act;
  throw ValueError(cat("activation: expected one of none, relu, leaky_relu, clip, hardsigmoid, hardswish, sigmoid, "
                       "silu, got '", name, "'"));
}

template <class T>
void apply_epilogue(T* y, int64_t n, const Epilogue& e) {
  if (e.empty() || n <= 0) return;
  const T* r = static_cast<const T*>(e.residual);
  const T alpha = T(e.alpha), beta = T(e.beta);
  // A few cache lines per task at least: the pass is memory-bound and a hand-off costs more.
  parallel_for(0, n, int64_t(1) << 14, [=](int64_t b, int64_t end) {
    if constexpr (is_f32<T>) {
      if (use_avx512()) return avx512_impl::epilogue_piecewise(y + b, r ? r + b : nullptr, end - b, e.act, alpha, beta);
      if (use_avx2()) return avx2_impl::epilogue_piecewise(y + b, r ? r + b : nullptr, end - b, e.act, alpha, beta);
    }
    CNNFAST_ISA_NS::epilogue_piecewise<T>(y + b, r ? r + b : nullptr, end - b, e.act, alpha, beta);
  });
  // The exponential activations reuse the activation family's vector kernels, in place.
  if (e.act == EpilogueAct::Sigmoid) activation_forward<T>(Activation::Sigmoid, y, y, n, 0.0);
  if (e.act == EpilogueAct::SiLU) activation_forward<T>(Activation::SiLU, y, y, n, 0.0);
}

template <class T>
void epilogue_block(T* y, int64_t offset, int64_t rows, int64_t ld, int64_t n, const Epilogue& e) {
  if (e.empty() || n <= 0) return;
  // Contiguous rows go as one run: the depthwise kernels hand over blocks of 16 planes of
  // 49 values (7x7), and a SiLU per plane spent more on its calls and 49 = 3 x 16 + 1
  // tails than on the exponentials (5x5 1152ch at 7x7, one thread: 38% of the layer).
  if (ld == n) n *= rows, rows = 1;
  const T* r = static_cast<const T*>(e.residual);
  const T alpha = T(e.alpha), beta = T(e.beta);
  const bool wide = is_f32<T> && use_avx512(), vec = is_f32<T> && use_avx2();
  for (int64_t i = 0; i < rows; ++i) {
    T* yr = y + offset + i * ld;
    const T* rr = r ? r + offset + i * ld : nullptr;
    if constexpr (is_f32<T>) {
      if (wide) avx512_impl::epilogue_piecewise(yr, rr, n, e.act, alpha, beta);
      else if (vec) avx2_impl::epilogue_piecewise(yr, rr, n, e.act, alpha, beta);
      else CNNFAST_ISA_NS::epilogue_piecewise<T>(yr, rr, n, e.act, alpha, beta);
      if (e.act == EpilogueAct::Sigmoid || e.act == EpilogueAct::SiLU) {
        const Activation a = e.act == EpilogueAct::Sigmoid ? Activation::Sigmoid : Activation::SiLU;
        if (!(wide && avx512_impl::activation_forward(a, yr, yr, n, 0.0f, false))) {
          if (vec) avx2_impl::activation_forward(a, yr, yr, n, 0.0f, false);
          else activation_forward<T>(a, yr, yr, n, 0.0);
        }
      }
    } else {
      CNNFAST_ISA_NS::epilogue_piecewise<T>(yr, rr, n, e.act, alpha, beta);
      if (e.act == EpilogueAct::Sigmoid) activation_forward<T>(Activation::Sigmoid, yr, yr, n, 0.0);
      if (e.act == EpilogueAct::SiLU) activation_forward<T>(Activation::SiLU, yr, yr, n, 0.0);
    }
  }
}

template void epilogue_block<float>(float*, int64_t, int64_t, int64_t, int64_t, const Epilogue&);
template void epilogue_block<double>(double*, int64_t, int64_t, int64_t, int64_t, const Epilogue&);
template void apply_epilogue<float>(float*, int64_t, const Epilogue&);
template void apply_epilogue<double>(double*, int64_t, const Epilogue&);

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no ISA files; use_avx2() is always false there.
namespace avx2_impl {
void epilogue_piecewise(float*, const float*, int64_t, EpilogueAct, float, float) {}
}  // namespace avx2_impl
namespace avx512_impl {
void epilogue_piecewise(float*, const float*, int64_t, EpilogueAct, float, float) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
