// Bindings for the pool family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_pool(pybind11::module_& m) {}
}  // namespace cnnfast::bind
