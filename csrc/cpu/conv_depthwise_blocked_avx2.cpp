// The channel-blocked depthwise forward (conv_depthwise_blocked_kernels.h) at the
// AVX2 level: blocks of 8 channels in a ymm register.
#include "cpu/conv_depthwise_blocked_kernels.h"

namespace cnnfast::cpu::avx2_impl {
namespace {

struct Ymm {
  using V = __m256;
  static constexpr int64_t L = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256 group(V v, int64_t) { return v; }
};

}  // namespace

bool dw_blocked_applicable(const ConvShape& s) { return avx2_isa::dw_blocked::applicable(s); }
int64_t dw_blocked_scratch(const ConvShape& s) { return avx2_isa::dw_blocked::scratch_floats<Ymm>(s); }
int64_t dw_blocked_lanes() { return Ymm::L; }
void dw_blocked_block(const ConvShape& s, const float* x, const float* w, const float* bias, float* y, int64_t n,
                      int64_t c0, float* scratch) {
  avx2_isa::dw_blocked::block<Ymm>(s, x, w, bias, y, n, c0, scratch);
}

}  // namespace cnnfast::cpu::avx2_impl
