// CUDA convolution, linear and GEMM: one implicit-GEMM kernel serves the plain
// GEMM and the three convolution passes. Per group g the passes are
//   forward:      y[k, (n,o)]     = sum_{(c,t)}   w[k, c, t]   * x[n, c, o*s - p + t*d]
//   backward data: gx[c, (n,i)]   = sum_{(k,t)}   w[k, c, t]   * gy[n, k, (i + p - t*d) / s]
//   backward weight: gw[k, (c,t)] += sum_{(n,o)} gy[n, k, o]   * x[n, c, o*s - p + t*d]
// and the kernel gathers its A (M x K) and B (K x N) tiles straight from those
// arrays into shared memory (no im2col buffer), zero where a tap falls into the
// padding or (backward data) between strided outputs.
//
// Tiling: a 64 x 128 output tile per 256-thread block, K in steps of 16; float
// kernels are capped at 128 registers so two blocks share an SM, double ones
// keep the registers their 4 x 8 double accumulators need (one block per SM). The
// next K step's operands are loaded into registers while the current one is
// multiplied out of shared memory, so global latency hides behind the FMAs.
// Exact path: each thread owns a 4 x 8 register block (rows ty + 16 i, columns
// tx + 16 j, so shared reads are broadcasts or conflict-free). TF32 path (float
// only, opt-in): eight warps each own a 32 x 32 block of 2 x 2 wmma m16n16k8
// TF32 fragments, operands rounded to TF32 when they are stored to shared memory,
// FP32 accumulation; the tile goes back through shared memory so the epilogue's
// global writes are coalesced. The weight gradient reduces over N * out, which is
// long while its output is small, so it splits K across blocks (atomicAdd into
// grad_w, which the contract accumulates into anyway).
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/conv.cuh"
#include "cuda/reduce.cuh"

