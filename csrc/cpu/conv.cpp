// im2col + GEMM convolution: forward, backward to the input (GEMM + col2im) and
// backward to the weights (im2col + GEMM), the bias, the fully connected layer,
// and the per-shape algorithm choice.
//
// The im2col matrix is never built whole: it is made a column chunk (a run of
// output positions, ~128 KiB) at a time, right before the GEMM packs it, and the
// weights are packed once per call (GemmLhs) instead of once per chunk.
//
// Threading: the forward and the weight gradient split (image, group, chunk)
// tasks into one contiguous range per thread, each with its own chunk buffer and
// serial GEMMs; the weight gradient is accumulated per range and the ranges are
// summed in a fixed order afterwards, so a given thread count always gives the
// same bits. The input gradient splits (image, group) pairs, because the chunks
// of one image scatter into overlapping parts of grad_x; with fewer pairs than
// threads (batch 1) it splits the GEMM and then col2im by channels instead.
#include "cpu/conv.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "cpu/conv_parallel.h"
#include "cpu/gemm.h"
#include "cpu/winograd.h"

#define CNNFAST_DW_NS dw_generic
#include "cpu/conv_depthwise.h"

namespace cnnfast::cpu {
namespace {

// ceil(a / b) for b > 0 and any sign of a; no a + b - 1, which wraps for a stride near 2^63.
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? a / b + (a % b != 0) : -((-a) / b); }

// Output positions o in [0, n_out) whose input index o*s + off falls in [0, n_in).
inline void valid_range(int64_t n_out, int64_t n_in, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, ceil_div(-off, s));
  hi = std::min<int64_t>(n_out, ceil_div(n_in - off, s));
  if (hi < lo) hi = lo;
}

// A 1x1x1 kernel with stride 1 and no padding: the input already is the im2col matrix.
bool is_pointwise(const ConvShape& s) {
  for (int d = 0; d < 3; ++d)
    if (s.k[d] != 1 || s.stride[d] != 1 || s.pad0[d] != 0 || s.out[d] != s.in[d]) return false;
  return true;
}

// Columns [p0, p1) of the im2col matrix of one image's group: x (Cg, D, H, W) ->
// col (Cg*kD*kH*kW, p1 - p0), row r = ((c*kD + a)*kH + b)*kW + e, column p an
// output position (od*Ho + oh)*Wo + ow. A column chunk of a few hundred KB stays
// in L2 between being written here and being packed by the GEMM.
template <class T>
void im2col(const ConvShape& s, const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) {
  const int64_t kk = s.k_size(), rows = s.Cg() * kk, width = ld;
  const int64_t Ho = s.out[1], Wo = s.out[2];
  const int64_t D = s.in[0], H = s.in[1], W = s.in[2], sw = s.stride[2];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / kk, kr = r % kk;
    const int64_t a = kr / (s.k[1] * s.k[2]), b = (kr / s.k[2]) % s.k[1], e = kr % s.k[2];
    const int64_t offw = e * s.dil[2] - s.pad0[2];
    int64_t lo, hi;
    valid_range(Wo, W, sw, offw, lo, hi);
    T* dst = col + r * width;
    // Position of p as (od, oh, ow0), stepped rather than divided per segment
    // (three 64-bit divisions per 32-column segment showed up in C = 3 layers).
    int64_t ow0 = p0 % Wo, oh = (p0 / Wo) % Ho, od = p0 / (Wo * Ho);
    for (int64_t p = p0; p < p1; ow0 = 0, oh = (oh + 1 == Ho) ? 0 : oh + 1, od += (oh == 0)) {
      const int64_t len = std::min(p1 - p, Wo - ow0), ow1 = ow0 + len;
      const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
      const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
      T* d = dst - ow0;  // d[ow] is this segment's output column ow
      if (id < 0 || id >= D || ih < 0 || ih >= H) {
        std::fill(d + ow0, d + ow1, T(0));
      } else {
        const T* src = x + ((c * D + id) * H + ih) * W + offw;
        const int64_t vlo = std::clamp(lo, ow0, ow1), vhi = std::clamp(hi, vlo, ow1);
        std::fill(d + ow0, d + vlo, T(0));
        if (sw == 1) {
          std::memcpy(d + vlo, src + vlo, sizeof(T) * (vhi - vlo));
        } else {
          for (int64_t ow = vlo; ow < vhi; ++ow) d[ow] = src[ow * sw];
        }
        std::fill(d + vhi, d + ow1, T(0));
      }
      dst += len;
      p += len;
    }
  }
}

