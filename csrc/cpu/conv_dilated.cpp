// Dilated 3x3 stride-1 layers on Winograd, one phase at a time.
//
// With dilation d along a dim, output row oh = d*i + r reads input rows
//   oh - pad + b*d = d*(i + b + off) + q,   q = (r - pad) mod d, off = floor((r - pad) / d),
// so the outputs of phase r (every d-th row from r) see only the inputs of phase q
// (every d-th row from q), through the undilated 3x3 kernel with padding -off. The
// layer is d_h * d_w undilated 3x3 convolutions, each from one input phase to one
// output phase, r and q in one-to-one correspondence: exactly the same sums, and each
// runs on Winograd F(4x4, 3x3) where im2col + GEMM was the only choice before (Zen 2,
// AVX2, one thread, 3x3 dilation-2 C64 56x56 batch 8 forward: GEMM 26.4 ms against
// PyTorch's 19.8). The backward to the input splits the same way (each input phase
// gets its gradient from its output phase only); the weight gradient stays on GEMM.
#include <algorithm>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_internal.h"
#include "cpu/winograd.h"

namespace cnnfast::cpu::conv_detail {
namespace {

// One dim's phase r of dilation d: input phase q, kernel offset off, and how many
// output (n_out) and input (n_in) positions each phase holds.
struct PhaseDim {
  int64_t r, q, off, n_out, n_in;
};

PhaseDim phase_dim(int64_t r, int64_t d, int64_t pad, int64_t in, int64_t out) {
  const int64_t t = r - pad, q = ((t % d) + d) % d;
  return {r, q, (t - q) / d, (out - r + d - 1) / d, (in - q + d - 1) / d};
}

// The undilated convolution of output phase (rh, rw) alone.
ConvShape phase_shape(const ConvShape& s, const PhaseDim& h, const PhaseDim& w) {
  ConvShape p = s;
  p.dil[1] = p.dil[2] = 1;
  p.in[1] = h.n_in, p.in[2] = w.n_in, p.out[1] = h.n_out, p.out[2] = w.n_out;
  p.pad0[1] = -h.off, p.pad0[2] = -w.off;
  p.pad1[1] = h.n_out + 2 - h.n_in + h.off, p.pad1[2] = w.n_out + 2 - w.n_in + w.off;
  return p;
}

// Where each phase of a (planes, H, W) tensor starts in its phase-split copy: phase
// (ph, pw) (rows ph, ph + d0, ..., columns pw, pw + d1, ...) as (planes, nh, nw).
std::vector<int64_t> phase_offsets(int64_t planes, int64_t H, int64_t W, int64_t d0, int64_t d1) {
  std::vector<int64_t> off(size_t(d0 * d1 + 1), 0);
  for (int64_t ph = 0; ph < d0; ++ph)
    for (int64_t pw = 0; pw < d1; ++pw)
      off[size_t(ph * d1 + pw + 1)] = off[size_t(ph * d1 + pw)] + planes * ((H - ph + d0 - 1) / d0) * ((W - pw + d1 - 1) / d1);
  return off;
}

// full (planes, H, W) -> every phase in part (to_phase), or back. One pass over full,
// a plane at a time: phase by phase, every pass touched all of x's and y's cache
// lines again (a quarter of the forward's time at dilation 2).
template <class T>
void phase_split(int64_t planes, int64_t H, int64_t W, int64_t d0, int64_t d1, T* full, T* part, bool to_phase) {
  const std::vector<int64_t> off = phase_offsets(planes, H, W, d0, d1);
  parallel_for(0, planes, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H * W)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t ih = 0; ih < H; ++ih) {
        const int64_t ph = ih % d0, nh = (H - ph + d0 - 1) / d0;
        T* __restrict f = full + (c * H + ih) * W;
        if (d1 == 2) {  // even and odd columns, a form the compiler vectorises
          T* __restrict e = part + off[size_t(ph * 2)] + (c * nh + ih / d0) * ((W + 1) / 2);
          T* __restrict o = part + off[size_t(ph * 2 + 1)] + (c * nh + ih / d0) * (W / 2);
          const int64_t pairs = W / 2;
          if (to_phase) {
            for (int64_t l = 0; l < pairs; ++l) e[l] = f[2 * l], o[l] = f[2 * l + 1];
            if (W % 2) e[pairs] = f[W - 1];
          } else {
            for (int64_t l = 0; l < pairs; ++l) f[2 * l] = e[l], f[2 * l + 1] = o[l];
            if (W % 2) f[W - 1] = e[pairs];
          }
          continue;
        }
        for (int64_t pw = 0; pw < d1; ++pw) {
          const int64_t nw = (W - pw + d1 - 1) / d1;
          T* __restrict p = part + off[size_t(ph * d1 + pw)] + (c * nh + ih / d0) * nw;
          if (to_phase)
            for (int64_t l = 0; l < nw; ++l) p[l] = f[pw + d1 * l];
          else
            for (int64_t l = 0; l < nw; ++l) f[pw + d1 * l] = p[l];
        }
      }
  });
}

}  // namespace

