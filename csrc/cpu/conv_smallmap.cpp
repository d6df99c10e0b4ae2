// Weight-streaming direct convolution for layers whose weights outweigh their maps:
// deep 3x3 layers on 4x4-14x14 maps at small batches (ResNet's layer3/layer4 at batch
// 1-4). The forward (any stride) and the stride-1 grad_x put output positions in the
// vector lanes and broadcast each weight straight from the (K, C, kh, kw) array, which
// they read once, in order; grad_w writes each of its values once.
//
// Why: such a layer is bound by its weights, not its arithmetic. 3x3 C512 at 7x7 batch 1
// does 231 MFLOP on 9.4 MB of weights, and the GEMM-based paths move the weights three
// times or more per pass: the tap path copied them tap-major, packed them for the GEMM
// and read the pack, and its grad_w added into a strided (c, tap) layout per tap; the
// channel-vector tiles pack them too (conv_kvec_taps.cpp). Here the input is the small
// operand: each channel plane, zero-bordered so that a tap is one plain offset, stays in
// L1 across its taps while the weights stream by.
//
// Layout: one image's planes bordered to (Hs, Ws) with Ws = Wo + (kw - 1) dil, output
// position q = oh Ws + ow (ow >= Wo are junk lanes, dropped at the store), so tap (a, b)
// reads the plane at q + a dil Ws + b dil. At stride s each plane is first split into s^2
// phase planes (every s-th row and column from each offset), and a tap reads the phase
// its offset falls in at a plain offset again. A tile is KB output channels by VB vectors
// of 16 positions (28 or fewer accumulators); per (channel, tap) VB loads and KB
// broadcasts. grad_x is the same pass over grad_y with the kernel rotated by 180
// degrees and the channel axes swapped, which only changes the weights' strides and the
// tap offsets: no rotated copy either. grad_w: 7 rows of grad_y by 64 columns of the
// virtual im2col matrix (channel, tap), made per column block into an L1-sized
// (positions, 64) buffer, the sum over every position of every image in registers.
#include "cpu/conv_smallmap.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "cpu/conv_internal.h"
#include "cpu/conv_parallel.h"

