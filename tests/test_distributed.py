"""cnnfast.distributed: data-parallel training on MPI.

The multi-process checks run in real 2-process MPI jobs (``mpiexec -n 2``, the bundled
mpich) with a wall-clock timeout, so a hang fails the test with a message instead of
stalling CI. tests/dist_worker.py holds the checks that run inside a job; each rank
compares its result with a single-process reference it computes itself.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import cnnfast
import cnnfast.distributed as dist
from cnnfast.autograd import Function
from cnnfast.distributed.launch import find_mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMEOUT = 90

try:
    import mpi4py  # noqa: F401
    MPIEXEC = find_mpiexec()
except (ImportError, RuntimeError):
    MPIEXEC = None
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpi4py/mpiexec not installed (pip install '.[dist]')")


def _env() -> dict:
    env = dict(os.environ)
    # The cnnfast this test imported (installed, or the source tree with its built module),
    # not blindly the source tree: a CI install has no _C under python/cnnfast.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(cnnfast.__file__)))
    env["PYTHONPATH"] = package_parent + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("CNNFAST_DIST_TIMEOUT", "30")
    env["CNNFAST_NUM_THREADS"] = "1"
    return env


def run_job(args: list, nproc: int = 2, timeout: int = TIMEOUT, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``mpiexec -n nproc`` + args, failing the test (not hanging) past ``timeout`` seconds."""
    try:
        return subprocess.run([MPIEXEC, "-n", str(nproc)] + args, capture_output=True, text=True, timeout=timeout,
                              env={**_env(), **(env or {})}, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the {nproc}-process job did not finish within {timeout} s (a hang): {args}\n"
                    f"{(exc.stdout or b'')[-3000:]!r}\n{(exc.stderr or b'')[-3000:]!r}")


def _verdicts(stdout: str) -> dict:
    """{case: {rank: "ok" or "FAIL ..."}} from dist_worker.py's "CASE <name> rank <r> ..." lines."""
    got: dict = {}
    for name, rank, verdict in re.findall(r"CASE (\w+) rank (\d) (ok|FAIL[^\n]*?)(?=CASE|\n|$)", stdout):
        got.setdefault(name, {})[int(rank)] = verdict
    return got


# ---- inside a 2-process job ----------------------------------------------------------------

@pytest.fixture(scope="module", params=["shared_memory", "mpi_transfers"])
def worker_results(request) -> dict:
    """The cases run twice: gradients exchanged through shared memory (what one machine
    uses) and through MPI's non-blocking all-reduce (what several machines use)."""
    if MPIEXEC is None:
        pytest.skip("mpi4py/mpiexec not installed")
    proc = run_job([sys.executable, os.path.join(HERE, "dist_worker.py")],
                   env={"CNNFAST_DIST_SHM": "0" if request.param == "mpi_transfers" else "1"})
    results = _verdicts(proc.stdout)
    results["_output"] = proc.stdout[-4000:] + proc.stderr[-4000:]
    return results


@needs_mpi
@pytest.mark.parametrize("case", ["sgd", "adam", "sgd_syncbn", "adam_syncbn", "no_sync", "unused_parameters",
                                  "collectives", "bad_use", "sampler", "zero_sgd", "zero_adam_syncbn",
                                  "zero_no_sync_and_bad_use", "zero_unused_and_foreign_grads",
                                  "gradients_written_into_slots"])
def test_two_rank_job(worker_results, case):
    """sgd/adam(_syncbn): 2 ranks x batch 3 equal 1 process x batch 6 within 1e-5 after 4 steps, rank 1
    starting from different weights; no_sync accumulation equals one big batch; unused parameters;
    all_reduce/broadcast; bad use raising on every rank; sampler shards disjoint and covering;
    zero_*: the same with a ZeroRedundancyOptimizer, its gathered state equal to the plain one's."""
    got = worker_results.get(case)
    assert got == {0: "ok", 1: "ok"}, f"{case}: {got}\n{worker_results['_output']}"


