// bf16 path selection, Linux's AMX permission, the fallback kernel and the public
// entry points of bf16.h.
#include "cpu/bf16.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/cpu_features.h"
#include "core/error.h"
#include "cpu/bf16_impl.h"
#include "cpu/conv_internal.h"

namespace cnnfast::cpu {

namespace {

// Linux hands out the 8 KiB AMX tile state only on request, once per process; a
// TDPBF16PS without it is a SIGILL. CNNFAST_AMX_DENY=1 acts as if the request were
// refused (for tests, or to keep AMX off).
std::string request_amx() {
  if (!cpu_supports_amx_bf16()) return "not supported by this CPU";
  const char* deny = std::getenv("CNNFAST_AMX_DENY");
  if (deny && *deny && std::strcmp(deny, "0") != 0) return "refused (CNNFAST_AMX_DENY is set)";
#if defined(__linux__) && defined(SYS_arch_prctl) && CNNFAST_HAVE_AVX512_BUILD
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return std::string("refused by the OS: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: ") + std::strerror(errno);
  return "granted";
#else
  return "not available on this OS or build";
#endif
}

const std::string& amx_status() {
  static const std::string s = request_amx();
  return s;
}

// -1: not chosen yet (CNNFAST_BF16_PATH or the best path on first use).
std::atomic<int> g_path{-1};

int initial_path() {
  const char* env = std::getenv("CNNFAST_BF16_PATH");
  if (env && *env) {
    const Bf16Path p = parse_bf16_path(env);
    std::string why;
    CNNFAST_CHECK(bf16_path_available(p, &why), ValueError, "CNNFAST_BF16_PATH=", env, ": ", why);
    return int(p);
  }
  return int(Bf16Path::Auto);
}

}  // namespace

std::string amx_permission_status() { return amx_status(); }

bool bf16_path_available(Bf16Path p, std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (p == Bf16Path::Fallback || p == Bf16Path::Auto) return true;
  if (!CNNFAST_HAVE_AVX512_BUILD) return no("this build has no AVX-512 kernels");
  if (!use_avx512()) return no("the SIMD level in use is below avx512");
  if (p == Bf16Path::AVX512BF16)
    return cpu_supports_avx512_bf16() ? true : no("this CPU has no AVX512-BF16");
  if (!cpu_supports_avx512_bf16()) return no("this CPU has no AVX512-BF16");
  if (amx_status() != "granted") return no("AMX-BF16 is " + amx_status());
  return true;
}

Bf16Path best_bf16_path() {
  for (Bf16Path p : {Bf16Path::AMX, Bf16Path::AVX512BF16})
    if (bf16_path_available(p)) return p;
  return Bf16Path::Fallback;
}

Bf16Path bf16_path() {
  int p = g_path.load(std::memory_order_relaxed);
  if (p < 0) {
    int expected = -1;
    g_path.compare_exchange_strong(expected, initial_path());
    p = g_path.load();
  }
  // A SIMD level lowered after the choice narrows the path with it.
  if (Bf16Path(p) == Bf16Path::Auto || !bf16_path_available(Bf16Path(p))) return best_bf16_path();
  return Bf16Path(p);
}

void set_bf16_path(Bf16Path p) {
  std::string why;
  CNNFAST_CHECK(bf16_path_available(p, &why), ValueError, "path: '", bf16_path_name(p),
                "' cannot run here: ", why);
  g_path.store(int(p));
}

std::string bf16_path_name(Bf16Path p) {
  switch (p) {
    case Bf16Path::AMX: return "amx";
    case Bf16Path::AVX512BF16: return "avx512_bf16";
    case Bf16Path::Auto: return "auto";
    default: return "fallback";
  }
}

Bf16Path parse_bf16_path(const std::string& s) {
  if (s == "amx") return Bf16Path::AMX;
  if (s == "avx512_bf16") return Bf16Path::AVX512BF16;
  if (s == "fallback") return Bf16Path::Fallback;
  if (s == "auto") return Bf16Path::Auto;
  throw ValueError(cat("path: expected 'auto', 'amx', 'avx512_bf16' or 'fallback', got '", s, "'"));
}

void bf16_round_array(const float* x, uint16_t* y, int64_t n) {
#if CNNFAST_HAVE_AVX512_BUILD
  if (bf16_path() != Bf16Path::Fallback) return amx_impl::round_array(x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_from_float(x[i]);
}

void bf16_widen_array(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

// Kernel taps that read only padding for every output (eight of nine for a 3x3 kernel
// on a 1x1 map) are dropped: the problem is re-posed on the window of live taps, with
// the weights of that window copied out (they are small) and its gradient scattered back.
struct TapWindow {
  int64_t lo[3] = {0, 0, 0}, hi[3] = {1, 1, 1};
  bool full = true;
  ConvShape inner;
};

TapWindow live_taps(const ConvShape& s) {
  TapWindow t;
  t.inner = s;
  for (int d = 0; d < 3; ++d) {
    int64_t lo = 0, hi = s.k[d];
    while (lo < hi && (s.out[d] - 1) * s.stride[d] + lo * s.dil[d] - s.pad0[d] < 0) ++lo;
    while (hi > lo && (hi - 1) * s.dil[d] - s.pad0[d] > s.in[d] - 1) --hi;
    if (hi <= lo) lo = 0, hi = 1;  // no live tap at all: keep one, it reads zeros
    t.lo[d] = lo;
    t.hi[d] = hi;
    t.full = t.full && lo == 0 && hi == s.k[d];
    t.inner.k[d] = hi - lo;
    t.inner.pad0[d] = s.pad0[d] - lo * s.dil[d];
  }
  return t;
}

// For each column (c, window tap) of the window problem's weight row, its column in the
// full weight row (c, kD, kH, kW).
std::vector<int64_t> window_columns(const ConvShape& s, const TapWindow& t) {
  const ConvShape& i = t.inner;
  std::vector<int64_t> col(size_t(s.Cg() * i.k_size()));
  for (int64_t c = 0, q = 0; c < s.Cg(); ++c)
    for (int64_t a = 0; a < i.k[0]; ++a)
      for (int64_t b = 0; b < i.k[1]; ++b)
        for (int64_t d = 0; d < i.k[2]; ++d, ++q)
          col[q] = c * s.k_size() + ((a + t.lo[0]) * s.k[1] + b + t.lo[1]) * s.k[2] + d + t.lo[2];
  return col;
}

// The direct AMX passes (conv_bf16_direct_amx.cpp): -2 not read yet, -1 the shape decides,
// 0 off, 1 on wherever they apply. CNNFAST_BF16_DIRECT=0|1 sets it at the first call.
namespace {
std::atomic<int> g_direct{-2};

int direct_override() {
  int v = g_direct.load(std::memory_order_relaxed);
  if (v == -2) {
    const char* e = std::getenv("CNNFAST_BF16_DIRECT");
    int expected = -2;
    g_direct.compare_exchange_strong(expected, e && *e ? (std::strcmp(e, "0") == 0 ? 0 : 1) : -1);
    v = g_direct.load();
  }
  return v;
}

// weight_pass: for grad_w, whose GEMM form on small maps packs a once-built im2col
// matrix (small_im2col) and keeps up with the direct pass to larger maps.
bool use_direct(const ConvShape& s, bool weight_pass = false) {
  if (!amx_impl::direct_applicable(s)) return false;
  const int o = direct_override();
  if (o >= 0) return o == 1;
  // Measured on a 2-core Sapphire Rapids class Xeon (benchmarks/RESULTS.md): the direct
  // passes win from about 512 output positions per call (2048 for grad_w and for strided
  // layers, whose phase planes cost more to build) while the weights stay small; deep
  // layers (256 x 256 x 3 x 3 and up) run faster on the GEMM, which splits their weights
  // between the threads.
  const int64_t positions = s.N * s.out_size(), weights = s.Kg() * s.Cg() * s.k_size();
  const bool strided = s.stride[1] > 1 || s.stride[2] > 1;
  return positions >= (strided || weight_pass ? 2048 : 512) && weights <= (int64_t(1) << 18);
}
}  // namespace

void set_bf16_direct(const std::string& mode) {
  if (mode == "auto") g_direct.store(-1);
  else if (mode == "on") g_direct.store(1);
  else if (mode == "off") g_direct.store(0);
  else throw ValueError(cat("mode: expected 'auto', 'on' or 'off', got '", mode, "'"));
}

std::string bf16_direct() {
  const int v = direct_override();
  return v < 0 ? "auto" : v ? "on" : "off";
}

template <class T>
void conv_forward_bf16(const ConvShape& s, const T* x, const T* w, const float* bias, float* y) {
  // VDPBF16PS row tiles (conv_kvec_rows.cpp): no im2col, dead taps skipped on their own.
  if (bf16_path() == Bf16Path::AVX512BF16 && conv_detail::kvec_rows_bf16_pays(s))
    return conv_detail::forward_kvec_rows_bf16<T>(s, x, w, bias, y);
  const TapWindow t = live_taps(s);
  std::vector<int64_t> col;
  if (!t.full) col = window_columns(s, t);
  const ConvShape& S = t.full ? s : t.inner;
  // The packer reads the window's columns straight from w: no windowed copy.
  const int64_t rs = s.Cg() * s.k_size();
  const int64_t* cp = t.full ? nullptr : col.data();
  const Bf16Path p = bf16_path();
  if (p == Bf16Path::AMX && use_direct(S)) return amx_impl::conv_forward_direct<T>(S, x, w, rs, cp, bias, y);
  if (p != Bf16Path::Fallback) return amx_impl::conv_forward<T>(p, S, x, w, rs, cp, bias, y);
  generic_isa::conv_forward_impl<generic_isa::FallbackKern, T>(S, x, w, rs, cp, bias, y);
}

// grad_x of a stride-1 convolution is itself a stride-1 convolution: of grad_y, with the
// weights transposed per group (K <-> C) and flipped in space, and padding
// dilation * (k - 1) - pad on each side. Run as that forward, its GEMM packs grad_y's
// windows as the right operand and writes grad_x once, where the direct form scatter-adds
// every row of its (C*k*k x positions) product into grad_x. That pays on maps of 16+
// columns and loses on small ones, where the direct form's product is small (Zen 5, 2
// threads, VDPBF16PS, 3x3, ms, as a forward against direct, float32 inputs): C64 32x32
// batch 32 5.50 / 6.10, C64 56x56 batch 8 3.81 / 4.08, C128 16x16 4.13 / 4.14; but
// C256 8x8 4.07 / 3.77, C512 4x4 5.85 / 4.07. False when the shape is not taken.
template <class T>
bool backward_data_as_forward(const ConvShape& s, const T* gy, const T* w, float* gx) {
  ConvShape f = s;
  f.C = s.K;
  f.K = s.C;
  for (int d = 0; d < 3; ++d) {
    if (s.stride[d] != 1) return false;
    f.in[d] = s.out[d];
    f.out[d] = s.in[d];
    f.pad0[d] = s.dil[d] * (s.k[d] - 1) - s.pad0[d];
    f.pad1[d] = s.dil[d] * (s.k[d] - 1) - s.pad1[d];
    if (f.pad0[d] < 0 || f.pad1[d] < 0) return false;
  }
  // The direct AMX forward has no scatter to avoid and wins on smaller maps too.
  // The VDPBF16PS row tiles (conv_kvec_rows.cpp) read the weights rotated as they pack
  // them: no flipped copy (C512 at 4x4 batch 32 on Zen 4, grad_x 9.4 ms on the GEMM).
  if (f.groups == 1 && bf16_path() == Bf16Path::AVX512BF16 && conv_detail::kvec_rows_bf16_pays(f)) {
    conv_detail::backward_data_kvec_rows_bf16<T>(s, gy, w, gx);
    return true;
  }
  if (s.in[2] < 16 && !(bf16_path() == Bf16Path::AMX && use_direct(f))) return false;
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), ks = s.k_size();
  // w (K, Cg, kd, kh, kw) -> wf (C, Kg, kd, kh, kw): wf[g*Cg + c][k][t] = w[g*Kg + k][c][ks - 1 - t]
  // (reversing the flattened taps reverses each spatial axis).
  std::vector<T> wf(size_t(s.K * Cg * ks));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c) {
        const T* src = w + ((g * Kg + k) * Cg + c) * ks;
        T* dst = wf.data() + ((g * Cg + c) * Kg + k) * ks;
        for (int64_t t = 0; t < ks; ++t) dst[t] = src[ks - 1 - t];
      }
  conv_forward_bf16<T>(f, gy, wf.data(), nullptr, gx);
  return true;
}

template <class T>
void conv_backward_data_bf16(const ConvShape& s, const T* gy, const T* w, float* gx) {
  if (bf16_path() != Bf16Path::Fallback && backward_data_as_forward(s, gy, w, gx)) return;
  const TapWindow t = live_taps(s);
  std::vector<int64_t> col;
  if (!t.full) col = window_columns(s, t);
  const ConvShape& S = t.full ? s : t.inner;
  // grad_x's GEMM packs the weight's transpose straight from its rows (bf16_impl.h pack_a).
  const int64_t rs = s.Cg() * s.k_size();
  const int64_t* cp = t.full ? nullptr : col.data();
  const Bf16Path p = bf16_path();
  if (p != Bf16Path::Fallback) return amx_impl::conv_backward_data<T>(p, S, gy, w, rs, cp, gx);
  generic_isa::conv_backward_data_impl<generic_isa::FallbackKern, T>(S, gy, w, rs, cp, gx);
}

template <class T>
void conv_backward_weight_bf16(const ConvShape& s, const T* gy, const T* x, float* gw) {
  const TapWindow t = live_taps(s);
  const ConvShape& S = t.full ? s : t.inner;
  const int64_t rs = s.Cg() * s.k_size();
  // Every pass stores each element of its gradient once (no zeroing, no read-modify-write).
  std::vector<float> gwin;
  if (!t.full) gwin.resize(size_t(s.K * s.Cg() * S.k_size()));
  float* G = t.full ? gw : gwin.data();
  const Bf16Path p = bf16_path();
  // The VDPBF16PS weight tiles (conv_kvec_rows.cpp) on the window of live taps: they would
  // multiply the dead ones by zeros (3x3 C512 on 1x1 maps, batch 32: 1.45 ms there, 0.71 on the window).
  if (p == Bf16Path::AVX512BF16 && conv_detail::kvec_rows_bf16_weight_pays(S))
    conv_detail::backward_weight_kvec_rows_bf16<T>(S, gy, x, G);
  else if (p == Bf16Path::AMX && use_direct(S, /*weight_pass=*/true)) amx_impl::conv_backward_weight_direct<T>(S, gy, x, G);
  else if (p != Bf16Path::Fallback) amx_impl::conv_backward_weight<T>(p, S, gy, x, G);
  else generic_isa::conv_backward_weight_impl<generic_isa::FallbackKern, T>(S, gy, x, G);
  if (t.full) return;
  const std::vector<int64_t> col = window_columns(s, t);
  const int64_t ci = S.Cg() * S.k_size();
  // Each row zeroed while it is in L1, then its live ninth (a 3x3 kernel on a 1x1 map)
  // stored: no zeroing pass over the whole (mostly dead) gradient before, no read of it.
  parallel_for(0, s.K, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* row = gw + r * rs;
      std::fill(row, row + rs, 0.0f);
      const float* src = gwin.data() + r * ci;
      for (int64_t q = 0; q < ci; ++q) row[col[size_t(q)]] = src[q];
    }
  });
}

