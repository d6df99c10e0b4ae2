#!/usr/bin/env bash
# Issue 18's GPU checks as one script, for a machine with an NVIDIA Hopper GPU (sm_90:
# H100/H200), no network, and python3 with torch, numpy, pybind11, scikit-build-core,
# cmake and ninja installed (the device tool's image). From the repository root:
#
#     bash tests/gpu/run_on_device.sh OUTDIR        # OUTDIR: "$OUT" on the device tool
#
# 1. builds and installs cnnfast with CUDA for sm_90 (pip install --no-build-isolation,
#    all cores), into /tmp/cnnfast_site so the source tree's python/ cannot shadow it;
# 2. pytest -m gpu over the GPU test files (a missing device or CUDA build is an error);
# 3. benchmarks/bench_cuda.py --quick (ResNet-50 convolutions vs cuDNN, memory-bound kernels
#    vs the copy bandwidth);
# 4. benchmarks/bench_cuda_train.py: ResNet-18 32x32, 20 steps GPU vs CPU (float32 within
#    1e-4 relative, float64 as a diagnostic), then images/s against torch eager.
# Everything RESULTS.md needs goes to OUTDIR/gpu_results.md, each stage's log beside it
# (six files: the device tool returns at most eight). Each stage has its own time limit
# inside a total budget (CNNFAST_GPU_BUDGET seconds, default 540), so a stage that hangs
# still leaves the others' results. Exits non-zero when any stage failed. A rerun on the
# same warm machine can skip the build: CNNFAST_GPU_SITE=/tmp/cnnfast_site bash ...
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: tests/gpu/run_on_device.sh OUTDIR}
mkdir -p "$out"
res="$out/gpu_results.md"
budget=${CNNFAST_GPU_BUDGET:-540}
start=$(date +%s)
failed=0
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

# stage NAME LIMIT_S CMD...: runs CMD with its output in OUTDIR/NAME.log, under the smaller
# of LIMIT_S and what is left of the budget, and records the outcome in gpu_results.md.
stage() {
  local name=$1 limit=$2 left rc t0 status
  shift 2
  left=$(( budget - ($(date +%s) - start) ))
  (( limit > left )) && limit=$left
  if (( limit < 15 )); then
    echo "- $name: NOT RUN (the ${budget} s budget is spent)" >> "$res"
    failed=1
    return 1
  fi
  t0=$(date +%s)
  # (through bash, so CMD may be a function of this script: they are exported below)
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$out/$name.log" 2>&1
  rc=$?
  if (( rc == 0 )); then status=PASS
  elif (( rc == 124 || rc == 137 )); then status="TIMEOUT (limit ${limit} s)"
  else status="FAIL (exit $rc)"; fi
  (( rc == 0 )) || failed=1
  echo "- $name: $status in $(( $(date +%s) - t0 )) s (log: $name.log)" >> "$res"
  return $rc
}

{
  echo "## GPU run of issue 18 ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git)')"
  echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  echo "- nvcc: $(nvcc --version 2>&1 | grep -o 'release [0-9.]*' || echo missing); $($py -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")' 2>&1 | tail -1)"
  echo "- CPU: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- build tools: $(gcc --version 2>&1 | head -1); $(cmake --version 2>&1 | head -1); Python.h $($py -c 'import os, sysconfig; p = os.path.join(sysconfig.get_paths()["include"], "Python.h"); print("present" if os.path.exists(p) else "MISSING at " + p)' 2>&1 | tail -1)"
  echo
} > "$res"

# CNNFAST_GPU_SITE=DIR reuses an install of an earlier run on the same (still warm) machine.
site=${CNNFAST_GPU_SITE:-/tmp/cnnfast_site}
reuse=0
if [[ -n ${CNNFAST_GPU_SITE:-} && -d $site/cnnfast ]]; then reuse=1; else rm -rf "$site"; fi
build() {
  # all cores; CMakeLists picks sm_90 when CMAKE_CUDA_ARCHITECTURES is not given
  CNNFAST_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" \
    $py -m pip install -v --no-build-isolation --no-deps --no-index --target "$site" . &&
  PYTHONPATH=$site $py -c "import cnnfast, sys; print('cnnfast from', cnnfast.__file__); print('CUDA compiled', cnnfast.cuda.is_compiled(), 'devices', cnnfast.cuda.device_count(), cnnfast.cuda.get_device_name(0) if cnnfast.cuda.is_available() else ''); sys.exit(0 if cnnfast.cuda.is_available() else 3)"
}
export py site
export -f build
if (( reuse )) && echo "- build: reused $site" >> "$res" || stage build 300 build; then
  export PYTHONPATH=$site
  stage pytest_gpu 150 $py -m pytest -q -p no:cacheprovider -rfE -m gpu \
    tests/test_cuda.py tests/test_cuda_conv.py tests/test_cuda_loss.py tests/test_cuda_norm.py \
    tests/test_cuda_optim.py tests/test_cuda_pool_dropout.py tests/test_device_gpu.py
  { echo; echo '```'; grep -E "passed|failed|error|FAILED|ERROR" "$out/pytest_gpu.log" 2>/dev/null | tail -40; echo '```'; } >> "$res"
  stage bench_cuda 120 $py benchmarks/bench_cuda.py --quick
  { echo; echo '```'; tail -60 "$out/bench_cuda.log" 2>/dev/null; echo '```'; echo; } >> "$res"
  stage bench_cuda_train 180 $py benchmarks/bench_cuda_train.py --out "$res"
else
  { echo; echo '```'; tail -40 "$out/build.log" 2>/dev/null; echo '```'; } >> "$res"
fi
echo "- total: $(( $(date +%s) - start )) s of the ${budget} s budget" >> "$res"
cat "$res"
exit $failed
