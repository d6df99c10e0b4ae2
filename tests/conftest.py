"""Shared fixtures: every kernel test can run on each SIMD path the CPU has."""
import numpy as np
import pytest

import cnnfast

SIMD_LEVELS = cnnfast.simd_levels()


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Runs the test once per SIMD level the CPU has, restoring the default afterwards."""
    before = cnnfast.simd_level()
    cnnfast.set_simd_level(request.param)
    yield request.param
    cnnfast.set_simd_level(before)


@pytest.fixture(params=[1, 2])
def threads(request):
    before = cnnfast.get_num_threads()
    cnnfast.set_num_threads(request.param)
    yield request.param
    cnnfast.set_num_threads(before)


@pytest.fixture
def without_row_tiles():
    """Auto never takes the row tiles (csrc/cpu/conv_kvec_rows.cpp) while it runs."""
    from cnnfast import _C

    old = _C._set_kvec_rows(0)
    yield
    _C._set_kvec_rows(old)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _gpu_requested(config) -> bool:
    """Whether the run asked for the GPU suite by name (``-m gpu``, ``-m "gpu and not slow"``),
    as opposed to a plain run that merely collects gpu-marked tests among others."""
    expr = config.getoption("markexpr", "") or ""
    words = expr.replace("(", " ").replace(")", " ").split()
    return any(w == "gpu" and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words))


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu skip where no CUDA device is present (CI still compiles the CUDA code),
    unless the GPU suite was asked for (``pytest -m gpu``): then a missing device or a build
    without CUDA is an error, so a device run can never pass by skipping everything."""
    if cnnfast.cuda.is_available():
        return
    reason = "no CUDA device is present" if cnnfast.cuda.is_compiled() else "this cnnfast build has no CUDA backend"
    if _gpu_requested(config):
        raise pytest.UsageError(f"pytest -m gpu asked for the GPU suite, but {reason} "
                                f"(cnnfast from {cnnfast.__file__}); refusing to skip it")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