namespace cnnfast::cuda {
namespace {

std::atomic<bool> g_allow_tf32{false};

enum Mode { kGemm = 0, kFwd = 1, kBwdData = 2, kBwdWeight = 3 };

constexpr int BM = 64, BN = 128, BK = 16, THREADS = 256, PAD = 4;
constexpr int TM = BM / 16, TN = BN / 16;
constexpr int A_LOADS = BM * BK / THREADS, B_LOADS = BK * BN / THREADS;
constexpr int LDA = BM + PAD, LDB = BN + PAD;  // +4 floats keeps wmma's 16-byte ldm rule and breaks bank strides

// The operand gathers and the epilogue are host-callable too, so their index
// arithmetic can be checked against the CPU convolution without a GPU.

// Division of a non-negative int n < 2^31 by a fixed divisor as a multiply-high,
// shift and add (Granlund-Montgomery with a 33-bit magic split into m and the
// add of n); the gathers divide by kernel and image extents on every load.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  void set(int divisor) {
    d = uint32_t(divisor);
    s = 0;
    while ((uint64_t(1) << s) < d) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
  __host__ __device__ __forceinline__ int div(int n) const {
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi(uint32_t(n), m);
#else
    const uint32_t hi = uint32_t((uint64_t(uint32_t(n)) * m) >> 32);
#endif
    return int((hi + uint32_t(n)) >> s);
  }
};

// ConvShape in 32-bit coordinates (conv_shape_supported bounds every count).
struct Geo {
  int C, K, Cg, Kg;
  int in[3], out[3], k[3], st[3], dil[3], pad[3];
  int in_size, out_size, ksz;
  bool pointwise;  // 1x1x1 kernel, stride 1, no padding: input and output positions coincide
  FastDiv fin[3], fout[3], fk[3], fst[3], fin_size, fout_size, fksz;
};

struct Params {
  Geo g;
  int64_t M, Ncols, Kdim;  // the per-group GEMM
  const void* a;
  const void* b;
  void* c;
  int64_t rs_a, cs_a, rs_b, cs_b, ldc;  // plain GEMM only
  bool accumulate;                      // plain GEMM: C += instead of C =
  bool atomic;                          // weight gradient split over K
  bool a_m_fast, b_k_fast;              // which index runs along the warp when loading
  int groups, splits;
  int64_t kchunk;
};

__host__ __device__ __forceinline__ void split3(int v, const FastDiv d[3], int& a, int& b, int& c) {
  const int q2 = d[2].div(v);
  c = v - q2 * int(d[2].d);
  a = d[1].div(q2);
  b = q2 - a * int(d[1].d);
}

template <class T, int MODE>
__host__ __device__ __forceinline__ T load_a(const Params& p, int gi, int64_t m, int64_t k) {
  const T* a = static_cast<const T*>(p.a);
  const Geo& g = p.g;
  if constexpr (MODE == kGemm) {
    return a[m * p.rs_a + k * p.cs_a];
  } else if constexpr (MODE == kFwd) {
    return a[(int64_t(gi) * g.Kg + m) * p.Kdim + k];  // w (K, Cg*ksz)
  } else if constexpr (MODE == kBwdData) {
    const int kk = g.fksz.div(int(k)), t = int(k) - kk * g.ksz;  // m = c
    return a[((int64_t(gi) * g.Kg + kk) * g.Cg + m) * g.ksz + t];
  } else {
    const int img = g.fout_size.div(int(k)), o = int(k) - img * g.out_size;  // m = output channel in group
    return a[(int64_t(img) * g.K + int64_t(gi) * g.Kg + m) * g.out_size + o];
  }
}

// x at output position o and tap t of image img, channel c (of the group), or 0 in the padding.
template <class T>
__host__ __device__ __forceinline__ T gather_x(const T* x, const Geo& g, int gi, int img, int c, int o, int t) {
  if (g.pointwise) return x[(int64_t(img) * g.C + int64_t(gi) * g.Cg + c) * g.in_size + o];
  int o0, o1, o2, t0, t1, t2;
  split3(o, g.fout, o0, o1, o2);
  split3(t, g.fk, t0, t1, t2);
  const int i0 = o0 * g.st[0] - g.pad[0] + t0 * g.dil[0];
  const int i1 = o1 * g.st[1] - g.pad[1] + t1 * g.dil[1];
  const int i2 = o2 * g.st[2] - g.pad[2] + t2 * g.dil[2];
  if (unsigned(i0) >= unsigned(g.in[0]) || unsigned(i1) >= unsigned(g.in[1]) || unsigned(i2) >= unsigned(g.in[2]))
    return T(0);
  return x[(int64_t(img) * g.C + int64_t(gi) * g.Cg + c) * g.in_size + (int64_t(i0) * g.in[1] + i1) * g.in[2] + i2];
}

template <class T, int MODE>
__host__ __device__ __forceinline__ T load_b(const Params& p, int gi, int64_t k, int64_t n) {
  const T* b = static_cast<const T*>(p.b);
  const Geo& g = p.g;
  if constexpr (MODE == kGemm) {
    return b[k * p.rs_b + n * p.cs_b];
  } else if constexpr (MODE == kFwd) {
    const int c = g.fksz.div(int(k)), t = int(k) - c * g.ksz;
    const int img = g.fout_size.div(int(n)), o = int(n) - img * g.out_size;
    return gather_x(b, g, gi, img, c, o, t);
  } else if constexpr (MODE == kBwdData) {
    const int kk = g.fksz.div(int(k)), t = int(k) - kk * g.ksz;
    const int img = g.fin_size.div(int(n)), ip = int(n) - img * g.in_size;
    if (g.pointwise) return b[(int64_t(img) * g.K + int64_t(gi) * g.Kg + kk) * g.out_size + ip];
    int i0, i1, i2, t0, t1, t2;
    split3(ip, g.fin, i0, i1, i2);
    split3(t, g.fk, t0, t1, t2);
    const int i[3] = {i0, i1, i2}, tt[3] = {t0, t1, t2};
    int o[3];
#pragma unroll
    for (int d = 0; d < 3; ++d) {
      const int num = i[d] + g.pad[d] - tt[d] * g.dil[d];
      if (num < 0) return T(0);
      o[d] = g.fst[d].div(num);
      if (o[d] * g.st[d] != num || o[d] >= g.out[d]) return T(0);
    }
    return b[(int64_t(img) * g.K + int64_t(gi) * g.Kg + kk) * g.out_size + (int64_t(o[0]) * g.out[1] + o[1]) * g.out[2] +
             o[2]];
  } else {
    const int img = g.fout_size.div(int(k)), o = int(k) - img * g.out_size;
    const int c = g.fksz.div(int(n)), t = int(n) - c * g.ksz;
    return gather_x(b, g, gi, img, c, o, t);
  }
}

template <class T, int MODE>
__host__ __device__ __forceinline__ void store_c(const Params& p, int gi, int64_t m, int64_t n, T v) {
  T* c = static_cast<T*>(p.c);
  const Geo& g = p.g;
  if constexpr (MODE == kGemm) {
    T* q = c + m * p.ldc + n;
    *q = p.accumulate ? *q + v : v;
  } else if constexpr (MODE == kFwd) {
    const int img = g.fout_size.div(int(n)), o = int(n) - img * g.out_size;
    c[(int64_t(img) * g.K + int64_t(gi) * g.Kg + m) * g.out_size + o] = v;
  } else if constexpr (MODE == kBwdData) {
    const int img = g.fin_size.div(int(n)), ip = int(n) - img * g.in_size;
    c[(int64_t(img) * g.C + int64_t(gi) * g.Cg + m) * g.in_size + ip] = v;
  } else {
    T* q = c + (int64_t(gi) * g.Kg + m) * p.Ncols + n;
#ifdef __CUDA_ARCH__
    if (p.atomic) {
      atomicAdd(q, v);
      return;
    }
#endif
    *q += v;
  }
}

template <class T, bool TF32>
__device__ __forceinline__ T to_operand(T v) {
  if constexpr (TF32) return nvcuda::wmma::__float_to_tf32(v);
  return v;
}

template <class T, int MODE, bool TF32>
__global__ void __launch_bounds__(THREADS, sizeof(T) == 4 ? 2 : 1) igemm_kernel(const Params p) {
  constexpr int kMainBytes = (BK * LDA + BK * LDB) * int(sizeof(T));
  constexpr int kEpiBytes = TF32 ? BM * LDB * int(sizeof(float)) : 0;
  __shared__ __align__(128) unsigned char smem[kMainBytes > kEpiBytes ? kMainBytes : kEpiBytes];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + BK * LDA;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t tiles_m = (p.M + BM - 1) / BM;
  const int64_t n0 = int64_t(blockIdx.x) * BN;
  const int64_t zcount = int64_t(p.groups) * p.splits;

  for (int64_t z = blockIdx.z; z < zcount; z += gridDim.z) {
    const int gi = int(z / p.splits), sp = int(z % p.splits);
    const int64_t kbeg = sp * p.kchunk, kend = min(p.Kdim, kbeg + p.kchunk);
    if (kbeg >= kend) continue;  // uniform over the block: no barrier is skipped by some threads only
    for (int64_t tmi = blockIdx.y; tmi < tiles_m; tmi += gridDim.y) {
      const int64_t m0 = tmi * BM;
      T ra[A_LOADS], rb[B_LOADS];
      auto a_slot = [&](int r, int& mm, int& kk) {
        const int e = tid + r * THREADS;
        if (p.a_m_fast) {
          mm = e % BM;
          kk = e / BM;
        } else {
          kk = e % BK;
          mm = e / BK;
        }
      };
      auto b_slot = [&](int r, int& kk, int& nn) {
        const int e = tid + r * THREADS;
        if (p.b_k_fast) {
          kk = e % BK;
          nn = e / BK;
        } else {
          nn = e % BN;
          kk = e / BN;
        }
      };
      auto load_tile = [&](int64_t k0) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) {
          int mm, kk;
          a_slot(r, mm, kk);
          const int64_t m = m0 + mm, k = k0 + kk;
          ra[r] = (m < p.M && k < kend) ? load_a<T, MODE>(p, gi, m, k) : T(0);
        }
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
          int kk, nn;
          b_slot(r, kk, nn);
          const int64_t n = n0 + nn, k = k0 + kk;
          rb[r] = (n < p.Ncols && k < kend) ? load_b<T, MODE>(p, gi, k, n) : T(0);
        }
      };

