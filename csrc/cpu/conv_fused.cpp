// conv_forward_fused (conv.h): the inference convolution with its epilogue
// (cpu/epilogue.h) inside the kernel's output pass where the algorithm allows it.
// Depthwise float32 layers take the channel-blocked kernel
// (conv_depthwise_blocked_avx2.cpp), which is faster than the plane kernels on
// every MobileNet/EfficientNet shape and fuses the epilogue; im2col + GEMM applies
// it to each block of y right after the block's GEMM; layers with few input channels (the
// stems) take a direct AVX-512 kernel with the epilogue in registers. Everything else runs
// conv_forward and then the epilogue as one pass.
#include <algorithm>
#include <type_traits>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/simd.h"
#include "core/workspace.h"
#include "cpu/conv.h"
#include "cpu/conv_grouped.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"
#include "cpu/epilogue.h"
#include "cpu/prepack.h"
#include "cpu/winograd.h"

namespace cnnfast::cpu {
using namespace conv_detail;

namespace {

constexpr int64_t kWinogradMinPositions = 512;

// Depthwise planes of up to 16 KiB are fetched into L1 a plane ahead by the tasks that run
// the row kernel on them (depthwise_blocked below): its taps, whole-vector loads or masked
// ones at the tensor's ends, then find the plane there (one thread: 3x3 384ch at 14x14
// 31 -> 29 us, 576ch 46 -> 43, 5x5 672ch at 14x14 91 -> 85).
constexpr int64_t kDepthwisePrefetchBytes = int64_t(16) << 10;
inline void prefetch_plane(const float* p, int64_t floats) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < floats * int64_t(sizeof(float)); b += 64) __builtin_prefetch(c + b, 0, 3);
}

// Tasks are (image, block of eight channels); each applies the epilogue to the
// planes it just wrote.
void depthwise_blocked(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                       const Epilogue& e) {
  const int64_t P = s.out_size();
  // Stride-1 maps of 12+ columns at AVX-512 take the masked-row kernel (conv_depthwise.cpp
  // says where it pays); wide stride-1 3x3/5x5 maps at AVX2 the row-vectorised plane kernel,
  // which already fills its lanes and needs no transposes (MobileNet-V2's 56x56: 0.20
  // against 0.27 ms).
  const bool rows = depthwise_rows_pay(s);
  if (rows || (avx2_impl::dw_direct_applicable(s) && s.out[2] >= 32)) {
    const int64_t scratch = rows ? avx512_impl::dw_rows_scratch(s) : 0, planes = s.N * s.C;
    const int64_t per_task = planes_per_task(planes, P);
    const bool prefetch_next = rows && s.stride[2] == 1 && s.in_size() * int64_t(sizeof(float)) <= kDepthwisePrefetchBytes;
    dynamic_tasks(
        (planes + per_task - 1) / per_task, [&] { return aligned_alloc_array<float>(std::max<int64_t>(scratch, 1)); },
        [&](int64_t task, AlignedPtr<float>& buf) {
          const int64_t first = task * per_task, end = std::min(planes, (task + 1) * per_task);
          for (int64_t nc = first; nc < end; ++nc) {
            if (prefetch_next && nc + 1 < end) prefetch_plane(x + (nc + 1) * s.in_size(), s.in_size());
            const float* xp = x + nc * s.in_size();
            const float* wp = w + (nc % s.C) * s.k_size();
            const float b = bias ? bias[nc % s.C] : 0.0f;
            if (rows) avx512_impl::dw_rows_plane(s, xp, wp, b, y + nc * P, buf.get(), x, x + planes * s.in_size());
            else avx2_impl::dw_direct_plane(s, xp, wp, b, y + nc * P);
          }
          // The task's planes in one run (see epilogue_block).
          epilogue_block(y, first * P, end - first, P, P, e);
        },
        Dealing::Contiguous);
    return;
  }
  // AVX-512 blocks of 16 channels (one zmm FMA per tap) only on maps of <= 64 outputs:
  // there the taps' FMAs are the work (Zen 5, 2 threads, batch 1, 3x3 C960 at 7x7: 56.7
  // -> 43.6 us), while on larger maps the doubled (Hp, Wp, 16) buffer leaves L1/L2 and
  // lost (3x3/2 C96 at 112x112: 123 against 153 us; C192 at 28x28: 47 against 62;
  // 14x14 even).
  const bool wide = use_avx512() && s.out_size() <= 64;
  const int64_t lanes = wide ? avx512_impl::dw_blocked_lanes() : avx2_impl::dw_blocked_lanes();
  const int64_t blocks = (s.C + lanes - 1) / lanes;
  const int64_t scratch = wide ? avx512_impl::dw_blocked_scratch(s) : avx2_impl::dw_blocked_scratch(s);
  dynamic_tasks(
      s.N * blocks, [&] { return aligned_alloc_array<float>(scratch); },
      [&](int64_t t, AlignedPtr<float>& buf) {
        const int64_t n = t / blocks, c0 = (t % blocks) * lanes;
        (wide ? avx512_impl::dw_blocked_block : avx2_impl::dw_blocked_block)(s, x, w, bias, y, n, c0, buf.get());
        epilogue_block(y, (n * s.C + c0) * P, std::min(lanes, s.C - c0), P, P, e);
      });
}

