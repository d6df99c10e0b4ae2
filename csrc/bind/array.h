// Argument checks shared by the binding files: arrays arrive as py::array and
// are checked here (dtype, C-contiguity, alignment, writability, rank, shape,
// overlap of outputs with inputs) before any raw pointer reaches a kernel.
// Nothing is copied or cast behind the caller's back: a float64 array passed
// beside a float32 one is a TypeError. Outputs are sized with checked 64-bit
// arithmetic and refused (ValueError / MemoryError) before NumPy is asked for
// memory that cannot exist.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <string>
#include <vector>

#include "core/checked_math.h"
#include "core/error.h"

namespace cnnfast::bind {
namespace py = pybind11;

enum class DType { F32, F64 };

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// float32 or float64, else TypeError naming the argument.
inline DType float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::F32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::F64;
  throw TypeError(cat(name, ": expected a float32 or float64 array, got dtype ", dtype_name(a)));
}

inline void require_same_dtype(const py::array& a, const char* name_a, const py::array& b, const char* name_b) {
  CNNFAST_CHECK(a.dtype().is(b.dtype()), TypeError, name_b, ": expected dtype ", dtype_name(a), " (the dtype of ",
                name_a, "), got ", dtype_name(b), "; mixed dtypes are not cast silently");
}

inline void require_dtype(const py::array& a, const char* name, const py::dtype& dt) {
  CNNFAST_CHECK(a.dtype().is(dt), TypeError, name, ": expected dtype ", py::str(dt).cast<std::string>(), ", got ",
                dtype_name(a));
}

// Kernels index raw T pointers, so the data must also sit on a multiple of the
// item size: a view made with numpy.frombuffer(buf, offset=1) is C-contiguous
// but misaligned, and reading it through a T* is undefined behaviour.
inline void require_aligned(const py::array& a, const char* name) {
  const auto addr = reinterpret_cast<std::uintptr_t>(a.data());
  CNNFAST_CHECK(a.size() == 0 || addr % static_cast<std::uintptr_t>(a.itemsize()) == 0, ValueError, name,
                ": expected an array aligned to its ", a.itemsize(), "-byte items, got data at address offset ",
                addr % static_cast<std::uintptr_t>(a.itemsize()),
                " (copy it, e.g. numpy.require(a, requirements='CA'))");
}

inline void require_contiguous(const py::array& a, const char* name) {
  CNNFAST_CHECK(a.flags() & py::array::c_style, ValueError, name,
                ": expected a C-contiguous array, got strides that are not (use numpy.ascontiguousarray)");
  require_aligned(a, name);
}

// Whether two C-contiguous arrays share any byte of memory.
inline bool overlaps(const py::array& a, const py::array& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()), b0 = reinterpret_cast<std::uintptr_t>(b.data());
  return a0 < b0 + static_cast<std::uintptr_t>(b.nbytes()) && b0 < a0 + static_cast<std::uintptr_t>(a.nbytes());
}

// An array the kernel writes (out_name) must not share memory with an array it
// reads or writes (in_name), except, where allow_same, by being exactly the same
// memory: elementwise kernels read element i before writing it, so in-place is
// safe there, but a shifted view would read values already overwritten.
inline void require_no_overlap(const py::array& out, const char* out_name, const py::array& in, const char* in_name,
                               bool allow_same) {
  if (!overlaps(out, in)) return;
  const bool same = out.data() == in.data() && out.nbytes() == in.nbytes();
  CNNFAST_CHECK(allow_same && same, ValueError, out_name, ": shares memory with ", in_name,
                allow_same ? "; expected either the very same array (in place) or one that does not overlap it"
                           : "; expected an array that does not overlap it");
}

inline void require_writeable(const py::array& a, const char* name) {
  CNNFAST_CHECK(a.writeable(), ValueError, name, ": expected a writeable array, got a read-only one");
}