      T acc[TM][TN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
      [[maybe_unused]] nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> cf[TF32 ? 2 : 1][TF32 ? 2 : 1];
      if constexpr (TF32) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(cf[i][j], 0.0f);
      }
      const int warp = tid / 32, wm = warp / 4, wn = warp % 4;

      load_tile(kbeg);
      for (int64_t k0 = kbeg; k0 < kend; k0 += BK) {
        __syncthreads();  // the previous step's reads of As/Bs are done
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) {
          int mm, kk;
          a_slot(r, mm, kk);
          As[kk * LDA + mm] = to_operand<T, TF32>(ra[r]);
        }
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
          int kk, nn;
          b_slot(r, kk, nn);
          Bs[kk * LDB + nn] = to_operand<T, TF32>(rb[r]);
        }
        __syncthreads();  // the tile is complete before anyone multiplies
        if (k0 + BK < kend) load_tile(k0 + BK);
        if constexpr (TF32) {
          using namespace nvcuda;
#pragma unroll
          for (int kk = 0; kk < BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> af[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(af[i], As + kk * LDA + wm * 32 + i * 16, LDA);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bf[j], Bs + kk * LDB + wn * 32 + j * 16, LDB);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
              for (int j = 0; j < 2; ++j) wmma::mma_sync(cf[i][j], af[i], bf[j], cf[i][j]);
          }
        } else {
#pragma unroll
          for (int kk = 0; kk < BK; ++kk) {
            T av[TM], bv[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) av[i] = As[kk * LDA + ty + 16 * i];
#pragma unroll
            for (int j = 0; j < TN; ++j) bv[j] = Bs[kk * LDB + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
              for (int j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
          }
        }
      }

      if constexpr (TF32) {
        using namespace nvcuda;
        float* Cs = reinterpret_cast<float*>(smem);
        __syncthreads();  // As/Bs are dead; Cs overlays them
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDB + wn * 32 + j * 16, cf[i][j], LDB,
                                    wmma::mem_row_major);
        __syncthreads();  // the whole tile is in Cs
        for (int e = tid; e < BM * BN; e += THREADS) {
          const int mm = e / BN, nn = e % BN;
          const int64_t m = m0 + mm, n = n0 + nn;
          if (m < p.M && n < p.Ncols) store_c<T, MODE>(p, gi, m, n, T(Cs[mm * LDB + nn]));
        }
        __syncthreads();  // Cs is read out before the next tile's operands overwrite it
      } else {
#pragma unroll
        for (int i = 0; i < TM; ++i) {
          const int64_t m = m0 + ty + 16 * i;
          if (m >= p.M) continue;
#pragma unroll
          for (int j = 0; j < TN; ++j) {
            const int64_t n = n0 + tx + 16 * j;
            if (n < p.Ncols) store_c<T, MODE>(p, gi, m, n, acc[i][j]);
          }
        }
      }
    }
  }
}