template <class T>
void gemm_bf16(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
               int64_t cs_b, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  const Bf16Path p = bf16_path();
  if (p != Bf16Path::Fallback) return amx_impl::gemm<T>(p, M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
  generic_isa::gemm_impl<generic_isa::FallbackKern, T>(M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, accumulate);
}

namespace {
// Seconds of CPU time the calling thread has used (wall time where there is no such clock).
double thread_seconds() {
#if defined(__linux__)
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
#else
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
#endif
}

// Best of 15 short runs of `threads` threads each running `loop`. Each thread's rate is
// its work over its own CPU time, so the figure is the hardware's on a loaded machine too
// (on a quiet one, with no more threads than cores, CPU time is wall time).
double loop_peak_gflops(int threads, int64_t iters, int64_t flops_per_iter, float (*loop)(int64_t)) {
  threads = std::max(1, threads);
  double best = 0.0;
  for (int rep = 0; rep < 15; ++rep) {
    std::vector<float> sink(threads);
    std::vector<double> rate(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const double t0 = thread_seconds();
        sink[t] = loop(iters);
        rate[t] = double(iters) * double(flops_per_iter) / std::max(thread_seconds() - t0, 1e-9) * 1e-9;
      });
    for (auto& th : pool) th.join();
    double sum = 0.0;
    for (double r : rate) sum += r;
    best = std::max(best, sum);
  }
  return best;
}
}  // namespace

