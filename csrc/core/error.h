// Errors raised by kernels and argument checks. The binding layer maps
// ValueError/TypeError to the Python exceptions of the same name, so every
// message must name the argument and say what was expected and what arrived.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cnnfast {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& s, const T& v, const Rest&... rest) {
  s << v;
  append(s, rest...);
}
}  // namespace detail

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream s;
  detail::append(s, parts...);
  return s.str();
}

}  // namespace cnnfast

// CNNFAST_CHECK(cond, ValueError, "x: expected ..., got ", n)
#define CNNFAST_CHECK(cond, Kind, ...)                      \
  do {                                                      \
    if (!(cond)) throw ::cnnfast::Kind(::cnnfast::cat(__VA_ARGS__)); \
  } while (0)
