"""What every ``cnnfast`` subcommand shares: help formatting, argument types, run folders
and the exit-status convention.

Package-internal (the names are public to cnnfast's own modules, not to users): ``cli.py``
and the demos that parse their own arguments (detect, verify, gan, style, import) import
from here instead of from each other.

Exit status of every subcommand: 0 on success, 2 for bad arguments or unusable data (a
one-line message, no traceback), 1 for a run that failed (a NaN/Inf loss), 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

__all__ = ["Formatter", "positive_int", "nonneg_float", "fresh_folder", "run_folder",
           "run_guarded", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default when it has a meaningful one (not None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is not None and action.default is not False and action.default != argparse.SUPPRESS \
                and "%(default)" not in text \
                and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _number(text: str, cast, ok, expected: str):
    try:
        v = cast(text)
    except ValueError:
        v = None
    if v is None or not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_float(text: str) -> float:
    """argparse type: a number >= 0 (NaN refused)."""
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def fresh_folder(path: str) -> str:
    """``path``, or ``path-2``, ``path-3``, ... if it exists (two runs started in the same second)."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def run_folder(prefix: str = "") -> str:
    """A folder name under ``runs/`` that does not exist yet: ``runs/<prefix><timestamp>``."""
    return fresh_folder(os.path.join("runs", prefix + time.strftime("%Y%m%d-%H%M%S")))


def run_guarded(prog: str, fn: Callable[[], int],
                usage_errors: tuple = (ValueError, FileNotFoundError)) -> int:
    """Call ``fn()`` and turn the errors a user can cause into the exit-status convention.

    ``usage_errors`` (bad arguments, unusable data) print ``prog: error: ...`` and give 2;
    a FloatingPointError (a NaN/Inf loss stopped the run) gives 1; Ctrl-C gives 130.
    Anything else is a bug and keeps its traceback.
    """
    try:
        return fn()
    except usage_errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
