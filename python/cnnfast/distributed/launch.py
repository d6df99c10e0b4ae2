"""Starting a job of N local processes through the bundled ``mpiexec`` (``cnnfast train
--nproc N``), and saying which rank brought a failed job down.

Hydra (MPICH's launcher) stops every process when one dies, and reports the dead one by
process id only. Each rank therefore records "rank pid host" in a folder named by
``CNNFAST_DIST_RUNDIR`` when it joins the job (``cnnfast.distributed.init``); when the job
fails, the launcher maps the reported pid back to the rank and says so.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Optional, Sequence

__all__ = ["find_mpiexec", "launch", "record_rank"]


def find_mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the mpich wheel installs it into the environment's
    bin folder), else the first on PATH; RuntimeError naming the fix when there is none."""
    here = os.path.dirname(sys.executable)
    for path in (shutil.which("mpiexec", path=here), shutil.which("mpiexec")):
        if path:
            return path
    raise RuntimeError("--nproc: no mpiexec found; install the MPI extra: pip install \"cnnfast[dist]\"")


def record_rank(rank: int, size: int) -> None:
    """Called by every rank at init: leaves "rank pid host" where the launcher can read it."""
    folder = os.environ.get("CNNFAST_DIST_RUNDIR")
    if not folder or not os.path.isdir(folder):
        return
    import socket
    with open(os.path.join(folder, f"rank{rank}"), "w") as f:
        f.write(f"{rank} {os.getpid()} {socket.gethostname()} {size}\n")


def _ranks_by_pid(folder: str) -> dict:
    out = {}
    for name in os.listdir(folder):
        try:
            with open(os.path.join(folder, name)) as f:
                rank, pid, host = f.read().split()[:3]
            out[int(pid)] = (int(rank), host)
        except (OSError, ValueError):
            continue
    return out


def _forward(src, dst, tail: list) -> None:
    """Copy a child stream to ours in raw chunks (progress bars redraw with carriage
    returns, which line-buffered copying would hold back), keeping the last 64 KB."""
    while True:
        chunk = os.read(src.fileno(), 65536)
        if not chunk:
            break
        dst.buffer.write(chunk) if hasattr(dst, "buffer") else dst.write(chunk.decode(errors="replace"))
        dst.flush()
        tail.append(chunk)
        while sum(map(len, tail)) > 65536 and len(tail) > 1:
            tail.pop(0)


def _failure_message(text: str, ranks: dict, rc: int) -> str:
    found = re.findall(r"PID (\d+) RUNNING AT (\S+)\s*=\s*EXIT CODE: (\d+)", text)
    lines = []
    for pid, host, code in found:
        rank, _ = ranks.get(int(pid), (None, host))
        who = f"rank {rank}" if rank is not None else "a rank"
        code = int(code)
        how = f"was killed by signal {code} ({signal.Signals(code).name})" if 0 < code < 32 and code in {
            s.value for s in signal.Signals} else f"exited with code {code}"
        lines.append(f"{who} (pid {pid} on {host}) {how}; mpiexec stopped the other ranks")
    aborted = re.findall(r"rank (\d+) of (\d+) \(pid \d+ on \S+\) failed", text)
    for rank, _ in aborted:
        lines.append(f"rank {rank} raised an error (above) and stopped the job")
    if not lines:
        lines.append(f"mpiexec exited with status {rc}")
    return "cnnfast: the distributed job failed: " + "; ".join(dict.fromkeys(lines))


def launch(nproc: int, argv: Sequence[str], env: Optional[dict] = None, mpiexec_args: Sequence[str] = ()) -> int:
    """Run ``mpiexec -n nproc argv...``, passing its output through; returns its exit status
    (non-zero when any rank failed, after a line naming the rank)."""
    if int(nproc) < 1:
        raise ValueError(f"--nproc: expected a positive process count, got {nproc}")
    folder = tempfile.mkdtemp(prefix="cnnfast-dist-")
    child_env = dict(os.environ if env is None else env)
    child_env["CNNFAST_DIST_RUNDIR"] = folder
    cmd = [find_mpiexec(), "-n", str(int(nproc)), *mpiexec_args, *argv]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env)
        tails = ([], [])
        threads = [threading.Thread(target=_forward, args=(proc.stdout, sys.stdout, tails[0]), daemon=True),
                   threading.Thread(target=_forward, args=(proc.stderr, sys.stderr, tails[1]), daemon=True)]
        for t in threads:
            t.start()
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait()
        for t in threads:
            t.join()
        if rc != 0:
            text = b"".join(tails[0] + tails[1]).decode(errors="replace")
            print(_failure_message(text, _ranks_by_pid(folder), rc), file=sys.stderr, flush=True)
        return rc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
