// Bindings for the optim family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_optim(pybind11::module_& m) {}
}  // namespace cnnfast::bind