@needs_mpi
def test_three_rank_job_averages_like_one_process():
    """Three ranks on one machine: the shared-memory exchange sums three slots in rank order
    (and a ZeroRedundancyOptimizer shards three ways), and still equals one process."""
    cases = ["sgd", "zero_sgd", "unused_parameters", "gradients_written_into_slots"]
    proc = run_job([sys.executable, os.path.join(HERE, "dist_worker.py")] + cases, nproc=3)
    got = _verdicts(proc.stdout)
    for case in cases:
        assert got.get(case) == {0: "ok", 1: "ok", 2: "ok"}, f"{case}: {got.get(case)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


@needs_mpi
def test_a_rank_that_raises_stops_the_job_with_its_rank_named(tmp_path):
    script = tmp_path / "raise.py"
    script.write_text(
        "import numpy as np, cnnfast.distributed as dist\n"
        "dist.init()\n"
        "if dist.rank() == 1:\n"
        "    raise RuntimeError('out of data on this rank')\n"
        "dist.all_reduce(np.ones(4))\n"      # rank 0 waits here for a rank that is gone
        "print('rank 0 went on')\n")
    proc = run_job([sys.executable, str(script)], timeout=30)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "rank 1 of 2" in err and "out of data on this rank" in err, err
    assert "went on" not in err


@needs_mpi
@pytest.mark.parametrize("zero", [False, True])
def test_a_rank_that_stops_taking_part_times_out_at_the_shared_memory_exchange(tmp_path, zero):
    """Rank 1 neither dies nor raises but does not reach its backward: rank 0 waits at the
    shared-memory exchange only CNNFAST_DIST_TIMEOUT seconds, then the job stops."""
    script = tmp_path / "stall.py"
    script.write_text(
        "import time, cnnfast, cnnfast.distributed as dist\n"
        "from cnnfast import nn, optim\n"
        "dist.init()\n"
        "ddp = dist.DistributedDataParallel(nn.Linear(4, 2))\n"
        f"if {zero}:\n"
        "    dist.ZeroRedundancyOptimizer(ddp, optim.SGD, lr=0.1)\n"
        "if dist.rank() == 1:\n"
        "    time.sleep(60)\n"
        "ddp(cnnfast.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()\n"
        "print('rank', dist.rank(), 'went on', flush=True)\n")
    proc = run_job([sys.executable, str(script)], timeout=45, env={"CNNFAST_DIST_TIMEOUT": "2"})
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "rank 0 of 2" in err and "TimeoutError: the gradient exchange" in err, err
    assert "went on" not in err


