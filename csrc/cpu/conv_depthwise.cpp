// Depthwise layers (one input channel per group), one (image, channel) plane per
// task, on the plane kernels of conv_depthwise.h (generic build here, AVX2 build in
// conv_depthwise_avx2.cpp).
#include <algorithm>
#include <type_traits>

#include "core/cpu_features.h"
#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"

#define CNNFAST_DW_NS dw_generic
#include "cpu/conv_depthwise.h"

namespace cnnfast::cpu {
namespace conv_detail {

// At AVX-512, stride-1 planes of 12+ columns: the masked-row kernel against the
// channel-blocked one (frozen graphs) and the AVX2 row kernel (eager), one thread, 3x3
// with bias and ReLU: 192 channels at 28x28 42 against 77 us, 384 at 14x14 32 against
// 39, 5x5 672 at 14x14 89 against 116, 32 at 112x112 111 against 118. On 7x7 maps more
// than half of its lanes idle and the 16-channel blocks win (960 channels: 43 against
// 24 us). Stride 2 (on column phases) from 28 output columns while the input stays in
// cache: 3x3 144 at 56x56 67 against 76 us, 96 at 112x112 190-198 against 205-209, 5x5
// 144 at 56x56 102 against 118, batch 8 5x5 144 at 56x56 0.87-0.93 against 1.02-1.23 ms;
// it lost at 14 columns (3x3 192 at 28x28: 33 against 27 us) and on 38 MB of input
// streaming from memory (batch 8, 96 at 112x112: 3.6 against 2.6 ms).
bool depthwise_rows_pay(const ConvShape& s) {
  if (!use_avx512() || !avx512_impl::dw_rows_applicable(s)) return false;
  if (s.stride[2] == 1) return s.out[2] >= 12;
  return s.out[2] >= 28 && s.N * s.C * s.in_size() * int64_t(sizeof(float)) <= (int64_t(16) << 20);
}

// Depthwise layers, one (image, channel) plane per task; see conv_depthwise.h.
template <class T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1 along W: the padded-plane kernel (no edge cases); otherwise the
  // row-at-a-time kernel.
  const bool padded = s.stride[2] == 1;
  const bool rows = vec && depthwise_rows_pay(s);
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  const int64_t scratch = rows ? std::max<int64_t>(1, avx512_impl::dw_rows_scratch(s))
                         : padded && !direct ? dw_generic::dw_padded_size(s) : 1;
  auto plane = [&](int64_t nk, Workspace<T>& buf) {
    const int64_t n = nk / s.K, k = nk % s.K;
    const T* xp = x + (n * s.C + k / Kg) * inS;
    if constexpr (std::is_same_v<T, float>) {
      if (rows) {
        avx512_impl::dw_rows_plane(s, xp, w + k * ks, bias ? bias[k] : 0.0f, y + nk * P, buf.get(), x,
                                   x + s.N * s.C * inS);
        return;
      }
      if (direct) {
        avx2_impl::dw_direct_plane(s, xp, w + k * ks, bias ? bias[k] : 0.0f, y + nk * P);
        return;
      }
      if (vec) {
        if (padded) avx2_impl::dw_forward_plane_padded(s, xp, w + k * ks, y + nk * P, buf.get());
        else avx2_impl::dw_forward_plane(s, xp, w + k * ks, y + nk * P);
        if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
        return;
      }
    }
    if (padded) dw_generic::dw_forward_plane_padded<T>(s, xp, w + k * ks, y + nk * P, buf.get());
    else dw_generic::dw_forward_plane<T>(s, xp, w + k * ks, y + nk * P);
    if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
  };
  const int64_t planes = s.N * s.K, per_task = planes_per_task(planes, P);
  dynamic_tasks(
      (planes + per_task - 1) / per_task, [&] { return workspace_array<T>(scratch); },
      [&](int64_t task, Workspace<T>& buf) {
        for (int64_t nk = task * per_task; nk < std::min(planes, (task + 1) * per_task); ++nk) plane(nk, buf);
      },
      Dealing::Contiguous);
}

template <class T>
void depthwise_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1, dilation 1, one output per input channel: grad_x is the forward
  // convolution of grad_y with the flipped taps and padding k-1-p, which the
  // register-blocked forward kernel computes with plain stores.
  ConvShape t = s;
  if (Kg == 1) {
    for (int d = 0; d < 3; ++d) {
      std::swap(t.in[d], t.out[d]);
      t.pad0[d] = s.k[d] - 1 - s.pad0[d];
      t.pad1[d] = s.k[d] - 1 - s.pad1[d];
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (vec && Kg == 1 && avx2_impl::dw_direct_applicable(s) && avx2_impl::dw_direct_applicable(t)) {
      const bool rows = depthwise_rows_pay(t);
      parallel_for(0, s.N * s.C, 1, [&](int64_t b, int64_t e) {
        float flipped[25];
        for (int64_t nc = b; nc < e; ++nc) {
          const int64_t c = nc % s.C;
          for (int64_t i = 0; i < ks; ++i) flipped[i] = w[c * ks + ks - 1 - i];
          if (rows) avx512_impl::dw_rows_plane(t, gy + nc * P, flipped, 0.0f, gx + nc * inS, nullptr, gy, gy + s.N * s.C * P);
          else avx2_impl::dw_direct_plane(t, gy + nc * P, flipped, 0.0f, gx + nc * inS);
        }
      });
      return;
    }
  }
  parallel_for(0, s.N * s.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(P * ks * Kg, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t nc = b; nc < e; ++nc) {
                   const int64_t n = nc / s.C, c = nc % s.C;
                   T* dst = gx + nc * inS;
                   std::fill(dst, dst + inS, T(0));
                   for (int64_t j = 0; j < Kg; ++j) {
                     const int64_t k = c * Kg + j;
                     const T* g = gy + (n * s.K + k) * P;
                     if constexpr (std::is_same_v<T, float>) {
                       if (vec) {
                         avx2_impl::dw_backward_data_plane(s, g, w + k * ks, dst);
                         continue;
                       }
                     }
                     dw_generic::dw_backward_data_plane<T>(s, g, w + k * ks, dst);
                   }
                 }
               });
}

