"""Worker-thread placement (csrc/core/parallel.cpp, worker_cpus): pinned one per CPU only
when the pool has exactly as many threads as the CPUs the process may use."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs Linux affinity calls and at least 2 CPUs")

PROBE = r"""
import json, os, sys
import numpy as np
import cnnfast, cnnfast.functional as F
before = set(os.listdir('/proc/self/task'))
cnnfast.set_num_threads(int(sys.argv[1]))
F.relu(cnnfast.tensor(np.ones(1 << 20, np.float32)))  # starts the pool
workers = sorted(set(os.listdir('/proc/self/task')) - before, key=int)
print(json.dumps({"caller": sorted(os.sched_getaffinity(0)),
                  "workers": [sorted(os.sched_getaffinity(int(t))) for t in workers]}))
"""


def probe(threads, cpus, env=None):
    """Runs the probe restricted to `cpus`; returns the caller's and the new threads' CPU sets."""
    e = dict(os.environ, **(env or {}))
    e.pop("CNNFAST_NUM_THREADS", None)
    code = f"import os; os.sched_setaffinity(0, {set(cpus)!r})\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code, str(threads)], env=e, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_workers_pinned_when_threads_match_cpus():
    cpus = sorted(os.sched_getaffinity(0))[:2]
    got = probe(2, cpus)
    assert got["caller"] == cpus  # the caller is never pinned
    # One worker, on one of the CPUs (cpus[1], or cpus[0] if the caller ran on cpus[1]
    # at the first job and the worker moved out of its way).
    pinned = [w for w in got["workers"] if len(w) == 1]
    assert len(pinned) == 1 and pinned[0][0] in cpus, got


def test_no_pinning_when_threads_do_not_match_or_turned_off():
    cpus = sorted(os.sched_getaffinity(0))[:2]
    for got in (probe(2, cpus, {"CNNFAST_PIN_THREADS": "0"}), probe(1, cpus)):
        assert all(w == cpus for w in got["workers"]), got
    if len(os.sched_getaffinity(0)) >= 3:
        three = sorted(os.sched_getaffinity(0))[:3]
        got = probe(2, three)  # 2 threads on 3 allowed CPUs: left to the OS
        assert all(w == three for w in got["workers"]), got
        got = probe(2, three, {"CNNFAST_PIN_THREADS": "1"})
        pinned = [w for w in got["workers"] if len(w) == 1]
        assert len(pinned) == 1 and pinned[0][0] in three[:2], got


MOVE_PROBE = r"""
import json, os, sys
import numpy as np
import cnnfast, cnnfast.functional as F
cpus = sorted(os.sched_getaffinity(0))
before = set(os.listdir('/proc/self/task'))
cnnfast.set_num_threads(2)
x = cnnfast.tensor(np.ones(1 << 20, np.float32))
F.relu(x)  # starts the pool: its worker pinned to cpus[1]
worker = [int(t) for t in set(os.listdir('/proc/self/task')) - before]
first = [sorted(os.sched_getaffinity(t)) for t in worker]
os.sched_setaffinity(0, set(first[0]))  # this thread only: the caller now sits on the worker's CPU
F.relu(x)
moved = [sorted(os.sched_getaffinity(t)) for t in worker]
os.sched_setaffinity(0, set(moved[0]))  # and onto its new one: the worker moves back
F.relu(x)
back = [sorted(os.sched_getaffinity(t)) for t in worker]
print(json.dumps({"cpus": cpus, "first": first, "moved": moved, "back": back}))
"""


def test_worker_leaves_the_cpu_the_caller_moved_to():
    # After an idle spell the scheduler may wake the unpinned caller on the pinned
    # worker's CPU and keep both there (a 2-thread kernel then ran at 1-thread speed);
    # each job checks for that and moves the worker to the CPU the caller left.
    cpus = sorted(os.sched_getaffinity(0))[:2]
    e = dict(os.environ)
    e.pop("CNNFAST_NUM_THREADS", None)
    e.pop("CNNFAST_PIN_THREADS", None)
    code = f"import os; os.sched_setaffinity(0, {set(cpus)!r})\n" + MOVE_PROBE
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    (first,), (moved,), (back,) = got["first"], got["moved"], got["back"]
    assert len(first) == 1 and first[0] in cpus, got
    assert len(moved) == 1 and moved[0] in cpus and moved != first, got
    assert back == first, got
