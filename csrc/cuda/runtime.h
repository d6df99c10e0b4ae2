// Device queries that never throw on a machine without a GPU or driver.
#pragma once
#include <string>

namespace cnnfast::cuda {
int device_count();
std::string device_name(int index);
}  // namespace cnnfast::cuda
