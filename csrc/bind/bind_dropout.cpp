// Bindings for the dropout family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_dropout(pybind11::module_& m) {}
}  // namespace cnnfast::bind
