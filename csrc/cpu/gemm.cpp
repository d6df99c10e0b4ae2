// Scalar reference GEMM, dispatch to the AVX2 / AVX-512 kernels, and the thread split.
#include "cpu/gemm.h"
#include "core/workspace.h"

#include <algorithm>
#include <type_traits>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/parallel.h"

namespace cnnfast::cpu {

template <class T>
void gemm_reference(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
                    int64_t rs_b, int64_t cs_b, T* C, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (!accumulate)
      for (int64_t j = 0; j < N; ++j) c[j] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T a = A[i * rs_a + k * cs_a];
      const T* b = B + k * rs_b;
      if (cs_b == 1) {
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j * cs_b];
      }
    }
  }
}

template <class T>
void gemm_serial(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
                 int64_t cs_b, T* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512()) return avx512_impl::sgemm(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
    if (use_avx2()) return avx2_impl::sgemm(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
  }
  gemm_reference(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
}

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t ldc, bool accumulate) {
  const int threads = get_num_threads();
  // Below ~1 MFLOP per thread the pool's wake-up costs more than it saves.
  const double flops = 2.0 * double(M) * double(N) * double(K);
  if (threads <= 1 || in_parallel_region() || flops < 2e6 * threads) {
    return gemm_serial(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
  }
  // Each thread takes a slab of columns (or rows) and runs a whole GEMM on it:
  // no shared packed buffers and no synchronisation inside. Slabs are multiples
  // of the micro-kernel's width / height so only the last has a tail.
  const bool wide = std::is_same_v<T, float> && use_avx512();
  if (N >= M) {
    const int64_t unit = wide ? 32 : 16, units = (N + unit - 1) / unit;
    parallel_for(0, units, 1, [&](int64_t b, int64_t e) {
      const int64_t j0 = b * unit, j1 = std::min(N, e * unit);
      gemm_serial(M, j1 - j0, K, A, rs_a, cs_a, B + j0 * cs_b, rs_b, cs_b, C + j0, ldc, accumulate);
    });
  } else {
    const int64_t unit = wide ? 8 : 6, units = (M + unit - 1) / unit;
    parallel_for(0, units, 1, [&](int64_t b, int64_t e) {
      const int64_t i0 = b * unit, i1 = std::min(M, e * unit);
      gemm_serial(i1 - i0, N, K, A + i0 * rs_a, rs_a, cs_a, B, rs_b, cs_b, C + i0 * ldc, ldc, accumulate);
    });
  }
}

template <class T>
GemmLhs<T>::GemmLhs(int64_t M, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, bool pooled)
    : M_(M), K_(K), A_(A), rs_(rs_a), cs_(cs_a) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2() && M > 0 && K > 0) {
      wide_ = use_avx512();
      const int64_t n = wide_ ? avx512_impl::packed_a_size(M, K) : avx2_impl::packed_a_size(M, K);
      float* p;
      if (pooled) {
        borrowed_ = WorkspaceBlock(workspace_bytes(n, sizeof(float)));
        p = static_cast<float*>(borrowed_.data());
      } else {
        AlignedPtr<float> a = aligned_alloc_array<float>(n);
        p = a.get();
        owned_ = std::unique_ptr<float[], void (*)(void*)>(a.release(), std::free);
      }
      if (wide_) avx512_impl::pack_a_full(M, K, A, rs_a, cs_a, p);
      else avx2_impl::pack_a_full(M, K, A, rs_a, cs_a, p);
      packed_ = p;
    }
  }
}

template <class T>
GemmLhs<T>::GemmLhs(GemmLhs&&) noexcept = default;
template <class T>
GemmLhs<T>::~GemmLhs() = default;

template <class T>
void GemmLhs<T>::multiply(int64_t N, const T* B, int64_t rs_b, int64_t cs_b, T* C, int64_t ldc,
                          bool accumulate) const {
  if constexpr (std::is_same_v<T, float>) {
    if (packed_ && wide_)
      return avx512_impl::sgemm_packed_a(M_, N, K_, packed_, B, rs_b, cs_b, C, ldc, accumulate);
    if (packed_) return avx2_impl::sgemm_packed_a(M_, N, K_, packed_, B, rs_b, cs_b, C, ldc, accumulate);
  }
  gemm_serial(M_, N, K_, A_, rs_, cs_, B, rs_b, cs_b, C, ldc, accumulate);
}

template <class T>
void GemmLhs<T>::multiply_packed_b(int64_t N, const float* Bp, float* C, int64_t ldc, bool accumulate) const {
  if (wide_) avx512_impl::sgemm_packed_ab(M_, N, K_, packed_, Bp, C, ldc, accumulate);
  else avx2_impl::sgemm_packed_ab(M_, N, K_, packed_, Bp, C, ldc, accumulate);
}

template <class T>
int64_t GemmLhs<T>::panel_width() const {
  return packed_ ? (wide_ ? 32 : 16) : 0;
}

template class GemmLhs<float>;
template class GemmLhs<double>;

#define CNNFAST_INSTANTIATE(T)                                                                                    \
  template void gemm<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, T*,  \
                        int64_t, bool);                                                                         \
  template void gemm_serial<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, \
                               T*, int64_t, bool);                                                              \
  template void gemm_reference<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,     \
                                  int64_t, T*, int64_t, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
namespace avx2_impl {
void sgemm(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t,
           bool) {}
int64_t packed_a_size(int64_t, int64_t) { return 0; }
void pack_a_full(int64_t, int64_t, const float*, int64_t, int64_t, float*) {}
void sgemm_packed_a(int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t, float*, int64_t, bool) {}
void sgemm_packed_ab(int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t, bool) {}
}  // namespace avx2_impl
#endif
#if !CNNFAST_HAVE_AVX512_BUILD
namespace avx512_impl {
void sgemm(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t,
           bool) {}
int64_t packed_a_size(int64_t, int64_t) { return 0; }
void pack_a_full(int64_t, int64_t, const float*, int64_t, int64_t, float*) {}
void sgemm_packed_a(int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t, float*, int64_t, bool) {}
void sgemm_packed_ab(int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t, bool) {}
}  // namespace avx512_impl
#endif

}  // namespace cnnfast::cpu
