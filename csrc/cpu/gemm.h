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
// float32 under AVX2 goes to the packed, cache-blocked kernel of gemm_avx2.cpp
// (a 6x16 FMA register-blocked micro-kernel on packed A/B panels, MC/KC/NC
// blocking); everything else goes to the readable scalar reference below.
// gemm() splits the larger of M and N across the thread pool when it is called
// outside a parallel region; gemm_serial() never threads (callers that already
// parallelise over images use it, though gemm() would run inline there anyway).
#pragma once
#include <cstdint>
#include <memory>

namespace cnnfast::cpu {

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t ldc, bool accumulate);

// A left operand prepared once for many serial products: packed for the AVX2
// kernel when T is float and AVX2 is in use, otherwise just the strided view.
template <class T>
class GemmLhs {
 public:
  GemmLhs(int64_t M, int64_t K, const T* A, int64_t rs_a, int64_t cs_a);
  // C (M x N, ldc) (+)= A * B, single-threaded.
  void multiply(int64_t N, const T* B, int64_t rs_b, int64_t cs_b, T* C, int64_t ldc, bool accumulate) const;
  // Whether A is packed for the AVX2 kernel, so multiply_packed_b may be used.
  bool packed() const { return static_cast<bool>(packed_); }
  // C (+)= A * B with B in sgemm_packed_ab's layout (float32 + AVX2 only).
  void multiply_packed_b(int64_t N, const float* Bp, float* C, int64_t ldc, bool accumulate) const;

 private:
  int64_t M_, K_;
  const T* A_;
  int64_t rs_, cs_;
  std::unique_ptr<float[], void (*)(void*)> packed_{nullptr, nullptr};
};

template <class T>
void gemm_serial(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
                 int64_t cs_b, T* C, int64_t ldc, bool accumulate);

// The scalar reference (no intrinsics): a plain i-k-j triple loop.
template <class T>
void gemm_reference(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
                    int64_t rs_b, int64_t cs_b, T* C, int64_t ldc, bool accumulate);

namespace avx2_impl {
// Single-threaded packed SGEMM; same contract as gemm_serial<float>.
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
           int64_t rs_b, int64_t cs_b, float* C, int64_t ldc, bool accumulate);
// A packed once and reused across many products with different B (the weights
// of a convolution against every image / column chunk): packed_a_size floats,
// filled by pack_a_full, consumed by sgemm_packed_a (same M, K).
int64_t packed_a_size(int64_t M, int64_t K);
void pack_a_full(int64_t M, int64_t K, const float* A, int64_t rs_a, int64_t cs_a, float* Ap);
void sgemm_packed_a(int64_t M, int64_t N, int64_t K, const float* Ap, const float* B, int64_t rs_b, int64_t cs_b,
                    float* C, int64_t ldc, bool accumulate);
// Both operands already packed; B in pack_b's layout for N <= 2048 columns:
// element (k, j) at (k / 256 * 256) * Npad + (j / 16) * 16 * kc + (k % 256) * 16 + j % 16,
// where Npad = N rounded up to 16 and kc the depth of k's 256-deep slice.
void sgemm_packed_ab(int64_t M, int64_t N, int64_t K, const float* Ap, const float* Bp, float* C, int64_t ldc,
                     bool accumulate);
}  // namespace avx2_impl

}  // namespace cnnfast::cpu
