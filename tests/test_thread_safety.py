"""Kernels called from several Python threads at once (issue 10).

Every kernel releases the GIL, so Python threads really do run them concurrently;
they share one worker pool (csrc/core/parallel.h), whose jobs take turns. The same
calls made from four threads in four different orders must give bit-for-bit the
results the sequential calls gave (same thread count, so the same chunking), and
changing the thread count or SIMD level from another thread in the middle must
neither crash nor deadlock nor change results beyond float rounding.
"""
import random
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnfast
import cnnfast._C as C
from fuzz_specs import SPECS, call
from helpers import assert_close

THREADS = 4
KERNELS = sorted(n for n, b in SPECS.items()
                 if n not in ("set_num_threads", "set_simd_level", "get_num_threads", "simd_level",
                              "cpu_supports_avx2", "fma_peak_gflops", "cpu_supports_avx512",
                              "best_simd_level", "cpu_features", "cpu_model", "tune_host_allocator",
                              "host_allocator_tuned", "amx_peak_gflops", "dpbf16_peak_gflops", "set_bf16_path",
                              # the workspace pool's counters and settings (issue 22): state, not results
                              "workspace_stats", "workspace_reset_peak", "workspace_trim",
                              "set_workspace_cache_limit"))
SETTINGS = settings(max_examples=2, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def run_concurrently(work, n=THREADS):
    """Runs work(i) on n threads released together; re-raises the first failure."""
    barrier = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a kernel thread did not finish (deadlock?)"
    if errors:
        raise errors[0]


def draw_cases(data):
    return [SPECS[n](data.draw) for n in KERNELS]


def same_bits(got, want, what):
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        if w is None:
            assert g is None, what
        else:
            np.testing.assert_array_equal(g, w, err_msg=what)


@SETTINGS
@given(data=st.data())
def test_concurrent_calls_match_sequential_bit_for_bit(data):
    cases = draw_cases(data)
    sequential = [call(c) for c in cases]
    results = [[None] * len(cases) for _ in range(THREADS)]

    def work(i):
        order = list(range(len(cases)))
        random.Random(i).shuffle(order)
        for j in order:
            results[i][j] = call(cases[j])

    run_concurrently(work)
    for i in range(THREADS):
        for j, c in enumerate(cases):
            same_bits(results[i][j], sequential[j], f"thread {i}, {c.fn}")


@pytest.mark.parametrize("switch", ["threads", "simd"])
def test_settings_changed_while_kernels_run(switch):
    """One thread keeps changing the thread count (or SIMD level) while others run
    convolutions, GEMMs and reductions: every result stays right up to rounding."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 17, 13)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    a = rng.standard_normal((67, 45)).astype(np.float32)
    b = rng.standard_normal((45, 71)).astype(np.float32)
    jobs = [
        lambda: C.conv_forward(x, w, None, [1, 2], [[1, 0], [2, 1]], [1, 1], 2),
        lambda: C.conv_backward(np.ones((3, 8, 16, 7), np.float32), x, w, [1, 2], [[1, 0], [2, 1]], [1, 1], 2),
        lambda: C.gemm(a, b),
        lambda: C.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)[0],
        lambda: C.softmax_forward(x, 1),
        lambda: C.max_pool2d_forward(x, [3, 2], [2, 2], [1, 1], [1, 1], True, True),
    ]

    def flat(r):
        return [np.array(v) for v in (r if isinstance(r, tuple) else (r,)) if v is not None]

    before_threads, before_simd = C.get_num_threads(), C.simd_level()
    want = [flat(j()) for j in jobs]
    stop = threading.Event()
    levels = cnnfast.simd_levels()

    def switcher():
        k = 0
        while not stop.is_set():
            if switch == "threads":
                C.set_num_threads(1 + k % 3)
            else:
                C.set_simd_level(levels[k % len(levels)])
            k += 1

    t = threading.Thread(target=switcher)
    t.start()
    try:
        got = [[None] * len(jobs) for _ in range(THREADS)]

        def work(i):
            for rep in range(3):
                for j, job in enumerate(jobs):
                    got[i][j] = flat(job())

        run_concurrently(work)
    finally:
        stop.set()
        t.join()
        C.set_num_threads(before_threads)
        C.set_simd_level(before_simd)
    for i in range(THREADS):
        for j in range(len(jobs)):
            for g, w_ in zip(got[i][j], want[j]):
                if w_.dtype.kind == "f":
                    assert_close(g, w_, rtol=1e-4, atol=1e-4, what=f"thread {i} job {j}")
                else:
                    np.testing.assert_array_equal(g, w_)


def test_gil_is_released_during_kernels():
    """With a switch interval of minutes, Python never preempts the main thread, and
    the spinning thread gives the GIL back after each step: its counter can only
    advance while the main thread sits in a kernel that released the GIL."""
    # Large enough that each call lasts milliseconds even on the AVX-512 GEMM (a 300x300
    # product took ~0.2 ms there, too short for the other thread to be scheduled reliably).
    a = np.ones((900, 900), np.float32)
    counter = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counter[0] += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    t = threading.Thread(target=spin)
    t.start()
    sys.setswitchinterval(100.0)
    try:
        advanced = []
        for _ in range(20):
            before = counter[0]
            C.gemm(a, a)
            advanced.append(counter[0] - before)
    finally:
        sys.setswitchinterval(interval)
        done.set()
        t.join()
    assert max(advanced) > 0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_forked_child_runs_parallel_kernels():
    """fork() copies only the calling thread: a child of a process whose worker pool has run
    must start its own workers, not wait for the parent's (it hung before), and compute
    what the parent computes."""
    import multiprocessing as mp

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 31, 29)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    before = C.get_num_threads()
    C.set_num_threads(2)
    try:
        expect = C.conv_forward(x, w, None, [1, 1], [[1, 1], [1, 1]], [1, 1], 1)   # the pool has run
        ctx = mp.get_context("fork")
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=_conv_in_child, args=(child_end, x, w))
        child.start()
        # The result (230 KB) is more than a pipe holds: read it before joining.
        done = parent_end.poll(60)
        if not done:
            child.kill()
        assert done, "the forked child's convolution did not finish in 60 s"
        threads, got = parent_end.recv()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert threads == 2
        np.testing.assert_array_equal(got, expect)
    finally:
        C.set_num_threads(before)


def _conv_in_child(conn, x, w):
    conn.send((C.get_num_threads(), C.conv_forward(x, w, None, [1, 1], [[1, 1], [1, 1]], [1, 1], 1)))
