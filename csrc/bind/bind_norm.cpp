// Bindings for the norm family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_norm(pybind11::module_& m) {}
}  // namespace cnnfast::bind
