// Scalar reference of the separable resampling kernel (resample.h) and the
// dispatch to the AVX2 and AVX-512 plane kernels, threaded over (n, c) planes: each plane's
// backward scatters only into its own plane, so threads never share a write.
#include "cpu/resample.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"

namespace cnnfast::cpu {
namespace {

template <class T>
void plane_forward(const T* x, T* y, const AxisTable<T>& d, const AxisTable<T>& h, const AxisTable<T>& w) {
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh)
      for (int64_t ow = 0; ow < w.out; ++ow) {
        T acc = 0;
        for (int64_t kd = 0; kd < d.taps; ++kd)
          for (int64_t kh = 0; kh < h.taps; ++kh) {
            const T wdh = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
            const T* src = x + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in;
            for (int64_t kw = 0; kw < w.taps; ++kw)
              acc += wdh * w.weight[ow * w.taps + kw] * src[w.index[ow * w.taps + kw]];
          }
        y[(od * h.out + oh) * w.out + ow] = acc;
      }
}

template <class T>
void plane_backward(const T* gy, T* gx, const AxisTable<T>& d, const AxisTable<T>& h, const AxisTable<T>& w) {
  std::fill(gx, gx + d.in * h.in * w.in, T(0));
  for (int64_t od = 0; od < d.out; ++od)
    for (int64_t oh = 0; oh < h.out; ++oh)
      for (int64_t ow = 0; ow < w.out; ++ow) {
        const T g = gy[(od * h.out + oh) * w.out + ow];
        for (int64_t kd = 0; kd < d.taps; ++kd)
          for (int64_t kh = 0; kh < h.taps; ++kh) {
            const T wdh = d.weight[od * d.taps + kd] * h.weight[oh * h.taps + kh];
            T* dst = gx + (d.index[od * d.taps + kd] * h.in + h.index[oh * h.taps + kh]) * w.in;
            for (int64_t kw = 0; kw < w.taps; ++kw) dst[w.index[ow * w.taps + kw]] += wdh * w.weight[ow * w.taps + kw] * g;
          }
      }
}

template <class T>
constexpr bool is_f32 = std::is_same_v<T, float>;

}  // namespace

// Runs plane_fn(p, row) for every plane; row is a scratch row of in_w floats for the
// AVX2 kernels. Small planes are grouped so each task has some 32K outputs of work.
template <class F>
void for_planes(int64_t planes, int64_t out_sz, int64_t in_w, F plane_fn) {
  parallel_for(0, planes, std::max<int64_t>(1, 32768 / std::max<int64_t>(out_sz, 1)), [&](int64_t b, int64_t e) {
    std::vector<float> row(in_w);
    for (int64_t p = b; p < e; ++p) plane_fn(p, row.data());
  });
}

template <class T>
void resample_forward(const T* x, T* y, int64_t planes, const AxisTable<T>& d, const AxisTable<T>& h,
                      const AxisTable<T>& w) {
  const int64_t in_sz = d.in * h.in * w.in, out_sz = d.out * h.out * w.out;
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512();
  std::vector<int32_t> tap_index;
  std::vector<float> tap_weight;
  if (wide) {
    const int64_t stride = (w.out + 15) / 16 * 16;
    tap_index.assign(w.taps * stride, 0);
    tap_weight.assign(w.taps * stride, 0.0f);
    for (int64_t ow = 0; ow < w.out; ++ow)
      for (int64_t k = 0; k < w.taps; ++k) {
        tap_index[k * stride + ow] = static_cast<int32_t>(w.index[ow * w.taps + k]);
        tap_weight[k * stride + ow] = static_cast<float>(w.weight[ow * w.taps + k]);
      }
  }
  for_planes(planes, out_sz, vec ? w.in : 0, [&](int64_t p, float* row) {
    if constexpr (is_f32<T>) {
      if (wide)
        return avx512_impl::resample_plane_forward(x + p * in_sz, y + p * out_sz, d, h, w, row, tap_index.data(),
                                                   tap_weight.data());
      if (vec) return avx2_impl::resample_plane_forward(x + p * in_sz, y + p * out_sz, d, h, w, row);
    }
    plane_forward<T>(x + p * in_sz, y + p * out_sz, d, h, w);
  });
}

template <class T>
void resample_backward(const T* gy, T* gx, int64_t planes, const AxisTable<T>& d, const AxisTable<T>& h,
                       const AxisTable<T>& w) {
  const int64_t in_sz = d.in * h.in * w.in, out_sz = d.out * h.out * w.out;
  const bool vec = is_f32<T> && use_avx2(), wide = is_f32<T> && use_avx512();
  for_planes(planes, out_sz, vec ? w.in : 0, [&](int64_t p, float* row) {
    if constexpr (is_f32<T>) {
      if (wide) return avx512_impl::resample_plane_backward(gy + p * out_sz, gx + p * in_sz, d, h, w, row);
      if (vec) return avx2_impl::resample_plane_backward(gy + p * out_sz, gx + p * in_sz, d, h, w, row);
    }
    plane_backward<T>(gy + p * out_sz, gx + p * in_sz, d, h, w);
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                                 \
  template void resample_forward<T>(const T*, T*, int64_t, const AxisTable<T>&, const AxisTable<T>&,          \
                                    const AxisTable<T>&);                                                     \
  template void resample_backward<T>(const T*, T*, int64_t, const AxisTable<T>&, const AxisTable<T>&,         \
                                     const AxisTable<T>&);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void resample_plane_forward(const float*, float*, const AxisTable<float>&, const AxisTable<float>&,
                            const AxisTable<float>&, float*) {}
void resample_plane_backward(const float*, float*, const AxisTable<float>&, const AxisTable<float>&,
                             const AxisTable<float>&, float*) {}
}  // namespace avx2_impl
#endif

#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
void resample_plane_forward(const float*, float*, const AxisTable<float>&, const AxisTable<float>&,
                            const AxisTable<float>&, float*, const int32_t*, const float*) {}
void resample_plane_backward(const float*, float*, const AxisTable<float>&, const AxisTable<float>&,
                             const AxisTable<float>&, float*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
