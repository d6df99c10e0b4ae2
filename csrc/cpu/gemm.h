// General matrix multiply, the engine under convolution and linear layers.
//
//   C (M x N) = op(A) (M x K) * op(B) (K x N)          (accumulate = false)
//   C (M x N) += op(A) * op(B)                           (accumulate = true)
//
// A and B are read through element strides, so a transpose is only a change of
// strides: A(i, k) = A[i * rs_a + k * cs_a], B(k, j) = B[k * rs_b + j * cs_b].
// C is row-major with leading dimension ldc. With accumulate = false, C is never
// read (it may hold garbage or NaN).
//
// float32 goes to the packed, cache-blocked kernel of the SIMD level in use
// (gemm_driver.h's loop nest): gemm_avx512.cpp's 8x32 zmm micro-kernel, or
// gemm_avx2.cpp's 6x16 ymm one; everything else goes to the readable scalar
// reference below.
// gemm() splits the larger of M and N across the thread pool when it is called
// outside a parallel region; gemm_serial() never threads (callers that already
// parallelise over images use it, though gemm() would run inline there anyway).
#pragma once
#include <cstdint>
#include <memory>

#include "core/workspace.h"

namespace cnnfast::cpu {

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t ldc, bool accumulate);

// A left operand prepared once for many serial products: packed for the SIMD
// level in use at construction when T is float, otherwise just the strided view.
// It keeps running that level's kernel even if the level is lowered meanwhile.
// The packed copy of a call's operand (`pooled`, the default) is borrowed from the
// workspace pool (core/workspace.h): a fresh allocation per call went to mmap past
// 128 KiB and faulted every page in again (3x3 C512 at 7x7, batch 1: 1,376 page faults
// per call). Long-lived operands (a frozen model's ConvPacked) own theirs.
template <class T>
class GemmLhs {
 public:
  GemmLhs(int64_t M, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, bool pooled = true);
  GemmLhs(GemmLhs&&) noexcept;
  ~GemmLhs();
  // C (M x N, ldc) (+)= A * B, single-threaded.
  void multiply(int64_t N, const T* B, int64_t rs_b, int64_t cs_b, T* C, int64_t ldc, bool accumulate) const;
  // Whether A is packed for a SIMD kernel, so multiply_packed_b may be used.
  bool packed() const { return packed_ != nullptr; }
  // Columns per panel of the packed-B layout that multiply_packed_b expects
  // (16 for the AVX2 kernel, 32 for the AVX-512 one); 0 when not packed.
  int64_t panel_width() const;
  // C (+)= A * B with B in the packed layout of this level (float32 + SIMD only).
  void multiply_packed_b(int64_t N, const float* Bp, float* C, int64_t ldc, bool accumulate) const;

 private:
  int64_t M_, K_;
  const T* A_;
  int64_t rs_, cs_;
  bool wide_ = false;  // packed for the AVX-512 kernel (else the AVX2 one)
  WorkspaceBlock borrowed_;
  std::unique_ptr<float[], void (*)(void*)> owned_{nullptr, nullptr};
  const float* packed_ = nullptr;  // borrowed_'s or owned_'s block
};

template <class T>
void gemm_serial(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
                 int64_t cs_b, T* C, int64_t ldc, bool accumulate);

// The scalar reference (no intrinsics): a plain i-k-j triple loop.
template <class T>
void gemm_reference(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
                    int64_t rs_b, int64_t cs_b, T* C, int64_t ldc, bool accumulate);

// Each SIMD level's packed SGEMM (avx2_impl: gemm_avx2.cpp, 6x16 micro-tile,
// NR = 16; avx512_impl: gemm_avx512.cpp, 8x32, NR = 32), single-threaded:
//   sgemm            same contract as gemm_serial<float>.
//   packed_a_size, pack_a_full, sgemm_packed_a
//                    A packed once and reused across many products with
//                    different B (the weights of a convolution against every
//                    image / column chunk): packed_a_size floats, filled by
//                    pack_a_full, consumed by sgemm_packed_a (same M, K).
//   sgemm_packed_ab  both operands packed; B in pack_b's layout for N <= 2048
//                    columns: element (k, j) at
//                    (k / 256 * 256) * Npad + (j / NR) * NR * kc + (k % 256) * NR + j % NR,
//                    Npad = N rounded up to NR and kc the depth of k's 256-deep slice.
#define CNNFAST_DECLARE_SGEMM_LEVEL()                                                                           \
  void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,       \
             int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate);                               \
  int64_t packed_a_size(int64_t M, int64_t K);                                                                  \
  void pack_a_full(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, float* Ap);                \
  void sgemm_packed_a(int64_t M, int64_t N, int64_t K, const float* Ap, const float* B, int64_t rs_b,           \
                      int64_t cs_b, float* C, int64_t ldc, bool accumulate);                                    \
  void sgemm_packed_ab(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc, \
                       bool accumulate);
namespace avx2_impl {
CNNFAST_DECLARE_SGEMM_LEVEL()
}  // namespace avx2_impl
namespace avx512_impl {
CNNFAST_DECLARE_SGEMM_LEVEL()
}  // namespace avx512_impl
#undef CNNFAST_DECLARE_SGEMM_LEVEL

}  // namespace cnnfast::cpu
