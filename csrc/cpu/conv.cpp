// The convolution entry points of conv.h: drop dead kernel taps (conv_window.cpp),
// pick the algorithm for the shape (choose_algo) and run it. The algorithms live
// one per file; conv_internal.h lists them.
#include "cpu/conv.h"

#include <algorithm>
#include <type_traits>

#include "core/workspace.h"
#include "core/parallel.h"
#include "cpu/conv_grouped.h"
#include "cpu/conv_internal.h"
#include "cpu/prepack.h"
#include "cpu/winograd.h"

namespace cnnfast::cpu {
using namespace conv_detail;

bool winograd_applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.pad0[0] == 0 && s.k[1] == 3 && s.k[2] == 3 &&
         s.stride[1] == 1 && s.stride[2] == 1 && s.dil[1] == 1 && s.dil[2] == 1;
}

// Auto: Winograd F(4x4,3x3) does 36 multiplies per 4x4 output tile where direct
// convolution does 144, but pays two transforms per tile and a transformed
// weight per call; it wins when both channel counts per group are large enough
// for its 36 small GEMMs to run near peak (>= 16 each) and the output has at
// least one full 4x4 tile row worth of work (Ho, Wo >= 4). Depthwise and other
// thin-group layers stay on im2col + GEMM; depthwise ones (one input channel per
// group) take the direct kernel, whatever the dtype. float64 always takes GEMM: it exists
// for gradient checks, where the plainer path is the better oracle.
ConvAlgo choose_algo(const ConvShape& s, bool is_float32) {
  if (is_depthwise(s)) return ConvAlgo::Direct;
  if (!is_float32 || !winograd_applicable(s)) return ConvAlgo::Gemm;
  const int64_t tiles = s.N * ((s.out[1] + 3) / 4) * ((s.out[2] + 3) / 4);
  // Below 8x8 outputs most of each 4x4 Winograd tile is padding (ResNet-18 at 32x32:
  // 4x4 maps ran 2.1 ms with Winograd against 1.6 ms with GEMM). Below ~40 tiles the
  // per-call weight transform (36 K Cg values, packed 36 times) is not paid back (one
  // thread, ms, GEMM / Winograd: 3x3 C256 14x14 batch 1 (16 tiles) 3.1 / 6.4, batch 2
  // 6.0 / 7.7, batch 4 11.4 / 8.8; C512 14x14 batch 1 16.0 / 24.3; C128 28x28 batch 1
  // (49 tiles) 3.1 / 2.7).
  if (s.Cg() >= 16 && s.Kg() >= 16 && s.out[1] >= 8 && s.out[2] >= 8 && tiles >= 40) return ConvAlgo::Winograd;
  // 6x6 and 7x7 maps pay back with >= 128 tiles per transformed GEMM while the transformed
  // weight (36 K Cg floats) stays <= 9.4 MB (one thread, 7x7: C256 batch 32 20.5 -> 15.4 ms,
  // C64 batch 64 5.7 -> 3.1; C256 batch 8 lost, 5.5 -> 7.4, and C512 batch 16, 39 -> 64).
  if (s.Cg() >= 16 && s.Kg() >= 16 && s.out[1] >= 6 && s.out[2] >= 6 && tiles >= 128 && s.K * s.Cg() <= 65536)
    return ConvAlgo::Winograd;
  // 7x7 maps (4 tiles cover 49 of 64 outputs) pay back at >= 128 tiles up to 512
  // channels since the AVX-512 transforms (one thread, ms, GEMM / Winograd, forward and
  // grad_x: C512 batch 32 43.8 / 30.8 and 41.3 / 32.3; batch 16 (64 tiles) 21.1 / 20.9;
  // at 6x6, 4 tiles cover 36 of 64: C512 batch 32 27.8 / 37.8, so 6x6 keeps the cap above).
  if (s.Cg() >= 16 && s.Kg() >= 16 && s.out[1] >= 7 && s.out[2] >= 7 && tiles >= 128 && s.K * s.Cg() <= 262144)
    return ConvAlgo::Winograd;
  return ConvAlgo::Gemm;
}

