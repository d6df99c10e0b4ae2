// The Winograd tile transforms compiled for AVX2+FMA: the same source as the
// generic build (winograd_kernels.h), vectorised by the compiler over 8 tiles.
#define CNNFAST_WINO_NS wino_avx2
#include "cpu/winograd_kernels.h"

namespace cnnfast::cpu::avx2_impl {

void winograd_input_transform(const float* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, float* V) {
  wino_avx2::input_transform<float>(x, Cg, H, W, t, V);
}

void winograd_output_transform(const float* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t, float* y) {
  wino_avx2::output_transform<float>(M, Kg, Ho, Wo, t, y);
}

}  // namespace cnnfast::cpu::avx2_impl
