// Library-wide settings: threads, SIMD level, build information.
#include <pybind11/stl.h>

#include "bind/array.h"
#include "bind/families.h"
#include "core/cpu_features.h"
#include "core/host_memory.h"
#include "core/parallel.h"
#include "core/workspace.h"

namespace cnnfast::bind {

void bind_core(py::module_& m) {
  m.def("get_num_threads", &get_num_threads, "Threads the CPU kernels use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Set the CPU kernels' thread count (n >= 1).");
  m.def("_set_parallel_stats", &set_parallel_stats, py::arg("on"),
        "Benchmarks only: record each pool job's per-thread CPU times (resets the counts).");
  m.def("_parallel_stats", [] {
        const ParallelStats s = parallel_stats();
        return py::dict(py::arg("jobs") = s.jobs, py::arg("max_chunk_s") = s.max_chunk_s,
                        py::arg("sum_chunk_s") = s.sum_chunk_s, py::arg("caller_job_s") = s.caller_job_s);
      }, "Benchmarks only: the counts since _set_parallel_stats (see core/parallel.h).");
  m.def("simd_level", [] { return simd_level_name(simd_level()); },
        "The SIMD level the CPU kernels use now: 'scalar', 'avx2' or 'avx512'.");
  m.def("set_simd_level", [](const std::string& name) { set_simd_level(parse_simd_level(name)); }, py::arg("level"),
        "Force 'scalar', 'avx2' or 'avx512' (ValueError if the CPU or this build lacks it).");
  m.def("best_simd_level", [] { return simd_level_name(best_simd_level()); },
        "The widest SIMD level this CPU and build offer (the default).");
  m.def("cpu_supports_avx2", &cpu_supports_avx2_fma, "Whether this CPU and OS support AVX2+FMA.");
  m.def("cpu_supports_avx512", &cpu_supports_avx512, "Whether this CPU and OS support AVX-512 F+BW+DQ+VL.");
  m.def("cpu_features", &cpu_feature_flags,
        "What the CPU offers, among 'avx2', 'avx512', 'avx512_bf16', 'amx_bf16'.");
  m.def("cpu_model", &cpu_model_name, "The CPU's brand string (cpuid).");
  m.attr("__version__") = CNNFAST_VERSION;
  m.attr("compiler") = CNNFAST_COMPILER;
  m.attr("built_with_avx2") = static_cast<bool>(CNNFAST_HAVE_AVX2_BUILD);
  m.attr("built_with_avx512") = static_cast<bool>(CNNFAST_HAVE_AVX512_BUILD);
  m.attr("built_with_cuda") = static_cast<bool>(CNNFAST_WITH_CUDA);
  // Opt-in only: a library must not change its host's allocator (core/host_memory.h).
  tune_host_allocator_if_requested();
  m.def("tune_host_allocator", &tune_host_allocator,
        "Keep freed heap for reuse (glibc mallopt, process-wide); True when applied.");
  m.def("host_allocator_tuned", &host_allocator_tuned, "Whether tune_host_allocator has been applied.");
  m.def("workspace_stats", [] {
        const WorkspaceStats s = workspace_stats();
        py::dict d;
        d["in_use"] = s.in_use;
        d["cached"] = s.cached;
        d["peak_in_use"] = s.peak_in_use;
        d["peak_total"] = s.peak_total;
        d["borrows"] = s.borrows;
        d["reused"] = s.reused;
        d["cache_limit"] = s.cache_limit;
        d["scratch"] = s.scratch;
        return d;
      },
      "Kernel workspace pool (core/workspace.h), in bytes: in_use, cached (idle, kept for reuse), "
      "peak_in_use and peak_total since the last reset, borrows and reused (counts), cache_limit, and "
      "scratch (the GEMM's per-thread packing buffers).");
  m.def("workspace_reset_peak", &workspace_reset_peak, "Restart the peaks and counts of workspace_stats().");
  m.def("workspace_trim", [] {
        workspace_trim();
        workspace_scratch_new_generation();
      },
      "Free the workspace pool's idle blocks; each thread's scratch buffers shrink to its next request.");
  m.def("set_workspace_cache_limit", &set_workspace_cache_limit, py::arg("bytes"),
        "Most bytes of idle workspace the pool keeps for reuse (CNNFAST_WORKSPACE_CACHE_MB at start; default 64 MiB).");
}

}  // namespace cnnfast::bind
