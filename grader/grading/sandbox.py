"""The process boundary between the trusted grader and a student's untrusted model.

`predict_in_sandbox` hands the test images (never the keypoints) to a confined child forked
from a per-process fork server (`sandbox_zygote`), and takes back exactly N*30 float32 values
as raw bytes. Every way the child can fail becomes a named `GradingFailure`; the fork server
is restarted transparently when it dies. One call runs at a time per process (a lock), which
is what a Celery worker process does anyway.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.grading.failures import FailureKind, GradingFailure

_FRAME_HEADER = 9  # tag (1 byte) + length (8 bytes), as sandbox_child.FRAME packs it
_MAX_JSON = 64 * 1024
_ZYGOTE_START_TIMEOUT_S = 120.0
_CONTROL_TIMEOUT_S = 30.0
# The fork server kills at the limit; the parent's own deadline only catches a stuck server.
_PARENT_GRACE_S = 15.0
_CHILD_KINDS = {
    FailureKind.LOAD_ERROR, FailureKind.BAD_OUTPUT, FailureKind.MEMORY_LIMIT,
    FailureKind.SANDBOX_VIOLATION, FailureKind.CRASHED,
}
# Variables a GPU worker needs to find its device and libraries; nothing else crosses.
_PASS_THROUGH_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")


@dataclass(frozen=True)
class SandboxLimits:
    time_limit_s: float = 120.0
    memory_limit_bytes: int = 4 * 1024**3
    threads: int = 1


class _ZygoteGone(Exception):
    """The fork server stopped answering; it is restarted and the call retried once."""


class Sandbox:
    """One fork server per process, started lazily, restarted when it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._owner_pid = 0
        self._threads = 0
        self.last_timings: dict[str, Any] = {}
        # The running child's pid, for operators (and tests) who need to see it.
        self.current_child_pid: int | None = None

    # -- fork server lifecycle -------------------------------------------------------------

    def _zygote_alive(self, threads: int) -> bool:
        return (
            self._proc is not None
            and self._owner_pid == os.getpid()
            and self._proc.poll() is None
            and self._threads == threads
        )

    def _start_zygote(self, threads: int) -> float:
        self._stop_zygote()
        started = time.perf_counter()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/nonexistent",
            "PYTHONPATH": package_parent,
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
        }
        env.update({k: v for k in _PASS_THROUGH_ENV if (v := os.environ.get(k)) is not None})
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-s", "-m", "grader.grading.sandbox_zygote",
                 str(os.getpid()), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            theirs.close()
        self._sock, self._owner_pid, self._threads = ours, os.getpid(), threads
        ready = self._recv(time.monotonic() + _ZYGOTE_START_TIMEOUT_S)
        if "ready" not in ready:
            raise _ZygoteGone(f"unexpected greeting {ready!r}")
        return time.perf_counter() - started

    def _stop_zygote(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._proc is not None and self._owner_pid == os.getpid():
            if self._proc.poll() is None:
                self._proc.kill()  # its children die with it (parent-death signal)
            self._proc.wait()
        self._proc = self._sock = None

    def shutdown(self) -> None:
        with self._lock:
            self._stop_zygote()

    def _recv(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([self._sock], [], [], max(remaining, 0))
        if not ready:
            raise _ZygoteGone("the fork server did not answer in time")
        data = self._sock.recv(_MAX_JSON)
        if not data:
            raise _ZygoteGone("the fork server exited")
        message: dict[str, Any] = json.loads(data)
        return message

    # -- one submission ----------------------------------------------------------------------

    def predict(
        self, model_path: Path, images: np.ndarray, *, device: str, batch_size: int,
        limits: SandboxLimits,
    ) -> np.ndarray:
        images = _checked_images(images)
        with self._lock:
            try:
                return self._run_once(model_path, images, device, batch_size, limits)
            except _ZygoteGone:
                self._stop_zygote()
                try:
                    return self._run_once(model_path, images, device, batch_size, limits)
                except _ZygoteGone as exc:
                    self._stop_zygote()
                    raise GradingFailure(FailureKind.INFRA_ERROR, f"sandbox: {exc}") from None

    def probe(self, *, device: str = "cpu", limits: SandboxLimits | None = None) -> dict[str, Any]:
        """Fork a child that confines itself and reports which layers took effect."""
        limits = limits or SandboxLimits()
        with self._lock:
            try:
                info, _ = self._exchange(
                    None, np.zeros((0, 96, 96), np.uint8), device, 1, limits, probe=True
                )
            except _ZygoteGone:
                self._stop_zygote()
                raise
        return info

    def _run_once(
        self, model_path: Path, images: np.ndarray, device: str, batch_size: int,
        limits: SandboxLimits,
    ) -> np.ndarray:
        info, predictions = self._exchange(model_path, images, device, batch_size, limits)
        assert predictions is not None
        return predictions

    def _exchange(
        self, model_path: Path | None, images: np.ndarray, device: str, batch_size: int,
        limits: SandboxLimits, *, probe: bool = False,
    ) -> tuple[dict[str, Any], np.ndarray | None]:
        timings: dict[str, Any] = {}
        if not self._zygote_alive(limits.threads):
            timings["zygote_start_s"] = self._start_zygote(limits.threads)
        n = int(images.shape[0])
        model_fd = _open_model(model_path)
        images_fd = _sealed_memfd(images.tobytes())
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        request = {
            "cmd": "run", "n_images": n, "device": device, "batch_size": batch_size,
            "threads": limits.threads, "memory_limit_bytes": limits.memory_limit_bytes,
            "time_limit_s": limits.time_limit_s, "probe": probe,
        }
        t0 = time.perf_counter()
        try:
            assert self._sock is not None
            try:
                socket.send_fds(
                    self._sock, [json.dumps(request).encode()], [images_fd, model_fd, result_w]
                )
            except OSError as exc:
                raise _ZygoteGone(f"cannot reach the fork server: {exc}") from None
        finally:
            for fd in (images_fd, model_fd, result_w):
                os.close(fd)
        deadline = time.monotonic() + limits.time_limit_s + _PARENT_GRACE_S
        try:
            forked = self._recv(time.monotonic() + _CONTROL_TIMEOUT_S)
            timings["fork_ms"] = (time.perf_counter() - t0) * 1000
            self.current_child_pid = forked.get("pid")
            frames, overflow = _read_frames(result_r, deadline, n)
        finally:
            os.close(result_r)
            self.current_child_pid = None
        try:
            exit_info = self._recv(deadline).get("exit", {})
        except _ZygoteGone:
            # A fork server that cannot reap its child within the grace is killed with it.
            self._stop_zygote()
            raise GradingFailure(FailureKind.TIMEOUT, _timeout_detail(limits)) from None
        timings["total_s"] = time.perf_counter() - t0
        info = _json_frame(frames.get(b"T", b"")) or {}
        timings.update({k: v for k, v in info.items() if k.endswith("_s")})
        timings["maxrss_bytes"] = exit_info.get("maxrss_bytes")
        self.last_timings = timings
        if probe:
            return info, None
        return info, _outcome(frames, overflow, exit_info, n, limits)


def _timeout_detail(limits: SandboxLimits) -> str:
    return f"no result within {limits.time_limit_s:g} s"


def _outcome(
    frames: dict[bytes, bytes], overflow: bool, exit_info: dict[str, Any], n: int,
    limits: SandboxLimits,
) -> np.ndarray:
    status = int(exit_info.get("status", -1))
    if exit_info.get("timed_out"):
        raise GradingFailure(FailureKind.TIMEOUT, _timeout_detail(limits))
    if exit_info.get("memory_killed"):
        raise GradingFailure(
            FailureKind.MEMORY_LIMIT, f"more than {limits.memory_limit_bytes >> 20} MiB resident"
        )
    if next(iter(frames), None) == b"D":
        # Only trusted code writes before `S`, so a model cannot claim our failure this way:
        # the grading is retried and never counted against the student.
        detail = (_json_frame(frames[b"D"]) or {}).get("detail", "device unusable")
        raise GradingFailure(FailureKind.INFRA_ERROR, str(detail)[:2000])
    if overflow:
        raise GradingFailure(FailureKind.BAD_OUTPUT, "the model process sent too much data")
    if b"E" in frames:
        raise _child_failure(frames[b"E"])
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            raise GradingFailure(
                FailureKind.MEMORY_LIMIT, "the model process was killed (out of memory)"
            )
        raise GradingFailure(
            FailureKind.CRASHED, f"the model process died of {signal.Signals(sig).name}"
        )
    if b"R" not in frames or status != 0:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        raise GradingFailure(
            FailureKind.CRASHED, f"the model process exited (code {code}) without a result"
        )
    raw = frames[b"R"]
    if len(raw) != n * 30 * 4:
        raise GradingFailure(
            FailureKind.BAD_OUTPUT, f"{len(raw)} bytes of predictions, expected {n * 120}"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(n, 15, 2).astype(np.float32)


def _child_failure(raw: bytes) -> GradingFailure:
    message = _json_frame(raw) or {}
    try:
        kind = FailureKind(str(message.get("kind")))
    except ValueError:
        kind = FailureKind.CRASHED
    # The child may be compromised: it can name a student-side failure, never our own.
    if kind not in _CHILD_KINDS:
        kind = FailureKind.CRASHED
    return GradingFailure(kind, str(message.get("detail", ""))[:2000])


def _json_frame(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _read_frames(fd: int, deadline: float, n: int) -> tuple[dict[bytes, bytes], bool]:
    """Read the child's framed messages until EOF, never more than it may legitimately send."""
    cap = n * 120 + 3 * (_MAX_JSON + _FRAME_HEADER)
    buf = bytearray()
    while len(buf) <= cap:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buf += chunk
    overflow = len(buf) > cap
    frames: dict[bytes, bytes] = {}
    pos = 0
    while pos + _FRAME_HEADER <= len(buf):
        tag = bytes(buf[pos : pos + 1])
        length = int.from_bytes(buf[pos + 1 : pos + _FRAME_HEADER], "little")
        body = bytes(buf[pos + _FRAME_HEADER : pos + _FRAME_HEADER + length])
        if len(body) != length or tag in frames:
            break  # truncated or repeated: ignore the rest
        frames[tag] = body
        pos += _FRAME_HEADER + length
    return frames, overflow


def _checked_images(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (96, 96):
        raise ValueError(f"expected uint8 images (N, 96, 96), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def _open_model(model_path: Path | None) -> int:
    if model_path is None:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.open(model_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise GradingFailure(FailureKind.LOAD_ERROR, f"cannot open the model: {exc}") from None


def _sealed_memfd(data: bytes) -> int:
    """The images as an anonymous, sealed file: the child can map them, never change them."""
    fd = os.memfd_create("images", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


_default = Sandbox()


def get_sandbox() -> Sandbox:
    return _default


def predict_in_sandbox(
    model_path: Path,
    images: np.ndarray,
    *,
    device: str,
    batch_size: int,
    limits: SandboxLimits,
) -> np.ndarray:
    """Predictions float32 (N, 15, 2) from the model at `model_path`, run confined."""
    return _default.predict(
        model_path, images, device=device, batch_size=batch_size, limits=limits
    )


_CHILD_TIMINGS = {"setup_s": "child_setup_s", "load_s": "child_load_s",
                  "predict_s": "child_predict_s"}


def last_timings() -> dict[str, float]:
    """Where the last sandboxed prediction spent its time, for the stored result. The child's
    own figures are untrusted: only known keys with finite numbers are kept."""
    out: dict[str, float] = {}
    for key, value in _default.last_timings.items():
        known = key in ("fork_ms", "zygote_start_s") or key in _CHILD_TIMINGS
        if known and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
            out[_CHILD_TIMINGS.get(key, key)] = float(value)
    return out


def shutdown() -> None:
    """Stop this process's fork server (worker shutdown, tests)."""
    _default.shutdown()