double amx_peak_gflops(int threads) {
  std::string why;
  CNNFAST_CHECK(bf16_path_available(Bf16Path::AMX, &why), ValueError, "the AMX peak needs the amx path: ", why);
  return loop_peak_gflops(threads, 200'000, amx_impl::kAmxFlopsPerIter, amx_impl::amx_loop);
}

double dpbf16_peak_gflops(int threads) {
  std::string why;
  CNNFAST_CHECK(bf16_path_available(Bf16Path::AVX512BF16, &why), ValueError,
                "the VDPBF16PS peak needs the avx512_bf16 path: ", why);
  return loop_peak_gflops(threads, 2'000'000, amx_impl::kDpFlopsPerIter, amx_impl::dpbf16_loop);
}

#define CNNFAST_INST(T)                                                                                         \
  template void conv_forward_bf16<T>(const ConvShape&, const T*, const T*, const float*, float*);             \
  template void conv_backward_data_bf16<T>(const ConvShape&, const T*, const T*, float*);                     \
  template void conv_backward_weight_bf16<T>(const ConvShape&, const T*, const T*, float*);                   \
  template void gemm_bf16<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, \
                             float*, int64_t, bool);
CNNFAST_INST(float)
CNNFAST_INST(uint16_t)
#undef CNNFAST_INST

