// The single extension module cnnfast._C: tensor-free kernels on NumPy arrays.
#include <pybind11/pybind11.h>

#include "bind/families.h"
#include "core/error.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "cnnfast kernels: tensor-free <op>_forward / <op>_backward functions on NumPy arrays";
  py::register_exception<cnnfast::ValueError>(m, "KernelValueError", PyExc_ValueError);
  py::register_exception<cnnfast::TypeError>(m, "KernelTypeError", PyExc_TypeError);
  using namespace cnnfast::bind;
  bind_core(m);
  bind_activation(m);
  bind_activation_extra(m);
  bind_resample(m);
  bind_conv(m);
  bind_pool(m);
  bind_norm(m);
  bind_dropout(m);
  bind_loss(m);
  bind_optim(m);
  bind_box(m);
  bind_distributed(m);
  bind_bf16(m);
  bind_cuda(m);
}
