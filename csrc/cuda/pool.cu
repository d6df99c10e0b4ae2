// CUDA pooling kernels: one thread per output element (grid-stride, 64-bit
// indices), the window rules of pool.cpp (PyTorch's): the first maximum in
// (d, h, w) scan order with NaN winning, average divisors counting padding up to
// in + p, adaptive cells [floor(o*in/out), ceil((o+1)*in/out)). Backward passes
// scatter each output's gradient with atomicAdd into a zeroed grad_input, which
// handles overlapping windows without a gather search.
#include <climits>

#include "cuda/allocator.h"
#include "cuda/common.cuh"
#include "cuda/memory.h"
#include "cuda/pool.cuh"

namespace cnnfast::cuda {
namespace {

struct G {  // PoolGeom, passed by value
  int64_t planes, in[3], out[3], k[3], s[3], p[3], d[3], ip, op;
};

G make(const PoolGeom& g) {
  G r;
  r.planes = g.planes;
  for (int i = 0; i < 3; ++i) {
    r.in[i] = g.in[i];
    r.out[i] = g.out[i];
    r.k[i] = g.k[i];
    r.s[i] = g.s[i];
    r.p[i] = g.p[i];
    r.d[i] = g.d[i];
  }
  r.ip = g.in_plane();
  r.op = g.out_plane();
  return r;
}

__device__ __forceinline__ void out_coords(const G& g, int64_t e, int64_t& plane, int64_t o[3]) {
  o[2] = e % g.out[2];
  int64_t r = e / g.out[2];
  o[1] = r % g.out[1];
  r /= g.out[1];
  o[0] = r % g.out[0];
  plane = r / g.out[0];
}

__device__ __forceinline__ int64_t first_nonneg(int64_t start, int64_t d) {
  return start >= 0 ? start : start + (-start + d - 1) / d * d;
}

template <class T>
__global__ void max_pool_fwd_kernel(G g, const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx,
                                    int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t plane, o[3];
    out_coords(g, e, plane, o);
    const T* xp = x + plane * g.ip;
    int64_t st[3];
    for (int i = 0; i < 3; ++i) st[i] = o[i] * g.s[i] - g.p[i];
    T best = -INFINITY;
    int64_t bi = (first_nonneg(st[0], g.d[0]) * g.in[1] + first_nonneg(st[1], g.d[1])) * g.in[2] +
                 first_nonneg(st[2], g.d[2]);
    for (int64_t a = 0; a < g.k[0]; ++a) {
      const int64_t id = st[0] + a * g.d[0];
      if (id < 0 || id >= g.in[0]) continue;
      for (int64_t b = 0; b < g.k[1]; ++b) {
        const int64_t ih = st[1] + b * g.d[1];
        if (ih < 0 || ih >= g.in[1]) continue;
        const int64_t row = (id * g.in[1] + ih) * g.in[2];
        for (int64_t c = 0; c < g.k[2]; ++c) {
          const int64_t iw = st[2] + c * g.d[2];
          if (iw < 0 || iw >= g.in[2]) continue;
          const T v = xp[row + iw];
          if (v > best || isnan(v)) {
            best = v;
            bi = row + iw;
          }
        }
      }
    }
    y[e] = best;
    if (idx) idx[e] = bi;
  }
}

// grad_x[plane, idx[e]] += grad_y[e]; a bad index records its position (atomicMin keeps the first).
template <class T>
__global__ void scatter_kernel(const T* __restrict__ gy, const int64_t* __restrict__ idx, T* __restrict__ gx,
                               int64_t total, int64_t out_plane, int64_t in_plane, bool skip,
                               unsigned long long* bad) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t at = idx[e];
    if (at < 0 || at >= in_plane) {
      if (!skip) atomicMin(bad, static_cast<unsigned long long>(e));
      continue;
    }
    atomicAdd(gx + (e / out_plane) * in_plane + at, gy[e]);
  }
}

struct Span {
  int64_t lo, hi, padded;
};
__device__ __forceinline__ Span avg_span(int64_t o, int64_t k, int64_t s, int64_t p, int64_t in) {
  const int64_t lo = o * s - p;
  const int64_t hi = min(lo + k, in + p);
  return Span{max(lo, int64_t(0)), min(hi, in), hi - lo};
}

