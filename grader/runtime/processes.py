"""Child-process helpers for the embedded supervisor: children die with their parent."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _child_setup(nice: int) -> None:
    if nice:
        os.nice(nice)
    _die_with_parent()


def _die_with_parent() -> None:
    # A kill -9 of `grader serve` must not leave a worker or Redis running. Linux only;
    # elsewhere the supervisor's own shutdown path still stops them.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so a terminal's Ctrl-C reaches only the supervisor,
    which then stops children in order), `nice` steps below the supervisor's priority."""
    stdout = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
            preexec_fn=functools.partial(_child_setup, nice),
        )
    finally:
        if stdout is not None:
            stdout.close()


def stop(proc: subprocess.Popen[bytes], *, timeout: float, sig: int = signal.SIGTERM) -> None:
    """Signal the child's whole process group, then kill it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