int sm_count() {
  static int count = [] {
    int dev = 0, n = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) n = 108;
    return n > 0 ? n : 108;
  }();
  return count;
}

template <class T, int MODE>
void launch(Params& p, bool tf32, const char* name) {
  if (p.M <= 0 || p.Ncols <= 0) return;
  if (p.splits < 1) p.splits = 1;
  if (p.kchunk <= 0) p.kchunk = p.Kdim;
  const int64_t tiles_n = (p.Ncols + BN - 1) / BN, tiles_m = (p.M + BM - 1) / BM;
  if (tiles_n > INT_MAX) throw CudaError(std::string(name) + ": too many output columns for one launch");
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(std::min<int64_t>(tiles_m, 65535)),
                  static_cast<unsigned>(std::min<int64_t>(int64_t(p.groups) * p.splits, 65535)));
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) {
      igemm_kernel<float, MODE, true><<<grid, THREADS, 0, current_stream()>>>(p);
      check_launch(name);
      return;
    }
  }
  igemm_kernel<T, MODE, false><<<grid, THREADS, 0, current_stream()>>>(p);
  check_launch(name);
}

Params conv_params(const ConvShape& s) {
  Params p{};
  Geo& g = p.g;
  g.C = int(s.C);
  g.K = int(s.K);
  g.Cg = int(s.Cg());
  g.Kg = int(s.Kg());
  for (int d = 0; d < 3; ++d) {
    g.in[d] = int(s.in[d]);
    g.out[d] = int(s.out[d]);
    g.k[d] = int(s.k[d]);
    g.st[d] = int(s.stride[d]);
    g.dil[d] = int(s.dil[d]);
    g.pad[d] = int(s.pad0[d]);
  }
  g.in_size = int(s.in_size());
  g.out_size = int(s.out_size());
  g.ksz = int(s.k_size());
  for (int d = 0; d < 3; ++d) {
    g.fin[d].set(g.in[d]);
    g.fout[d].set(g.out[d]);
    g.fk[d].set(g.k[d]);
    g.fst[d].set(g.st[d]);
  }
  g.fin_size.set(g.in_size);
  g.fout_size.set(g.out_size);
  g.fksz.set(g.ksz);
  g.pointwise = g.ksz == 1 && g.in_size == g.out_size;
  for (int d = 0; d < 3; ++d) g.pointwise = g.pointwise && g.st[d] == 1 && g.pad[d] == 0;
  p.groups = int(s.groups);
  p.splits = 1;
  return p;
}

