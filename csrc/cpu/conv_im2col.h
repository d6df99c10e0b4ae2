// im2col / col2im: the column matrix of one image's group, a chunk of output
// positions at a time, and its adjoint (see conv_gemm.cpp for how it is used).
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/conv.h"

namespace cnnfast::cpu::conv_detail {

// Columns [p0, p1) of the im2col matrix of one image's group: x (Cg, D, H, W) ->
// col (Cg*kD*kH*kW, ld), row r = ((c*kD + a)*kH + b)*kW + e, column p an output
// position (od*Ho + oh)*Wo + ow.
template <class T>
void im2col_rows(const ConvShape& s, const T* x, T* col, int64_t p0, int64_t p1, int64_t ld);
// dx (Cg, D, H, W) += scatter of col's columns [p0, p1), channels [c0, c1).
template <class T>
void col2im_rows(const ConvShape& s, const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1,
                 int64_t ld);

// im2col / col2im for one shape: for small outputs by zero-bordered rows or by
// table, otherwise by row runs of the unpadded input (conv_im2col.cpp says when).
class ColumnMap {
 public:
  explicit ColumnMap(const ConvShape& s);
  // Columns [p0, p1) of one image's group (x: (Cg, D, H, W)) into col (Cg*kk, ld).
  template <class T>
  void im2col(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const;
  // dx (Cg, D, H, W) += scatter of col's columns [p0, p1), channels [c0, c1).
  template <class T>
  void col2im(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const;

  // A caller that maps many column chunks of one image (the chunked forward) may
  // zero-border the image's group once, into padded_elements() of its own memory
  // (pad_group), and map every chunk from that copy (im2col_prepadded): the same
  // columns as im2col, without a bounds check or a padded copy per chunk.
  // Worth it where the image's columns outnumber its padded copy (not a 1x1 stride-2 layer).
  // At a W stride sw > 1 the copy holds each channel's padded plane as sw column phases
  // (phase q: columns q, q + sw, ... of every row), so a tap's run of outputs reads
  // contiguous memory instead of every sw-th element (one scalar copy each).
  bool can_prepad() const { return padded_ && s_.k_size() * s_.out_size() >= 2 * plane(); }
  int64_t padded_elements() const { return s_.Cg() * phased_plane(); }
  template <class T>
  void pad_group(const T* x, T* xp) const;
  template <class T>
  void im2col_prepadded(const T* xp, T* col, int64_t p0, int64_t p1, int64_t ld) const;

 private:
  int64_t plane() const { return ext_[0] * ext_[1] * ext_[2]; }
  // Columns per row of one W-stride phase, and one channel's phases together.
  int64_t phase_width() const { return (ext_[2] + s_.stride[2] - 1) / s_.stride[2]; }
  int64_t phased_plane() const { return ext_[0] * ext_[1] * phase_width() * s_.stride[2]; }
  bool use_padded(int64_t p0, int64_t p1) const;
  template <class T>
  void pad_into(const T* x, T* xp) const;
  template <class F>
  void runs(int64_t a, int64_t b, int64_t e, int64_t p0, int64_t p1, F&& f) const;
  template <class T>
  void im2col_padded(const T* x, T* col, int64_t p0, int64_t p1, int64_t ld) const;
  template <class T>
  void col2im_padded(const T* col, T* dx, int64_t p0, int64_t p1, int64_t c0, int64_t c1, int64_t ld) const;
  template <class T>
  static T* scratch(int64_t count);

  ConvShape s_;
  std::vector<int32_t> tbl_;
  bool padded_ = false;
  int64_t ext_[3] = {1, 1, 1};  // padded extents (D, H, W)
};

}  // namespace cnnfast::cpu::conv_detail

namespace cnnfast::cpu::avx512_impl {
// Rows of channels [c0, c1) of the im2col matrix of one image of a 2-D layer (groups 1,
// padding >= 0, D = 1): x (C, H, W) -> col (C*kH*kW, ld), every output position;
// conv_im2col_avx512.cpp. row_scratch: im2col_channels_scratch(s) floats of the caller's.
void im2col_channels(const ConvShape& s, const float* x, float* col, int64_t ld, int64_t c0, int64_t c1,
                     float* row_scratch);
int64_t im2col_channels_scratch(const ConvShape& s);
// y[k][p] = ct[p][k] + bias[k] (bias may be null) for channels [k0, k1) and p < P: one
// image of a product computed as (positions, channels), ct with leading dimension ldc,
// into NCHW y (channel planes of P).
void transpose_add_bias(const float* ct, int64_t P, int64_t ldc, const float* bias, float* y, int64_t k0,
                        int64_t k1);
}  // namespace cnnfast::cpu::avx512_impl
