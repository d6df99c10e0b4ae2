// Checks the index arithmetic of the CUDA implicit-GEMM convolution (the operand
// gathers and epilogue of csrc/cuda/conv.cu, host-callable) against the CPU
// convolution in float64 on odd shapes (stride 3, dilation 2, groups 3, depthwise,
// 1-D/3-D, asymmetric padding, 1x1 fast path, split-K weight gradient) and the direct depthwise
// kernels' per-element sums. Needs nvcc
// but no GPU. From the repository root, after a CUDA build in build/cu:
//   nvcc -std=c++17 -arch=sm_90 -O1 -Icsrc -o /tmp/conv_index_check tests/cuda_host/conv_index_check.cu \
//        build/cu/libcnnfast_kernels.a build/cu/libcnnfast_cuda.a -lpthread && /tmp/conv_index_check
#include "cuda/conv.cu"  // the kernels TU itself: its gathers are host-callable
#include <cstdio>
#include <random>
#include <vector>
#include <cmath>

using namespace cnnfast;
using namespace cnnfast::cuda;

template <class T, int MODE>
void emulate(Params p, int64_t splits_wanted) {
  if (MODE == kBwdWeight) {
    int64_t chunk = (p.Kdim + splits_wanted - 1) / splits_wanted;
    chunk = (chunk + BK - 1) / BK * BK;
    p.kchunk = chunk;
    p.splits = int((p.Kdim + chunk - 1) / chunk);
  } else {
    p.splits = 1;
    p.kchunk = p.Kdim;
  }
  for (int gi = 0; gi < p.groups; ++gi)
    for (int sp = 0; sp < p.splits; ++sp) {
      const int64_t kbeg = sp * p.kchunk, kend = std::min(p.Kdim, kbeg + p.kchunk);
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < p.Ncols; ++n) {
          double acc = 0;
          for (int64_t k = kbeg; k < kend; ++k) acc += double(load_a<T, MODE>(p, gi, m, k)) * double(load_b<T, MODE>(p, gi, k, n));
          store_c<T, MODE>(p, gi, m, n, T(acc));
        }
    }
}

double maxdiff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0, mx = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(a[i] - b[i])), mx = std::max(mx, std::fabs(b[i]));
  return e / (1 + mx);
}

int fails = 0;
void check(const char* what, double err) {
  printf("%-40s rel err %.3g %s\n", what, err, err < 1e-10 ? "ok" : "FAIL");
  if (!(err < 1e-10)) ++fails;
}

void run(ConvShape s, const char* name) {
  std::mt19937 gen(1);
  std::normal_distribution<double> nd;
  auto rnd = [&](int64_t n) { std::vector<double> v(n); for (auto& e : v) e = nd(gen); return v; };
  const int64_t xs = s.N * s.C * s.in_size(), ws = s.K * s.Cg() * s.k_size(), ys = s.N * s.K * s.out_size();
  auto x = rnd(xs), w = rnd(ws), gy = rnd(ys);
  // forward
  std::vector<double> y_cpu(ys), y_emu(ys, NAN);
  cpu::conv_forward<double>(s, x.data(), w.data(), y_cpu.data(), cpu::ConvAlgo::Gemm);
  { Params p = conv_params(s); p.M = s.Kg(); p.Ncols = s.N * s.out_size(); p.Kdim = s.Cg() * s.k_size(); p.a = w.data(); p.b = x.data(); p.c = y_emu.data(); emulate<double, kFwd>(p, 1); }
  check((std::string(name) + " forward").c_str(), maxdiff(y_emu, y_cpu));
  std::vector<double> gx_cpu(xs), gx_emu(xs, NAN);
  cpu::conv_backward_data<double>(s, gy.data(), w.data(), gx_cpu.data(), cpu::ConvAlgo::Gemm);
  { Params p = conv_params(s); p.M = s.Cg(); p.Ncols = s.N * s.in_size(); p.Kdim = s.Kg() * s.k_size(); p.a = w.data(); p.b = gy.data(); p.c = gx_emu.data(); emulate<double, kBwdData>(p, 1); }
  check((std::string(name) + " backward data").c_str(), maxdiff(gx_emu, gx_cpu));
  for (int64_t splits : {1, 3}) {
    std::vector<double> gw_cpu(ws, 0.0), gw_emu(ws, 0.0);
    cpu::conv_backward_weight<double>(s, gy.data(), x.data(), gw_cpu.data(), cpu::ConvAlgo::Gemm);
    { Params p = conv_params(s); p.M = s.Kg(); p.Ncols = s.Cg() * s.k_size(); p.Kdim = s.N * s.out_size(); p.a = gy.data(); p.b = x.data(); p.c = gw_emu.data(); emulate<double, kBwdWeight>(p, splits); }
    check((std::string(name) + " backward weight splits=" + std::to_string(splits)).c_str(), maxdiff(gw_emu, gw_cpu));
  }
}