// ---- depthwise (one input channel per group) -----------------------------------------
// The implicit GEMM would have M = K/groups rows (usually 1-2) in 64-row tiles, so
// depthwise layers get direct kernels: one thread per output (forward) or input
// (backward data) element, one block per weight element (backward weight). The
// per-element sums are host-callable for the same CPU check as the gathers.

// y[n, k, o] with k's input channel c = k / Kg.
template <class T>
__host__ __device__ T dw_forward_value(const Geo& g, const T* x, const T* w, int64_t n, int k, int o) {
  const int c = k / g.Kg;
  T acc = T(0);
  for (int t = 0; t < g.ksz; ++t) {
    const T v = gather_x(x, g, c, int(n), 0, o, t);  // group c, its only channel
    acc += w[int64_t(k) * g.ksz + t] * v;
  }
  return acc;
}

// grad_x[n, c, i] = sum over the Kg outputs of channel c and the taps that reach i.
template <class T>
__host__ __device__ T dw_backward_data_value(const Geo& g, const T* gy, const T* w, int64_t n, int c, int ip) {
  int i0, i1, i2;
  split3(ip, g.fin, i0, i1, i2);
  const int i[3] = {i0, i1, i2};
  T acc = T(0);
  for (int t = 0; t < g.ksz; ++t) {
    int t0, t1, t2;
    split3(t, g.fk, t0, t1, t2);
    const int tt[3] = {t0, t1, t2};
    int o[3];
    bool ok = true;
    for (int d = 0; d < 3 && ok; ++d) {
      const int num = i[d] + g.pad[d] - tt[d] * g.dil[d];
      o[d] = num >= 0 ? g.fst[d].div(num) : -1;
      ok = num >= 0 && o[d] * g.st[d] == num && o[d] < g.out[d];
    }
    if (!ok) continue;
    const int64_t op = (int64_t(o[0]) * g.out[1] + o[1]) * g.out[2] + o[2];
    for (int kk = 0; kk < g.Kg; ++kk) {
      const int k = c * g.Kg + kk;
      acc += w[int64_t(k) * g.ksz + t] * gy[(n * g.K + k) * g.out_size + op];
    }
  }
  return acc;
}

// One term of grad_w[k, t]: position j = n * out_size + o of the reduction.
template <class T>
__host__ __device__ T dw_backward_weight_term(const Geo& g, const T* gy, const T* x, int k, int t, int64_t j) {
  const int64_t n = g.fout_size.div(int(j));  // j < N * out_size < 2^31
  const int o = int(j - n * g.out_size);
  return gy[(n * g.K + k) * g.out_size + o] * gather_x(x, g, k / g.Kg, int(n), 0, o, t);
}

template <class T>
__global__ void dw_forward_kernel(Geo g, const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                  int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int o = int(e % g.out_size);
    const int64_t nk = e / g.out_size;
    y[e] = dw_forward_value(g, x, w, nk / g.K, int(nk % g.K), o);
  }
}

template <class T>
__global__ void dw_backward_data_kernel(Geo g, const T* __restrict__ gy, const T* __restrict__ w, T* __restrict__ gx,
                                        int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int ip = int(e % g.in_size);
    const int64_t nc = e / g.in_size;
    gx[e] = dw_backward_data_value(g, gy, w, nc / g.C, int(nc % g.C), ip);
  }
}

