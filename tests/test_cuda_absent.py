"""Without a GPU (or without a CUDA build) the package imports, runs on the CPU,
and answers the CUDA queries without crashing."""
import numpy as np
import pytest

import cnnfast


def test_queries_never_crash():
    assert isinstance(cnnfast.cuda.is_compiled(), bool)
    assert cnnfast.cuda.device_count() >= 0
    assert cnnfast.cuda.is_available() == (cnnfast.cuda.is_compiled() and cnnfast.cuda.device_count() > 0)
    assert cnnfast.cuda.memory_allocated() >= 0


def test_device_functions_raise_clearly_without_a_device():
    if cnnfast.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cnnfast.cuda.to_device(np.ones(3, np.float32))
