// The channel-blocked depthwise forward (conv_depthwise_blocked_kernels.h) at the
// AVX-512 level: blocks of 16 channels in a zmm register, so every tap is one FMA over
// twice the channels of the AVX2 build (the packing and unpacking transposes stay 8x8).
#include "cpu/conv_depthwise_blocked_kernels.h"

namespace cnnfast::cpu::avx512_impl {
namespace {

struct Zmm {
  using V = __m512;
  static constexpr int64_t L = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static __m256 group(V v, int64_t g) { return g == 0 ? _mm512_castps512_ps256(v) : _mm512_extractf32x8_ps(v, 1); }
};

}  // namespace

int64_t dw_blocked_scratch(const ConvShape& s) { return avx512_isa::dw_blocked::scratch_floats<Zmm>(s); }
int64_t dw_blocked_lanes() { return Zmm::L; }
void dw_blocked_block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n,
                      int64_t c0, float* scratch) {
  avx512_isa::dw_blocked::block<Zmm>(s, x, w, bias, y, n, c0, scratch);
}

}  // namespace cnnfast::cpu::avx512_impl
