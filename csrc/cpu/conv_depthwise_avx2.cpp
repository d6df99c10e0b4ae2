// The depthwise plane kernels compiled for AVX2+FMA (source: conv_depthwise.h).
#define CNNFAST_DW_NS dw_avx2
#include "cpu/conv_depthwise.h"

namespace cnnfast::cpu::avx2_impl {

void dw_forward_plane(const ConvShape& s, const float* x, const float* w, float* y) {
  dw_avx2::dw_forward_plane<float>(s, x, w, y);
}
void dw_backward_data_plane(const ConvShape& s, const float* gy, const float* w, float* gx) {
  dw_avx2::dw_backward_data_plane<float>(s, gy, w, gx);
}
void dw_backward_weight_plane(const ConvShape& s, const float* gy, const float* x, float* gw) {
  dw_avx2::dw_backward_weight_plane<float>(s, gy, x, gw);
}

}  // namespace cnnfast::cpu::avx2_impl
