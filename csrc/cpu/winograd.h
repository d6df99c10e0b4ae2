// Winograd F(4x4, 3x3) convolution for 2-D 3x3 stride-1 dilation-1 layers.
//
// Each 4x4 output tile comes from a 6x6 input tile d and the 3x3 kernel g as
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
// (Lavin & Gray 2015), so one tile costs 36 multiplies per channel pair instead
// of 144. Tiles of all images are processed in chunks: the 36 transformed
// positions of a chunk form 36 independent GEMMs U[xi] (K/g x C/g) * V[xi]
// (C/g x tiles) on the packed SGEMM. Error stays well within 1e-3 relative of
// float64 for ordinary data because the transform points are 0, +-1, +-2.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/memory.h"
#include "cpu/gemm.h"

namespace cnnfast::cpu {

// y (N, K, Ho, Wo) = conv(x (N, C, H, W), w (K, C/groups, 3, 3)) where input
// row oy + a - pad_t, column ox + b - pad_l meets kernel tap (a, b); taps that
// fall outside x read zero. pad_t / pad_l may be any integer (negative too),
// which lets the backward pass reuse this with offset 2 - pad. bias (K,) or
// null is added in the output transform. Writes all of y.
template <class T>
void winograd_conv2d(int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                     int64_t pad_t, int64_t pad_l, const T* x, const T* w, const T* bias, T* y);

// A float32 layer's transformed weights, packed as the left operands of its 36 GEMMs
// and split into `parts` blocks of output channels: what winograd_conv2d builds on
// every call (1.7 ms of a 256-channel layer at batch 8, one thread), kept by frozen
// graphs (prepack.h) so that a call transforms only its input and output. Holds
// 2 x 36 K Cg floats (the transformed weights and their packed copy).
class WinogradPack {
 public:
  WinogradPack(const float* w, int64_t K, int64_t Cg, int64_t groups, int64_t parts);
  ~WinogradPack();
  int64_t K() const { return K_; }
  int64_t Cg() const { return Cg_; }
  int64_t groups() const { return groups_; }
  int64_t parts() const { return parts_; }
  int64_t part_rows() const { return kb_; }
  const std::unique_ptr<GemmLhs<float>>* lhs() const { return lhs_.data(); }

 private:
  int64_t K_, Cg_, groups_, parts_, kb_;
  AlignedPtr<float> U_;
  std::vector<std::unique_ptr<GemmLhs<float>>> lhs_;
};

// winograd_conv2d (float32) with packed weights: pack(parts) returns them split into the
// `parts` output-channel blocks this call's plan uses (ConvPacked::winograd).
void winograd_conv2d_packed(int64_t N, int64_t C, int64_t K, int64_t groups, int64_t H, int64_t W, int64_t Ho,
                            int64_t Wo, int64_t pad_t, int64_t pad_l, const float* x,
                            const std::function<std::shared_ptr<const WinogradPack>(int64_t)>& pack,
                            const float* bias, float* y);

// The tile transforms, shared (as source) by the scalar, AVX2 and AVX-512 builds.
// tile_base[t]: offset of tile t's image in x or y (n * channels * plane);
// tile_r / tile_c: the tile's top-left row / column in x (input) or y (output).
struct WinoTiles {
  const int64_t* base;
  const int64_t* row;
  const int64_t* col;
  int64_t count;
};

// packed_nr: 0 for plain rows, else the panel width of the packed-B layout.
namespace avx2_impl {
void winograd_input_transform(const float* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, float* V,
                              int64_t packed_nr);
void winograd_output_transform(const float* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t,
                               const float* bias, float* y);
// One output channel's Cg 3x3 kernels src (Cg, 9) -> dst[xi * xi_stride + c], the
// transformed kernels (G g G^T), computed in double; taps / half: 9 Cg / 18 Cg doubles.
void winograd_transform_kernels(const float* src, int64_t Cg, double* taps, double* half, float* dst,
                                int64_t xi_stride);
}  // namespace avx2_impl
namespace avx512_impl {  // 16 tiles per zmm
void winograd_input_transform(const float* x, int64_t Cg, int64_t H, int64_t W, const WinoTiles& t, float* V,
                              int64_t packed_nr);
void winograd_output_transform(const float* M, int64_t Kg, int64_t Ho, int64_t Wo, const WinoTiles& t,
                               const float* bias, float* y);
// One output channel's Cg 3x3 kernels src (Cg, 9) -> dst[xi * xi_stride + c], the
// transformed kernels (G g G^T), computed in double; taps / half: 9 Cg / 18 Cg doubles.
void winograd_transform_kernels(const float* src, int64_t Cg, double* taps, double* half, float* dst,
                                int64_t xi_stride);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