// The adjoint of im2col over the same column chunk: dx (Cg, D, H, W) += scatter
// of col, for channels [c0, c1) (channels own disjoint parts of dx).
template <class T>
void col2im(const ConvShape& s, const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1,
            int64_t ld = 0) {
  const int64_t kk = s.k_size(), width = ld > 0 ? ld : p1 - p0;
  const int64_t Ho = s.out[1], Wo = s.out[2];
  const int64_t D = s.in[0], H = s.in[1], W = s.in[2], sw = s.stride[2];
  for (int64_t r = c0 * kk; r < c1 * kk; ++r) {
    const int64_t c = r / kk, kr = r % kk;
    const int64_t a = kr / (s.k[1] * s.k[2]), b = (kr / s.k[2]) % s.k[1], e = kr % s.k[2];
    const int64_t offw = e * s.dil[2] - s.pad0[2];
    int64_t lo, hi;
    valid_range(Wo, W, sw, offw, lo, hi);
    const T* src = col + r * width;
    int64_t ow0 = p0 % Wo, oh = (p0 / Wo) % Ho, od = p0 / (Wo * Ho);  // stepped as in im2col
    for (int64_t p = p0; p < p1; ow0 = 0, oh = (oh + 1 == Ho) ? 0 : oh + 1, od += (oh == 0)) {
      const int64_t len = std::min(p1 - p, Wo - ow0), ow1 = ow0 + len;
      const int64_t id = od * s.stride[0] - s.pad0[0] + a * s.dil[0];
      const int64_t ih = oh * s.stride[1] - s.pad0[1] + b * s.dil[1];
      if (id >= 0 && id < D && ih >= 0 && ih < H) {
        const T* g = src - ow0;
        T* row = dx + ((c * D + id) * H + ih) * W + offw;
        const int64_t vlo = std::clamp(lo, ow0, ow1), vhi = std::clamp(hi, vlo, ow1);
        if (sw == 1) {
          for (int64_t ow = vlo; ow < vhi; ++ow) row[ow] += g[ow];
        } else {
          for (int64_t ow = vlo; ow < vhi; ++ow) row[ow * sw] += g[ow];
        }
      }
      src += len;
      p += len;
    }
  }
}

// Output columns per im2col chunk: about 128 KiB of float32 column matrix, in
// whole 16-column micro-panels, so the chunk is packed from L2.
int64_t chunk_columns(int64_t CK, int64_t P, int64_t target_elems) {
  int64_t pc = std::max<int64_t>(64, target_elems / std::max<int64_t>(CK, 1));
  pc = (pc + 15) / 16 * 16;
  return std::min(pc, P);
}

// rows (count, stride ld) of width n: row i += b[i].
template <class T>
void add_bias_rows(T* y, const T* b, int64_t count, int64_t ld, int64_t n) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = b[i];
    T* row = y + i * ld;
    for (int64_t j = 0; j < n; ++j) row[j] += v;
  }
}

// Below this many output positions per image, one image's GEMM is close to a
// matrix-vector product that streams the whole weight per image (ResNet-18 on
// 32x32 inputs: layer4's 3x3 conv has P = 1 and a 9.4 MB weight, 16 ms for a
// batch of 32 against 1.1 ms in PyTorch). The batched paths below put the
// columns of several images side by side so they share one pass over the weight.
constexpr int64_t kSmallOutput = 64;
constexpr int64_t kBatchedColumns = 256;

// Images per batched GEMM: about kBatchedColumns columns, but at least one block
// per thread when the batch allows it.
int64_t images_per_block(const ConvShape& s) {
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t want = (kBatchedColumns + s.out_size() - 1) / s.out_size();
  const int64_t fair = (s.N + threads - 1) / threads;
  return std::max<int64_t>(1, std::min(want, fair));
}

template <class T>
struct BatchedBuffers {
  AlignedPtr<T> col, tmp;
};

