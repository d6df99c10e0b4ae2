// Pooling family: max pooling (with indices), average pooling, adaptive
// average/max pooling and max-unpooling, 1-D/2-D/3-D, forward and backward.
// Tensor-free: raw pointers plus a PoolGeom.
//
// Every kernel works on 3-D planes: a 1-D or 2-D op is the 3-D op with leading
// spatial extents of 1 (kernel 1, stride 1, padding 0, dilation 1), so there is
// one implementation per op and the 1-D/2-D/3-D entry points only fill PoolGeom.
// A tensor of shape (N, C, *spatial) is `planes = N*C` independent planes.
//
// Indices follow PyTorch: int64 flat offsets into one (n, c) plane of the
// input, (d*H + h)*W + w. The max of a window is the first maximum in scan
// order (d, then h, then w); a NaN wins over any number and a later NaN over an
// earlier one, exactly as PyTorch's CPU kernels, so ties send the gradient to
// the same element PyTorch does.
//
// Gradient contract: activation gradients are written (=). The backward
// kernels overwrite all of grad_input (zero where no window reaches).
#pragma once
#include <cstdint>

namespace cnnfast::cpu {

struct PoolGeom {
  int64_t planes = 1;
  int64_t in[3] = {1, 1, 1};   // input  extent (D, H, W)
  int64_t out[3] = {1, 1, 1};  // output extent (D, H, W)
  int64_t k[3] = {1, 1, 1};    // kernel
  int64_t s[3] = {1, 1, 1};    // stride
  int64_t p[3] = {0, 0, 0};    // padding (both sides, as PyTorch)
  int64_t d[3] = {1, 1, 1};    // dilation (max pooling only)
  int64_t in_plane() const { return in[0] * in[1] * in[2]; }
  int64_t out_plane() const { return out[0] * out[1] * out[2]; }
};

// PyTorch's pooling output size for one dimension (ceil_mode drops a last
// window that would start in the right padding).
int64_t pool_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode);

// x: (planes, in) -> y, indices: (planes, out); indices may be null (inference
// without indices: the values alone, a third of the memory traffic written).
template <class T>
void max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices);
// grad_x = sum of grad_y scattered to indices. Returns -1 when every index is
// in [0, in_plane), else the position of the first bad one (grad_x then holds
// the contributions of the planes checked so far and must be discarded).
// skip_out_of_range: drop such terms instead (returns -1). A dilated window can
// miss the input entirely (dilation > input extent); PyTorch then reports -inf
// with an index past the plane and sends that output's gradient nowhere.
template <class T>
int64_t max_pool_backward(const PoolGeom& g, const T* grad_y, const int64_t* indices, T* grad_x,
                          bool skip_out_of_range = false);

// divisor_override <= 0 means none.
template <class T>
void avg_pool_forward(const PoolGeom& g, const T* x, T* y, bool count_include_pad, int64_t divisor_override);
template <class T>
void avg_pool_backward(const PoolGeom& g, const T* grad_y, T* grad_x, bool count_include_pad,
                       int64_t divisor_override);

// Adaptive pooling uses only planes/in/out of g: output cell o covers
// [floor(o*in/out), ceil((o+1)*in/out)).
template <class T>
void adaptive_avg_pool_forward(const PoolGeom& g, const T* x, T* y);
template <class T>
void adaptive_avg_pool_backward(const PoolGeom& g, const T* grad_y, T* grad_x);
template <class T>
void adaptive_max_pool_forward(const PoolGeom& g, const T* x, T* y, int64_t* indices);

// Max-unpooling: x, indices: (planes, in) -> y: (planes, out), zeros except
// y[indices] = x (the later element wins a duplicate index, as PyTorch's CPU
// kernel). Returns -1, or the position of the first index outside [0, out_plane).
template <class T>
int64_t max_unpool_forward(const PoolGeom& g, const T* x, const int64_t* indices, T* y);
// grad_x[i] = grad_y[indices[i]]; same return convention.
template <class T>
int64_t max_unpool_backward(const PoolGeom& g, const T* grad_y, const int64_t* indices, T* grad_x);