// Tasks are (image, block of output rows), each with its own copy of the input rows.
void stem_direct(const ConvShape& s, const float* x, const float* w, const float* bias, float* y,
                 const Epilogue& e) {
  auto packed = workspace_array<float>(avx512_impl::stem_packed_size(s));
  avx512_impl::stem_pack(s, w, bias, packed.get());
  const int64_t Ho = s.out[1], threads = in_parallel_region() ? 1 : get_num_threads();
  int64_t rows = std::min<int64_t>(Ho, 8);
  while (rows > 1 && s.N * ((Ho + rows - 1) / rows) < 4 * threads) rows = (rows + 1) / 2;
  const int64_t blocks = (Ho + rows - 1) / rows;
  dynamic_tasks(
      s.N * blocks, [&] { return workspace_array<float>(avx512_impl::stem_scratch(s, rows)); },
      [&](int64_t t, Workspace<float>& buf) {
        const int64_t n = t / blocks, oh0 = (t % blocks) * rows;
        avx512_impl::stem_rows(s, x, packed.get(), y, e, n, oh0, std::min(Ho, oh0 + rows), buf.get());
      },
      Dealing::Contiguous);
}

}  // namespace

// Where the few-input-channel kernel (conv_stem_avx512.cpp) beats im2col + GEMM or the
// panels (Zen 5, one thread, batch 1 / 8, ms): ResNet-50's 7x7/2 3->64 at 224 1.89 ->
// 1.05 / 15.1 -> 8.7, MobileNet-V2's 3x3/2 3->32 with ReLU6 0.27 -> 0.14, EfficientNet's
// with SiLU 0.33 -> 0.20, 3x3/1 3->64 at 224 1.34 -> 1.02. It loses where its vectors or
// channel blocks run mostly empty: maps under 16 columns (3x3 4->512 at 7x7: 0.014 against
// 0.027; 14 columns even), fewer than 8 output channels (3x3/1 3->2 at 64x64: 0.014 against
// 0.017), and 1x1 kernels, which the panels take from x itself (3->64 at 112: 0.089
// against 0.11).
// Strides 3 and 4 with at least 256 taps per output go to the channel-vector tiles
// (conv_kvec_taps.cpp), whose vectors hold output channels: AlexNet's 11x11/4 rows of 55
// columns filled the stem's 16-column vectors to 86%. Zen 4, 2 threads, ms, stem / tiles
// (torch): 3->96 at 227x227 batch 8 9.5 / 7.9 (8.3), batch 1 1.23 / 1.05-1.12; 3->64 at 224
// with padding 2, batch 8 6.6 / 5.4 (5.5), batch 1 0.90 / 0.77; DQN's 8x8/4 4->32 at 84x84
// batch 32 2.25 / 1.17 (1.20). At strides 1 and 2 the stem stays ahead (11x11/2 3->96 at
// 224 batch 1 3.9 / 4.1, batch 2 7.8 / 8.0; 11x11/1 3->64 at 128 batch 4 13.4 / 13.9).
bool stem_pays(const ConvShape& s) {
  if (s.stride[1] >= 3 && s.stride[2] >= 3 && conv_detail::kvec_taps_pays(s)) return false;
  return avx512_impl::stem_applicable(s) && s.out[2] >= 16 && s.K >= 8 && s.k_size() > 1;
}

