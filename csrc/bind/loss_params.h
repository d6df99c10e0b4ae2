// Loss hyper-parameter checks shared by the CPU and CUDA bindings (bind_loss.cpp,
// bind_cuda_loss.cpp), so both backends reject the same values with the same messages.
#pragma once
#include "core/error.h"
#include "cpu/loss.h"

namespace cnnfast::bind {

// delta of Huber must be > 0 and beta of Smooth-L1 >= 0, as in PyTorch; L1/MSE take none.
inline void check_pointwise_param(cpu::Pointwise kind, double param) {
  if (kind == cpu::Pointwise::Huber) CNNFAST_CHECK(param > 0, ValueError, "delta: expected a value > 0, got ", param);
  if (kind == cpu::Pointwise::SmoothL1)
    CNNFAST_CHECK(param >= 0, ValueError, "beta: expected a value >= 0, got ", param);
}

}  // namespace cnnfast::bind
