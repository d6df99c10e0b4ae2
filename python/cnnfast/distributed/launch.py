"""Starting a job of N local processes through the bundled ``mpiexec`` (``cnnfast train
--nproc N``), and saying which rank brought a failed job down.

Hydra (MPICH's launcher) stops every process when one dies, and reports the dead one by
process id only. Each rank therefore records "rank pid host" in a folder named by
``CNNFAST_DIST_RUNDIR`` when it joins the job (``cnnfast.distributed.init``); when the job
fails, the launcher maps the reported pid back to the rank and says so.

Hydra's report is not always the rank that died first: under load it has named a rank that
it had itself killed while cleaning up (a CI run, rank 1 SIGKILLed, reported as rank 0). So
each rank also keeps a connection to a socket in that folder open for its whole life: the
kernel closes it when the process exits, before its parent can even learn of the exit, so
the first connection to close is the first rank to die, and the launcher names that one.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
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


_SOCKET_NAME = "exits.sock"
_life_line = None  # this rank's connection to the launcher, open until the process exits


def record_rank(rank: int, size: int) -> None:
    """Called by every rank at init: leaves "rank pid host" where the launcher can read it,
    and connects to the launcher's exit watch (module docstring)."""
    global _life_line
    folder = os.environ.get("CNNFAST_DIST_RUNDIR")
    if not folder or not os.path.isdir(folder):
        return
    with open(os.path.join(folder, f"rank{rank}"), "w") as f:
        f.write(f"{rank} {os.getpid()} {socket.gethostname()} {size}\n")
    path = os.path.join(folder, _SOCKET_NAME)
    if os.path.exists(path) and _life_line is None:
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            conn.sendall(f"{rank}\n".encode())
            _life_line = conn
            # A forked child (a data-loading worker) would hold the connection open past
            # this process's exit.
            os.register_at_fork(after_in_child=_drop_life_line)
        except OSError:
            pass  # the watch is an aid to the failure message, never a reason to fail


def _drop_life_line() -> None:
    global _life_line
    if _life_line is not None:
        _life_line.close()
        _life_line = None


class _ExitWatch:
    """Accepts the ranks' connections and notes the order in which they close."""

    def __init__(self, path: str):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(256)
        self.server.setblocking(False)
        self.order = []        # ranks in the order their connections closed
        self.ambiguous = False  # two closed before the watch could tell which was first
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _drain(conn, conns: dict) -> bool:
        """Reads what conn has (its rank line); True when it has closed. Everything pending
        is read, so that a close queued behind unread data counts in this round."""
        while True:
            try:
                data = conn.recv(64)
            except BlockingIOError:
                return False
            if not data:
                return True
            try:
                conns[conn] = int(data.split()[0])
            except ValueError:
                pass

    def _run(self) -> None:
        conns = {}  # socket -> rank (None until its line arrives)
        while not self._stop:
            ready, _, _ = select.select([self.server, *conns], [], [], 0.2)
            if self.server in ready:
                # Every connection in the backlog joins this round: one may already have closed.
                ready = [r for r in ready if r is not self.server]
                while True:
                    try:
                        c, _ = self.server.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c] = None
                    ready.append(c)
            closed = [r for r in ready if self._drain(r, conns)]
            if len(closed) > 1 and not self.order:
                self.ambiguous = True
            for r in closed:
                if conns[r] is not None:
                    self.order.append(conns[r])
                del conns[r]
                r.close()
        for c in conns:
            c.close()

    def first_exit(self):
        """The rank that exited first, or None when unknown (or two at once)."""
        return None if self.ambiguous or not self.order else self.order[0]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=1.0)
        self.server.close()


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


def _failure_message(text: str, ranks: dict, rc: int, first: Optional[int] = None) -> str:
    """ranks: pid -> (rank, host); first: the rank whose process exited first, if known."""
    found = re.findall(r"PID (\d+) RUNNING AT (\S+)\s*=\s*EXIT CODE: (\d+)", text)
    lines = []
    pid_of = {rank: (pid, host) for pid, (rank, host) in ranks.items()}
    for pid, host, code in found:
        rank, _ = ranks.get(int(pid), (None, host))
        code = int(code)
        how = f"was killed by signal {code} ({signal.Signals(code).name})" if 0 < code < 32 and code in {
            s.value for s in signal.Signals} else f"exited with code {code}"
        if first is not None and rank is not None and rank != first and first in pid_of:
            # mpiexec named a rank that exited after another: one it stopped itself.
            fpid, fhost = pid_of[first]
            lines.append(f"rank {first} (pid {fpid} on {fhost}) exited first, with no status reported; mpiexec "
                         f"stopped the other ranks (it reports rank {rank} (pid {pid}) {how.replace('was ', '')})")
            continue
        who = f"rank {rank}" if rank is not None else "a rank"
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
    try:
        watch = _ExitWatch(os.path.join(folder, _SOCKET_NAME))
    except OSError:
        watch = None  # e.g. a folder path too long for a socket: the message falls back to mpiexec's report
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
            first = None
            if watch is not None:
                time.sleep(0.05)  # the watch thread may not have run since the last close
                first = watch.first_exit()
            print(_failure_message(text, _ranks_by_pid(folder), rc, first), file=sys.stderr, flush=True)
        return rc
    finally:
        if watch is not None:
            watch.close()
        shutil.rmtree(folder, ignore_errors=True)
