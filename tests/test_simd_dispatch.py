"""The SIMD dispatch layer: level choice, overrides, refusal, reporting."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
from cnnfast import _C


def _run(code, **env):
    full = dict(os.environ)
    full.pop("CNNFAST_SIMD", None)
    full.update(env)
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=full, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def test_levels_are_ordered_and_default_is_the_best():
    levels = cnnfast.simd_levels()
    assert levels[0] == "scalar"
    assert levels == list(cnnfast.SIMD_LEVELS[: len(levels)])
    assert _C.best_simd_level() == levels[-1]
    flags = _C.cpu_features()
    assert ("avx512" in flags) == ("avx512" in levels)
    assert ("avx2" in flags) == ("avx2" in levels)
    # A fresh process (no CNNFAST_SIMD) starts at the widest level.
    out = _run("import cnnfast; print(cnnfast.simd_level())")
    assert out.stdout.strip() == levels[-1]


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_env_lowers_the_level(level):
    if level not in cnnfast.simd_levels():
        pytest.skip(f"CPU has no {level}")
    out = _run("import cnnfast; print(cnnfast.simd_level())", CNNFAST_SIMD=level)
    assert out.stdout.strip() == level
    assert "RuntimeWarning" not in out.stderr


def test_env_unknown_value_warns_and_keeps_best():
    out = _run("import cnnfast; print(cnnfast.simd_level())", CNNFAST_SIMD="sse9")
    assert out.stdout.strip() == cnnfast.simd_levels()[-1]
    assert "CNNFAST_SIMD='sse9' is not one of" in out.stderr


def test_a_level_the_cpu_lacks_is_refused():
    if "avx2" not in cnnfast.simd_levels():
        pytest.skip("CPU has no AVX2")
    # CNNFAST_CPU_CAP makes the process see an AVX2-only CPU, as on a laptop.
    code = ("import cnnfast\n"
            "print(cnnfast.simd_levels(), cnnfast.simd_level(), cnnfast._C.cpu_features())\n"
            "try:\n    cnnfast.set_simd_level('avx512')\nexcept ValueError as e:\n    print('refused:', e)\n")
    out = _run(code, CNNFAST_CPU_CAP="avx2", CNNFAST_SIMD="avx512")
    first, second = out.stdout.strip().splitlines()
    assert first == "['scalar', 'avx2'] avx2 ['avx2']"
    assert "refused: level: this CPU (or this build) cannot run 'avx512'; available: up to 'avx2'" == second
    assert "offers only ['scalar', 'avx2']" in out.stderr


def test_scalar_only_cpu_runs_the_reference():
    code = ("import numpy as np, cnnfast\n"
            "x = np.linspace(-3, 3, 37, dtype=np.float32)\n"
            "print(cnnfast.simd_level(), float(cnnfast._C.relu_forward(x).sum()))\n")
    out = _run(code, CNNFAST_CPU_CAP="scalar")
    level, total = out.stdout.split()
    assert level == "scalar"
    x = np.linspace(-3, 3, 37, dtype=np.float32)
    assert float(total) == pytest.approx(float(np.maximum(x, 0).sum()), rel=1e-6)


def test_set_simd_level_round_trip():
    before = cnnfast.simd_level()
    try:
        for level in cnnfast.simd_levels():
            cnnfast.set_simd_level(level)
            assert cnnfast.simd_level() == level
    finally:
        cnnfast.set_simd_level(before)
    with pytest.raises(ValueError, match="expected 'scalar', 'avx2' or 'avx512', got 'AVX2'"):
        cnnfast.set_simd_level("AVX2")


def test_info_reports_levels(capsys):
    facts = cnnfast.info()
    printed = capsys.readouterr().out
    assert facts["simd"] == cnnfast.simd_level()
    assert facts["simd_levels"] == cnnfast.simd_levels()
    assert facts["cpu_features"] == _C.cpu_features()
    assert isinstance(facts["cpu"], str) and facts["cpu"]
    for key in ("simd_levels", "cpu_features", "cpu"):
        assert key in printed


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_fma_peak_per_level(level):
    if level not in cnnfast.simd_levels():
        with pytest.raises(ValueError, match="cannot run"):
            _C.fma_peak_gflops(1, level)
        return
    assert _C.fma_peak_gflops(1, level) > 1.0
    with pytest.raises(ValueError, match="measured at 'avx2' or 'avx512'"):
        _C.fma_peak_gflops(1, "scalar")
