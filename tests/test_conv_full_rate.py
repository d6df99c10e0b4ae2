"""The convolution algorithm choice that depends on the CPU's 512-bit FMA rate
(cnnfast._C.avx512_full_rate, csrc/cpu/peak.cpp; used by conv_grouped.cpp): the probe's
override, its report in cnnfast.info(), and the layers whose pass switches between the
direct kernel and im2col + GEMM giving PyTorch's float64 values either way."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnnfast
from cnnfast import _C


def _run(code, env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=300)


def test_override_and_report():
    assert isinstance(_C.avx512_full_rate(), bool)
    assert "avx512_full_rate" in cnnfast.info(file=open(os.devnull, "w"))
    code = "import cnnfast._C as C; print(C.avx512_full_rate())"
    off = _run(code, {"CNNFAST_AVX512_FULL_RATE": "0"})
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr
    on = _run(code, {"CNNFAST_AVX512_FULL_RATE": "1"})
    # Forcing it on only holds where the CPU has AVX-512 at all.
    assert on.returncode == 0 and on.stdout.strip() == str("avx512" in cnnfast.simd_levels()), on.stderr
    bad = _run(code, {"CNNFAST_AVX512_FULL_RATE": "yes"})
    assert bad.returncode != 0 and "CNNFAST_AVX512_FULL_RATE" in bad.stderr


# (N, C, H, W, K, k, stride, pad, dilation): each is on the other side of one rule at
# full rate: 3-channel strided forward, grad_x summing over > 128 output channels,
# grad_w of 3 channels on a map over 128x128, 256 outputs from a plane set past 1 MiB;
# odd sizes so the vector tails are partial; none is 3x3 stride 1, which goes to Winograd.
LAYERS = [
    (1, 3, 37, 41, 24, 5, 2, 2, 1),
    (2, 16, 19, 17, 136, 5, 1, 2, 1),
    (1, 3, 131, 129, 24, 3, 1, 1, 1),
    (1, 41, 83, 79, 256, 2, 1, 1, 1),
    (1, 3, 29, 31, 40, 7, 3, 3, 1),
    (2, 20, 23, 29, 144, 5, 1, 4, 2),
]

PROBE = r"""
import json, sys
import numpy as np
from cnnfast import _C
out = []
for N, C, H, W, K, k, s, p, d in json.loads(sys.argv[1]):
    rng = np.random.default_rng(N * 1000 + C)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    args = ([s, s], [[p, p], [p, p]], [d, d], 1)
    y = _C.conv_forward(x, w, None, *args)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, _ = _C.conv_backward(gy, x, w, *args, True, True, False)
    out.append([a.tolist() for a in (y, gx, gw)])
print(json.dumps(out))
"""


@pytest.mark.parametrize("full", ["0", "1"])
def test_both_choices_match_torch(full):
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(LAYERS)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, CNNFAST_AVX512_FULL_RATE=full))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for (N, C, H, W, K, k, s, p, d), (y, gx, gw) in zip(LAYERS, got):
        rng = np.random.default_rng(N * 1000 + C)
        x = torch.from_numpy(rng.standard_normal((N, C, H, W))).float().double().requires_grad_()
        w = torch.from_numpy(rng.standard_normal((K, C, k, k))).float().double().requires_grad_()
        yt = TF.conv2d(x, w, stride=s, padding=p, dilation=d)
        gy = torch.from_numpy(rng.standard_normal(tuple(yt.shape)).astype(np.float32)).double()
        yt.backward(gy)
        for name, ours, ref in (("y", y, yt), ("gx", gx, x.grad), ("gw", gw, w.grad)):
            ref = ref.detach().numpy()
            ours = np.asarray(ours)
            assert ours.shape == ref.shape, name
            err = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
            assert err < 2e-6, (name, (N, C, H, W, K, k, s, p, d), err)
