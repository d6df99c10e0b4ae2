"""``cnnfast.info()``: what this build is and what it runs on."""
import platform
import sys

from . import _C


def info(file=None) -> dict:
    """Print (to ``file``, default stdout) and return the build and runtime facts.

    Keys: version, compiler, simd (path in use), cpu_avx2, threads, cuda_compiled,
    cuda_available, cuda_devices, python, numpy.
    """
    import numpy

    from . import cuda

    facts = {
        "version": _C.__version__,
        "compiler": _C.compiler,
        "simd": _C.simd_level(),
        "cpu_avx2": _C.cpu_supports_avx2(),
        "threads": _C.get_num_threads(),
        "host_allocator": "tuned (cnnfast.tune_host_allocator)" if _C.host_allocator_tuned() else "system",
        "cuda_compiled": bool(_C.built_with_cuda),
        "cuda_available": cuda.is_available(),
        "cuda_devices": [cuda.get_device_name(i) for i in range(cuda.device_count())],
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    out = file or sys.stdout
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}", file=out)
    return facts
