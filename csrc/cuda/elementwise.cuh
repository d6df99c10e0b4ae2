// The few whole-array operations the device layer (python/cnnfast/_device.py) needs
// under Tensor on the GPU: same-shape or array-scalar arithmetic (residual adds,
// gradient accumulation, scaling), fill, whole-array sums, the non-finite count that
// anomaly mode and the trainer's finiteness check read back as one number, and casts.
// Element types are passed at run time so the binding needs no template per dtype.
#pragma once
#include <cstdint>

namespace cnnfast::cuda {

enum class Elem { F32, F64, I32, I64, U8, Bool };
enum class BinaryOp { Add, Sub, Mul, Div, RSub, RDiv };

// out[i] = a[i] op (b ? b[i] : scalar), all of type t; out may be a (in place).
void binary(BinaryOp op, Elem t, const void* a, const void* b, double scalar, void* out, int64_t n);
void fill(Elem t, void* p, double value, int64_t n);
// One element of type t: the sum of a's n elements, accumulated in double (int64 for integers).
void sum_all(Elem t, const void* a, void* out, int64_t n);
// How many of a's elements are NaN or infinite (0 for integer types); waits for the result.
int64_t count_nonfinite(Elem t, const void* a, int64_t n);
void cast(Elem from, const void* a, Elem to, void* out, int64_t n);

}  // namespace cnnfast::cuda
