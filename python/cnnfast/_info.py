"""``cnnfast.info()``: what this build is and what it runs on."""
import platform
import sys

from . import _C


def info(file=None) -> dict:
    """Print (to ``file``, default stdout) and return the build and runtime facts.

    Keys: version, compiler, simd (level in use), simd_levels (levels this CPU and build
    can run), cpu (model), cpu_features (what the CPU offers: avx2, avx512,
    avx512_bf16, amx_bf16), avx512_full_rate (512-bit FMAs at the 256-bit rate, so
    AVX-512 doubles the FMA peak; steers the convolution algorithm choice), bf16_path (bfloat16 kernels: amx,
    avx512_bf16 or fallback), amx (granted, or why not), threads, host_allocator, cuda_compiled, cuda_available,
    cuda_devices, python, numpy.
    """
    import numpy

    from . import cuda, simd_levels

    facts = {
        "version": _C.__version__,
        "compiler": _C.compiler,
        "simd": _C.simd_level(),
        "simd_levels": simd_levels(),
        "cpu": _C.cpu_model(),
        "cpu_features": _C.cpu_features(),
        "avx512_full_rate": _C.avx512_full_rate(),
        "bf16_path": _C.bf16_path(),
        "amx": _C.amx_permission(),
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