template <class T>
void forward_gemm_batched(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const int64_t CK = Cg * s.k_size(), nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(Kg, CK, w + g * Kg * CK, CK, int64_t(1));
  dynamic_tasks(
      blocks * G,
      [&] { return BatchedBuffers<T>{aligned_alloc_array<T>(CK * nb * P), aligned_alloc_array<T>(Kg * nb * P)}; },
      [&](int64_t t, BatchedBuffers<T>& buf) {
        const int64_t g = t % G, n0 = (t / G) * nb, n1 = std::min(s.N, n0 + nb), cols = (n1 - n0) * P;
        // col (CK, cols): image n's columns start at (n - n0) * P.
        for (int64_t n = n0; n < n1; ++n) im2col(s, x + (n * s.C + g * Cg) * inS, buf.col.get() + (n - n0) * P,
                                                 int64_t(0), P, cols);
        lhs[g].multiply(cols, buf.col.get(), cols, int64_t(1), buf.tmp.get(), cols, false);
        for (int64_t n = n0; n < n1; ++n) {
          T* yg = y + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k) {
            const T* src = buf.tmp.get() + k * cols + (n - n0) * P;
            const T b = bias ? bias[g * Kg + k] : T(0);
            for (int64_t p = 0; p < P; ++p) yg[k * P + p] = src[p] + b;
          }
        }
      });
}

template <class T>
void backward_data_gemm_batched(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const int64_t CK = Cg * s.k_size(), nb = images_per_block(s), blocks = (s.N + nb - 1) / nb;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  // col (CK, cols) = w_g^T (CK, Kg) * dy (Kg, cols)
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(CK, Kg, w + g * Kg * CK, int64_t(1), CK);
  dynamic_tasks(
      blocks * G,
      [&] { return BatchedBuffers<T>{aligned_alloc_array<T>(CK * nb * P), aligned_alloc_array<T>(Kg * nb * P)}; },
      [&](int64_t t, BatchedBuffers<T>& buf) {
        const int64_t g = t % G, n0 = (t / G) * nb, n1 = std::min(s.N, n0 + nb), cols = (n1 - n0) * P;
        for (int64_t n = n0; n < n1; ++n) {
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k)
            std::copy(dyg + k * P, dyg + (k + 1) * P, buf.tmp.get() + k * cols + (n - n0) * P);
        }
        lhs[g].multiply(cols, buf.tmp.get(), cols, int64_t(1), buf.col.get(), cols, false);
        for (int64_t n = n0; n < n1; ++n) {
          T* dxg = gx + (n * s.C + g * Cg) * inS;
          std::fill(dxg, dxg + Cg * inS, T(0));
          col2im(s, buf.col.get() + (n - n0) * P, dxg, int64_t(0), P, int64_t(0), Cg, cols);
        }
      });
}

template <class T>
void forward_gemm(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  if (s.out_size() < kSmallOutput && s.N > 1) return forward_gemm_batched(s, x, w, bias, y);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const int64_t CK = Cg * s.k_size();
  const bool direct = is_pointwise(s);
  const int64_t PC = chunk_columns(CK, P, direct ? 65536 : 32768), nch = (P + PC - 1) / PC;
  std::vector<GemmLhs<T>> lhs;
  lhs.reserve(G);
  for (int64_t g = 0; g < G; ++g) lhs.emplace_back(Kg, CK, w + g * Kg * CK, CK, int64_t(1));
  // Tasks are (image, group, column chunk); every task writes its own block of y.
  dynamic_tasks(
      s.N * G * nch, [&] { return aligned_alloc_array<T>(direct ? 1 : CK * PC); },
      [&](int64_t t, AlignedPtr<T>& col) {
        const int64_t ch = t % nch, g = (t / nch) % G, n = t / (nch * G);
        const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
        const T* xg = x + (n * s.C + g * Cg) * inS;
        T* yg = y + (n * s.K + g * Kg) * P;
        if (direct) {
          lhs[g].multiply(p1 - p0, xg + p0, P, int64_t(1), yg + p0, P, false);
        } else {
          im2col(s, xg, col.get(), p0, p1, p1 - p0);
          lhs[g].multiply(p1 - p0, col.get(), p1 - p0, int64_t(1), yg + p0, P, false);
        }
        if (bias) add_bias_rows(yg + p0, bias + g * Kg, Kg, P, p1 - p0);
      });
}

