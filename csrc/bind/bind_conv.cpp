// Bindings for the conv family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_conv(pybind11::module_& m) {}
}  // namespace cnnfast::bind
