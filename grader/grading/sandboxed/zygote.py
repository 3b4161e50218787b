"""The fork server: imports torch once, then forks one confined child per submission.

Started by `grader.grading.sandbox` as `python -m grader.grading.sandboxed.zygote PARENT_PID FD`
with a scrubbed environment and one SOCK_SEQPACKET control socket on descriptor FD. It holds
no labels, settings, secrets or CUDA context, and runs no torch operation before forking.

Protocol (one JSON object per packet):
  parent -> {"cmd": "run", ...request...} + 3 descriptors (images memfd, model, result pipe)
  zygote -> {"pid": PID}            as soon as the child exists
  zygote -> {"exit": {...}}         once the child is reaped (status, timed_out, ...)
The zygote enforces the wall-clock limit itself, because only the parent of a process can
reap it and kill its group without racing against PID reuse.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

MAX_PACKET = 64 * 1024
_RSS_POLL_S = 0.05


def _preload() -> None:
    # Everything the child needs is imported here, before the fork: once confined (and
    # without read access to the interpreter's files) it cannot import anything new.
    # zipfile decodes entry names without the UTF-8 flag as cp437, a lazily imported codec.
    import encodings.cp437  # noqa: F401

    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch.export  # noqa: F401
    import torch.jit._freeze  # noqa: F401

    import grader.grading.kinds  # noqa: F401
    import grader.grading.sandboxed.child  # noqa: F401
    import grader.grading.sandboxed.predict  # noqa: F401


def _warm_up() -> None:
    """Load a small model and try every execution plan on it once, so every child inherits
    the warmed caches (operator registry, JIT passes, oneDNN primitives, oneDNN Graph's
    start-up) instead of paying ~80 ms for them, and ~40 ms more for its first fusion.

    Only one thread is used: a fork after OpenMP has started worker threads could deadlock
    the child, while a single-threaded runtime forks cleanly and each child sets its own
    thread count."""
    import numpy as np
    import torch

    from grader.grading.kinds import KINDS
    from grader.grading.sandboxed.arithmetic import count_arithmetic, native_gain, peak_flops
    from grader.grading.sandboxed.predict import load_model, predict_with_plan

    torch.set_num_threads(1)

    class _Warm(torch.nn.Module):
        def __init__(self, channels: int, features: int, outputs: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, 4, 3, stride=2)
            self.bn = torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(features, outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    for kind in KINDS.values():
        images = np.zeros((40, *kind.image_shape), np.uint8)
        x = kind.to_input(images[:1])
        warm = _Warm(x.shape[1], 0, kind.output_values)
        with torch.no_grad():
            features = warm.bn(warm.conv(x)).flatten(1).shape[1]
        warm.fc = torch.nn.Linear(features, kind.output_values)
        memfd = os.memfd_create("warm-up", os.MFD_CLOEXEC)
        try:
            with open(f"/proc/self/fd/{memfd}", "wb") as fh:
                torch.jit.save(torch.jit.script(warm.eval()), fh)
            model = load_model(Path(f"/proc/self/fd/{memfd}"), device="cpu", kind=kind)
            predict_with_plan(
                model, images, device="cpu", max_batch=32, kind=kind, threads=1,
                tuning_share=1e9,
            )
            # The tuner counts a heavy model's arithmetic (arithmetic.py). The counting's
            # first use imports torch._dynamo (~1.5 s), which a confined child could not;
            # it is paid here, as is the one-thread matmul rate every child inherits.
            with torch.inference_mode():
                count_arithmetic(model, x)
        finally:
            os.close(memfd)
    peak_flops(1)
    # Measuring the native plan's gain also initialises NNPACK (its convolutions), which
    # detects the CPU and makes its thread pool on its first call: done here, before any child
    # is confined. At one thread the pool has no threads of its own to lose in the fork.
    native_gain(1)
    _warm_up_exported(_Warm, KINDS["keypoints"])


def _warm_up_exported(make: Any, kind: Any) -> None:
    """torch.export.load and the program's module import much of torch lazily (the
    serializer, sympy, the FX interpreter), which a confined child could no longer do:
    load and run one small program here, with a dynamic and a fixed batch."""
    import numpy as np
    import torch

    from grader.grading.plans import Plan
    from grader.grading.sandboxed.predict import load_model, predict_with_plan

    images = np.zeros((12, *kind.image_shape), np.uint8)
    x = kind.to_input(images[:2])
    warm = make(x.shape[1], 1, kind.output_values)
    with torch.no_grad():
        warm.fc = torch.nn.Linear(warm.bn(warm.conv(x)).flatten(1).shape[1], kind.output_values)
    warm.eval()
    # One program, with a dynamic batch (range constraints, symbolic sizes): exporting costs
    # about a second of the fork server's start, once per worker.
    batch = torch.export.Dim("batch", min=1, max=1024)
    for dynamic in ({"x": {0: batch}},):
        program = torch.export.export(warm, (x,), dynamic_shapes=dynamic)
        memfd = os.memfd_create("warm-up", os.MFD_CLOEXEC)
        try:
            with open(f"/proc/self/fd/{memfd}", "wb") as fh:
                torch.export.save(program, fh)
            model = load_model(Path(f"/proc/self/fd/{memfd}"), device="cpu", kind=kind)
            predict_with_plan(
                model, images, device="cpu", max_batch=8, kind=kind, threads=1,
                # Never torch.compile here: its worker threads would not survive a fork.
                tuning_share=1e9, avoid=[Plan("compiled", 1, 1), Plan("compiled", 8, 1)],
            )
        finally:
            os.close(memfd)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _supervise(pid: int, request: dict[str, Any]) -> dict[str, Any]:
    """Wait for the child under its deadline (and, on CUDA, its resident-memory budget)."""
    started = time.monotonic()
    deadline = started + float(request["time_limit_s"])
    watch_rss = str(request["device"]).startswith("cuda")
    # The child starts as a copy of this process, so its budget is on top of our own size.
    rss_cap = int(request["memory_limit_bytes"]) + _rss_bytes(os.getpid())
    pidfd = os.pidfd_open(pid)
    timed_out = memory_killed = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pidfd], [], [], min(remaining, _RSS_POLL_S)
                                        if watch_rss else remaining)
            if ready:
                break
            if watch_rss and _rss_bytes(pid) > rss_cap:
                memory_killed = True
                break
    finally:
        os.close(pidfd)
    # Killing the group while the leader is still unreaped also takes any process it started.
    _kill_group(pid)
    _, status, usage = os.wait4(pid, 0)
    return {
        "status": status,
        "timed_out": timed_out,
        "memory_killed": memory_killed,
        "maxrss_bytes": int(usage.ru_maxrss) * 1024,
        "wall_s": time.monotonic() - started,
    }


def _serve(control: socket.socket) -> None:
    from grader.grading.sandboxed import child as sandbox_child

    me = os.getpid()
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, MAX_PACKET, 4)
        except (ConnectionError, OSError):
            return
        if not data:
            return  # the worker closed its end: exit quietly
        request = json.loads(data)
        if request.get("cmd") != "run" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": "bad request"}).encode())
            continue
        images_fd, model_fd, result_fd = fds
        pid = os.fork()
        if pid == 0:
            control.close()
            sandbox_child.run(
                request, zygote_pid=me, images_fd=images_fd, model_fd=model_fd,
                result_fd=result_fd,
            )
        for fd in fds:
            os.close(fd)
        control.send(json.dumps({"pid": pid}).encode())
        control.send(json.dumps({"exit": _supervise(pid, request)}).encode())


def main() -> None:
    parent, control_fd = int(sys.argv[1]), int(sys.argv[2])
    from grader.grading.sandboxed import confine as sandbox_confine

    sandbox_confine.die_with_parent()
    if os.getppid() != parent:
        sys.exit(0)
    _preload()
    try:
        _warm_up()
    except Exception as exc:  # a cold child is slower, not wrong
        print(f"sandbox fork server: warm-up failed: {exc}", file=sys.stderr)
    # Everything imported so far lives as long as this process: out of the collector's sight,
    # a child's collections no longer walk torch's hundreds of thousands of objects (that
    # tripled the predict time of small models), and fewer shared pages are copied.
    gc.collect()
    gc.freeze()
    control = socket.socket(fileno=control_fd)
    control.send(json.dumps({"ready": os.getpid()}).encode())
    _serve(control)


if __name__ == "__main__":
    main()
