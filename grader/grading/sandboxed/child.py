"""The sandbox child: confines itself, then loads and runs one untrusted model.

Forked by the fork server (zygote.py). It gets three descriptors: a sealed memfd of raw uint8
images, the model file, and the write end of the result pipe. It never sees labels, settings
or secrets. What it writes is the framed stream of `grader.grading.protocol`.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from grader.grading import protocol
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import Kind, get_kind
from grader.grading.sandboxed import confine, heap

# Text of errors a confined open/write produces, as TorchScript relays them.
_VIOLATION = re.compile(
    r"Permission denied|Operation not permitted|Read-only file system|File too large"
    r"|Errno 13|Errno 1\b|Errno 27|Errno 30|EACCES|EPERM|EFBIG|Network is unreachable"
    r"|file_size_limit|open file .* failed|No such file or directory",
    re.IGNORECASE,
)
_MEMORY = re.compile(
    r"can't allocate memory|bad_alloc|out of memory|Cannot allocate memory|MemoryError"
    r"|Errno 12|ENOMEM|failed to allocate",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ChildRequest:
    n_images: int
    device: str
    batch_size: int
    threads: int
    memory_limit_bytes: int
    zygote_pid: int
    probe: bool = False
    n_preview: int = 0
    plan_hint: dict[str, Any] | None = None
    avoid: tuple[dict[str, Any], ...] = ()
    preflight: bool = False
    kind: str = "keypoints"

    @property
    def spec(self) -> Kind:
        return get_kind(self.kind)

    @classmethod
    def from_json(cls, raw: dict[str, Any], *, zygote_pid: int) -> ChildRequest:
        return cls(
            n_images=int(raw["n_images"]),
            device=str(raw["device"]),
            batch_size=int(raw["batch_size"]),
            threads=int(raw["threads"]),
            memory_limit_bytes=int(raw["memory_limit_bytes"]),
            zygote_pid=zygote_pid,
            probe=bool(raw.get("probe", False)),
            n_preview=int(raw.get("n_preview") or 0),
            plan_hint=raw.get("plan_hint") if isinstance(raw.get("plan_hint"), dict) else None,
            avoid=tuple(a for a in raw.get("avoid") or () if isinstance(a, dict)),
            preflight=bool(raw.get("preflight", False)),
            kind=str(raw.get("kind") or "keypoints"),
        )


def send(fd: int, tag: bytes, payload: bytes) -> None:
    view = memoryview(protocol.FRAME.pack(tag, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def send_json(fd: int, tag: bytes, obj: dict[str, Any]) -> None:
    send(fd, tag, json.dumps(obj).encode()[: protocol.MAX_JSON])


def _chain_texts(exc: BaseException) -> list[str]:
    """The error's own text and those of the errors it replaced: predict() shortens the
    model's error, and TorchScript puts the operating system's words at the very end."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(current.detail if isinstance(current, GradingFailure) else str(current))
        current = current.__cause__ or current.__context__
    return texts


def _matching_line(texts: list[str], pattern: re.Pattern[str]) -> str | None:
    for text in texts:
        for line in reversed(text.splitlines()):
            if pattern.search(line):
                return line.strip()[:500]
    return None


def classify(exc: BaseException) -> tuple[FailureKind, str]:
    """Name what went wrong; confinement refusals and allocation failures hide inside the
    model's own error text, so they are recognised there."""
    if isinstance(exc, MemoryError):
        return FailureKind.MEMORY_LIMIT, "the model ran out of its memory budget"
    if isinstance(exc, GradingFailure):
        kind, detail = exc.kind, exc.detail
    else:
        kind, detail = FailureKind.BAD_OUTPUT, f"{type(exc).__name__}: {exc}"
    texts = _chain_texts(exc)
    if line := _matching_line(texts, _MEMORY):
        return FailureKind.MEMORY_LIMIT, line
    if kind in (FailureKind.BAD_OUTPUT, FailureKind.LOAD_ERROR):
        if line := _matching_line(texts, _VIOLATION):
            return FailureKind.SANDBOX_VIOLATION, f"blocked by the sandbox: {line}"
    return kind, detail


# TorchScript operators that touch files. aten::save reports no error when its open() is
# refused, so a blocked write is only visible from the code that asked for it.
_FILE_OPS = ("aten::save", "aten::from_file", "aten::load")