// forward: y[e] = window sum / divisor; backward (BWD): grad_x[window] += grad_y[e] / divisor.
template <class T, bool BWD>
__global__ void avg_pool_kernel(G g, const T* __restrict__ src, T* __restrict__ dst, int64_t total, bool include_pad,
                                int64_t override_div) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t plane, o[3];
    out_coords(g, e, plane, o);
    Span sp[3];
    for (int i = 0; i < 3; ++i) sp[i] = avg_span(o[i], g.k[i], g.s[i], g.p[i], g.in[i]);
    const bool empty = sp[0].lo >= sp[0].hi || sp[1].lo >= sp[1].hi || sp[2].lo >= sp[2].hi;
    T div;
    if (override_div > 0)
      div = T(override_div);
    else if (include_pad)
      div = T(sp[0].padded * sp[1].padded * sp[2].padded);
    else
      div = T((sp[0].hi - sp[0].lo) * (sp[1].hi - sp[1].lo) * (sp[2].hi - sp[2].lo));
    if constexpr (!BWD) {
      if (empty) {
        dst[e] = T(0);  // a window wholly in the padding (ceil_mode) stays 0, as PyTorch
        continue;
      }
      const T* xp = src + plane * g.ip;
      T acc = 0;
      for (int64_t a = sp[0].lo; a < sp[0].hi; ++a)
        for (int64_t b = sp[1].lo; b < sp[1].hi; ++b)
          for (int64_t c = sp[2].lo; c < sp[2].hi; ++c) acc += xp[(a * g.in[1] + b) * g.in[2] + c];
      dst[e] = acc / div;
    } else {
      if (empty) continue;
      const T v = src[e] / div;
      T* gp = dst + plane * g.ip;
      for (int64_t a = sp[0].lo; a < sp[0].hi; ++a)
        for (int64_t b = sp[1].lo; b < sp[1].hi; ++b)
          for (int64_t c = sp[2].lo; c < sp[2].hi; ++c) atomicAdd(gp + (a * g.in[1] + b) * g.in[2] + c, v);
    }
  }
}

__device__ __forceinline__ int64_t ad_lo(int64_t o, int64_t out, int64_t in) { return o * in / out; }
__device__ __forceinline__ int64_t ad_hi(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

// MODE 0: average forward, 1: average backward (scatter), 2: max forward with indices.
template <class T, int MODE>
__global__ void adaptive_kernel(G g, const T* __restrict__ src, T* __restrict__ dst, int64_t* __restrict__ idx,
                                int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t plane, o[3], lo[3], hi[3];
    out_coords(g, e, plane, o);
    for (int i = 0; i < 3; ++i) {
      lo[i] = ad_lo(o[i], g.out[i], g.in[i]);
      hi[i] = ad_hi(o[i], g.out[i], g.in[i]);
    }
    const int64_t count = (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]);
    if constexpr (MODE == 0) {
      const T* xp = src + plane * g.ip;
      T acc = 0;
      for (int64_t a = lo[0]; a < hi[0]; ++a)
        for (int64_t b = lo[1]; b < hi[1]; ++b)
          for (int64_t c = lo[2]; c < hi[2]; ++c) acc += xp[(a * g.in[1] + b) * g.in[2] + c];
      dst[e] = acc / T(count);
    } else if constexpr (MODE == 1) {
      const T v = src[e] / T(count);
      T* gp = dst + plane * g.ip;
      for (int64_t a = lo[0]; a < hi[0]; ++a)
        for (int64_t b = lo[1]; b < hi[1]; ++b)
          for (int64_t c = lo[2]; c < hi[2]; ++c) atomicAdd(gp + (a * g.in[1] + b) * g.in[2] + c, v);
    } else {
      const T* xp = src + plane * g.ip;
      T best = -INFINITY;
      int64_t bi = (lo[0] * g.in[1] + lo[1]) * g.in[2] + lo[2];
      for (int64_t a = lo[0]; a < hi[0]; ++a)
        for (int64_t b = lo[1]; b < hi[1]; ++b)
          for (int64_t c = lo[2]; c < hi[2]; ++c) {
            const int64_t at = (a * g.in[1] + b) * g.in[2] + c;
            const T v = xp[at];
            if (v > best || isnan(v)) {
              best = v;
              bi = at;
            }
          }
      dst[e] = best;
      idx[e] = bi;
    }
  }
}

// FWD: y[plane, idx[i]] = x[i]; else grad_x[i] = grad_y[plane, idx[i]]. Over the input elements.
template <class T, bool FWD>
__global__ void unpool_kernel(const T* __restrict__ src, const int64_t* __restrict__ idx, T* __restrict__ dst,
                              int64_t total, int64_t in_plane, int64_t out_plane, unsigned long long* bad) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t at = idx[e];
    if (at < 0 || at >= out_plane) {
      atomicMin(bad, static_cast<unsigned long long>(e));
      if (!FWD) dst[e] = T(0);
      continue;
    }
    const int64_t base = (e / in_plane) * out_plane;
    if (FWD)
      dst[base + at] = src[e];
    else
      dst[e] = src[base + at];
  }
}

// A device word that collects the first bad position; freed on scope exit.
struct BadFlag {
  unsigned long long* p;
  BadFlag() : p(static_cast<unsigned long long*>(device_malloc(sizeof(unsigned long long)))) {
    memset_device(p, 0xFF, sizeof(unsigned long long));
  }
  ~BadFlag() { device_free(p); }
  int64_t result() {
    unsigned long long v = 0;
    copy_to_host(&v, p, sizeof v);
    return v == ULLONG_MAX ? -1 : static_cast<int64_t>(v);
  }
};

