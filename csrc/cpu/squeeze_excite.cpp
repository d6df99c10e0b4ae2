// squeeze_excite_forward (squeeze_excite.h): pool, two small products (the
// matrix-vector kernel of prepack.h for a few images, else the library's linear
// layer), then one pass that scales every channel plane.
#include "cpu/squeeze_excite.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "cpu/conv.h"
#include "cpu/prepack.h"

namespace cnnfast::cpu {
namespace {

// y (N, out) = epilogue(x (N, in) w^T + b).
template <class T>
void dense(const T* x, const T* w, const T* b, T* y, int64_t N, int64_t in, int64_t out, const Epilogue& e) {
  if constexpr (std::is_same_v<T, float>) {
    if (linear_forward_gemv(x, w, b, y, N, in, out, e)) return;
  }
  linear_forward<T>(x, w, b, y, N, in, out);
  apply_epilogue<T>(y, N * out, e);
}

// scale (N, C) = act2(W2 act1(W1 pooled + b1) + b2).
template <class T>
void scales(const T* pooled, T* scale, int64_t N, int64_t C, const T* w1, const T* b1, int64_t R, const T* w2,
            const T* b2, const Epilogue& e1, const Epilogue& e2) {
  std::vector<T> hidden(N * R);
  dense<T>(pooled, w1, b1, hidden.data(), N, C, R, e1);
  dense<T>(hidden.data(), w2, b2, scale, N, R, C, e2);
}

// Sixteen independent partial sums, which the compiler keeps in vector registers: one
// running sum is a chain of dependent adds that it may not reorder (EfficientNet-B0's
// 144-channel 56x56 pool took 0.3 ms at one add per four cycles).
template <class T>
T plane_sum(const T* p, int64_t S) {
  constexpr int kParts = 16;
  T part[kParts] = {};
  int64_t i = 0;
  for (; i + kParts <= S; i += kParts)
    for (int j = 0; j < kParts; ++j) part[j] += p[i + j];
  T sum = T(0);
  for (; i < S; ++i) sum += p[i];
  for (int j = 0; j < kParts; ++j) sum += part[j];
  return sum;
}

}  // namespace

template <class T>
void squeeze_excite_forward(const T* x, T* y, int64_t N, int64_t C, int64_t S, const T* w1, const T* b1, int64_t R,
                            const T* w2, const T* b2, const Epilogue& e1, const Epilogue& e2) {
  std::vector<T> pooled(N * C), scale(N * C);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1));
  parallel_for(0, N * C, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      pooled[r] = plane_sum(x + r * S, S) / T(S);
    }
  });
  scales<T>(pooled.data(), scale.data(), N, C, w1, b1, R, w2, b2, e1, e2);
  parallel_for(0, N * C, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T v = scale[r];
      const T* p = x + r * S;
      T* q = y + r * S;
      for (int64_t i = 0; i < S; ++i) q[i] = p[i] * v;
    }
  });
}

void squeeze_excite_scales(const float* pooled, float* scale, int64_t N, int64_t C, const float* w1, const float* b1,
                           int64_t R, const float* w2, const float* b2, const Epilogue& e1, const Epilogue& e2) {
  scales<float>(pooled, scale, N, C, w1, b1, R, w2, b2, e1, e2);
}

template void squeeze_excite_forward<float>(const float*, float*, int64_t, int64_t, int64_t, const float*, const float*,
                                            int64_t, const float*, const float*, const Epilogue&, const Epilogue&);
template void squeeze_excite_forward<double>(const double*, double*, int64_t, int64_t, int64_t, const double*,
                                             const double*, int64_t, const double*, const double*, const Epilogue&,
                                             const Epilogue&);

}  // namespace cnnfast::cpu