template <class T>
void backward_data_gemm(const ConvShape& s, const T* gy, const T* w, T* gx) {
  if (s.out_size() < kSmallOutput && s.N > 1) return backward_data_gemm_batched(s, gy, w, gx);
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const int64_t CK = Cg * s.k_size();
  const bool direct = is_pointwise(s);
  const int64_t threads = in_parallel_region() ? 1 : get_num_threads();
  if (s.N * G >= threads) {
    // Tasks are (image, group): the chunks of one task scatter into the same
    // part of grad_x, so they stay on one thread. Chunks of ~512 KiB (half of
    // this core's L2): with the deep column matrices of transposed layers
    // (CK = 1024) a 128 KiB chunk left the GEMM only 64 columns per call.
    const int64_t PC = chunk_columns(CK, P, 131072), nch = (P + PC - 1) / PC;
    std::vector<GemmLhs<T>> lhs;
    lhs.reserve(G);
    // col (CK, P) = w_g^T (CK, Kg) * dy_g (Kg, P)
    for (int64_t g = 0; g < G; ++g) lhs.emplace_back(CK, Kg, w + g * Kg * CK, int64_t(1), CK);
    dynamic_tasks(
        s.N * G, [&] { return aligned_alloc_array<T>(direct ? 1 : CK * PC); },
        [&](int64_t t, AlignedPtr<T>& col) {
          const int64_t g = t % G, n = t / G;
          T* dxg = gx + (n * s.C + g * Cg) * inS;
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          if (direct) {
            lhs[g].multiply(P, dyg, P, int64_t(1), dxg, P, false);
            return;
          }
          std::fill(dxg, dxg + Cg * inS, T(0));
          for (int64_t ch = 0; ch < nch; ++ch) {
            const int64_t p0 = ch * PC, p1 = std::min(P, p0 + PC);
            lhs[g].multiply(p1 - p0, dyg + p0, P, int64_t(1), col.get(), p1 - p0, false);
            col2im(s, col.get(), dxg, p0, p1, 0, Cg);
          }
        });
    return;
  }
  // Fewer (image, group) pairs than threads: the whole column matrix at once,
  // the GEMM split across threads, then col2im split by channels.
  AlignedPtr<T> col = aligned_alloc_array<T>(direct ? 1 : CK * P);
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      T* dxg = gx + (n * s.C + g * Cg) * inS;
      const T* dyg = gy + (n * s.K + g * Kg) * P;
      if (direct) {
        gemm(CK, P, Kg, w + g * Kg * CK, int64_t(1), CK, dyg, P, int64_t(1), dxg, P, false);
        continue;
      }
      gemm(CK, P, Kg, w + g * Kg * CK, int64_t(1), CK, dyg, P, int64_t(1), col.get(), P, false);
      std::fill(dxg, dxg + Cg * inS, T(0));
      parallel_for(0, Cg, 1, [&](int64_t c0, int64_t c1) { col2im(s, col.get(), dxg, int64_t(0), P, c0, c1); });
    }
  }
}