bool dilated_winograd_pays(const ConvShape& s) {
  if (s.in[0] != 1 || s.out[0] != 1 || s.k[0] != 1 || s.pad0[0] != 0 || s.k[1] != 3 || s.k[2] != 3 ||
      s.stride[1] != 1 || s.stride[2] != 1 || (s.dil[1] == 1 && s.dil[2] == 1) || s.pad0[1] < 0 || s.pad0[2] < 0)
    return false;
  // Every phase holds inputs and outputs (no phase is bias-only or gradient-free).
  for (int d = 1; d < 3; ++d)
    if (s.in[d] < s.dil[d] || s.out[d] < s.dil[d]) return false;
  // The smallest phase decides, on the undilated chooser.
  const PhaseDim h = phase_dim(s.dil[1] - 1, s.dil[1], s.pad0[1], s.in[1], s.out[1]);
  const PhaseDim w = phase_dim(s.dil[2] - 1, s.dil[2], s.pad0[2], s.in[2], s.out[2]);
  if (choose_algo(phase_shape(s, h, w), true) != ConvAlgo::Winograd) return false;
  // At AVX-512 the direct kernel (conv_grouped.h) takes dilated layers otherwise, and
  // beats the phases on narrow layers and few tiles. One thread on Zen 5, direct
  // against phases, forward / grad_x (ms): 3x3 d2 C64 56x56 batch 8 9.5 / 9.3 against
  // 8.0 / 8.4; C128 28x28 batch 8 9.3 / 9.2 against 8.0 / 8.0; but C32 batch 8 2.4 /
  // 2.6 against 3.5 / 3.3, C64 batch 1 (49 tiles a phase) 1.1 / 1.1 against 1.3 / 1.3,
  // C256 28x28 batch 4 (64 tiles) grad_x 17.5 against 18.8.
  if (use_avx512()) {
    const int64_t tiles = s.N * ((h.n_out + 3) / 4) * ((w.n_out + 3) / 4);
    if (s.Cg() < 64 || s.Kg() < 64 || tiles < 128) return false;
  }
  return true;
}

template <class T>
void dilated_forward_winograd(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t dh = s.dil[1], dw = s.dil[2], H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2];
  const std::vector<int64_t> xo = phase_offsets(s.N * s.C, H, W, dh, dw), yo = phase_offsets(s.N * s.K, Ho, Wo, dh, dw);
  Workspace<T> xs = workspace_array<T>(s.N * s.C * H * W), ys = workspace_array<T>(s.N * s.K * Ho * Wo);
  phase_split(s.N * s.C, H, W, dh, dw, const_cast<T*>(x), xs.get(), true);
  for (int64_t rh = 0; rh < dh; ++rh)
    for (int64_t rw = 0; rw < dw; ++rw) {
      const PhaseDim a = phase_dim(rh, dh, s.pad0[1], H, Ho), b = phase_dim(rw, dw, s.pad0[2], W, Wo);
      winograd_conv2d<T>(s.N, s.C, s.K, s.groups, a.n_in, b.n_in, a.n_out, b.n_out, -a.off, -b.off,
                         xs.get() + xo[size_t(a.q * dw + b.q)], w, bias, ys.get() + yo[size_t(rh * dw + rw)]);
    }
  phase_split(s.N * s.K, Ho, Wo, dh, dw, y, ys.get(), false);
}

template <class T>
void dilated_backward_data_winograd(const ConvShape& s, const T* gy, const T* w, T* gx) {
  const int64_t dh = s.dil[1], dw = s.dil[2], H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2];
  const std::vector<int64_t> xo = phase_offsets(s.N * s.C, H, W, dh, dw), yo = phase_offsets(s.N * s.K, Ho, Wo, dh, dw);
  Workspace<T> wt = workspace_array<T>(s.K * s.Cg() * 9);
  flip_swap_weights(s, w, wt.get());
  Workspace<T> gys = workspace_array<T>(s.N * s.K * Ho * Wo), gxs = workspace_array<T>(s.N * s.C * H * W);
  phase_split(s.N * s.K, Ho, Wo, dh, dw, const_cast<T*>(gy), gys.get(), true);
  for (int64_t rh = 0; rh < dh; ++rh)
    for (int64_t rw = 0; rw < dw; ++rw) {
      const PhaseDim a = phase_dim(rh, dh, s.pad0[1], H, Ho), b = phase_dim(rw, dw, s.pad0[2], W, Wo);
      // As conv.cpp's stride-1 backward: the flipped kernel at offset 2 - padding.
      winograd_conv2d<T>(s.N, s.K, s.C, s.groups, a.n_out, b.n_out, a.n_in, b.n_in, 2 + a.off, 2 + b.off,
                         gys.get() + yo[size_t(rh * dw + rw)], wt.get(), static_cast<const T*>(nullptr),
                         gxs.get() + xo[size_t(a.q * dw + b.q)]);
    }
  phase_split(s.N * s.C, H, W, dh, dw, gx, gxs.get(), false);
}

#define CNNFAST_INSTANTIATE(T)                                                                        \
  template void dilated_forward_winograd<T>(const ConvShape&, const T*, const T*, const T*, T*);     \
  template void dilated_backward_data_winograd<T>(const ConvShape&, const T*, const T*, T*);
CNNFAST_INSTANTIATE(float)
CNNFAST_INSTANTIATE(double)
#undef CNNFAST_INSTANTIATE

}  // namespace cnnfast::cpu::conv_detail