template <class T>
void conv_forward_fused(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo,
                        const Epilogue& e, const ConvPacked* packed) {
  if constexpr (is_f32<T>) {
    if (use_avx2() && (algo == ConvAlgo::Auto || algo == ConvAlgo::Direct) && is_depthwise(s) &&
        avx2_impl::dw_blocked_applicable(s))
      return depthwise_blocked(s, x, w, bias, y, e);
  }
  if constexpr (is_f32<T>) {
    if (use_avx512() && algo == ConvAlgo::Auto && stem_pays(s))
      return stem_direct(s, x, w, bias, y, e);
  }
  if constexpr (is_f32<T>) {
    // The row tiles (conv_kvec_rows.cpp) with the epilogue on each tile as it is stored.
    // A frozen graph's pack (Winograd's transformed weights, the channel-vector tiles' rows
    // of 14) keeps the layers it runs faster: with the pack, Zen 4, 2 threads, ms, pack /
    // row tiles: 3x3 C256 at 14x14 batch 4 3.1 / 4.5, 3x3/2 C256 at 28x28 batch 8 9.8 /
    // 11.7, C128->256 batch 2 1.26 / 1.32; rows of 7 go to the tiles (3x3 C512 at 7x7
    // batch 8 9.2 / 8.4, batch 4 4.8 / 4.6; 3x3/2 at 14x14 batch 8 even).
    const bool pack_keeps = packed && (s.out[2] > 7 || choose_forward_algo(s, true) == ConvAlgo::Winograd);
    // Layers with dead kernel rows or columns go through conv_forward, which cuts them off
    // first (the tiles would pack every tap).
    if (algo == ConvAlgo::Auto && !pack_keeps && conv_detail::kvec_rows_forward_pays(s) &&
        !live_tap_window(s).trimmed)
      return conv_detail::forward_kvec_rows(s, x, w, bias, y, &e);
    // Weight-bound layers on small maps (conv_smallmap.cpp); conv_forward drops dead taps first.
    if (!packed && algo == ConvAlgo::Auto && conv_detail::smallmap_forward_pays(s)) {
      conv_forward(s, x, w, bias, y, ConvAlgo::Auto);
      if (!e.empty()) apply_epilogue(y, s.N * s.K * s.out_size(), e);
      return;
    }
  }
  if constexpr (is_f32<T>) {
    // A 1x1 convolution on a 1x1 map (squeeze-and-excitation) is a matrix-vector product per image.
    if (algo == ConvAlgo::Auto && s.groups == 1 && s.out_size() == 1 && s.in_size() == 1 && s.k_size() == 1 &&
        linear_forward_gemv(x, w, bias, y, s.N, s.C, s.K, e))
      return;
  }
  if constexpr (is_f32<T>) {
    // 1x1 layers first, whatever Auto would pick: the AVX-512 panel kernel keeps up with the
    // GEMM at every MobileNet/ResNet 1x1 shape and saves its passes over y (the AVX2 one
    // takes those with few input channels: prepack.cpp).
    if (packed && (algo == ConvAlgo::Auto || algo == ConvAlgo::Gemm) &&
        conv_forward_panels(s, x, *packed, bias, y, e, false))
      return;
  }
  if constexpr (is_f32<T>) {
    // Dilated 3x3 layers that Auto runs as Winograd phases (conv_dilated.cpp), with the
    // same floor on output positions as Winograd below.
    if (algo == ConvAlgo::Auto && !packed && s.N * s.out_size() >= kWinogradMinPositions &&
        conv_detail::dilated_winograd_pays(s)) {
      conv_forward(s, x, w, bias, y, ConvAlgo::Auto);
      if (!e.empty()) apply_epilogue(y, s.N * s.K * s.out_size(), e);
      return;
    }
  }
  if constexpr (is_f32<T>) {
    // Dense layers on the channel-vector tiles from a zero-bordered image
    // (conv_kvec_taps.cpp, rows of >= 7 here) with the pack's weights and the epilogue
    // per block: the panel tiles through im2col wrote and read back the column matrix (3x3
    // stride 2 128->128 at 56x56 with ReLU, two threads: batch 1 0.60 -> 0.55 ms, batch 8
    // 5.1 -> 4.1; more layers in kvec_taps_pays).
    if (packed && algo == ConvAlgo::Auto && kvec_taps_pays(s, true))
      return forward_kvec_taps(s, x, w, bias, y, packed->kvec(), &e);
  }
  ConvAlgo chosen = algo == ConvAlgo::Auto ? choose_forward_algo(s, is_f32<T>) : algo;
  // Few output positions in all (batch 1 on 14x14): Winograd's per-call filter
  // transform (9.4 MB for 256 channels) outweighs the multiplies it saves
  // (ResNet-50's 256-channel 3x3 at 14x14, batch 1, one thread: 5.2 ms against
  // 2.8 ms on the GEMM; at batch 8 Winograd wins, 13 against 22 ms).
  bool forced_gemm = false;
  if (algo == ConvAlgo::Auto && chosen == ConvAlgo::Winograd && s.N * s.out_size() < kWinogradMinPositions) {
    chosen = ConvAlgo::Gemm;
    forced_gemm = true;
  }
  // Layers Auto gives the direct kernel (grouped with few channels per group, some dense
  // stride-1 ones: conv_grouped.h) keep it, fused or not: forcing Gemm here had sent
  // ResNeXt's 32-group 3x3 layers back to im2col + GEMM at half the speed.
  // Except strided dense layers of frozen graphs on AVX-512, where the panel tiles through
  // im2col are faster (one thread, ms, direct / panels: 3x3 stride 2 128->128 at 56x56
  // batch 1 1.32 / 1.11, batch 8 5.7 / 5.1; 24->144 batch 8 2.04 / 1.82; 64->64 batch 8
  // 2.42 / 2.50).
  const bool strided_panels = packed && s.groups == 1 && use_avx512() && s.out_size() <= kPanelMaxPositions &&
                              (s.stride[1] > 1 || s.stride[2] > 1);
  const bool direct = is_f32<T> && algo == ConvAlgo::Auto && !forced_gemm && !strided_panels &&
                      conv_detail::grouped_direct_applicable(s, conv_detail::Pass::Forward);
  if constexpr (is_f32<T>) {
    // At AVX2 the packed GEMM first: the panel tiles (batch 1 through im2col) only take the
    // layers it declines (dead taps trimmed: ResNet-50's 512-channel 3x3 at 7x7).
    if (!direct && packed && chosen == ConvAlgo::Gemm &&
        (use_avx512() ? conv_forward_panels(s, x, *packed, bias, y, e, true) ||
                            conv_forward_packed(s, x, *packed, bias, y, e)
                      : conv_forward_packed(s, x, *packed, bias, y, e) ||
                            conv_forward_panels(s, x, *packed, bias, y, e, true)))
      return;
  }
  if constexpr (is_f32<T>) {
    // Eager calls of the dense layers conv_forward_kvec_eager takes (prepack.cpp), with
    // the epilogue per block.
    if (!direct && !packed && algo == ConvAlgo::Auto && chosen == ConvAlgo::Gemm && !live_tap_window(s).trimmed &&
        conv_forward_kvec_eager(s, x, w, bias, y, e))
      return;
  }
  if constexpr (is_f32<T>) {
    // Frozen 3x3 layers on Winograd keep their transformed, packed weights in the pack
    // (one thread, 256 channels at 14x14, batch 8: the per-call transform and packing were
    // 1.7 of 5.5 ms). Only the layers conv_forward would run as Winograd: no dead taps,
    // not taken by the grouped kernel (winograd_applicable leaves dilated ones out).
    if (packed && !direct && algo == ConvAlgo::Auto && chosen == ConvAlgo::Winograd && winograd_applicable(s) &&
        !live_tap_window(s).trimmed) {
      winograd_conv2d_packed(s.N, s.C, s.K, s.groups, s.in[1], s.in[2], s.out[1], s.out[2], s.pad0[1], s.pad0[2], x,
                             [&](int64_t parts) { return packed->winograd(parts); }, bias, y);
      if (!e.empty()) apply_epilogue(y, s.N * s.K * s.out_size(), e);
      return;
    }
  }
  const ConvAlgo run = direct ? ConvAlgo::Auto : chosen == ConvAlgo::Gemm ? ConvAlgo::Gemm : algo;
  if (e.empty()) return conv_forward(s, x, w, bias, y, run);
  if (chosen == ConvAlgo::Gemm && !direct) {
    const TapWindow t = live_tap_window(s);
    if (!t.empty && !t.trimmed) return forward_gemm(s, x, w, bias, y, &e);
  }
  conv_forward(s, x, w, bias, y, run);
  apply_epilogue(y, s.N * s.K * s.out_size(), e);
}

