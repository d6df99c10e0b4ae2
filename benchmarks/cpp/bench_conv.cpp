// Times the benchmark layers of benchmarks/bench_conv.py without Python: the
// forward pass and forward + backward (grad input, weight, bias), float32,
// median of repeats after warm-up, GFLOP/s in direct-convolution FLOPs and the
// percent of the measured FMA peak.
//   ./bench_conv [threads=2] [repeats=5] [algo=auto|gemm|winograd] [layer name substring]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"

using namespace cnnfast;
using cpu::ConvAlgo;
using cpu::ConvShape;

namespace {

struct Layer {
  const char* name;
  int64_t N, C, H, K, k, s, p, g;
  bool transposed;
};

// CNNFAST_BENCH_CPU_TIME=1 times with the process's CPU clock instead of the
// wall clock: on a shared machine, with one thread, that leaves out the time the
// OS gave the core to someone else (useful for tuning, not for headline numbers).
double now_ms() {
  static const bool cpu = std::getenv("CNNFAST_BENCH_CPU_TIME") != nullptr;
  if (cpu) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median_ms(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now_ms();
    fn();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<float> randn(int64_t n, float scale) {
  std::mt19937 gen(42);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  const std::string algo_name = argc > 3 ? argv[3] : "auto";
  const ConvAlgo algo = algo_name == "gemm" ? ConvAlgo::Gemm : algo_name == "winograd" ? ConvAlgo::Winograd
                                                                                         : ConvAlgo::Auto;
  set_num_threads(threads);
  const SimdLevel level = simd_level();
  const double peak = level != SimdLevel::Scalar ? cpu::fma_peak_gflops(threads, level) : 0.0;
  std::printf("threads %d, algo %s, SIMD %s, FMA peak %.1f GFLOP/s\n", threads, algo_name.c_str(),
              simd_level_name(level).c_str(), peak);
  std::printf("%-22s %9s %7s %5s | %9s %7s %5s\n", "layer", "fwd ms", "GF/s", "%pk", "f+b ms", "GF/s", "%pk");
  const Layer layers[] = {
      {"resnet 3x3 c64", 8, 64, 56, 64, 3, 1, 1, 1, false},
      {"resnet 3x3 c128", 16, 128, 28, 128, 3, 1, 1, 1, false},
      {"resnet 3x3 c256", 32, 256, 14, 256, 3, 1, 1, 1, false},
      {"1x1 c256->64", 8, 256, 56, 64, 1, 1, 0, 1, false},
      {"alexnet 11x11 s4", 8, 3, 227, 96, 11, 4, 0, 1, false},
      {"cifar 5x5", 64, 3, 32, 32, 5, 1, 2, 1, false},
      {"depthwise 3x3 c128", 8, 128, 56, 128, 3, 1, 1, 128, false},
      {"transposed 4x4 s2", 8, 128, 28, 64, 4, 2, 1, 1, true},
  };
  const std::string only = argc > 4 ? argv[4] : "";
  for (const Layer& L : layers) {
    if (!only.empty() && std::string(L.name).find(only) == std::string::npos) continue;
    // The convolution whose forward (or, when transposed, backward-data) is timed.
    ConvShape s;
    s.N = L.N;
    s.groups = L.g;
    s.k[1] = s.k[2] = L.k;
    s.stride[1] = s.stride[2] = L.s;
    s.pad0[1] = s.pad0[2] = s.pad1[1] = s.pad1[2] = L.p;
    int64_t Hx, Hy;
    if (!L.transposed) {
      s.C = L.C;
      s.K = L.K;
      Hx = L.H;
      Hy = ConvShape::natural_out(L.H, L.k, L.s, 1, L.p, L.p);
      s.in[1] = s.in[2] = Hx;
      s.out[1] = s.out[2] = Hy;
    } else {
      s.K = L.C;  // the transposed layer's input channels are the convolution's outputs
      s.C = L.K;
      Hx = L.H;
      Hy = (L.H - 1) * L.s - 2 * L.p + L.k;
      s.out[1] = s.out[2] = Hx;
      s.in[1] = s.in[2] = Hy;
    }
    const int64_t xs = s.N * s.C * s.in_size(), ys = s.N * s.K * s.out_size(), ws = s.K * s.Cg() * s.k_size();
    std::vector<float> a = randn(xs, 1.f), w = randn(ws, 0.05f), o = randn(ys, 1.f), gw(ws), gb(s.K);
    std::vector<float> ga(xs), go(ys);
    const double flops = 2.0 * s.N * s.K * s.Cg() * s.k_size() * s.out_size();
    std::function<void()> fwd, both;
    if (!L.transposed) {
      fwd = [&] { cpu::conv_forward(s, a.data(), w.data(), static_cast<const float*>(nullptr), go.data(), algo); };
      both = [&] {
        fwd();
        cpu::conv_backward_data(s, o.data(), w.data(), ga.data(), algo);
        cpu::conv_backward_weight(s, o.data(), a.data(), gw.data(), algo);
        cpu::bias_backward(o.data(), gb.data(), s.N, s.K, s.out_size());
      };
    } else {
      fwd = [&] { cpu::conv_backward_data(s, o.data(), w.data(), ga.data(), algo); };
      both = [&] {
        fwd();
        cpu::conv_forward(s, a.data(), w.data(), static_cast<const float*>(nullptr), go.data(), algo);
        cpu::conv_backward_weight(s, o.data(), a.data(), gw.data(), algo);
        cpu::bias_backward(a.data(), gb.data(), s.N, s.C, s.in_size());
      };
    }
    const double tf = median_ms(fwd, repeats), tb = median_ms(both, repeats);
    const double gf = flops / tf * 1e-6, gfb = 3 * flops / tb * 1e-6;
    std::printf("%-22s %9.2f %7.1f %5.0f | %9.2f %7.1f %5.0f\n", L.name, tf, gf, peak > 0 ? 100 * gf / peak : 0.0, tb,
                gfb, peak > 0 ? 100 * gfb / peak : 0.0);
  }
  return 0;
}