namespace cnnfast::cpu::conv_detail {
namespace {

// CNNFAST_SMALLMAP=0 turns these passes off, =1 takes them wherever they apply (for A/B
// measurements and tests of the rule below); read once.
int smallmap_override() {
  static const int v = [] {
    const char* e = std::getenv("CNNFAST_SMALLMAP");
    return e ? std::atoi(e) : -1;
  }();
  return v;
}

bool smallmap_applies(const ConvShape& s) {
  return use_avx512() && is_two_d(s) && s.groups == 1 && s.pad0[1] >= 0 && s.pad0[2] >= 0 &&
         s.pad1[1] >= 0 && s.pad1[2] >= 0;
}

// One pass of output rows over bordered source planes: the forward (rows = output
// channels, planes = x's channels) or grad_x (rows = input channels, planes = grad_y's).
struct RowsPass {
  int64_t images, planes, rows;
  int64_t H, W, top, left;  // source planes and where they sit in the bordered ones
  int64_t Hs, Ws, Ho, Wo;   // bordered planes (of one phase); output planes
  int64_t sh = 1, sw = 1;   // the stride: sh sw phase planes per source plane
  std::vector<int32_t> off; // per tap, in the weights' tap order
  const float* w;
  int64_t ld_row, ld_in;
};

// One source plane -> its sh sw phase planes (Hs, Ws) of the zero-bordered plane:
// phase (ph, pw) holds bordered rows ph, ph + sh, ... and columns pw, pw + sw, ..., so that a
// strided tap reads one phase at a plain offset too.
void phase_image(const float* x, const RowsPass& p, float* xp) {
  std::memset(xp, 0, sizeof(float) * size_t(p.sh * p.sw * p.Hs * p.Ws));
  for (int64_t ph = 0; ph < p.sh; ++ph)
    for (int64_t pw = 0; pw < p.sw; ++pw) {
      float* dst = xp + (ph * p.sw + pw) * p.Hs * p.Ws;
      int64_t j0, j1;
      valid_range(p.Ws, p.W, p.sw, pw - p.left, j0, j1);
      for (int64_t i = 0; i < p.Hs; ++i) {
        const int64_t h = i * p.sh + ph - p.top;
        if (h < 0 || h >= p.H) continue;
        const float* row = x + h * p.W + pw - p.left;
        for (int64_t j = j0; j < j1; ++j) dst[i * p.Ws + j] = row[j * p.sw];
      }
    }
}

void run_rows(const RowsPass& p, const float* src, const float* bias, float* y) {
  const int64_t phase = p.Hs * p.Ws, plane = p.sh * p.sw * phase, image = p.planes * plane;
  const int64_t taps = int64_t(p.off.size());
  const int64_t Q = p.Ho * p.Ws, nvec = (Q + 15) / 16;
  const int64_t pblocks = (nvec + 6) / 7, vmax = (nvec + pblocks - 1) / pblocks;
  const int64_t KB = avx512_impl::smallmap_rows_per_tile(vmax), kblocks = (p.rows + KB - 1) / KB;
  // A tile reads up to 16 floats past the last position of the last plane's last tap,
  // which is at most Ws past the plane.
  const int64_t slack = 16 + p.Ws;
  Workspace<float> xp = workspace_array<float>(p.images * image + slack);
  // By planes, not images: at batch 1 both threads border.
  parallel_for(0, p.images * p.planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1)),
               [&](int64_t i0, int64_t i1) {
                 for (int64_t i = i0; i < i1; ++i)
                   if (p.sh == 1 && p.sw == 1)
                     border_image(src + i * p.H * p.W, 1, p.H, p.W, p.top, p.left, p.Hs, p.Ws, xp.get() + i * plane);
                   else
                     phase_image(src + i * p.H * p.W, p, xp.get() + i * plane);
               });
  std::fill(xp.get() + p.images * image, xp.get() + p.images * image + slack, 0.0f);
  const int64_t out_plane = p.Ho * p.Wo;
  // Tasks channel-block major, so that one block's weights (KB ld_row floats) serve every
  // image and position block from L2. (Position-block major with every channel block
  // inside, for wide maps with few channels, lost to Winograd and the channel-vector
  // tiles: 3x3 C32 at 64x64 batch 16 5.7 -> 8.3 ms, C16 at 32x32 batch 128 2.1 -> 3.0.)
  dynamic_tasks(
      kblocks * p.images * pblocks, [] { return 0; },
      [&](int64_t t, int&) {
        const int64_t pb = t % pblocks, n = (t / pblocks) % p.images, kb = t / (pblocks * p.images);
        const int64_t v0 = pb * nvec / pblocks, v1 = (pb + 1) * nvec / pblocks;
        const int64_t k0 = kb * KB, rows = std::min(KB, p.rows - k0);
        alignas(64) float tmp[28 * 16];
        avx512_impl::smallmap_rows_tile(KB, v1 - v0, p.planes, taps, xp.get() + n * image + v0 * 16, plane,
                                        p.off.data(), p.w + k0 * p.ld_row, p.ld_row, p.ld_in, rows,
                                        bias ? bias + k0 : nullptr, tmp);
        const int64_t q0 = v0 * 16, q1 = std::min(Q, v1 * 16), width = (v1 - v0) * 16;
        for (int64_t r = 0; r < rows; ++r) {
          float* dst = y + (n * p.rows + k0 + r) * out_plane;
          for (int64_t oh = q0 / p.Ws; oh * p.Ws < q1; ++oh) {
            const int64_t a = std::max(q0, oh * p.Ws), b = std::min(q1, oh * p.Ws + p.Wo);
            if (a < b) std::memcpy(dst + oh * p.Wo + (a - oh * p.Ws), tmp + r * width + (a - q0), sizeof(float) * size_t(b - a));
          }
        }
      });
}

// The share of (tap, output) products that read inside the image: 3x3 with padding 1
// on 7x7 maps 0.82, 6x6 0.79, 4x4 0.69 (the tap path computes only those).
double live_density(const ConvShape& s) {
  double d = 1;
  for (int dim = 1; dim < 3; ++dim) {
    int64_t live = 0;
    for (int64_t a = 0; a < s.k[dim]; ++a) {
      int64_t lo, hi;
      valid_range(s.out[dim], s.in[dim], s.stride[dim], a * s.dil[dim] - s.pad0[dim], lo, hi);
      live += hi - lo;
    }
    d *= double(live) / double(s.k[dim] * s.out[dim]);
  }
  return d;
}

// The share of vector lanes a forward tile fills: 49 of 64 on 7x7 maps (bordered rows of 9).
double lane_share(const ConvShape& s) {
  const int64_t Ws = s.out[2] + (s.k[2] - 1) * s.dil[2] / s.stride[2], vectors = (s.out[1] * Ws + 15) / 16;
  return double(s.out_size()) / double(16 * vectors);
}

