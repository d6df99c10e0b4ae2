#!/usr/bin/env bash
# Builds cnnfast._C with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option CNNFAST_SANITIZE=address,undefined) and runs the kernel tests on it.
#
#   tests/run_sanitized.sh            the full kernel test set (several minutes)
#   tests/run_sanitized.sh --quick    the reduced set CI runs: fuzz, overflow, threads,
#                                     and the activation/pool/loss/dropout/optim tests
#   tests/run_sanitized.sh -- -k conv extra pytest arguments after --
#
# Environment: PYTHON (default: python3), CNNFAST_SANITIZE (default: address,undefined),
# CNNFAST_SANITIZE_BUILD (build folder, default: build/sanitize), JOBS (default: 2).
#
# Why the environment below: the interpreter itself is not built with ASan, so the
# ASan runtime must be loaded first (LD_PRELOAD of the compiler's libasan), and
# CPython keeps memory alive until exit by design, so leak detection is off
# (detect_leaks=0); libstdc++ is preloaded too (see below). Any ASan or UBSan report aborts the run (halt_on_error=1 and
# -fno-sanitize-recover), so a green run means zero reports.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SAN=${CNNFAST_SANITIZE:-address,undefined}
B=${CNNFAST_SANITIZE_BUILD:-build/sanitize}
JOBS=${JOBS:-2}
quick=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run_sanitized.sh: unknown argument $1 (use --quick, or -- pytest args)" >&2; exit 2 ;;
  esac
  shift
done

if ! "$PY" -c "import pybind11" 2>/dev/null; then
  echo "run_sanitized.sh: $PY cannot import pybind11 (pip install pybind11)" >&2
  exit 2
fi
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
start=$(date +%s)
cmake -S . -B "$B" "${gen[@]}" -DPython_EXECUTABLE="$(command -v "$PY")" -DCNNFAST_CUDA=OFF \
  -DCNNFAST_SANITIZE="$SAN" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$B" -j "$JOBS"
echo "run_sanitized.sh: sanitized build took $(( $(date +%s) - start )) s"

# A private copy of the Python package around the sanitized module, so the regular
# build in python/cnnfast/ is neither used nor replaced.
pkg="$B/sanitized/cnnfast"
find python/cnnfast -name '*.py' | while read -r f; do
  dest="$B/sanitized/${f#python/}"
  mkdir -p "$(dirname "$dest")"
  cp "$f" "$dest"
done
ls "$pkg"/_C*.so >/dev/null

CXX_BIN=${CXX:-c++}
asan_lib=$("$CXX_BIN" -print-file-name=libasan.so)
if [ ! -e "$asan_lib" ]; then
  echo "run_sanitized.sh: libasan.so not found via $CXX_BIN -print-file-name" >&2
  exit 2
fi

if [ "$quick" = 1 ]; then
  tests=(tests/test_fuzz_kernels.py tests/test_size_overflow.py tests/test_thread_safety.py
         tests/test_activation.py tests/test_pool.py tests/test_loss.py tests/test_dropout.py tests/test_optim.py)
else
  tests=(tests/test_fuzz_kernels.py tests/test_fuzz_functional.py tests/test_size_overflow.py
         tests/test_thread_safety.py tests/test_activation.py tests/test_conv.py tests/test_conv_transpose.py
         tests/test_gemm.py tests/test_linear.py tests/test_pool.py tests/test_norm.py tests/test_loss.py
         tests/test_dropout.py tests/test_optim.py tests/test_autograd.py tests/test_nchw16c.py
         tests/test_conv_smallmap.py tests/test_conv_kvec_taps.py tests/test_bf16.py)
fi

log="$B/sanitizer.log"
rm -f "$B"/asan.* "$B"/ubsan.*
start=$(date +%s)
# libstdc++ goes in with it: otherwise it is only dlopen()ed later with the module,
# after ASan's start-up, and ASan's __cxa_throw interceptor finds no real
# __cxa_throw and aborts on the first C++ exception (every ValueError we raise).
export LD_PRELOAD="$asan_lib $("$CXX_BIN" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0:log_path=$B/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$B/ubsan"
export PYTHONPATH="$B/sanitized:tests"
"$PY" -c "import cnnfast; print('run_sanitized.sh: testing', cnnfast._C.__file__)"
set +e
# ASan intercepts mallopt(), so the host-allocator tuning that test checks cannot apply here.
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" \
  --deselect tests/test_activation.py::test_host_allocator_is_left_alone_unless_asked "${extra[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
unset LD_PRELOAD
reports=$(cat "$B"/asan.* "$B"/ubsan.* 2>/dev/null | grep -cE "AddressSanitizer|LeakSanitizer|runtime error:" || true)
echo "run_sanitized.sh: tests took $(( $(date +%s) - start )) s; pytest exit $rc; sanitizer reports: $reports"
if [ "$reports" != 0 ]; then
  cat "$B"/asan.* "$B"/ubsan.* 2>/dev/null | head -200
  exit 1
fi
exit "$rc"
