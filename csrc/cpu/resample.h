// Separable resampling of (planes, D, H, W) maps: every output position of an axis
// reads `taps` source positions of that axis with given weights, and the N-D
// output is the tensor product, y[d,h,w] = sum wd*wh*ww * x[id, ih, iw]. Nearest
// (1 tap), linear/bilinear/trilinear (2) and bicubic (4) interpolation in all of
// PyTorch's and ONNX's coordinate conventions are this one kernel: the caller
// computes the per-axis index/weight tables (small, O(output size)).
//
// Gradient contract: grad_x is written (=), never accumulated into.
// Tables: index (out, taps) int64 in [0, in), weight (out, taps) of T. 1-D and 2-D
// maps use D = 1 (and H = 1) with a one-entry table {index 0, weight 1}.
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

template <class T>
struct AxisTable {
  int64_t in = 1, out = 1, taps = 1;
  const int64_t* index = nullptr;  // (out, taps)
  const T* weight = nullptr;       // (out, taps)
};

template <class T>
void resample_forward(const T* x, T* y, int64_t planes, const AxisTable<T>& d, const AxisTable<T>& h,
                      const AxisTable<T>& w);
template <class T>
void resample_backward(const T* grad_y, T* grad_x, int64_t planes, const AxisTable<T>& d, const AxisTable<T>& h,
                       const AxisTable<T>& w);

// AVX2 float32 path for one plane (resample_avx2.cpp): rows are first combined over
// the D and H taps with vector FMAs into `row` (in_w floats), then gathered along W.
namespace avx2_impl {
void resample_plane_forward(const float* x, float* y, const AxisTable<float>& d, const AxisTable<float>& h,
                            const AxisTable<float>& w, float* row);
void resample_plane_backward(const float* grad_y, float* grad_x, const AxisTable<float>& d, const AxisTable<float>& h,
                             const AxisTable<float>& w, float* row);
}  // namespace avx2_impl

// The same on 16 lanes (resample_avx512.cpp). Forward also takes the W table tap-major
// (tap_index[k * stride + ow], stride = out_w rounded up to 16; the pad has index 0 and
// weight 0), so the taps of 16 outputs are plain loads, not stride-taps gathers.
namespace avx512_impl {
void resample_plane_forward(const float* x, float* y, const AxisTable<float>& d, const AxisTable<float>& h,
                            const AxisTable<float>& w, float* row, const int32_t* tap_index, const float* tap_weight);
void resample_plane_backward(const float* grad_y, float* grad_x, const AxisTable<float>& d, const AxisTable<float>& h,
                             const AxisTable<float>& w, float* row);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