template <class T>
void backward_weight_gemm(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg(), P = s.out_size(), inS = s.in_size();
  const int64_t CK = Cg * s.k_size(), wsize = s.K * CK;
  // A small batch of small images (ResNet-18 on 32x32: layer4's grad_w has only
  // N*P = 32 reduction columns) made the per-thread partial grad_w copies below
  // and their sum cost 7.6 ms against ~1 ms of arithmetic. With at most 256
  // reduction columns the column matrix is built once for the whole batch and
  // gemm() splits grad_w across threads: no partials, and bits independent of
  // threads. (At 32x 8x8 images, 2048 columns, the partials were cheaper: 2.5 vs 3.4 ms.)
  const int64_t NP = s.N * P;
  if (NP <= 256) {
    AlignedPtr<T> col = aligned_alloc_array<T>(CK * NP), dyb = aligned_alloc_array<T>(Kg * NP);
    for (int64_t g = 0; g < G; ++g) {
      parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const T* dyg = gy + (n * s.K + g * Kg) * P;
          for (int64_t k = 0; k < Kg; ++k) std::memcpy(dyb.get() + k * NP + n * P, dyg + k * P, sizeof(T) * P);
          im2col(s, x + (n * s.C + g * Cg) * inS, col.get() + n * P, int64_t(0), P, NP);
        }
      });
      // dw_g (Kg, CK) += dy (Kg, NP) * col^T (NP, CK)
      gemm(Kg, CK, NP, dyb.get(), NP, int64_t(1), col.get(), int64_t(1), NP, gw + g * Kg * CK, CK, true);
    }
    return;
  }
  // The GEMM's inner dimension runs over output positions; every call reads and
  // writes all of grad_w's group block, so each call gets a long inner dimension
  // (kd columns, ~4 MiB of column matrix): a chunk of one image when the image
  // is large, several whole images when it is small (14x14 layers).
  const int64_t kd = std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(CK, 1), 256, 2048);
  const int64_t per_chunk = P >= kd ? (P + (P + kd - 1) / kd - 1) / ((P + kd - 1) / kd) : P;
  const int64_t nch = (P + per_chunk - 1) / per_chunk;
  const int64_t imgs = P >= kd ? 1 : std::max<int64_t>(1, std::min<int64_t>(s.N, kd / P));
  const int64_t nblk = (s.N + imgs - 1) / imgs;
  const int64_t width_max = imgs * per_chunk;
  const int64_t tasks = nblk * G * nch;
  const int64_t threads = in_parallel_region() ? 1 : std::min<int64_t>(get_num_threads(), tasks);
  // One partial grad_w per thread's contiguous task range, summed in range
  // order afterwards: the same bits for the same thread count on every run.
  std::vector<AlignedPtr<T>> partial(threads);
  parallel_for(0, threads, 1, [&](int64_t r0, int64_t r1) {
    AlignedPtr<T> col = aligned_alloc_array<T>(CK * width_max);
    AlignedPtr<T> dyb = aligned_alloc_array<T>(Kg * width_max);
    for (int64_t r = r0; r < r1; ++r) {
      T* dw = gw;
      if (threads > 1) {
        partial[r] = aligned_alloc_array<T>(wsize);
        std::fill(partial[r].get(), partial[r].get() + wsize, T(0));
        dw = partial[r].get();
      }
      for (int64_t t = r * tasks / threads; t < (r + 1) * tasks / threads; ++t) {
        const int64_t ch = t % nch, g = (t / nch) % G, blk = t / (nch * G);
        const int64_t p0 = ch * per_chunk, p1 = std::min(P, p0 + per_chunk), w1 = p1 - p0;
        const int64_t n0 = blk * imgs, n1 = std::min(s.N, n0 + imgs), width = (n1 - n0) * w1;
        // Gather grad_y (Kg, width) and the column matrix (CK, width) of the
        // task's images side by side.
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t off = (n - n0) * w1;
          const T* dyg = gy + (n * s.K + g * Kg) * P + p0;
          for (int64_t k = 0; k < Kg; ++k) std::memcpy(dyb.get() + k * width + off, dyg + k * P, sizeof(T) * w1);
          im2col(s, x + (n * s.C + g * Cg) * inS, col.get() + off, p0, p1, width);
        }
        // dw_g (Kg, CK) += dy (Kg, width) * col^T (width, CK)
        gemm_serial(Kg, CK, width, dyb.get(), width, int64_t(1), col.get(), int64_t(1), width, dw + g * Kg * CK, CK,
                    true);
      }
    }
  });
  if (threads > 1) {
    parallel_for(0, wsize, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t r = 0; r < threads; ++r) {
        const T* src = partial[r].get();
        for (int64_t i = i0; i < i1; ++i) gw[i] += src[i];
      }
    });
  }
}

bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.Cg() == 1; }

