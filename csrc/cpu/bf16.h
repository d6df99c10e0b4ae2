// bfloat16 convolution, linear and GEMM with float32 accumulation.
//
// Inputs are float32 or bfloat16 (stored as uint16_t bit patterns, NumPy's
// ml_dtypes.bfloat16); float32 inputs are rounded to bfloat16 (nearest-even) while
// they are packed into the kernels' tile layouts, so there is never a separate
// conversion pass. Products of two bfloat16 values are exact in float32, so every
// path computes sum(bf16(a) * bf16(b)) in float32; they differ only in summation order.
//
// Paths (Bf16Path), chosen once and overridable with CNNFAST_BF16_PATH or set_bf16_path():
//   amx         AMX tiles, TDPBF16PS on 16x32 by 32x16 bf16 tiles (needs AMX-BF16, the avx512
//               level, and Linux's permission to use tile state: arch_prctl(ARCH_REQ_XCOMP_PERM))
//   avx512_bf16 VDPBF16PS on zmm registers, same packed layouts (needs AVX512-BF16)
//   fallback    the same packing, scalar float32 multiply-adds (any CPU; several times slower)
// Outputs are float32. grad_x and grad_w are written (conv_backward_weight_bf16 below).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "cpu/conv.h"

namespace cnnfast::cpu {

// Auto: the best available path, re-resolved on every call (the default).
enum class Bf16Path { Fallback = 0, AVX512BF16 = 1, AMX = 2, Auto = 3 };

Bf16Path bf16_path();                            // the path kernels take now
void set_bf16_path(Bf16Path p);                  // ValueError if this CPU / OS cannot run it; Auto always works
Bf16Path best_bf16_path();                       // the fastest path available
std::string bf16_path_name(Bf16Path p);          // "amx", "avx512_bf16", "fallback"
Bf16Path parse_bf16_path(const std::string& s);  // "auto" or a path name; ValueError on an unknown name
bool bf16_path_available(Bf16Path p, std::string* why = nullptr);
// The direct AMX convolution passes (no im2col; conv_bf16_direct_amx.cpp): "auto" (the
// shape decides, the default), "on" (wherever they apply) or "off"; ValueError otherwise.
void set_bf16_direct(const std::string& mode);
std::string bf16_direct();
// "granted", "not supported by this CPU", or why Linux refused the tile state.
std::string amx_permission_status();

// bf16 <-> float32, round to nearest even; NaN stays NaN.
inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void bf16_round_array(const float* x, uint16_t* y, int64_t n);
void bf16_widen_array(const uint16_t* x, float* y, int64_t n);

// T is float or uint16_t (bfloat16 bits); x, w and grad_y share T; bias and outputs are float32.
template <class T>
void conv_forward_bf16(const ConvShape& s, const T* x, const T* w, const float* bias, float* y);
template <class T>
void conv_backward_data_bf16(const ConvShape& s, const T* grad_y, const T* w, float* grad_x);
// grad_w is written, not accumulated (unlike conv.h): each element once, with the threads,
// dead taps' zeros included, so the caller need not zero a large array first.
template <class T>
void conv_backward_weight_bf16(const ConvShape& s, const T* grad_y, const T* x, float* grad_w);

// C (M x N, ldc) (+)= op(A) op(B) with A(i, k) = A[i*rs_a + k*cs_a], B(k, j) = B[k*rs_b + j*cs_b].
template <class T>
void gemm_bf16(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
               int64_t cs_b, float* C, int64_t ldc, bool accumulate);

// Best-of-N GFLOP/s of `threads` threads each running only independent TDPBF16PS
// (ValueError unless the amx path is available).
double amx_peak_gflops(int threads);
// The same for VDPBF16PS on zmm registers (ValueError unless avx512_bf16 is available):
// the bf16 peak of a CPU without AMX, the ceiling of the avx512_bf16 path.
double dpbf16_peak_gflops(int threads);

namespace amx_impl {
// The AMX (p == AMX) and VDPBF16PS (otherwise) builds of the passes above.
// w_rs, w_col: the weight seen through the live-tap window (bf16_impl.h ColumnMapSource).
template <class T>
void conv_forward(Bf16Path p, const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col,
                  const float* bias, float* y);
template <class T>
void conv_backward_data(Bf16Path p, const ConvShape& s, const T* gy, const T* w, int64_t w_rs, const int64_t* w_col,
                        float* gx);
template <class T>
void conv_backward_weight(Bf16Path p, const ConvShape& s, const T* gy, const T* x, float* gw);
template <class T>
void gemm(Bf16Path p, int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
          int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate);
// Direct AMX convolution with no im2col (conv_bf16_direct_amx.cpp): 2-D, 16+ channels
// and filters per group; w_rs / w_col as conv_forward above.
bool direct_applicable(const ConvShape& s);
template <class T>
void conv_forward_direct(const ConvShape& s, const T* x, const T* w, int64_t w_rs, const int64_t* w_col,
                         const float* bias, float* y);
template <class T>
void conv_backward_weight_direct(const ConvShape& s, const T* gy, const T* x, float* gw);
// Independent TDPBF16PS on four accumulator tiles; returns a value so the loop is kept.
float amx_loop(int64_t iters);
constexpr int64_t kAmxFlopsPerIter = 4 * 16 * 16 * 32 * 2;
// Twelve independent VDPBF16PS chains (16 lanes x 2 products each).
float dpbf16_loop(int64_t iters);
constexpr int64_t kDpFlopsPerIter = 12 * 16 * 2 * 2;
void round_array(const float* x, uint16_t* y, int64_t n);  // needs AVX512-BF16
}  // namespace amx_impl

}  // namespace cnnfast::cpu
