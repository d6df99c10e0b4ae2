// One registration function per op family; each lives in bind_<family>.cpp so
// families can be added without touching each other's files.
#pragma once
#include <pybind11/pybind11.h>

namespace cnnfast::bind {
void bind_core(pybind11::module_& m);
void bind_activation(pybind11::module_& m);
// The same activation functions in cnnfast._C.cuda.
void bind_activation_device(pybind11::module_& cu);
void bind_activation_extra(pybind11::module_& m);
void bind_resample(pybind11::module_& m);
void bind_conv(pybind11::module_& m);
void bind_pool(pybind11::module_& m);
// The same pooling functions in cnnfast._C.cuda.
void bind_pool_device(pybind11::module_& cu);
void bind_norm(pybind11::module_& m);
// The same normalisation functions in cnnfast._C.cuda.
void bind_norm_device(pybind11::module_& cu);
void bind_dropout(pybind11::module_& m);
// The same dropout functions in cnnfast._C.cuda (dropout_mask there returns device memory).
void bind_dropout_device(pybind11::module_& cu);
void bind_loss(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
// The same optimizer steps in cnnfast._C.cuda.
void bind_optim_device(pybind11::module_& cu);
void bind_box(pybind11::module_& m);
// Shared-memory counters and the one-pass gradient average of distributed/exchange.py.
void bind_distributed(pybind11::module_& m);
void bind_bf16(pybind11::module_& m);
void bind_cuda(pybind11::module_& m);
}  // namespace cnnfast::bind