// AVX2 float32 pieces, defined in pool_avx2.cpp. The row kernels handle the
// outputs [ow_begin, ow_end) of one output row whose windows lie inside the row
// horizontally, 8 at a time, and return how many they wrote from ow_begin (all
// of them, or 0 when fewer than 8).
namespace avx2_impl {
// rows: offsets into the plane of the window's valid input rows, in scan order
// (nrows >= 1); each output's initial index is its window's first element.
// indices may be null.
// in_w: the input row length, so strided loads never read past a row's end.
int64_t max_pool_row(const float* plane, const int64_t* rows, int64_t nrows, int64_t ow_begin, int64_t ow_end,
                     int64_t in_w, int64_t s, int64_t p, int64_t k, int64_t d, float* y, int64_t* indices);
int64_t avg_pool_row(const float* plane, const int64_t* rows, int64_t nrows, int64_t ow_begin, int64_t ow_end,
                     int64_t in_w, int64_t s, int64_t p, int64_t k, float divisor, float* y);
float sum(const float* x, int64_t n);
// out[p] = sum of x[p*len .. (p+1)*len) for p in [0, planes): global pooling of small planes.
void sum_planes(const float* x, int64_t planes, int64_t len, float* out);
// (max, index) of x[0..n) with PyTorch's scan-order rule; index relative to x.
void argmax(const float* x, int64_t n, float* best, int64_t* index);

// Adaptive pooling of 8 whole planes at once, one plane per lane: the planes
// (in-plane size ip, out-plane size op, plane stride ip / op) are transposed
// into scratch, pooled with one vector operation per window tap, and the
// results transposed back. Every plane has the same windows, described by
// AdaptiveTaps: off[start[c] .. start[c+1]) are the in-plane offsets of output
// cell c's window in scan order, ext[3c .. 3c+2] its extents (d, h, w).
// Each lane runs the scalar reference's loop in its order, so results match it
// bit for bit. scratch: 8 * (ip + 2 * op) floats, 32-byte aligned.
struct AdaptiveTaps {
  const int32_t* off;
  const int32_t* start;
  const float* ext;
};
void adaptive_avg_planes8(const float* x, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch, float* y);
void adaptive_max_planes8(const float* x, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch, float* y,
                          int64_t* indices);
// grad_x of 8 planes (written, zero where no window reaches) from their grad_y.
void adaptive_avg_backward_planes8(const float* gy, int64_t ip, int64_t op, const AdaptiveTaps& t, float* scratch,
                                   float* gx);
}  // namespace avx2_impl

// AVX-512 float32 max pooling without indices, separable (pool_avx512.cpp).
namespace avx512_impl {
// The valid input positions of each output position along D or H, in window
// order: pos[start[o] .. start[o + 1]), and each modulo the window's extent
// (dilation included) in mod, which no two positions of one window share.
struct WindowAxis {
  const int64_t* start;
  const int64_t* pos;
  const int64_t* mod;
  int64_t extent;
};
// Whether max_pool_rows covers g (W stride 1 or 2, at most 64 rows per window).
bool max_pool_rows_supported(const PoolGeom& g);
// Output rows [r_begin, r_end), flat over (plane, D, H), bit-identical to the
// scalar reference. Each input row is reduced over W once into slot
// (mod along D) * wh.extent + (mod along H) of hbuf (wd.extent * wh.extent rows
// of out[2] rounded up to 16 floats), tagged in tags (as many int64, -1 before a
// task's first call) by its offset in x, and reused while the tag matches.
void max_pool_rows(const PoolGeom& g, const WindowAxis& wd, const WindowAxis& wh, const float* x, float* y,
                   int64_t r_begin, int64_t r_end, float* hbuf, int64_t* tags);
}  // namespace avx512_impl

}  // namespace cnnfast::cpu
