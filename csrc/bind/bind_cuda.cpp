// CUDA runtime queries. Built without CUDA, every query answers "no device".
#include "bind/families.h"

#if CNNFAST_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace cnnfast::bind {

void bind_cuda(pybind11::module_& m) {
#if CNNFAST_WITH_CUDA
  m.def("cuda_device_count", &cnnfast::cuda::device_count,
        "Number of usable CUDA devices; 0 when there is no GPU or no driver.");
  m.def("cuda_device_name", &cnnfast::cuda::device_name, pybind11::arg("index") = 0);
#else
  m.def("cuda_device_count", [] { return 0; }, "This build has no CUDA backend: always 0.");
  m.def("cuda_device_name", [](int) -> std::string { return ""; }, pybind11::arg("index") = 0);
#endif
}

}  // namespace cnnfast::bind