// Depthwise layers, one (image, channel) plane per task; see conv_depthwise.h.
template <class T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1 along W: the padded-plane kernel (no edge cases); otherwise the
  // row-at-a-time kernel.
  const bool padded = s.stride[2] == 1;
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  const int64_t scratch = padded && !direct ? dw_generic::dw_padded_size(s) : 1;
  dynamic_tasks(
      s.N * s.K, [&] { return aligned_alloc_array<T>(scratch); },
      [&](int64_t nk, AlignedPtr<T>& buf) {
        const int64_t n = nk / s.K, k = nk % s.K;
        const T* xp = x + (n * s.C + k / Kg) * inS;
        if constexpr (std::is_same_v<T, float>) {
          if (direct) {
            avx2_impl::dw_direct_plane(s, xp, w + k * ks, bias ? bias[k] : 0.0f, y + nk * P);
            return;
          }
          if (vec) {
            if (padded) avx2_impl::dw_forward_plane_padded(s, xp, w + k * ks, y + nk * P, buf.get());
            else avx2_impl::dw_forward_plane(s, xp, w + k * ks, y + nk * P);
            if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
            return;
          }
        }
        if (padded) dw_generic::dw_forward_plane_padded<T>(s, xp, w + k * ks, y + nk * P, buf.get());
        else dw_generic::dw_forward_plane<T>(s, xp, w + k * ks, y + nk * P);
        if (bias) add_bias_rows(y + nk * P, bias + k, int64_t(1), P, P);
      });
}

template <class T>
void depthwise_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  // Stride 1, dilation 1, one output per input channel: grad_x is the forward
  // convolution of grad_y with the flipped taps and padding k-1-p, which the
  // register-blocked forward kernel computes with plain stores.
  ConvShape t = s;
  if (Kg == 1) {
    for (int d = 0; d < 3; ++d) {
      std::swap(t.in[d], t.out[d]);
      t.pad0[d] = s.k[d] - 1 - s.pad0[d];
      t.pad1[d] = s.k[d] - 1 - s.pad1[d];
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (vec && Kg == 1 && avx2_impl::dw_direct_applicable(s) && avx2_impl::dw_direct_applicable(t)) {
      parallel_for(0, s.N * s.C, 1, [&](int64_t b, int64_t e) {
        float flipped[25];
        for (int64_t nc = b; nc < e; ++nc) {
          const int64_t c = nc % s.C;
          for (int64_t i = 0; i < ks; ++i) flipped[i] = w[c * ks + ks - 1 - i];
          avx2_impl::dw_direct_plane(t, gy + nc * P, flipped, 0.0f, gx + nc * inS);
        }
      });
      return;
    }
  }
  parallel_for(0, s.N * s.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(P * ks * Kg, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t nc = b; nc < e; ++nc) {
                   const int64_t n = nc / s.C, c = nc % s.C;
                   T* dst = gx + nc * inS;
                   std::fill(dst, dst + inS, T(0));
                   for (int64_t j = 0; j < Kg; ++j) {
                     const int64_t k = c * Kg + j;
                     const T* g = gy + (n * s.K + k) * P;
                     if constexpr (std::is_same_v<T, float>) {
                       if (vec) {
                         avx2_impl::dw_backward_data_plane(s, g, w + k * ks, dst);
                         continue;
                       }
                     }
                     dw_generic::dw_backward_data_plane<T>(s, g, w + k * ks, dst);
                   }
                 }
               });
}

template <class T>
void depthwise_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw) {
  const int64_t Kg = s.Kg(), P = s.out_size(), inS = s.in_size(), ks = s.k_size();
  const bool vec = std::is_same_v<T, float> && use_avx2();
  const bool direct = vec && avx2_impl::dw_direct_applicable(s);
  // One thread owns each output channel's taps and sums images in order:
  // the result does not depend on the thread count.
  parallel_for(0, s.K, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      for (int64_t n = 0; n < s.N; ++n) {
        const T* g = gy + (n * s.K + k) * P;
        const T* xp = x + (n * s.C + k / Kg) * inS;
        if constexpr (std::is_same_v<T, float>) {
          if (direct) {
            avx2_impl::dw_direct_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
          if (vec) {
            avx2_impl::dw_backward_weight_plane(s, g, xp, gw + k * ks);
            continue;
          }
        }
        dw_generic::dw_backward_weight_plane<T>(s, g, xp, gw + k * ks);
      }
    }
  });
}

}  // namespace

bool winograd_applicable(const ConvShape& s) {
  return s.in[0] == 1 && s.out[0] == 1 && s.k[0] == 1 && s.pad0[0] == 0 && s.k[1] == 3 && s.k[2] == 3 &&
         s.stride[1] == 1 && s.stride[2] == 1 && s.dil[1] == 1 && s.dil[2] == 1;
}