// The weight-bound regime. These passes spend lane_share x live_density of their FMAs on
// real products (3x3 at 14x14 0.79, at 7x7 0.63, at 4x4 0.35) and win while the other
// paths' extra passes over the weights outweigh that, i.e. up to a number of output
// positions per call that grows with it. Zen 5, 2 threads, ms, the paths before against
// these (torch in brackets): 3x3 C512 at 7x7 batch 1 forward 1.97 / 0.78 (1.28), grad_x
// 2.13 / 0.73 (1.17), grad_w 2.02 / 0.96 (1.50); batch 4 forward 3.87 / 2.80, batch 8
// (392 positions, below) 5.15 / 5.0-5.5; C256 at 14x14 batch 1 1.28 / 0.68, batch 2 1.59 / 1.29,
// batch 4 (784, Winograd's) 2.55 / 2.65; C256 at 6x6 batch 2 0.62 / 0.32; C512 at 4x4
// batch 1 1.20 / 0.41, batch 4 1.71 / 1.28, batch 16 (256) 3.5 / 5.0; C256 at 4x4 batch 1
// 0.27 / 0.13, batch 4 0.42 / 0.36, batch 8 (128) 0.59 / 0.71; C256 at 6x6 batch 4 0.64 /
// 0.56; C256 at 8x8 batch 8 (512) 1.81 / 1.61 is left out by the line; C512 at 5x5 batch 1
// 1.48 / 0.53, batch 4 2.07 / 1.86; 5x5 C256 at 7x7 batch 1 1.72 / 0.66, batch 2 1.48 /
// 1.08, batch 4 2.02 / 2.07; C512 at 7x7 batch 8 (392 at a 0.63 share) forward / grad_x /
// grad_w 6.05 / 6.08 / 5.43 against 5.51 / 5.35 / 5.11; C64 at 8x8 batch 8 0.23 / 0.17; C128 at 28x28 batch 1 (784)
// 0.62 / 0.67. Stride 2 (forward): C256->512 at 14x14 batch 1 0.67 / 0.40 (torch 0.62),
// batch 2 1.10 / 0.79; C128->256 at 28x28 batch 4 (784) 1.47 / 1.85 (and see
// smallmap_forward_pays); grad_w at stride 2: C512 at 14x14 batch 8 5.42 / 4.69.
bool weight_bound(const ConvShape& s) {
  if (!smallmap_applies(s) || s.k_size() == 1 || s.K < 16 || s.C < 16) return false;
  const double useful = lane_share(s) * live_density(s);
  const int64_t positions = s.N * s.out_size();
  return positions <= 512 && double(positions) <= 1050.0 * useful - 250.0;
}

// Small weights (under 64 Ki floats) are packed for the channel-vector tiles at little
// cost, and those tiles are ahead on rows of >= 16 outputs (5x5 C32 at 9x16 batch 1:
// 0.043 there, 0.054 ms here); where they do not apply, these passes win at any size
// (3x3 C64 at 8x8 batch 8: 0.23 / 0.17 ms).
bool big_weights(const ConvShape& s) { return s.K * s.C * s.k_size() >= 65536; }

}  // namespace

double smallmap_useful_share(const ConvShape& s) { return lane_share(s) * live_density(s); }

bool smallmap_forward_pays(const ConvShape& s) {
  if (!smallmap_applies(s)) return false;
  if (smallmap_override() >= 0) return smallmap_override() == 1;
  // Strided layers pay for their phase planes and meet an im2col that shrinks with the
  // stride: 3x3/2 C512 at 14x14 batch 4 (196 positions) 3.10 / 3.01 ms, batch 8 (392) 5.0 / 5.8.
  const bool strided = s.stride[1] * s.stride[2] > 1;
  return weight_bound(s) && (!strided || s.N * s.out_size() <= 256) && choose_algo(s, true) != ConvAlgo::Winograd &&
         (big_weights(s) || !kvec_taps_pays(s));
}

bool smallmap_data_pays(const ConvShape& s) {
  if (!smallmap_applies(s) || s.stride[1] != 1 || s.stride[2] != 1) return false;
  if (smallmap_override() >= 0) return smallmap_override() == 1;
  return weight_bound(s) && choose_algo(s, true) != ConvAlgo::Winograd && (big_weights(s) || !kvec_taps_data_pays(s));
}

bool smallmap_weight_pays(const ConvShape& s) {
  if (!smallmap_applies(s)) return false;
  if (smallmap_override() >= 0) return smallmap_override() == 1;
  // The channel-vector weight tiles transpose grad_y and their accumulators per call; over
  // few positions that outweighs their better FMA rate (C256 at 6x6 batch 2 0.52 / 0.38,
  // 5x5 C256 at 7x7 0.84 / 0.72), over more it does not (C128 at 7x7 batch 8 0.46 / 0.55,
  // C256 at 8x8 batch 8 1.50 / 1.86).
  return weight_bound(s) && big_weights(s) && (s.N * s.out_size() <= 256 || !kvec_weight_pays(s));
}

