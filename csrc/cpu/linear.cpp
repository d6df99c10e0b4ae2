// The bias passes (shared by convolution and linear) and the fully connected
// layer on the GEMM of gemm.h (conv.h declares them).
#include <algorithm>

#include "core/parallel.h"
#include "cpu/conv.h"
#include "cpu/gemm.h"

namespace cnnfast::cpu {

template <class T>
void bias_forward(T* y, const T* b, int64_t N, int64_t C, int64_t S) {
  parallel_for(0, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T v = b[r % C];
      T* row = y + r * S;
      for (int64_t i = 0; i < S; ++i) row[i] += v;
    }
  });
}

template <class T>
void bias_backward(const T* gy, T* gb, int64_t N, int64_t C, int64_t S) {
  // Each channel is summed by one thread in a fixed order: thread-count independent.
  parallel_for(0, C, std::max<int64_t>(1, 16384 / std::max<int64_t>(N * S, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T acc = T(0);
      for (int64_t n = 0; n < N; ++n) {
        const T* row = gy + (n * C + c) * S;
        // Eight running sums (a fixed order, so still thread-count independent)
        // let the compiler vectorise without reassociating behind our back.
        T lane[8] = {};
        int64_t i = 0;
        for (; i + 8 <= S; i += 8)
          for (int l = 0; l < 8; ++l) lane[l] += row[i + l];
        T part = T(0);
        for (; i < S; ++i) part += row[i];
        for (int l = 0; l < 8; ++l) part += lane[l];
        acc += part;
      }
      gb[c] += acc;
    }
  });
}

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t M, int64_t in, int64_t out) {
  gemm(M, out, in, x, in, int64_t(1), w, int64_t(1), in, y, out, false);
  if (b) bias_forward(y, b, M, out, int64_t(1));
}

template <class T>
void linear_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, int64_t M, int64_t in, int64_t out) {
  if (gx) gemm(M, in, out, gy, out, int64_t(1), w, in, int64_t(1), gx, in, false);
  if (gw) gemm(out, in, M, gy, int64_t(1), out, x, in, int64_t(1), gw, in, true);
  if (gb) {
    parallel_for(0, out, 256, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        T acc = T(0);
        for (int64_t m = 0; m < M; ++m) acc += gy[m * out + j];
        gb[j] += acc;
      }
    });
  }
}

#define CNNFAST_INSTANTIATE(T)                                                                         \
  template void bias_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                            \
  template void bias_backward<T>(const T*, T*, int64_t, int64_t, int64_t);                           \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);      \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu
