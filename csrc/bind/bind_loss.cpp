// Bindings for the loss family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_loss(pybind11::module_& m) {}
}  // namespace cnnfast::bind