def file_operations(model: Any) -> list[str]:
    """File operators anywhere in the loaded model's code (all methods, all submodules).
    A torch.export program's graph was checked when it was loaded (exported.py)."""
    found: set[str] = set()
    if not hasattr(model, "named_modules"):
        return []

    def walk(block: Any) -> None:
        for node in block.nodes():
            kind = node.kind()
            if kind in _FILE_OPS or "from_file" in kind:
                found.add(kind)
            for inner in node.blocks():
                walk(inner)

    for _, module in model.named_modules():
        for name in module._c._method_names():
            try:
                walk(module._c._get_method(name).inlined_graph)
            except RuntimeError:
                continue
    return sorted(found)


def _close_other_fds(keep: set[int]) -> None:
    devnull = os.open("/dev/null", os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    os.close(devnull)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own directory descriptor


def _read_images(fd: int, n: int, kind: Kind) -> Any:
    import numpy as np

    size = n * kind.image_bytes
    if size == 0:
        return np.zeros((0, *kind.image_shape), dtype=np.uint8)
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
        return np.frombuffer(mm, dtype=np.uint8, count=size).reshape(n, *kind.image_shape).copy()


def _model_memfd(model_fd: int) -> int:
    """Copy the model into an anonymous file: the confined child then needs no access to
    the uploads directory, and its loader reads it through /proc/self/fd."""
    memfd = os.memfd_create("model", 0)
    os.lseek(model_fd, 0, os.SEEK_SET)
    while chunk := os.read(model_fd, 1 << 20):
        os.write(memfd, chunk)
    os.close(model_fd)
    return memfd


def confine_self(req: ChildRequest) -> confine.Layers:
    layers = confine.Layers()
    on_cuda = req.device.startswith("cuda")

    def attempt(name: str, action: Any) -> None:
        try:
            layers.record(name, True, str(action()))
        except OSError as exc:
            layers.record(name, False, f"unavailable: {exc}")

    # The address-space cap would starve CUDA's huge virtual reservations; on a GPU the
    # fork server watches resident memory instead.
    attempt(
        "rlimits",
        lambda: confine.apply_rlimits(
            memory_cap_bytes=None if on_cuda else req.memory_limit_bytes
        ),
    )
    attempt("netns", confine.unshare_network)
    attempt("uid_drop", confine.drop_privileges)
    attempt("no_new_privs", confine.set_no_new_privs)
    read_paths = confine.python_read_paths()
    rw_paths: list[str] = []
    if on_cuda:
        extra_read, rw_paths = confine.cuda_device_paths()
        read_paths += extra_read
    attempt("landlock", lambda: confine.apply_landlock(read_paths, rw_paths))
    # A change of credentials clears the parent-death signal; set it again and make sure
    # the fork server did not die in between.
    confine.die_with_parent()
    if os.getppid() != req.zygote_pid:
        os._exit(70)
    return layers


def _start_cuda(torch: Any, req: ChildRequest) -> None:
    """CUDA starts here, after confinement: it does not survive a fork, and the fork server
    never touches it. The allocator is capped at the memory budget."""
    gpu = torch.device(req.device)
    if gpu.index is None:
        gpu = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(gpu).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, req.memory_limit_bytes / total), gpu)


def _send_preview(result_fd: int, report: Any, faces: Any, req: ChildRequest) -> None:
    """After `R` the grade is settled: nothing the preview does may turn into an `E`."""
    import numpy as np

    from grader.grading.sandboxed.predict import predict_preview

    try:
        preview = predict_preview(report, faces, device=req.device, kind=req.spec)
        if preview is not None and preview.shape == (req.n_preview, *req.spec.output_shape):
            send(result_fd, protocol.PREVIEW, np.ascontiguousarray(preview, "<f4").tobytes())
    except BaseException:  # noqa: B036,S110 - a courtesy picture, never a failure
        pass


def _grade(
    result_fd: int, model: Any, images: Any, req: ChildRequest, info: dict[str, Any]
) -> None:
    """The test images with a tuned plan (`R`), then the preview faces with it (`P`)."""
    from grader.grading.plans import Plan, PlanHint
    from grader.grading.sandboxed.predict import predict_with_plan

    t1 = time.perf_counter()
    predictions, report = predict_with_plan(
        model, images[: req.n_images], device=req.device, max_batch=req.batch_size,
        kind=req.spec, threads=req.threads, hint=PlanHint.from_dict(req.plan_hint),
        avoid=[p for a in req.avoid if (p := Plan.from_dict(a)) is not None],
        # Each trial is announced first: if one kills the process, the parent runs the
        # model again without it (see sandbox._TrialCrashed).
        announce=lambda plan: send_json(result_fd, protocol.TRIAL, {"plan": plan.to_dict()}),
    )
    info.update(
        predict_s=time.perf_counter() - t1, tuning_s=report.tuning_s,
        convert_s=report.convert_s, reference_s=report.reference_s, run_s=report.run_s,
        plan=report.plan.to_dict(), trials=[t.to_dict() for t in report.trials],
    )
    send_json(result_fd, protocol.TIMINGS, info)
    _send_predictions(result_fd, predictions, req)
    if req.n_preview:
        _send_preview(result_fd, report, images[req.n_images :], req)