template void conv_forward_fused<float>(const ConvShape&, const float*, const float*, const float*, float*, ConvAlgo,
                                        const Epilogue&, const ConvPacked*);
template void conv_forward_fused<double>(const ConvShape&, const double*, const double*, const double*, double*,
                                         ConvAlgo, const Epilogue&, const ConvPacked*);

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
bool dw_blocked_applicable(const ConvShape&) { return false; }
int64_t dw_blocked_scratch(const ConvShape&) { return 0; }
int64_t dw_blocked_lanes() { return 8; }
void dw_blocked_block(const ConvShape&, const float*, const float*, const float*, float*, int64_t, int64_t, float*) {}
}  // namespace avx2_impl
namespace avx512_impl {
bool stem_applicable(const ConvShape&) { return false; }
int64_t stem_packed_size(const ConvShape&) { return 0; }
void stem_pack(const ConvShape&, const float*, const float*, float*) {}
int64_t stem_scratch(const ConvShape&, int64_t) { return 0; }
void stem_rows(const ConvShape&, const float*, const float*, float*, const Epilogue&, int64_t, int64_t, int64_t,
               float*) {}
int64_t dw_blocked_scratch(const ConvShape&) { return 0; }
int64_t dw_blocked_lanes() { return 16; }
void dw_blocked_block(const ConvShape&, const float*, const float*, const float*, float*, int64_t, int64_t, float*) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
