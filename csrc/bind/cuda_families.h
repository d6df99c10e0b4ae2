// One registration function per CUDA op family (bind_cuda_<family>.cpp), each
// adding its kernels to the submodule cnnfast._C.cuda under the CPU names.
// Declared and defined only in a CUDA build (CNNFAST_WITH_CUDA).
#pragma once
#include <pybind11/pybind11.h>

namespace cnnfast::bind {
void bind_cuda_conv(pybind11::module_& cu);
void bind_cuda_loss(pybind11::module_& cu);
}  // namespace cnnfast::bind
