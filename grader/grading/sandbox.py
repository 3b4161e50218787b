"""The process boundary between the trusted grader and a student's untrusted model.

`run_in_sandbox` hands the test images (never the labels) to a confined child forked from a
per-process fork server (`sandboxed/zygote.py`), and takes back exactly N x the exercise
kind's output values as raw float32 bytes (`protocol.py`), with the execution plan the
child chose and, when asked, its predictions on a few public preview images (same run, same
plan: the model is loaded once). Every way the child can fail becomes a named
`GradingFailure`; the fork server is restarted transparently when it dies. One call runs at a
time per process (a lock), which is what a Celery worker process does anyway.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from grader.grading import protocol
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import DEFAULT_KIND, Kind, get_kind
from grader.grading.plans import Plan, PlanHint

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


@dataclass
class SandboxRun:
    """What one sandboxed run returned. Everything but `predictions` is informative only and
    was validated here, since the child's own account of itself is untrusted."""

    predictions: np.ndarray
    plan: Plan | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    preview: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Plans that crashed the child while it tried them; the run was repeated without them.
    crashed: tuple[Plan, ...] = ()
    # Pre-flight only: whether the model also answered the same on the images as one batch.
    batch_ok: bool | None = None


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
                [sys.executable, "-s", "-m", "grader.grading.sandboxed.zygote",
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
        try:
            data = self._sock.recv(protocol.MAX_JSON)
        except OSError as exc:
            raise _ZygoteGone(f"the fork server's socket failed: {exc}") from None
        if not data:
            raise _ZygoteGone("the fork server exited")
        message: dict[str, Any] = json.loads(data)
        return message

    # -- one submission ----------------------------------------------------------------------

    def run(
        self, model_path: Path, images: np.ndarray, *, device: str, batch_size: int,
        limits: SandboxLimits, plan_hint: PlanHint | None = None,
        preview_images: np.ndarray | None = None, preflight: bool = False,
        kind: Kind | None = None,
    ) -> SandboxRun:
        """`batch_size` is the largest batch the child's plan may use. `preflight`: the quick
        check at upload (no tuning; the images once at batch 1, then as one batch)."""
        kind = kind or get_kind(DEFAULT_KIND)
        images = kind.check_images(images)
        preview = None if preview_images is None else kind.check_images(preview_images)
        job = _Job(
            images, preview, device, batch_size, limits, plan_hint, preflight=preflight,
            kind=kind,
        )
        started = time.monotonic()
        with self._lock:
            for _ in range(_CRASH_RETRIES):
                try:
                    return replace(self._run_restarting(model_path, job), crashed=job.avoid)
                except _TrialCrashed as crash:
                    # Again without that plan, within what is left of the same time limit.
                    left = limits.time_limit_s - (time.monotonic() - started)
                    if left < 1.0:
                        break
                    job = replace(
                        job, avoid=(*job.avoid, crash.plan),
                        limits=replace(limits, time_limit_s=left),
                        plan_hint=(
                            None if job.plan_hint and job.plan_hint.plan == crash.plan
                            else job.plan_hint
                        ),
                    )
            raise GradingFailure(
                FailureKind.CRASHED, "the model process crashed on every way of running it"
            )

    def _run_restarting(self, model_path: Path, job: _Job) -> SandboxRun:
        try:
            return self._run_once(model_path, job)
        except _ZygoteGone:
            self._stop_zygote()
            try:
                return self._run_once(model_path, job)
            except _ZygoteGone as exc:
                self._stop_zygote()
                raise GradingFailure(FailureKind.INFRA_ERROR, f"sandbox: {exc}") from None

    def predict(
        self, model_path: Path, images: np.ndarray, *, device: str, batch_size: int,
        limits: SandboxLimits,
    ) -> np.ndarray:
        return self.run(
            model_path, images, device=device, batch_size=batch_size, limits=limits
        ).predictions

    def probe(self, *, device: str = "cpu", limits: SandboxLimits | None = None) -> dict[str, Any]:
        """Fork a child that confines itself and reports which layers took effect."""
        kind = get_kind(DEFAULT_KIND)
        empty = np.zeros((0, *kind.image_shape), np.uint8)
        job = _Job(empty, None, device, 1, limits or SandboxLimits(), kind=kind)
        with self._lock:
            try:
                info, _ = self._exchange(None, job, probe=True)
            except _ZygoteGone:
                self._stop_zygote()
                raise
        return info

    def _run_once(self, model_path: Path, job: _Job) -> SandboxRun:
        info, run = self._exchange(model_path, job)
        assert run is not None
        return run

    def _exchange(
        self, model_path: Path | None, job: _Job, *, probe: bool = False
    ) -> tuple[dict[str, Any], SandboxRun | None]:
        limits = job.limits
        timings: dict[str, Any] = {}
        if not self._zygote_alive(limits.threads):
            timings["zygote_start_s"] = self._start_zygote(limits.threads)
        n = int(job.images.shape[0])
        n_preview = 0 if job.preview is None else int(job.preview.shape[0])
        model_fd = _open_model(model_path)
        payload = job.images.tobytes()
        if job.preview is not None:
            payload += job.preview.tobytes()
        images_fd = _sealed_memfd(payload)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        request = {
            "cmd": "run", "n_images": n, "n_preview": n_preview, "device": job.device,
            "batch_size": job.batch_size, "threads": limits.threads,
            "memory_limit_bytes": limits.memory_limit_bytes,
            "time_limit_s": limits.time_limit_s, "probe": probe,
            "plan_hint": job.plan_hint.to_dict() if job.plan_hint else None,
            "avoid": [plan.to_dict() for plan in job.avoid],
            "preflight": job.preflight,
            "kind": job.kind.name,
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
            frames, overflow = _read_frames(
                result_r, deadline, (n + n_preview) * job.kind.output_values
            )
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
        info = _json_frame(frames.get(protocol.TIMINGS, b"")) or {}
        timings.update({k: v for k, v in info.items() if k.endswith("_s")})
        timings["maxrss_bytes"] = exit_info.get("maxrss_bytes")
        self.last_timings = timings
        if probe:
            return info, None
        predictions = _outcome(frames, overflow, exit_info, n, limits, job.kind)
        return info, SandboxRun(
            predictions=predictions,
            plan=Plan.from_dict(info.get("plan")),
            trials=_checked_trials(info.get("trials")),
            preview=_preview(frames.get(protocol.PREVIEW), n_preview, job.kind),
            timings=_known_timings(timings),
            batch_ok=info.get("batch_ok") if isinstance(info.get("batch_ok"), bool) else None,
        )


@dataclass(frozen=True)
class _Job:
    images: np.ndarray
    preview: np.ndarray | None
    device: str
    batch_size: int
    limits: SandboxLimits
    plan_hint: PlanHint | None = None
    avoid: tuple[Plan, ...] = ()
    preflight: bool = False
    kind: Kind = field(default_factory=lambda: get_kind(DEFAULT_KIND))


_CRASH_RETRIES = 3
_TRIAL_VERDICTS = frozenset({"chosen", "reused", "slower", "disagrees", "failed", "skipped"})


def _checked_trials(raw: object) -> list[dict[str, Any]]:
    """The child's list of tried plans, kept only where every field is what it should be."""
    if not isinstance(raw, list):
        return []
    out: list[dict[str, Any]] = []
    for item in raw[:protocol.MAX_TRIALS]:
        plan = Plan.from_dict(item)
        if plan is None or item.get("verdict") not in _TRIAL_VERDICTS:
            continue
        entry: dict[str, Any] = {**plan.to_dict(), "verdict": item["verdict"]}
        for key in ("per_image_ms", "cost_ms", "bound_ms"):
            value = item.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                entry[key] = float(value)
        out.append(entry)
    return out


def _values(raw: bytes, n: int, kind: Kind) -> np.ndarray | None:
    """`n` predictions of `kind` from raw float32 bytes, or None when the size is off."""
    if len(raw) != n * kind.output_values * 4:
        return None
    return np.frombuffer(raw, dtype="<f4").reshape(n, *kind.output_shape).astype(np.float32)


def _preview(raw: bytes | None, n_preview: int, kind: Kind) -> np.ndarray | None:
    if raw is None or n_preview == 0:
        return None
    return _values(raw, n_preview, kind)


def _timeout_detail(limits: SandboxLimits) -> str:
    return f"no result within {limits.time_limit_s:g} s"


def _outcome(
    frames: dict[bytes, bytes], overflow: bool, exit_info: dict[str, Any], n: int,
    limits: SandboxLimits, kind: Kind,
) -> np.ndarray:
    status = int(exit_info.get("status", -1))
    raw = frames.get(protocol.RESULT)
    first = next(iter(frames), None)
    values = None if raw is None else _values(raw, n, kind)
    if values is not None and protocol.ERROR not in frames and not overflow and (
        first != protocol.DEVICE_FAILED
    ):
        # The predictions were complete before anything else happened: whatever the child did
        # after them (the optional preview images) cannot change the grade.
        return values
    if exit_info.get("timed_out"):
        raise GradingFailure(FailureKind.TIMEOUT, _timeout_detail(limits))
    if exit_info.get("memory_killed"):
        raise GradingFailure(
            FailureKind.MEMORY_LIMIT, f"more than {limits.memory_limit_bytes >> 20} MiB resident"
        )
    if first == protocol.DEVICE_FAILED:
        # Only trusted code writes before `S`, so a model cannot claim our failure this way:
        # the grading is retried and never counted against the student.
        device_frame = _json_frame(frames[protocol.DEVICE_FAILED]) or {}
        detail = device_frame.get("detail", "device unusable")
        raise GradingFailure(FailureKind.INFRA_ERROR, str(detail)[:2000])
    if overflow:
        raise GradingFailure(FailureKind.BAD_OUTPUT, "the model process sent too much data")
    if protocol.ERROR in frames:
        raise _child_failure(frames[protocol.ERROR])
    died = (os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL) or (
        os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0
    )
    if died and raw is None and (trial := _announced_trial(frames)) is not None:
        raise _TrialCrashed(trial)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            raise GradingFailure(
                FailureKind.MEMORY_LIMIT, "the model process was killed (out of memory)"
            )
        raise GradingFailure(
            FailureKind.CRASHED, f"the model process died of {signal.Signals(sig).name}"
        )
    if raw is None or status != 0:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        raise GradingFailure(
            FailureKind.CRASHED, f"the model process exited (code {code}) without a result"
        )
    raise GradingFailure(
        FailureKind.BAD_OUTPUT,
        f"{len(raw)} bytes of predictions, expected {n * kind.output_values * 4}",
    )


class _TrialCrashed(Exception):
    """The child died while trying a faster plan (oneDNN Graph fusion segfaults on some
    graphs): not the model's fault, so the run is repeated without that plan."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan.describe())
        self.plan = plan


def _announced_trial(frames: dict[bytes, bytes]) -> Plan | None:
    plan = Plan.from_dict((_json_frame(frames.get(protocol.TRIAL, b"")) or {}).get("plan"))
    # The course's own way (plain, batch 1) is never retried: a crash there is the model's.
    return None if plan is None or (plan.variant == "plain" and plan.batch_size == 1) else plan


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


def _read_frames(fd: int, deadline: float, n_values: int) -> tuple[dict[bytes, bytes], bool]:
    """Read the child's framed messages until EOF, never more than it may legitimately send."""
    cap = protocol.frames_cap(n_values)
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
    while pos + protocol.FRAME_HEADER <= len(buf):
        tag = bytes(buf[pos : pos + 1])
        length = int.from_bytes(buf[pos + 1 : pos + protocol.FRAME_HEADER], "little")
        body = bytes(buf[pos + protocol.FRAME_HEADER : pos + protocol.FRAME_HEADER + length])
        if len(body) != length or (tag in frames and tag != protocol.TRIAL):
            break  # truncated or repeated: ignore the rest
        if tag == protocol.TRIAL and length > protocol.MAX_TRIAL_FRAME:
            break
        frames[tag] = body  # `C` announces each trial: the last one is what ran last
        pos += protocol.FRAME_HEADER + length
    return frames, overflow




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


def run_in_sandbox(
    model_path: Path,
    images: np.ndarray,
    *,
    device: str,
    batch_size: int,
    limits: SandboxLimits,
    plan_hint: PlanHint | None = None,
    preview_images: np.ndarray | None = None,
    preflight: bool = False,
    kind: Kind | None = None,
) -> SandboxRun:
    """Run the model at `model_path` confined: predictions float32 (N, *kind.output_shape),
    and more (facial keypoints unless `kind` says otherwise)."""
    return _default.run(
        model_path, images, device=device, batch_size=batch_size, limits=limits,
        plan_hint=plan_hint, preview_images=preview_images, preflight=preflight, kind=kind,
    )


def predict_in_sandbox(
    model_path: Path,
    images: np.ndarray,
    *,
    device: str,
    batch_size: int,
    limits: SandboxLimits,
) -> np.ndarray:
    """The default kind's predictions, float32 (N, *output_shape), from the model at
    `model_path`, run confined (tests and benchmarks)."""
    return run_in_sandbox(
        model_path, images, device=device, batch_size=batch_size, limits=limits
    ).predictions


_CHILD_TIMINGS = {"setup_s": "child_setup_s", "load_s": "child_load_s",
                  "predict_s": "child_predict_s", "tuning_s": "child_tuning_s",
                  "convert_s": "child_convert_s", "reference_s": "child_reference_s",
                  "run_s": "child_run_s"}


def _known_timings(raw: dict[str, Any]) -> dict[str, float]:
    """The child's own figures are untrusted: only known keys with finite numbers are kept."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        known = key in ("fork_ms", "zygote_start_s") or key in _CHILD_TIMINGS
        if known and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
            out[_CHILD_TIMINGS.get(key, key)] = float(value)
    return out


def last_timings() -> dict[str, float]:
    """Where the last sandboxed prediction spent its time, for the stored result."""
    return _known_timings(_default.last_timings)


def shutdown() -> None:
    """Stop this process's fork server (worker shutdown, tests)."""
    _default.shutdown()