template <class T>
__global__ void dw_backward_weight_kernel(Geo g, const T* __restrict__ gy, const T* __restrict__ x,
                                          T* __restrict__ gw, int64_t N) {
  __shared__ T shared[32];
  const int64_t count = int64_t(g.K) * g.ksz, len = N * g.out_size;
  for (int64_t e = blockIdx.x; e < count; e += gridDim.x) {
    const int k = int(e / g.ksz), t = int(e % g.ksz);
    T acc = T(0);
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) acc += dw_backward_weight_term(g, gy, x, k, t, j);
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) gw[e] += acc;
  }
}

bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.Cg() == 1; }

}  // namespace

bool allow_tf32() { return g_allow_tf32.load(); }
void set_allow_tf32(bool on) { g_allow_tf32.store(on); }

bool conv_shape_supported(const ConvShape& s) {
  const int64_t lim = INT_MAX;
  return s.N * s.out_size() < lim && s.N * s.in_size() < lim && s.C * s.k_size() < lim &&
         s.K * s.k_size() < lim && s.C < lim && s.K < lim;
}

template <class T>
void conv_forward(const ConvShape& s, const T* x, const T* w, T* y, bool tf32) {
  Params p = conv_params(s);
  if (is_depthwise(s)) {
    const int64_t total = s.N * s.K * s.out_size();
    dw_forward_kernel<T><<<blocks_for(total, 256), 256, 0, current_stream()>>>(p.g, x, w, y, total);
    check_launch("dw_forward_kernel");
    return;
  }
  p.M = s.Kg();
  p.Ncols = s.N * s.out_size();
  p.Kdim = s.Cg() * s.k_size();
  p.a = w;
  p.b = x;
  p.c = y;
  launch<T, kFwd>(p, tf32, "conv_forward igemm_kernel");
}

template <class T>
void conv_backward_data(const ConvShape& s, const T* gy, const T* w, T* gx, bool tf32) {
  Params p = conv_params(s);
  if (is_depthwise(s)) {
    const int64_t total = s.N * s.C * s.in_size();
    dw_backward_data_kernel<T><<<blocks_for(total, 256), 256, 0, current_stream()>>>(p.g, gy, w, gx, total);
    check_launch("dw_backward_data_kernel");
    return;
  }
  p.M = s.Cg();
  p.Ncols = s.N * s.in_size();
  p.Kdim = s.Kg() * s.k_size();
  p.a = w;
  p.b = gy;
  p.c = gx;
  launch<T, kBwdData>(p, tf32, "conv_backward_data igemm_kernel");
}

template <class T>
void conv_backward_weight(const ConvShape& s, const T* gy, const T* x, T* gw, bool tf32) {
  Params p = conv_params(s);
  if (is_depthwise(s)) {
    const int64_t count = s.K * s.k_size(), len = s.N * s.out_size();
    const int threads = len >= 256 ? 256 : len >= 64 ? 64 : 32;
    dw_backward_weight_kernel<T><<<static_cast<unsigned>(std::min<int64_t>(count, 65535 * 8)), threads, 0,
                                   current_stream()>>>(p.g, gy, x, gw, s.N);
    check_launch("dw_backward_weight_kernel");
    return;
  }
  p.M = s.Kg();
  p.Ncols = s.Cg() * s.k_size();
  p.Kdim = s.N * s.out_size();
  p.a = gy;
  p.b = x;
  p.c = gw;
  // Enough K splits that about four blocks per SM exist, each still walking at least 8 K steps.
  const int64_t blocks = ((p.Ncols + BN - 1) / BN) * ((p.M + BM - 1) / BM) * s.groups;
  const int64_t target = 4 * int64_t(sm_count());
  int64_t splits = 1;
  if (blocks < target) splits = std::min((target + blocks - 1) / blocks, (p.Kdim + 8 * BK - 1) / (8 * BK));
  splits = std::max<int64_t>(1, splits);
  int64_t chunk = (p.Kdim + splits - 1) / splits;
  chunk = (chunk + BK - 1) / BK * BK;
  p.kchunk = chunk;
  p.splits = int((p.Kdim + chunk - 1) / chunk);
  p.atomic = p.splits > 1;
  launch<T, kBwdWeight>(p, tf32, "conv_backward_weight igemm_kernel");
}

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t ldc, bool accumulate, bool tf32) {
  Params p{};
  p.M = M;
  p.Ncols = N;
  p.Kdim = K;
  p.a = A;
  p.b = B;
  p.c = C;
  p.rs_a = rs_a;
  p.cs_a = cs_a;
  p.rs_b = rs_b;
  p.cs_b = cs_b;
  p.ldc = ldc;
  p.accumulate = accumulate;
  p.a_m_fast = cs_a != 1 && rs_a == 1;
  p.b_k_fast = cs_b != 1 && rs_b == 1;
  p.groups = 1;
  p.splits = 1;
  p.kchunk = K > 0 ? K : 1;
  if (K == 0) {  // an empty sum: C = 0, or C unchanged when accumulating
    if (!accumulate && M > 0 && N > 0)
      check(cudaMemset2DAsync(C, sizeof(T) * ldc, 0, sizeof(T) * N, M, current_stream()), "cudaMemset2DAsync");
    return;
  }
  launch<T, kGemm>(p, tf32, "gemm igemm_kernel");
}