// The direct depthwise kernels' per-element sums, for groups == C.
void run_depthwise(ConvShape s, const char* name) {
  std::mt19937 gen(2);
  std::normal_distribution<double> nd;
  auto rnd = [&](int64_t n) { std::vector<double> v(n); for (auto& e : v) e = nd(gen); return v; };
  const int64_t xs = s.N * s.C * s.in_size(), ws = s.K * s.Cg() * s.k_size(), ys = s.N * s.K * s.out_size();
  auto x = rnd(xs), w = rnd(ws), gy = rnd(ys);
  const Geo g = conv_params(s).g;
  std::vector<double> y_cpu(ys), y_dw(ys);
  cpu::conv_forward<double>(s, x.data(), w.data(), y_cpu.data(), cpu::ConvAlgo::Gemm);
  for (int64_t e = 0; e < ys; ++e)
    y_dw[e] = dw_forward_value(g, x.data(), w.data(), e / s.out_size() / s.K, int(e / s.out_size() % s.K), int(e % s.out_size()));
  check((std::string(name) + " direct forward").c_str(), maxdiff(y_dw, y_cpu));
  std::vector<double> gx_cpu(xs), gx_dw(xs);
  cpu::conv_backward_data<double>(s, gy.data(), w.data(), gx_cpu.data(), cpu::ConvAlgo::Gemm);
  for (int64_t e = 0; e < xs; ++e)
    gx_dw[e] = dw_backward_data_value(g, gy.data(), w.data(), e / s.in_size() / s.C, int(e / s.in_size() % s.C), int(e % s.in_size()));
  check((std::string(name) + " direct backward data").c_str(), maxdiff(gx_dw, gx_cpu));
  std::vector<double> gw_cpu(ws, 0.0), gw_dw(ws, 0.0);
  cpu::conv_backward_weight<double>(s, gy.data(), x.data(), gw_cpu.data(), cpu::ConvAlgo::Gemm);
  for (int64_t e = 0; e < ws; ++e)
    for (int64_t j = 0; j < s.N * s.out_size(); ++j)
      gw_dw[e] += dw_backward_weight_term(g, gy.data(), x.data(), int(e / s.k_size()), int(e % s.k_size()), j);
  check((std::string(name) + " direct backward weight").c_str(), maxdiff(gw_dw, gw_cpu));
}

ConvShape make(int nd, std::vector<int64_t> x, std::vector<int64_t> w, std::vector<int64_t> st, std::vector<std::pair<int64_t,int64_t>> pad, std::vector<int64_t> dil, int64_t groups) {
  ConvShape s;
  s.N = x[0]; s.C = x[1]; s.K = w[0]; s.groups = groups;
  for (int i = 0; i < nd; ++i) {
    int d = 3 - nd + i;
    s.in[d] = x[2 + i]; s.k[d] = w[2 + i]; s.stride[d] = st[i]; s.dil[d] = dil[i]; s.pad0[d] = pad[i].first; s.pad1[d] = pad[i].second;
    s.out[d] = ConvShape::natural_out(s.in[d], s.k[d], s.stride[d], s.dil[d], s.pad0[d], s.pad1[d]);
  }
  return s;
}

int main() {
  run(make(2, {1, 3, 7, 11}, {5, 3, 3, 3}, {1, 1}, {{1, 1}, {1, 1}}, {1, 1}, 1), "2d basic");
  run(make(2, {2, 6, 13, 17}, {9, 2, 3, 5}, {3, 2}, {{0, 2}, {1, 0}}, {2, 1}, 3), "2d s3 d2 g3 asym");
  run(make(2, {3, 5, 11, 7}, {5, 1, 3, 3}, {1, 3}, {{1, 1}, {2, 1}}, {1, 2}, 5), "depthwise");
  run(make(2, {2, 4, 9, 9}, {8, 1, 3, 3}, {2, 2}, {{1, 1}, {1, 1}}, {1, 1}, 4), "depthwise x2");
  run(make(1, {2, 7, 23}, {11, 7, 4}, {3}, {{2, 1}}, {2}, 1), "1d");
  run(make(3, {1, 3, 5, 6, 7}, {4, 3, 2, 3, 3}, {1, 2, 1}, {{1, 0}, {0, 1}, {1, 1}}, {2, 1, 1}, 1), "3d");
  run(make(2, {2, 70, 9, 10}, {129, 70, 1, 1}, {1, 1}, {{0, 0}, {0, 0}}, {1, 1}, 1), "1x1 pointwise");
  run(make(2, {2, 8, 9, 10}, {6, 8, 1, 1}, {2, 2}, {{0, 0}, {0, 0}}, {1, 1}, 2), "1x1 s2 g2");
  run(make(2, {2, 8, 5, 6}, {6, 8, 1, 1}, {1, 1}, {{0, 1}, {1, 0}}, {1, 1}, 1), "1x1 padded");
  run_depthwise(make(2, {3, 5, 11, 7}, {5, 1, 3, 3}, {1, 3}, {{1, 1}, {2, 1}}, {1, 2}, 5), "depthwise");
  run_depthwise(make(2, {2, 4, 9, 9}, {8, 1, 3, 3}, {2, 2}, {{1, 1}, {1, 1}}, {1, 1}, 4), "depthwise x2 s2");
  run_depthwise(make(1, {2, 3, 17}, {6, 1, 4}, {3}, {{2, 0}}, {2}, 3), "depthwise 1d x2 s3 d2");
  run_depthwise(make(3, {1, 2, 4, 5, 6}, {2, 1, 2, 3, 2}, {1, 2, 1}, {{1, 0}, {0, 1}, {1, 1}}, {1, 1, 2}, 2), "depthwise 3d");
  run_depthwise(make(2, {2, 3, 5, 6}, {3, 1, 1, 1}, {1, 1}, {{0, 0}, {0, 0}}, {1, 1}, 3), "depthwise 1x1");
  printf("%d failures\n", fails);
  return fails != 0;
}