inline void require_ndim(const py::array& a, const char* name, int lo, int hi) {
  const int nd = static_cast<int>(a.ndim());
  CNNFAST_CHECK(nd >= lo && nd <= hi, ValueError, name, ": expected ",
                lo == hi ? std::to_string(lo) : cat(lo, " to ", hi), " dimensions, got ", nd, " with shape ",
                shape_str(shape_of(a)));
}

inline void require_shape(const py::array& a, const char* name, const std::vector<int64_t>& expected) {
  CNNFAST_CHECK(shape_of(a) == expected, ValueError, name, ": expected shape ", shape_str(expected), ", got ",
                shape_str(shape_of(a)));
}

inline void require_nonempty(const py::array& a, const char* name) {
  CNNFAST_CHECK(a.size() > 0, ValueError, name, ": expected a non-empty array, got shape ", shape_str(shape_of(a)));
}

// A checked input: float dtype and C-contiguous.
inline DType input(const py::array& a, const char* name) {
  DType dt = float_dtype(a, name);
  require_contiguous(a, name);
  return dt;
}

// A new C-contiguous array of dtype dt; its element and byte counts are checked
// first, so a shape computed from hostile sizes is a ValueError (more than 2^63
// elements) or MemoryError (more bytes than this machine has), never a wrapped
// size or an allocation the OS kills the process for on first touch.
inline py::array new_array_of(const py::dtype& dt, const std::vector<int64_t>& shape, const char* name = "output") {
  checked_bytes(checked_numel(shape, name), static_cast<std::size_t>(dt.itemsize()), name);
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  return py::array(dt, s);
}

// A new C-contiguous array of the dtype of `like`.
inline py::array new_array(const py::array& like, const std::vector<int64_t>& shape, const char* name = "output") {
  return new_array_of(like.dtype(), shape, name);
}

// An output: either allocated here, or the caller's `out`, checked for shape,
// dtype, contiguity and writability.
inline py::array output(const py::object& out, const char* name, const py::array& like,
                        const std::vector<int64_t>& shape) {
  if (out.is_none()) return new_array(like, shape);
  CNNFAST_CHECK(py::isinstance<py::array>(out), TypeError, name, ": expected a NumPy array or None, got ",
                py::str(py::type::of(out)).cast<std::string>());
  py::array a = out.cast<py::array>();
  require_same_dtype(like, "input", a, name);
  require_contiguous(a, name);
  require_writeable(a, name);
  require_shape(a, name, shape);
  return a;
}

// output() for a kernel that reads `inputs` element by element: out may be one
// of them exactly (in place) but not a partially overlapping view.
inline py::array elementwise_output(const py::object& out, const char* name, const py::array& like,
                                    std::initializer_list<std::pair<const py::array*, const char*>> inputs) {
  py::array a = output(out, name, like, shape_of(like));
  if (!out.is_none())
    for (const auto& [in, in_name] : inputs) require_no_overlap(a, name, *in, in_name, true);
  return a;
}

// A new zero-filled array: parameter-gradient outputs, which kernels accumulate into (+=).
inline py::array new_zeros(const py::array& like, const std::vector<int64_t>& shape) {
  py::array a = new_array(like, shape);
  std::memset(a.mutable_data(), 0, a.nbytes());
  return a;
}

template <class T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
T* mptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// Runs f.template operator()<T>() with T = float or double.
template <class F>
auto dispatch_float(DType dt, F&& f) {
  if (dt == DType::F32) return f(float{});
  return f(double{});
}

// Normalises a possibly negative axis against ndim, ValueError when out of range.
inline int normalize_axis(int64_t axis, int64_t ndim, const char* name) {
  CNNFAST_CHECK(axis >= -ndim && axis < ndim, ValueError, name, ": expected an axis in [", -ndim, ", ", ndim - 1,
                "], got ", axis);
  return static_cast<int>(axis < 0 ? axis + ndim : axis);
}

}  // namespace cnnfast::bind