// With 16 input channels per group Winograd's 36 small GEMMs are 16 deep, and a widening
// layer's forward spends most of its time in the output transform of twice as many
// channels: 2 threads on Zen 5, ms, Winograd / GEMM, forward: 3x3 C16->32 at 56x56 batch 8
// 1.69 / 1.11, at 32x32 batch 32 2.17 / 1.49, at 128x128 batch 4 3.49 / 3.32. Not grad_x,
// whose narrowing pass gains at 128x128 (3.29 / 3.97) what it loses on smaller maps
// (1.64 / 1.31, 2.14 / 1.49).
ConvAlgo choose_forward_algo(const ConvShape& s, bool is_float32) {
  const ConvAlgo a = choose_algo(s, is_float32);
  return a == ConvAlgo::Winograd && s.Cg() < 32 && s.Kg() > s.Cg() ? ConvAlgo::Gemm : a;
}

namespace {

// Forced Winograd keeps the user's 3x3 kernel; every other choice runs on the live taps.
bool may_trim(ConvAlgo algo) { return algo != ConvAlgo::Winograd; }

template <class T>
void fill_bias(const ConvShape& s, const T* bias, T* y) {
  const int64_t P = s.out_size();
  parallel_for(0, s.N * s.K, std::max<int64_t>(1, 16384 / std::max<int64_t>(P, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::fill(y + r * P, y + (r + 1) * P, bias ? bias[r % s.K] : T(0));
  });
}

}  // namespace

template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo) {
  if (may_trim(algo)) {
    const TapWindow t = live_tap_window(s);
    if (t.empty) return fill_bias(s, bias, y);
    if (t.trimmed) {
      Workspace<T> wc = workspace_array<T>(s.K * s.Cg() * t.s.k_size());
      copy_window(s, t, const_cast<T*>(w), wc.get(), true);
      return conv_forward(t.s, x, wc.get(), bias, y, algo);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (algo == ConvAlgo::Auto && kvec_rows_forward_pays(s)) return forward_kvec_rows(s, x, w, bias, y);
    if (algo == ConvAlgo::Auto && smallmap_forward_pays(s)) return forward_smallmap(s, x, w, bias, y);
    if (algo == ConvAlgo::Auto && kvec_taps_pays(s)) return forward_kvec_taps(s, x, w, bias, y);
  }
  if (algo == ConvAlgo::Auto && grouped_forward(s, x, w, bias, y)) return;
  if (algo == ConvAlgo::Auto && std::is_same_v<T, float> && dilated_winograd_pays(s))
    return dilated_forward_winograd(s, x, w, bias, y);
  if (algo == ConvAlgo::Auto) {
    algo = choose_forward_algo(s, std::is_same_v<T, float>);
    if constexpr (std::is_same_v<T, float>)
      if (algo == ConvAlgo::Gemm && conv_forward_kvec_eager(s, x, w, bias, y, Epilogue{})) return;
  }
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    winograd_conv2d<T>(s.N, s.C, s.K, s.groups, s.in[1], s.in[2], s.out[1], s.out[2], s.pad0[1], s.pad0[2], x, w,
                       bias, y);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_forward(s, x, w, bias, y);
  forward_gemm(s, x, w, bias, y);
}

template <class T>
void conv_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx, ConvAlgo algo) {
  if (may_trim(algo)) {
    const TapWindow t = live_tap_window(s);
    if (t.empty) {
      parallel_for(0, s.N * s.C, 64, [&](int64_t r0, int64_t r1) {
        std::fill(gx + r0 * s.in_size(), gx + r1 * s.in_size(), T(0));
      });
      return;
    }
    if (t.trimmed) {
      Workspace<T> wc = workspace_array<T>(s.K * s.Cg() * t.s.k_size());
      copy_window(s, t, const_cast<T*>(w), wc.get(), true);
      return conv_backward_data(t.s, gy, wc.get(), gx, algo);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (algo == ConvAlgo::Auto && kvec_rows_data_pays(s)) return backward_data_kvec_rows(s, gy, w, gx);
    if (algo == ConvAlgo::Auto && smallmap_data_pays(s)) return backward_data_smallmap(s, gy, w, gx);
    if (algo == ConvAlgo::Auto && kvec_taps_data_pays(s)) {
      Workspace<T> wt = workspace_array<T>(s.K * s.C * s.k_size());
      flip_swap_weights(s, w, wt.get());
      return forward_kvec_taps(data_pass_as_forward(s), gy, wt.get(), nullptr, gx);
    }
  }
  if (algo == ConvAlgo::Auto && grouped_backward_data(s, gy, w, gx)) return;
  if (algo == ConvAlgo::Auto && std::is_same_v<T, float> && dilated_winograd_pays(s))
    return dilated_backward_data_winograd(s, gy, w, gx);
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    // For stride 1, grad_x is the convolution of grad_y with the kernel rotated by
    // 180 degrees and its two channel axes swapped (within each group), offset by
    // 2 - pad; the Winograd driver accepts any (even negative) offset.
    Workspace<T> wt = workspace_array<T>(s.K * s.Cg() * 9);
    flip_swap_weights(s, w, wt.get());
    winograd_conv2d<T>(s.N, s.K, s.C, s.groups, s.out[1], s.out[2], s.in[1], s.in[2], 2 - s.pad0[1], 2 - s.pad0[2], gy,
                       wt.get(), static_cast<const T*>(nullptr), gx);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_data(s, gy, w, gx);
  backward_data_gemm(s, gy, w, gx);
}

template <class T>
void conv_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo algo) {
  // Dead taps' gradients are exactly zero: += 0 leaves them as they are.
  const TapWindow t = live_tap_window(s);
  if (t.empty) return;
  if (t.trimmed) {
    const int64_t n = s.K * s.Cg() * t.s.k_size();
    Workspace<T> gwc = workspace_array<T>(n);
    std::fill(gwc.get(), gwc.get() + n, T(0));
    conv_backward_weight(t.s, gy, x, gwc.get(), algo);
    copy_window(s, t, gw, gwc.get(), false);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (algo == ConvAlgo::Auto && smallmap_weight_pays(s)) return backward_weight_smallmap(s, gy, x, gw, true);
    if (algo == ConvAlgo::Auto && kvec_weight_pays(s)) return backward_weight_kvec_taps(s, gy, x, gw);
  }
  if (algo == ConvAlgo::Auto && grouped_backward_weight(s, gy, x, gw)) return;
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_weight(s, gy, x, gw);
  backward_weight_gemm(s, gy, x, gw);
}

template <class T>
void conv_backward_weight_fresh(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo algo) {
  const TapWindow t = live_tap_window(s);
  if (t.trimmed && !t.empty) {
    const int64_t n = s.K * s.Cg() * t.s.k_size();
    Workspace<T> gwc = workspace_array<T>(n);
    std::fill(gwc.get(), gwc.get() + n, T(0));
    conv_backward_weight(t.s, gy, x, gwc.get(), algo);
    expand_window(s, t, gw, gwc.get());
    return;
  }
  if constexpr (std::is_same_v<T, float>)
    if (!t.trimmed && algo == ConvAlgo::Auto && smallmap_weight_pays(s)) return backward_weight_smallmap(s, gy, x, gw, false);
  const int64_t n = s.K * s.Cg() * s.k_size();
  parallel_for(0, n, int64_t(1) << 16, [=](int64_t b, int64_t e) { std::fill(gw + b, gw + e, T(0)); });
  conv_backward_weight(s, gy, x, gw, algo);
}

#define CNNFAST_INSTANTIATE(T)                                                                         \
  template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, ConvAlgo);       \
  template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);           \
  template void conv_backward_weight<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);         \
  template void conv_backward_weight_fresh<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu
