// Grouped convolution with few channels per group: the drivers of conv_grouped.h
// (threading and the shape of each pass), on the plane kernels of
// conv_grouped_kernels.h (AVX-512 and AVX2 builds). The scalar level and float64 keep
// im2col + GEMM.
#include "cpu/conv_grouped.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/peak.h"

namespace cnnfast::cpu {
namespace conv_detail {

// Measured at one thread on Zen 4 against im2col + GEMM (forward / grad_x / grad_w, ms):
//   32-group 3x3 C256 28x28 (8 ch/group)  3.5 / 3.6 / 3.6  against  7.4 / 16.0 together
//   dilated 3x3 C64 56x56                21.2 / 21.3 / 23.6 against 24.0 / 23.4 / 24.3
//   5x5 C3->32 32x32 (CIFAR)              3.8 / 20.8 / 4.7  against  5.3 /  4.9 /  6.8
//   5x5 C96->256 27x27                   75.8 / 76.4 / 112  against 76.4 / 75.6 / 90.8
//   32-group 3x3 C512 14x14 (16 ch/group)  3.6 / 7.6 together, against Winograd's 6.2 / 12.6
//   forwards through column phases: 32-group 3x3/2 C256 56x56 5.5 against 14.2,
//   3x3/2 C64->128 21.7 against 24.4, AlexNet 11x11/4 22.3 against 23.2 (phases stacked)
// So: few channels per group each way (<= 16) takes every pass; otherwise the
// forward takes rows of at least one full vector, grad_x (whose output channels
// are the layer's inputs) needs >= 16 of them per group, and grad_w (one pass over
// grad_y per input channel and tap row) at most 16. Maps narrower than 8 columns
// leave most lanes idle: those stay with the GEMM and its tap paths.
bool grouped_direct_applicable(const ConvShape& s, Pass pass) {
  const bool two_d = s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.pad0[0] == 0;
  if (!use_avx2() || !two_d || s.out[2] < 8) return false;
  if (s.groups > 1 && s.Cg() == 1) return false;  // depthwise: its own kernel
  // The forward also takes strided layers (through column phases, grouped_forward)
  // whose taps along W are adjacent; the gradients only stride 1.
  const bool unit = s.stride[1] == 1 && s.stride[2] == 1;
  if (pass == Pass::Forward ? (s.stride[2] > 1 && s.dil[2] != 1) : !unit) return false;
  if (s.Cg() <= 16 && s.Kg() <= 16) return true;
  // The rules below hold for the AVX-512 kernels; the AVX2 ones (4-channel blocks) lost
  // to the GEMM on those layers (dilated 3x3 C64 forward 27.2 against 24.4 ms).
  if (!use_avx512()) return false;
  // Layers Auto sends to Winograd stay there (3x3 C64 56x56: 12.9 ms against 21.5),
  // and 1x1 layers with the GEMM, which reads their input as it is (no im2col):
  // 1x1 C256->64 56x56 ran 17.6 ms direct against 10.3.
  if (choose_algo(s, true) != ConvAlgo::Gemm || s.k_size() == 1) return false;
  // Where 512-bit FMAs run at full rate (Zen 5; the rules above were measured on Zen 4,
  // which splits them) the GEMM doubles its speed and the direct kernel, which loads
  // every tap's input unaligned, does not keep up on some layers. Measured on Zen 5, 2
  // threads, direct against im2col + GEMM (ms):
  //   forward, 3 input channels, strided: ResNet stem 7x7/2 C3->64 224x224  6.61 / 5.19,
  //     AlexNet 11x11/4 C3->96  5.11 / 4.78 (stride 1 with C3: 5x5 CIFAR 0.85 / 1.12)
  //   forward, 256 outputs from a plane set past L2: 5x5 C96->256 56x56  76.0 / 68.9
  //     (27x27, 280 KB per image: 16.6 / 16.7)
  //   grad_x with 256 output channels to sum over: 5x5 C96->256 27x27  19.8 / 17.7,
  //     C64->256 13.6 / 11.5, 56x56 86.7 / 72.4 (128 of them: C96->128 9.0 / 10.6)
  //   grad_w, 3 channels on a 224x224 map: 3x3 C3->64  4.29 / 3.71
  // while grouped, dilated and narrower dense layers keep their 10-30% gain.
  const bool full_rate = avx512_full_rate();
  // Dilated layers that run as Winograd phases (conv_dilated.cpp) stay there.
  if (pass != Pass::Weight && conv_detail::dilated_winograd_pays(s)) return false;
  switch (pass) {
    case Pass::Forward:
      if (full_rate) {
        if (s.Cg() < 16 && (s.stride[1] > 1 || s.stride[2] > 1)) return false;
        if (s.Kg() >= 256 && s.Cg() * s.in_size() * int64_t(sizeof(float)) > (1 << 20)) return false;
      }
      return s.out[2] >= 16;
    case Pass::Data: return s.Cg() >= 16 && s.in[2] >= 16 && !(full_rate && s.Kg() > 128);
    case Pass::Weight: return s.Cg() <= 16 && s.out[2] >= 16 && !(full_rate && s.Cg() < 16 && s.out_size() > 128 * 128);
  }
  return false;
}

namespace {

// The widest level's kernels: AVX-512 where the CPU and the setting allow, else AVX2.
void corr(const GroupedPlane& p, const float* x, const float* w, const float* bias, float* y) {
  if (use_avx512()) avx512_impl::grouped_corr(p, x, w, bias, y);
  else avx2_impl::grouped_corr(p, x, w, bias, y);
}
void corr_weight(const GroupedPlane& p, const float* x, const float* gy, float* gw) {
  if (use_avx512()) avx512_impl::grouped_corr_weight(p, x, gy, gw);
  else avx2_impl::grouped_corr_weight(p, x, gy, gw);
}
void phase(const float* x, int64_t rows, int64_t W, int64_t sw, int64_t q, int64_t pad, int64_t Wq, float* dst) {
  if (use_avx512()) avx512_impl::column_phase(x, rows, W, sw, q, pad, Wq, dst);
  else avx2_impl::column_phase(x, rows, W, sw, q, pad, Wq, dst);
}

GroupedPlane forward_plane(const ConvShape& s) {
  return {s.Cg(), s.in[1], s.in[2], s.Kg(), s.out[1], s.out[2], s.k[1], s.k[2],
          s.dil[1], s.dil[2], -s.pad0[1], -s.pad0[2]};
}

// Output channels [k0, k1) of part `part` of `parts`, in whole kernel blocks of 8.
struct ChannelParts {
  int64_t parts = 1, blocks = 1, Ko = 0;
  void range(int64_t part, int64_t& k0, int64_t& k1) const {
    k0 = blocks * part / parts * 8;
    k1 = std::min(Ko, blocks * (part + 1) / parts * 8);
  }
};

// With fewer (image, group) plane sets than a multiple of the threads (batch 1, an
// odd batch of an ungrouped layer: one of two threads idle, or doing 3 planes to the
// other's 2), the threads also split each set's output channels. Every block of 8
// already reads the whole input plane, so the split costs no reuse.
ChannelParts channel_parts(int64_t sets, int64_t Ko) {
  ChannelParts cp;
  cp.Ko = Ko;
  cp.blocks = (Ko + 7) / 8;
  cp.parts = even_parts(sets, cp.blocks);
  return cp;
}

}  // namespace

// Stride sw > 1 along W: the input is split into sw column phases, phase q holding
// columns q - pad, q - pad + sw, ... (zero outside the input), and tap kw = kw'*sw + q
// reads phase q at column ow + kw': sw stride-1 correlations over the phases, each
// with its own taps, summed into y. Rows are strided inside the kernel.
template <class T>
bool grouped_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (!grouped_direct_applicable(s, Pass::Forward)) return false;
    GroupedPlane p = forward_plane(s);
    p.sh = s.stride[1];
    const int64_t G = s.groups, inS = s.in_size(), P = s.out_size(), sw = s.stride[2];
    const ChannelParts cp = channel_parts(s.N * G, p.Ko);
    if (sw == 1) {
      parallel_for(0, s.N * G * cp.parts, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n = t / (G * cp.parts), g = (t / cp.parts) % G;
          int64_t k0, k1;
          cp.range(t % cp.parts, k0, k1);
          GroupedPlane q = p;
          q.Ko = k1 - k0;
          corr(q, x + (n * s.C + g * p.Ci) * inS, w + (g * p.Ko + k0) * p.Ci * p.KH * p.KW,
               bias ? bias + g * p.Ko + k0 : nullptr, y + (n * s.K + g * p.Ko + k0) * P);
        }
      });
      return true;
    }
    // Phase q holds KWq = ceil((KW - q) / sw) taps over Wo + KWq - 1 columns. When
    // padding every phase to phase 0's taps wastes little (AlexNet's 11 taps in 4
    // phases of 3: 1 slot in 12), the phases are stacked as channels of one
    // correlation (3 input channels alone left the kernel's channel loop too short);
    // otherwise each phase is its own correlation, summed into y.
    const int64_t nph = std::min(sw, p.KW), KW0 = (p.KW + sw - 1) / sw;
    const bool stacked = nph * KW0 * 10 <= p.KW * 11;
    std::vector<GroupedPlane> ph;
    std::vector<std::vector<float>> wq;
    for (int64_t q = 0; q < (stacked ? 1 : nph); ++q) {
      GroupedPlane pq = p;
      pq.KW = stacked ? KW0 : (p.KW - q + sw - 1) / sw;
      pq.Ci = stacked ? p.Ci * nph : p.Ci;
      pq.Wi = p.Wo + pq.KW - 1;
      pq.dw = 1;
      pq.ox = 0;
      pq.accumulate = q > 0;
      // Phase weights (K, Ci, KH, KWq); stacked: (K, nph * Ci, KH, KW0), zero past the kernel.
      std::vector<float> wp(size_t(s.K * pq.Ci * p.KH * pq.KW), 0.f);
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t qq = stacked ? 0 : q; qq < (stacked ? nph : q + 1); ++qq)
          for (int64_t c = 0; c < p.Ci; ++c)
            for (int64_t kh = 0; kh < p.KH; ++kh)
              for (int64_t j = 0; j < pq.KW && j * sw + qq < p.KW; ++j) {
                const int64_t c2 = stacked ? qq * p.Ci + c : c;
                wp[size_t(((k * pq.Ci + c2) * p.KH + kh) * pq.KW + j)] =
                    w[((k * p.Ci + c) * p.KH + kh) * p.KW + j * sw + qq];
              }
      ph.push_back(pq);
      wq.push_back(std::move(wp));
    }
    const int64_t W = s.in[2], pad = s.pad0[2], rows = p.Ci * p.Hi;
    parallel_for(0, s.N * G * cp.parts, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> xq(size_t(rows * ph[0].Wi * (stacked ? nph : 1)));
      int64_t phased = -1;  // the (image, group) whose stacked phases xq holds
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ng = t / cp.parts, n = ng / G, g = ng % G;
        int64_t k0, k1;
        cp.range(t % cp.parts, k0, k1);
        const float* xg = x + (n * s.C + g * p.Ci) * inS;
        float* yg = y + (n * s.K + g * p.Ko + k0) * P;
        const float* bg = bias ? bias + g * p.Ko + k0 : nullptr;
        if (stacked) {
          if (phased != ng)
            for (int64_t q = 0; q < nph; ++q)
              phase(xg, rows, W, sw, q, pad, ph[0].Wi, xq.data() + q * rows * ph[0].Wi);
          phased = ng;
          GroupedPlane pk = ph[0];
          pk.Ko = k1 - k0;
          corr(pk, xq.data(), wq[0].data() + (g * p.Ko + k0) * ph[0].Ci * p.KH * KW0, bg, yg);
          continue;
        }
        for (size_t q = 0; q < ph.size(); ++q) {
          GroupedPlane pk = ph[q];
          pk.Ko = k1 - k0;
          phase(xg, rows, W, sw, int64_t(q), pad, pk.Wi, xq.data());
          corr(pk, xq.data(), wq[q].data() + (g * p.Ko + k0) * p.Ci * p.KH * pk.KW, q == 0 ? bg : nullptr, yg);
        }
      }
    });
    return true;
  }
}

// Stride 1: grad_x is the correlation of grad_y with the taps rotated by 180
// degrees and the two channel axes swapped, grad_y read at offset
// pad0 - dil*(k-1), which the forward kernel computes with plain stores.
template <class T>
bool grouped_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (!grouped_direct_applicable(s, Pass::Data)) return false;
    const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), KH = s.k[1], KW = s.k[2], taps = KH * KW;
    Workspace<float> wt = workspace_array<float>(s.K * Cg * taps);
    flip_swap_weights(s, w, wt.get());
    const GroupedPlane p{Kg, s.out[1], s.out[2], Cg, s.in[1], s.in[2], KH, KW, s.dil[1], s.dil[2],
                                      s.pad0[1] - s.dil[1] * (KH - 1), s.pad0[2] - s.dil[2] * (KW - 1)};
    const int64_t inS = s.in_size(), P = s.out_size();
    const ChannelParts cp = channel_parts(s.N * G, Cg);
    parallel_for(0, s.N * G * cp.parts, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / (G * cp.parts), g = (t / cp.parts) % G;
        int64_t c0, c1;
        cp.range(t % cp.parts, c0, c1);
        GroupedPlane q = p;
        q.Ko = c1 - c0;
        corr(q, gy + (n * s.K + g * Kg) * P, wt.get() + (g * Cg + c0) * Kg * taps, nullptr,
             gx + (n * s.C + g * Cg + c0) * inS);
      }
    });
    return true;
  }
}

// Threads split (group, block of 8 output channels) tasks, each running every image:
// no two threads write the same part of grad_w, the sum over images runs in one
// order whatever the thread count, and an ungrouped layer (the 3-input-channel
// 5x5 ones this pass takes) still has a task per 8 output channels.
template <class T>
bool grouped_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (!grouped_direct_applicable(s, Pass::Weight)) return false;
    const GroupedPlane p = forward_plane(s);
    const int64_t G = s.groups, inS = s.in_size(), P = s.out_size(), wk = p.Ci * p.KH * p.KW;
    const int64_t blocks = (p.Ko + 7) / 8;
    parallel_for(0, G * blocks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = t / blocks, k0 = (t % blocks) * 8;
        GroupedPlane q = p;
        q.Ko = std::min<int64_t>(8, p.Ko - k0);
        for (int64_t n = 0; n < s.N; ++n)
          corr_weight(q, x + (n * s.C + g * p.Ci) * inS, gy + (n * s.K + g * p.Ko + k0) * P,
                                           gw + (g * p.Ko + k0) * wk);
      }
    });
    return true;
  }
}

#define CNNFAST_INSTANTIATE(T)                                                                   \
  template bool grouped_forward<T>(const ConvShape&, const T*, const T*, const T*, T*);         \
  template bool grouped_backward_data<T>(const ConvShape&, const T*, const T*, T*);             \
  template bool grouped_backward_weight<T>(const ConvShape&, const T*, const T*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace conv_detail

#define CNNFAST_GROUPED_STUBS                                                                          \
  void grouped_corr(const GroupedPlane&, const float*, const float*, const float*, float*) {}       \
  void grouped_corr_weight(const GroupedPlane&, const float*, const float*, float*) {}              \
  void column_phase(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*) {}
#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
CNNFAST_GROUPED_STUBS
}  // namespace avx2_impl
#endif
#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
CNNFAST_GROUPED_STUBS
}  // namespace avx512_impl
#endif
#undef CNNFAST_GROUPED_STUBS

}  // namespace cnnfast::cpu
