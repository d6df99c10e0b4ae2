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
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu skip where no CUDA device is present (CI still compiles the CUDA code)."""
    if cnnfast.cuda.is_available():
        return
    reason = "no CUDA device" if cnnfast.cuda.is_compiled() else "built without CUDA"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
