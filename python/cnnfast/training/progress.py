"""A small progress bar for training loops, written to stderr.

On a terminal it redraws one line per epoch (``\\r``) with the bar, loss, accuracy,
images/s and ETA; elsewhere (a log file, CI, a pipe) it prints one line when the
epoch ends, so logs stay readable. No dependency beyond the standard library.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def format_time(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """Progress of one epoch of ``total`` steps.

    ``update(n_images, loss=..., acc=...)`` after each step; ``close(**extra)`` at the
    end prints the final line with any extra metrics (e.g. ``val_acc``).
    ``tty=None`` asks the stream whether it is a terminal.
    """

    def __init__(self, total: int, desc: str = "", stream: Optional[TextIO] = None, width: int = 24,
                 tty: Optional[bool] = None, min_interval: float = 0.1, enabled: bool = True):
        self.total = max(1, int(total))
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.min_interval = min_interval
        self.enabled = enabled
        self.step = 0
        self.images = 0
        self.metrics: dict = {}
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._end = None
        self._sums: dict = {}

    def update(self, images: int = 0, steps: int = 1, **metrics) -> None:
        """Advance by ``steps``; metrics are averaged over the epoch, weighted by images."""
        self.step += steps
        self.images += images
        for k, v in metrics.items():
            s, n = self._sums.get(k, (0.0, 0))
            self._sums[k] = (s + float(v) * max(images, 1), n + max(images, 1))
            self.metrics[k] = self._sums[k][0] / self._sums[k][1]
        now = time.perf_counter()
        if self.step >= self.total:
            self._end = now  # the epoch's work is done: later (validation) time is not its speed
        if self.enabled and self.tty and (now - self._last_draw >= self.min_interval or self.step >= self.total):
            self._last_draw = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the last step (or to now while steps remain)."""
        return (self._end if self._end is not None else time.perf_counter()) - self.start

    @property
    def rate(self) -> float:
        """Images per second so far."""
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    def line(self, extra: Optional[dict] = None) -> str:
        frac = min(1.0, self.step / self.total)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"{self.desc} [{bar}] {self.step}/{self.total}"]
        for k, v in {**self.metrics, **(extra or {})}.items():
            parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
        parts.append(f"{self.rate:,.0f} img/s")
        if self.step < self.total:
            eta = self.elapsed / max(self.step, 1) * (self.total - self.step)
            parts.append(f"ETA {format_time(eta)}")
        else:
            parts.append(f"{format_time(self.elapsed)}")
        return "  ".join(parts)

    def close(self, **extra) -> str:
        """Write the final line (with ``extra`` metrics) and return it."""
        text = self.line(extra)
        if self.enabled:
            self.stream.write(("\r" + text + "\x1b[K\n") if self.tty else text + "\n")
            self.stream.flush()
        return text