#if !CNNFAST_HAVE_AVX512_BUILD
// Non-x86 builds have no ISA files; bf16_path() is always the fallback there.
namespace amx_impl {
template <class T>
void conv_forward(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, const float*, float*) {}
template <class T>
void conv_backward_data(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, float*) {}
template <class T>
void conv_backward_weight(Bf16Path, const ConvShape&, const T*, const T*, float*) {}
template <class T>
void gemm(Bf16Path, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, float*,
          int64_t, bool) {}
#define CNNFAST_STUB_INST(T)                                                                                 \
  template void conv_forward<T>(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, const float*, float*);       \
  template void conv_backward_data<T>(Bf16Path, const ConvShape&, const T*, const T*, int64_t, const int64_t*, float*);               \
  template void conv_backward_weight<T>(Bf16Path, const ConvShape&, const T*, const T*, float*);             \
  template void gemm<T>(Bf16Path, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,  \
                        int64_t, float*, int64_t, bool);
CNNFAST_STUB_INST(float)
CNNFAST_STUB_INST(uint16_t)
#undef CNNFAST_STUB_INST
bool direct_applicable(const ConvShape&) { return false; }
template <class T>
void conv_forward_direct(const ConvShape&, const T*, const T*, int64_t, const int64_t*, const float*, float*) {}
template void conv_forward_direct<float>(const ConvShape&, const float*, const float*, int64_t, const int64_t*,
                                         const float*, float*);
template void conv_forward_direct<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, int64_t,
                                            const int64_t*, const float*, float*);
template <class T>
void conv_backward_weight_direct(const ConvShape&, const T*, const T*, float*) {}
template void conv_backward_weight_direct<float>(const ConvShape&, const float*, const float*, float*);
template void conv_backward_weight_direct<uint16_t>(const ConvShape&, const uint16_t*, const uint16_t*, float*);
float amx_loop(int64_t) { return 0.0f; }
float dpbf16_loop(int64_t) { return 0.0f; }
void round_array(const float*, uint16_t*, int64_t) {}
}  // namespace amx_impl
#endif

}  // namespace cnnfast::cpu
