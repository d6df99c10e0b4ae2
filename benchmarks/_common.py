"""What every side-by-side benchmark shares: the header line that says when, where and how
a table was measured, and timing that interleaves the contenders.

Interleaving (one call of each contender in turn, every round) makes a burst of load from
other processes on a shared machine hit all contenders alike, so ratios stay meaningful
even when absolute times move.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time

import cnnfast

# The SIMD features that decide which kernels either library can use, in /proc/cpuinfo's names.
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16",
               "avx512_fp16", "amx_bf16", "amx_int8")


def machine() -> str:
    """'<CPU model>, <n> cores, <SIMD flags>' (Linux; the platform's processor string elsewhere)."""
    model, flags, cores = platform.processor() or "unknown CPU", set(), 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model, cores = value.strip(), cores + 1
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = " ".join(f for f in _SIMD_FLAGS if f in flags) or "flags unknown"
    return f"{model}, {cores or '?'} cores, {simd}"


def header(threads: int, statistic: str) -> str:
    """The line above every table: date, machine, software, threads and the statistic."""
    import torch

    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # The load average says how much else ran: on a shared machine it moves every figure.
    load = "load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "load unknown"
    return (f"# {when}; {machine()}; {load} before the run\n"
            f"# cnnfast {cnnfast.__version__} (simd {cnnfast.simd_level()}), torch {torch.__version__} "
            f"(cpu capability {cap}); {threads} threads each; {statistic}")


def interleaved(fns: dict, repeats: int, warmup: int = 2, pause: float = 0.0, clock=time.perf_counter) -> dict:
    """{name: [seconds per repeat]}: every round calls each function once, in turn.

    ``pause`` seconds of sleep before each timed call let the previous contender's worker
    threads stop spin-waiting (PyTorch's OpenMP workers spin after a parallel region and,
    on 2 cores, would take CPU from whichever call comes next); a callable is called instead
    (bench_inference.settle waits until the other threads are idle). ``clock``: time.thread_time
    times the calling thread's CPU seconds instead of wall clock (kernel_cpu_times.py)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if callable(pause):
                pause()
            elif pause:
                time.sleep(pause)
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def median(ts) -> float:
    return statistics.median(ts)