template <class T>
void depthwise_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  // One thread owns each output channel's taps and sums images in order:
  // the result does not depend on the thread count.
  parallel_for(0, s.K, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      for (int64_t n = 0; n < s.N; ++n) {
        const T* g = gy + (n * s.K + k) * P;
        const T* xp = x + (n * s.C + k / Kg) * inS;
        if constexpr (std::is_same_v<T, float>) {
          if (direct) {
            avx2_impl::dw_direct_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
          if (vec) {
            avx2_impl::dw_backward_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
        }
        dw_generic::dw_backward_weight_plane<T>(s, g, xp, gw + k * ks);
      }
    }
  });
}

#define CNNFAST_INSTANTIATE(T)                                                                       \
  template void depthwise_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);          \
  template void depthwise_backward_data<T>(const ConvShape&, const T*, const T*, T*);              \
  template void depthwise_backward_weight<T>(const ConvShape&, const T*, const T*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace conv_detail

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
void dw_forward_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_forward_plane_padded(const ConvShape&, const float*, const float*, float*, float*) {}
void dw_backward_data_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_backward_weight_plane(const ConvShape&, const float*, const float*, float*) {}
bool dw_direct_applicable(const ConvShape&) { return false; }
void dw_direct_plane(const ConvShape&, const float*, const float*, float, float*) {}
void dw_direct_weight_plane(const ConvShape&, const float*, const float*, float*) {}
}  // namespace avx2_impl
namespace avx512_impl {
bool dw_rows_applicable(const ConvShape&) { return false; }
int64_t dw_rows_scratch(const ConvShape&) { return 0; }
void dw_rows_plane(const ConvShape&, const float*, const float*, float, float*, float*, const float*, const float*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