@needs_mpi
def test_a_killed_rank_makes_the_launcher_exit_non_zero_naming_it(tmp_path):
    script = tmp_path / "die.py"
    script.write_text(
        "import os, signal, numpy as np, cnnfast.distributed as dist\n"
        "dist.init()\n"
        "if dist.rank() == 1:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "dist.all_reduce(np.ones(4))\n")
    code = ("import sys; from cnnfast.distributed.launch import launch; "
            f"sys.exit(launch(2, [sys.executable, {str(script)!r}]))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail("a killed rank left the job hanging")
    assert proc.returncode != 0
    # mpiexec's own report names the pid it saw fail; when that was a rank it had stopped
    # itself, the launcher's exit watch names the rank whose process exited first instead.
    assert re.search(r"rank 1 \(pid \d+ on \S+\) (was killed by signal 9|exited first)", proc.stderr), proc.stderr


@needs_mpi
def test_cli_nproc_2_trains_to_the_single_process_accuracy_band_and_resumes_across_world_sizes(tmp_path):
    """`cnnfast train --nproc 2` on the digits (a short run), then --resume on 1 process."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "cnnfast", "train", "--epochs", "4", "--out", str(out), "--quiet"]
    proc = subprocess.run(base + ["--nproc", "2", "--stop-after", "3"], capture_output=True, text=True,
                          timeout=240, env=_env(), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs_run"] == 3
    assert m["history"]["val_acc"][-1] >= 0.9, m["history"]
    # only rank 0 writes: exactly one metrics file and the checkpoints in the one folder
    assert sorted(p.name for p in out.iterdir()) == ["best.ckpt", "confusion.png", "curves.png", "last.ckpt",
                                                     "metrics.json"]
    # each rank updated half of the weights (ZeroRedundancyOptimizer); the checkpoint holds all the state
    from cnnfast.training.checkpoint import load_checkpoint
    _, state = load_checkpoint(str(out / "last.ckpt"))
    assert len(state["optimizer"]["state"]) == len(state["optimizer"]["param_groups"][0]["params"]) == 10
    proc = subprocess.run([sys.executable, "-m", "cnnfast", "train", "--resume", str(out / "last.ckpt"), "--epochs",
                           "4", "--quiet"], capture_output=True, text=True, timeout=240, env=_env(), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 1 and m["epochs_run"] == 4 and m["test_accuracy"] >= 0.95


@needs_mpi
def test_a_rank_killed_during_cnnfast_train_stops_the_job_and_leaves_the_checkpoint_intact(tmp_path):
    """Rank 1 is killed (SIGKILL, no chance to clean up) right after its second epoch; the
    launcher exits non-zero naming rank 1, and last.ckpt is a whole checkpoint of an epoch."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import os, signal\n"
        "if os.environ.get('PMI_RANK') == '1':\n"
        "    import cnnfast.training.trainer as T\n"
        "    real = T._validate_epoch\n"
        "    def validate(run, epoch, bar):\n"
        "        if epoch == 1:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return real(run, epoch, bar)\n"
        "    T._validate_epoch = validate\n")
    env = _env()
    env["PYTHONPATH"] = str(inject) + os.pathsep + env["PYTHONPATH"]
    out = tmp_path / "run"
    try:
        proc = subprocess.run([sys.executable, "-m", "cnnfast", "train", "--nproc", "2", "--epochs", "4", "--quiet",
                               "--limit", "200", "--out", str(out)], capture_output=True, text=True, timeout=120,
                              env=env, cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("a killed rank left `cnnfast train --nproc 2` hanging")
    assert proc.returncode != 0
    assert re.search(r"rank 1 \(pid \d+ on \S+\) was killed by signal 9", proc.stderr), proc.stderr
    from cnnfast.training.checkpoint import load_checkpoint
    weights, state = load_checkpoint(str(out / "last.ckpt"))
    assert state["epoch"] in (0, 1) and weights


@needs_mpi
def test_nproc_that_disagrees_with_mpiexec_is_refused_on_every_rank(tmp_path):
    proc = run_job([sys.executable, "-m", "cnnfast", "train", "--nproc", "3", "--epochs", "1", "--quiet",
                    "--out", str(tmp_path / "x")], timeout=60, cwd=str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.count("--nproc 3") >= 1 and "2 processes" in proc.stderr, proc.stderr


# ---- one process -------------------------------------------------------------------------

def test_a_single_process_is_a_world_of_one():
    comm = dist.init()
    assert (dist.rank(), dist.world_size()) == (0, 1) or comm.backend == "mpi"
    a = np.arange(4.0)
    assert dist.all_reduce(a, "mean") is a and a.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="C-contiguous"):
        dist.all_reduce(np.zeros((3, 4))[:, ::2])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(3)
        ro.flags.writeable = False
        dist.broadcast(ro)
    with pytest.raises(ValueError, match="op"):
        dist.all_reduce(np.zeros(2), "avg")
    with pytest.raises(TypeError, match="dtype"):
        dist.all_reduce(np.zeros(2, np.float16))


def test_sampler_shards_are_disjoint_cover_the_data_and_follow_the_epoch():
    for n, world in ((10, 3), (7, 2), (1, 4), (0, 2)):
        shards = [dist.DistributedSampler(n, num_replicas=world, rank=r, seed=1) for r in range(world)]
        idx = [s.indices() for s in shards]
        assert {len(i) for i in idx} == {-(-n // world)}
        flat = np.concatenate(idx)
        assert set(flat.tolist()) == set(range(n))
        assert len(flat) - n == (-n) % world if n else len(flat) == 0
        again = dist.DistributedSampler(n, num_replicas=world, rank=0, seed=1)
        assert again.indices().tolist() == idx[0].tolist()       # seeded: the same on every call
    s = dist.DistributedSampler(100, num_replicas=2, rank=1, seed=0)
    first = s.indices().copy()
    s.set_epoch(1)
    assert not np.array_equal(first, s.indices())
    with pytest.raises(ValueError, match="rank"):
        dist.DistributedSampler(10, num_replicas=2, rank=2)


def test_post_accumulate_grad_hook_runs_before_the_rest_of_the_backward_pass():
    """The engine accumulates a hooked leaf once its last consumer has run, so the hook
    fires while earlier layers' backward is still to come (what lets DDP overlap)."""
    log = []

    class Mark(Function):
        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, g):
            log.append("earlier layer's backward")
            return g

    w = cnnfast.tensor(np.ones(3), requires_grad=True)
    v = cnnfast.tensor(np.arange(3.0), requires_grad=True)
    v.register_post_accumulate_grad_hook(lambda t: log.append(("v hook", t.grad.data.tolist())))
    (Mark.apply(w) * v).sum().backward()
    assert log == [("v hook", [1.0, 1.0, 1.0]), "earlier layer's backward"], log
    assert w.grad.data.tolist() == [0.0, 1.0, 2.0]
    # A leaf used by several nodes (once twice by the same node) is handed over once, complete.
    u = cnnfast.tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []
    u.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.tolist()))
    (u * u + u * 3).sum().backward()
    assert seen == [[5.0, 7.0]], seen
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


class _TwoHalves(dist.SelfCommunicator):
    """A stand-in for a 2-rank job inside one process: rank 0's collectives see rank 1's
    contribution, given in advance, so SyncBatchNorm's global path runs without MPI."""

    size = 2

    def __init__(self, other):
        self.other = other  # what rank 1 contributes: {"gather": array, "reduce": array}

    def allgather(self, a):
        return np.stack([a, self.other["gather"](a)])

    def allreduce(self, a, op="sum"):
        a += self.other["reduce"](a)
        return a


def test_sync_batchnorm_statistics_and_gradients_are_those_of_the_whole_batch():
    """SyncBatchNorm on half a batch, its collectives answered with the other half's local
    statistics, equals BatchNorm2d (checked against torch elsewhere) on the whole batch."""
    from cnnfast.distributed.sync_batchnorm import _SyncBatchNormFn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4, 7)) * 3 + 1
    dy = rng.standard_normal(x.shape)
    lo, hi = x[:2], x[2:]           # unequal halves: rank 0 has 2 samples, rank 1 has 3
    c, axes = 3, (0, 2, 3)
    n_hi = hi.size // c
    mean_hi = hi.mean(axis=axes)
    m2_hi = ((hi - mean_hi.reshape(1, c, 1, 1)) ** 2).sum(axis=axes)

    bn = cnnfast.nn.BatchNorm2d(3).double()
    bn.weight.data[:] = [0.5, 2.0, -1.0]
    t = cnnfast.tensor(x, requires_grad=True)
    y = bn(t)
    (y * cnnfast.tensor(dy)).sum().backward()

    whole_mean = x.mean(axis=axes).reshape(1, c, 1, 1)
    whole_invstd = 1 / np.sqrt(x.var(axis=axes) + 1e-5).reshape(1, c, 1, 1)
    xhat_hi = (hi - whole_mean) * whole_invstd
    dy_hi = dy[2:]
    other = {"gather": lambda a: np.concatenate([[n_hi], mean_hi, m2_hi]),
             "reduce": lambda a: np.concatenate([dy_hi.sum(axis=axes), (dy_hi * xhat_hi).sum(axis=axes)])}
    w = cnnfast.tensor(bn.weight.detach().numpy().copy(), requires_grad=True)
    b = cnnfast.tensor(np.zeros(3), requires_grad=True)
    rm, rv = np.zeros(3), np.ones(3)
    part = cnnfast.tensor(lo, requires_grad=True)
    out = _SyncBatchNormFn.apply(part, w, b, rm, rv, 0.1, 1e-5, _TwoHalves(other))
    (out * cnnfast.tensor(dy[:2])).sum().backward()
    np.testing.assert_allclose(out.data, y.data[:2], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.grad.data, t.grad.data[:2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rm, bn.running_mean.data, rtol=1e-10)
    np.testing.assert_allclose(rv, bn.running_var.data, rtol=1e-10)
    # parameter gradients are this rank's share; DDP's average over ranks adds the other's
    np.testing.assert_allclose(w.grad.data, (dy[:2] * (lo - whole_mean) * whole_invstd).sum(axis=axes), rtol=1e-9)


def test_convert_sync_batchnorm_keeps_the_parameter_objects():
    net = cnnfast.nn.Sequential(cnnfast.nn.Conv2d(1, 2, 3), cnnfast.nn.BatchNorm2d(2))
    weight = net[1].weight
    net = dist.convert_sync_batchnorm(net)
    assert isinstance(net[1], dist.SyncBatchNorm) and net[1].weight is weight
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                      "1.running_var", "1.num_batches_tracked"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_add_averages_in_one_pass(dtype):
    """_C._scale_add (ZeroRedundancyOptimizer's averaging): acc = alpha acc + beta other in
    place, odd sizes across thread blocks; other may be acc; mismatches are refused."""
    from cnnfast import _C
    rng = np.random.default_rng(3)
    for n in (1, 7, 70001, (1 << 16) * 2 + 5):
        a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        want = 0.5 * a.astype(np.float64) + 0.25 * b
        _C._scale_add(a, b, 0.5, 0.25)
        np.testing.assert_allclose(a, want, rtol=1e-6 if dtype == np.float32 else 1e-15)
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    _C._scale_add(a, a, 2.0, 1.0)
    np.testing.assert_array_equal(a, 3 * np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="shape"):
        _C._scale_add(np.zeros(3, dtype), np.zeros(4, dtype), 1.0, 1.0)
    with pytest.raises(TypeError):
        _C._scale_add(np.zeros(3, dtype), np.zeros(3, np.float32 if dtype == np.float64 else np.float64), 1.0, 1.0)
    ro = np.zeros(3, dtype)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable|read-only"):
        _C._scale_add(ro, np.zeros(3, dtype), 1.0, 1.0)


def test_exit_watch_names_the_first_rank_to_exit(tmp_path):
    # The ranks' connections close in the order their processes exit; two closing before the
    # watch looked leave it unknown rather than guessed.
    import socket
    import time

    from cnnfast.distributed.launch import _ExitWatch

    path = str(tmp_path / "exits.sock")
    watch = _ExitWatch(path)
    try:
        conns = []
        for rank in (0, 1, 2):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(path)
            c.sendall(f"{rank}\n".encode())
            conns.append(c)
        time.sleep(0.3)
        assert watch.first_exit() is None
        conns[2].close()
        time.sleep(0.3)
        conns[0].close()
        time.sleep(0.3)
        assert watch.order == [2, 0] and watch.first_exit() == 2
    finally:
        for c in conns:
            c.close()
        watch.close()


def test_failure_message_prefers_the_first_exit_over_mpiexecs_pid():
    from cnnfast.distributed.launch import _failure_message

    text = "=   PID 200 RUNNING AT vm\n=   EXIT CODE: 9\n"
    ranks = {200: (0, "vm"), 201: (1, "vm")}
    alone = _failure_message(text, ranks, 9)
    assert "rank 0 (pid 200 on vm) was killed by signal 9 (SIGKILL)" in alone
    agreed = _failure_message(text, ranks, 9, first=0)
    assert agreed == alone
    fixed = _failure_message(text, ranks, 9, first=1)
    assert "rank 1 (pid 201 on vm) exited first" in fixed and "rank 0 (pid 200) killed by signal 9" in fixed