void forward_smallmap(const ConvShape& s, const float* x, const float* w, const float* bias, float* y) {
  const int64_t KH = s.k[1], KW = s.k[2], dh = s.dil[1], dw = s.dil[2];
  RowsPass p;
  p.images = s.N, p.planes = s.C, p.rows = s.K;
  p.H = s.in[1], p.W = s.in[2], p.top = s.pad0[1], p.left = s.pad0[2];
  p.sh = s.stride[1], p.sw = s.stride[2];
  p.Ho = s.out[1], p.Wo = s.out[2], p.Hs = p.Ho + (KH - 1) * dh / p.sh, p.Ws = p.Wo + (KW - 1) * dw / p.sw;
  // Tap (a, b) reads bordered row oh sh + a dh: phase (a dh) % sh, row oh + (a dh) / sh of it.
  for (int64_t a = 0; a < KH; ++a)
    for (int64_t b = 0; b < KW; ++b) {
      const int64_t ph = a * dh % p.sh, pw = b * dw % p.sw;
      p.off.push_back(int32_t((ph * p.sw + pw) * p.Hs * p.Ws + a * dh / p.sh * p.Ws + b * dw / p.sw));
    }
  p.w = w, p.ld_row = s.C * KH * KW, p.ld_in = KH * KW;
  run_rows(p, x, bias, y);
}

void backward_data_smallmap(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t KH = s.k[1], KW = s.k[2], dh = s.dil[1], dw = s.dil[2];
  RowsPass p;
  p.images = s.N, p.planes = s.K, p.rows = s.C;
  p.H = s.out[1], p.W = s.out[2], p.top = (KH - 1) * dh - s.pad0[1], p.left = (KW - 1) * dw - s.pad0[2];
  p.Ho = s.in[1], p.Wo = s.in[2], p.Hs = p.Ho + (KH - 1) * dh, p.Ws = p.Wo + (KW - 1) * dw;
  // grad_x (ih, iw) = sum over taps (a, b) of grad_y (ih + pad - a dil, iw + pad - b dil) w(a, b):
  // the bordered grad_y read at the rotated tap's offset.
  for (int64_t a = 0; a < KH; ++a)
    for (int64_t b = 0; b < KW; ++b) p.off.push_back(int32_t((KH - 1 - a) * dh * p.Ws + (KW - 1 - b) * dw));
  p.w = w, p.ld_row = KH * KW, p.ld_in = s.C * KH * KW;
  run_rows(p, gy, nullptr, gx);
}

void backward_weight_smallmap(const ConvShape& s, const float* gy, const float* x, float* gw, bool accumulate) {
  const int64_t C = s.C, K = s.K, H = s.in[1], W = s.in[2], Ho = s.out[1], Wo = s.out[2], P = Ho * Wo;
  const int64_t KH = s.k[1], KW = s.k[2], kk = KH * KW, CK = C * kk, NP = s.N * P;
  const int64_t jblocks = (CK + 63) / 64, KB = kSmallmapWeightRows;
  dynamic_tasks(
      jblocks, [&] { return workspace_array<float>(NP * 64); },
      [&](int64_t jb, Workspace<float>& xt) {
        const int64_t j0 = jb * 64, cols = std::min<int64_t>(64, CK - j0);
        float* xtp = xt.get();
        std::memset(xtp, 0, sizeof(float) * size_t(NP * 64));
        // xt (image, position, column): column j0 + jj of the im2col matrix, (channel, tap).
        for (int64_t jj = 0; jj < cols; ++jj) {
          const int64_t c = (j0 + jj) / kk, t = (j0 + jj) % kk, a = t / KW, b = t % KW;
          int64_t lo, hi;
          valid_range(Wo, W, s.stride[2], b * s.dil[2] - s.pad0[2], lo, hi);
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t oh = 0; oh < Ho; ++oh) {
              const int64_t ih = oh * s.stride[1] - s.pad0[1] + a * s.dil[1];
              if (ih < 0 || ih >= H) continue;
              const float* xr = x + ((n * C + c) * H + ih) * W - s.pad0[2] + b * s.dil[2];
              float* d = xtp + ((n * Ho + oh) * Wo) * 64 + jj;
              for (int64_t ow = lo; ow < hi; ++ow) d[ow * 64] = xr[ow * s.stride[2]];
            }
        }
        for (int64_t k0 = 0; k0 < K; k0 += KB)
          avx512_impl::smallmap_weight_tile(s.N, P, gy + k0 * P, K * P, P, xtp, std::min(KB, K - k0),
                                            gw + k0 * CK + j0, CK, cols, accumulate,
                                            k0 + 2 * KB <= K ? gw + (k0 + KB) * CK + j0 : nullptr);
      });
}

}  // namespace cnnfast::cpu::conv_detail