constexpr int kThreads = 256;

}  // namespace

template <class T>
void max_pool_forward(const PoolGeom& pg, const T* x, T* y, int64_t* indices) {
  const G g = make(pg);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  max_pool_fwd_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, x, y, indices, total);
  check_launch("max_pool_fwd_kernel");
}

template <class T>
int64_t max_pool_backward(const PoolGeom& pg, const T* gy, const int64_t* indices, T* gx, bool skip) {
  const G g = make(pg);
  memset_device(gx, 0, sizeof(T) * g.planes * g.ip);
  const int64_t total = g.planes * g.op;
  if (total == 0) return -1;
  BadFlag bad;
  scatter_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(gy, indices, gx, total, g.op,
                                                                                    g.ip, skip, bad.p);
  check_launch("scatter_kernel");
  return bad.result();
}

template <class T>
void avg_pool_forward(const PoolGeom& pg, const T* x, T* y, bool include_pad, int64_t div) {
  const G g = make(pg);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  avg_pool_kernel<T, false><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, x, y, total,
                                                                                            include_pad, div);
  check_launch("avg_pool_kernel<forward>");
}

template <class T>
void avg_pool_backward(const PoolGeom& pg, const T* gy, T* gx, bool include_pad, int64_t div) {
  const G g = make(pg);
  memset_device(gx, 0, sizeof(T) * g.planes * g.ip);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  avg_pool_kernel<T, true><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, gy, gx, total,
                                                                                           include_pad, div);
  check_launch("avg_pool_kernel<backward>");
}

template <class T>
void adaptive_avg_pool_forward(const PoolGeom& pg, const T* x, T* y) {
  const G g = make(pg);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  adaptive_kernel<T, 0><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, x, y, nullptr, total);
  check_launch("adaptive_kernel<avg forward>");
}

template <class T>
void adaptive_avg_pool_backward(const PoolGeom& pg, const T* gy, T* gx) {
  const G g = make(pg);
  memset_device(gx, 0, sizeof(T) * g.planes * g.ip);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  adaptive_kernel<T, 1><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, gy, gx, nullptr, total);
  check_launch("adaptive_kernel<avg backward>");
}

template <class T>
void adaptive_max_pool_forward(const PoolGeom& pg, const T* x, T* y, int64_t* indices) {
  const G g = make(pg);
  const int64_t total = g.planes * g.op;
  if (total == 0) return;
  adaptive_kernel<T, 2><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(g, x, y, indices, total);
  check_launch("adaptive_kernel<max forward>");
}

template <class T>
int64_t max_unpool_forward(const PoolGeom& pg, const T* x, const int64_t* indices, T* y) {
  const G g = make(pg);
  memset_device(y, 0, sizeof(T) * g.planes * g.op);
  const int64_t total = g.planes * g.ip;
  if (total == 0) return -1;
  BadFlag bad;
  unpool_kernel<T, true><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(x, indices, y, total, g.ip,
                                                                                         g.op, bad.p);
  check_launch("unpool_kernel<forward>");
  return bad.result();
}

template <class T>
int64_t max_unpool_backward(const PoolGeom& pg, const T* gy, const int64_t* indices, T* gx) {
  const G g = make(pg);
  const int64_t total = g.planes * g.ip;
  if (total == 0) return -1;
  BadFlag bad;
  unpool_kernel<T, false><<<blocks_for(total, kThreads), kThreads, 0, current_stream()>>>(gy, indices, gx, total,
                                                                                          g.ip, g.op, bad.p);
  check_launch("unpool_kernel<backward>");
  return bad.result();
}

#define CNNFAST_INSTANTIATE(T)                                                                   \
  template void max_pool_forward<T>(const PoolGeom&, const T*, T*, int64_t*);                  \
  template int64_t max_pool_backward<T>(const PoolGeom&, const T*, const int64_t*, T*, bool);  \
  template void avg_pool_forward<T>(const PoolGeom&, const T*, T*, bool, int64_t);             \
  template void avg_pool_backward<T>(const PoolGeom&, const T*, T*, bool, int64_t);            \
  template void adaptive_avg_pool_forward<T>(const PoolGeom&, const T*, T*);                   \
  template void adaptive_avg_pool_backward<T>(const PoolGeom&, const T*, T*);                  \
  template void adaptive_max_pool_forward<T>(const PoolGeom&, const T*, T*, int64_t*);         \
  template int64_t max_unpool_forward<T>(const PoolGeom&, const T*, const int64_t*, T*);       \
  template int64_t max_unpool_backward<T>(const PoolGeom&, const T*, const int64_t*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cuda