namespace {

template <class T>
__global__ void bias_forward_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t total, int64_t C,
                                    int64_t S) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x)
    y[i] += b[(i / S) % C];
}

// One block per channel: the sum over N and S with a block reduction.
template <class T>
__global__ void bias_backward_kernel(const T* __restrict__ gy, T* __restrict__ gb, int64_t N, int64_t C, int64_t S) {
  __shared__ T shared[32];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    T sum = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = gy + (n * C + c) * S;
      for (int64_t s = threadIdx.x; s < S; s += blockDim.x) sum += row[s];
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) gb[c] += sum;
  }
}

// S == 1 (linear layers): one thread per channel walks the rows, neighbours read neighbours.
template <class T>
__global__ void bias_backward_rows_kernel(const T* __restrict__ gy, T* __restrict__ gb, int64_t N, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x) {
    T sum = 0;
    for (int64_t n = 0; n < N; ++n) sum += gy[n * C + c];
    gb[c] += sum;
  }
}

}  // namespace

template <class T>
void bias_forward(T* y, const T* b, int64_t N, int64_t C, int64_t S) {
  const int64_t total = N * C * S;
  if (total == 0) return;
  bias_forward_kernel<T><<<blocks_for(total, 256), 256, 0, current_stream()>>>(y, b, total, C, S);
  check_launch("bias_forward_kernel");
}

template <class T>
void bias_backward(const T* gy, T* gb, int64_t N, int64_t C, int64_t S) {
  if (N * C * S == 0) return;
  if (S == 1) {
    bias_backward_rows_kernel<T><<<blocks_for(C, 128), 128, 0, current_stream()>>>(gy, gb, N, C);
    check_launch("bias_backward_rows_kernel");
    return;
  }
  const int threads = S >= 256 ? 256 : S >= 64 ? 128 : 32;
  bias_backward_kernel<T><<<static_cast<unsigned>(std::min<int64_t>(C, 65535 * 8)), threads, 0, current_stream()>>>(
      gy, gb, N, C, S);
  check_launch("bias_backward_kernel");
}

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t M, int64_t in, int64_t out, bool tf32) {
  gemm<T>(M, out, in, x, in, 1, w, 1, in, y, out, false, tf32);
  if (b) bias_forward<T>(y, b, M, out, 1);
}

template <class T>
void linear_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, int64_t M, int64_t in, int64_t out,
                     bool tf32) {
  if (gx) gemm<T>(M, in, out, gy, out, 1, w, in, 1, gx, in, false, tf32);
  if (gw) gemm<T>(out, in, M, gy, 1, out, x, in, 1, gw, in, true, tf32);
  if (gb) bias_backward<T>(gy, gb, M, out, 1);
}

#define CNNFAST_INSTANTIATE(T)                                                                                    \
  template void conv_forward<T>(const ConvShape&, const T*, const T*, T*, bool);                                \
  template void conv_backward_data<T>(const ConvShape&, const T*, const T*, T*, bool);                          \
  template void conv_backward_weight<T>(const ConvShape&, const T*, const T*, T*, bool);                        \
  template void bias_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                                        \
  template void bias_backward<T>(const T*, T*, int64_t, int64_t, int64_t);                                       \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, bool);           \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t, bool);  \
  template void gemm<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, T*,  \
                        int64_t, bool, bool);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
