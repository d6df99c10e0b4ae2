// Bindings for the detection family (not yet implemented).
#include "bind/families.h"

namespace cnnfast::bind {
void bind_detection(pybind11::module_& m) {}
}  // namespace cnnfast::bind
