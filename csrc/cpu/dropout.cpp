// Scalar reference dropout (float32 and float64) and the
// dispatch to the AVX-512 / AVX2 elementwise kernels, threaded over element ranges. The
// mask of an element depends only on its position, so any split of the range
// between threads gives the same result.
#include "cpu/dropout.h"

#include <algorithm>

#include "core/cpu_features.h"
#include "core/simd.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

// Tens of microseconds of work per chunk: waking a second thread for less costs more
// than it saves, and far more when the machine is oversubscribed.
constexpr int64_t kGrain = 1 << 17;

}  // namespace

template <class T>
void dropout_apply(const T* x, T* y, int64_t n, int64_t inner, double p, const DropoutKey& key) {
  // 1/(1-p) rounded to T, as PyTorch's noise.div_(1 - p); p = 1 scales nothing.
  const T scale = key.drop_all ? T(0) : T(1) / static_cast<T>(1.0 - p);
  const bool vec = is_f32<T> && use_avx2() && inner == 1 && !key.drop_all;
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (is_f32<T>) {
      if (vec) {
        const auto apply = use_avx512() ? avx512_impl::dropout_apply : avx2_impl::dropout_apply;
        return apply(x + b, y + b, e - b, static_cast<uint64_t>(b), key, scale);
      }
    }
    if (inner == 1) {
      for (int64_t i = b; i < e; ++i) y[i] = x[i] * (dropout_keep(key, static_cast<uint64_t>(i)) ? scale : T(0));
      return;
    }
    // Channel dropout: one mask draw per plane, a constant multiply over its span.
    for (int64_t i = b; i < e;) {
      const int64_t plane = i / inner;
      const int64_t stop = std::min(e, (plane + 1) * inner);
      const T m = dropout_keep(key, static_cast<uint64_t>(plane)) ? scale : T(0);
      for (; i < stop; ++i) y[i] = x[i] * m;
    }
  });
}

void dropout_mask(uint8_t* mask, int64_t n, const DropoutKey& key) {
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) mask[i] = dropout_keep(key, static_cast<uint64_t>(i)) ? 1 : 0;
  });
}

template void dropout_apply<float>(const float*, float*, int64_t, int64_t, double, const DropoutKey&);
template void dropout_apply<double>(const double*, double*, int64_t, int64_t, double, const DropoutKey&);

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void dropout_apply(const float*, float*, int64_t, uint64_t, const DropoutKey&, float) {}
}  // namespace avx2_impl
namespace avx512_impl {
void dropout_apply(const float*, float*, int64_t, uint64_t, const DropoutKey&, float) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