// Auto: Winograd F(4x4,3x3) does 36 multiplies per 4x4 output tile where direct
// convolution does 144, but pays two transforms per tile and a transformed
// weight per call; it wins when both channel counts per group are large enough
// for its 36 small GEMMs to run near peak (>= 16 each) and the output has at
// least one full 4x4 tile row worth of work (Ho, Wo >= 4). Depthwise and other
// thin-group layers stay on im2col + GEMM; depthwise ones (one input channel per
// group) take the direct kernel, whatever the dtype. float64 always takes GEMM: it exists
// for gradient checks, where the plainer path is the better oracle.
ConvAlgo choose_algo(const ConvShape& s, bool is_float32) {
  if (is_depthwise(s)) return ConvAlgo::Direct;
  if (!is_float32 || !winograd_applicable(s)) return ConvAlgo::Gemm;
  // Below 8x8 outputs most of each 4x4 Winograd tile is padding (ResNet-18 at 32x32:
  // 4x4 maps ran 2.1 ms with Winograd against 1.6 ms with GEMM).
  if (s.Cg() >= 16 && s.Kg() >= 16 && s.out[1] >= 8 && s.out[2] >= 8) return ConvAlgo::Winograd;
  return ConvAlgo::Gemm;
}

template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, ConvAlgo algo) {
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    winograd_conv2d<T>(s.N, s.C, s.K, s.groups, s.in[1], s.in[2], s.out[1], s.out[2], s.pad0[1], s.pad0[2], x, w,
                       bias, y);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_forward(s, x, w, bias, y);
  forward_gemm(s, x, w, bias, y);
}

template <class T>
void conv_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx, ConvAlgo algo) {
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Winograd && winograd_applicable(s)) {
    // For stride 1, grad_x is the convolution of grad_y with the kernel rotated by
    // 180 degrees and its two channel axes swapped (within each group), offset by
    // 2 - pad; the Winograd driver accepts any (even negative) offset.
    const int64_t G = s.groups, Cg = s.Cg(), Kg = s.Kg();
    AlignedPtr<T> wt = aligned_alloc_array<T>(s.K * Cg * 9);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t t = 0; t < 9; ++t)
            wt[((g * Cg + c) * Kg + k) * 9 + (8 - t)] = w[((g * Kg + k) * Cg + c) * 9 + t];
    winograd_conv2d<T>(s.N, s.K, s.C, G, s.out[1], s.out[2], s.in[1], s.in[2], 2 - s.pad0[1], 2 - s.pad0[2], gy,
                       wt.get(), static_cast<const T*>(nullptr), gx);
    return;
  }
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_data(s, gy, w, gx);
  backward_data_gemm(s, gy, w, gx);
}

template <class T>
void conv_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo algo) {
  if (algo == ConvAlgo::Auto) algo = choose_algo(s, std::is_same_v<T, float>);
  if (algo == ConvAlgo::Direct && is_depthwise(s)) return depthwise_backward_weight(s, gy, x, gw);
  backward_weight_gemm(s, gy, x, gw);
}

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
  template void conv_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, ConvAlgo);       \
  template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);           \
  template void conv_backward_weight<T>(const ConvShape&, const T*, const T*, T*, ConvAlgo);                \
  template void bias_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                            \
  template void bias_backward<T>(const T*, T*, int64_t, int64_t, int64_t);                           \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);      \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

#if !CNNFAST_HAVE_AVX2_BUILD
// Non-x86 builds have no AVX2 translation unit; use_avx2() is always false there.
namespace avx2_impl {
void dw_forward_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_forward_plane_padded(const ConvShape&, const float*, const float*, float*, float*) {}
void dw_backward_data_plane(const ConvShape&, const float*, const float*, float*) {}
void dw_backward_weight_plane(const ConvShape&, const float*, const float*, float*) {}
bool dw_direct_applicable(const ConvShape&) { return false; }
void dw_direct_plane(const ConvShape&, const float*, const float*, float, float*) {}
void dw_direct_weight_plane(const ConvShape&, const float*, const float*, float*) {}
}  // namespace avx2_impl
#endif

}  // namespace cnnfast::cpu