def _preflight(
    result_fd: int, model: Any, images: Any, req: ChildRequest, info: dict[str, Any]
) -> None:
    """The check at upload: a few public faces the course's way, then as one batch."""
    from grader.grading.sandboxed.predict import preflight

    t1 = time.perf_counter()
    predictions, batch_ok = preflight(
        model, images[: req.n_images], device=req.device, kind=req.spec
    )
    info.update(predict_s=time.perf_counter() - t1, batch_ok=batch_ok)
    send_json(result_fd, protocol.TIMINGS, info)
    _send_predictions(result_fd, predictions, req)


def _send_predictions(result_fd: int, predictions: Any, req: ChildRequest) -> None:
    import numpy as np

    expected = (req.n_images, *req.spec.output_shape)
    if tuple(predictions.shape) != expected:
        raise GradingFailure(
            FailureKind.BAD_OUTPUT, f"predictions of shape {predictions.shape}, not {expected}"
        )
    send(result_fd, protocol.RESULT, np.ascontiguousarray(predictions, dtype="<f4").tobytes())


def run(raw_request: dict[str, Any], *, zygote_pid: int, images_fd: int, model_fd: int,
        result_fd: int) -> NoReturn:
    """Entry point in the freshly forked child. Never returns."""
    code = 0
    try:
        gc.disable()  # a short-lived process: a full collection would only cost time
        heap.keep_freed_memory()  # and what it frees serves its next batch
        os.setsid()  # its own process group, so the parent can kill everything it starts
        confine.die_with_parent()
        _close_other_fds({images_fd, model_fd, result_fd})
        os.chdir("/")
        req = ChildRequest.from_json(raw_request, zygote_pid=zygote_pid)
        started = time.perf_counter()
        images = _read_images(images_fd, req.n_images + req.n_preview, req.spec)
        os.close(images_fd)
        model_path = f"/proc/self/fd/{_model_memfd(model_fd)}" if model_fd >= 0 else ""
        layers = confine_self(req)
        import torch

        from grader.grading.sandboxed import tuner

        # No C++ compiler and no writable cache under Landlock: inductor cannot build kernels.
        tuner.compile_allowed = not layers.applied.get("landlock", False)
        torch.set_num_threads(max(1, req.threads))
        info: dict[str, Any] = {"layers": layers.applied, "notes": layers.notes}
        if req.device.startswith("cuda"):
            try:
                _start_cuda(torch, req)
                layers.record("cuda", True, f"{req.device} initialised inside the sandbox")
            except Exception as exc:
                layers.record("cuda", False, f"{type(exc).__name__}: {exc}"[:300])
                if not req.probe:
                    # The worker's fault, not the model's, which has not been loaded yet.
                    detail = f"device {req.device!r} unusable in the sandbox: {exc}"
                    send_json(result_fd, protocol.DEVICE_FAILED, {"detail": detail[:2000]})
                    os._exit(0)
        if req.probe:
            send_json(result_fd, protocol.TIMINGS, info)
            os._exit(0)
        send(result_fd, protocol.SET_UP, b"")
        from grader.grading.sandboxed.predict import load_model

        t0 = time.perf_counter()
        model = load_model(Path(model_path), device=req.device, kind=req.spec)
        t1 = time.perf_counter()
        if ops := file_operations(model):
            raise GradingFailure(
                FailureKind.SANDBOX_VIOLATION,
                f"the model's code calls {', '.join(ops)}: models may not read or write files",
            )
        info.update(setup_s=t0 - started, load_s=t1 - t0)
        (_preflight if req.preflight else _grade)(result_fd, model, images, req, info)
    except BaseException as exc:  # noqa: B036 - everything becomes a named failure
        kind, detail = classify(exc)
        try:
            send_json(result_fd, protocol.ERROR, {"kind": str(kind), "detail": detail[:4000]})
        except OSError:
            code = 71
    finally:
        sys.stdout.flush()
    os._exit(code)
