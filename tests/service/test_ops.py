"""Operations on SQLite and PostgreSQL with a real Redis: worker heartbeats appear and expire,
the queue position follows the broker's fair order and the ETA the live slots, and /metrics
exposes every family with the values the database and the heartbeats hold.

Each test module gets a database of its own, so the queue holds only what the test puts in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.ops.heartbeat import HeartbeatThread, WorkerBeat, connect, read_beats, write_beat
from grader.ops.queueinfo import build_snapshot, describe
from grader.submissions import grading, preflight
from grader.submissions.models import Status, Submission
from tests.sandbox.hostile_models import WrongShape, save_scripted
from tests.service.conftest import REDIS_URL, Api, login
from tests.support.app import running_app, test_settings
from tests.support.live_server import ADMIN_PASSWORD
from tests.support.models import write_linear_model

METRICS_TOKEN = "metrics-token-" + "x" * 16


@pytest.fixture(scope="module")
def ops_settings(
    backend: str, redis_broker: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    data_dir = tmp_path_factory.mktemp("ops")
    if backend.startswith("sqlite"):
        database = f"sqlite:///{data_dir / 'ops.sqlite3'}"
    else:
        # A schema of its own in the session's PostgreSQL database would need search_path
        # plumbing; a fresh database is simpler.
        from tests.support.services import temporary_postgres_database

        ctx = temporary_postgres_database()
        database = ctx.__enter__()
        _pg_contexts.append(ctx)
    return test_settings(
        data_dir, broker_url=REDIS_URL, database_url=database, metrics_token=METRICS_TOKEN,
        heartbeat_interval_s=0.2, heartbeat_ttl_s=1.0, preflight_enabled=True,
    )  # fmt: skip


_pg_contexts: list[Any] = []


@pytest.fixture(scope="module")
def ops_client(ops_settings: Settings) -> Iterator[TestClient]:
    with running_app(ops_settings) as client:
        yield client
    from grader.db import get_engine, get_sessionmaker

    get_engine(ops_settings.sqlalchemy_url).dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    while _pg_contexts:
        _pg_contexts.pop().__exit__(None, None, None)


@pytest.fixture(scope="module")
def ops_admin(ops_client: TestClient) -> Api:
    return Api(ops_client, login(ops_client, "admin", ADMIN_PASSWORD), "admin")


def _student(admin: Api) -> Api:
    name = f"s-{uuid.uuid4().hex[:8]}"
    made = admin.post("/api/v1/users", json={"username": name, "password": "student-pass"})
    assert made.status_code == 201, made.text
    return Api(admin.client, login(admin.client, name, "student-pass"), name)


def _exercise(admin: Api, small_test_set: Path, **fields: Any) -> str:
    slug = f"ops-{uuid.uuid4().hex[:8]}"
    made = admin.post("/api/v1/exercises", json={"slug": slug, "title": slug, **fields})
    assert made.status_code == 201, made.text
    with small_test_set.open("rb") as fh:
        put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
    assert put.status_code == 200, put.text
    return slug


@pytest.fixture
def beats(ops_settings: Settings) -> Iterator[redis.Redis]:
    client = connect(ops_settings)
    assert client is not None
    for key in client.scan_iter(match="grader:worker:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(match="grader:worker:*"):
        client.delete(key)


def _beat(queues: tuple[str, ...], concurrency: int, pid: int = 4242) -> WorkerBeat:
    return WorkerBeat(
        host="gpu-box-7", pid=pid, name=f"grader-{'-'.join(queues)}@gpu-box-7", queues=queues,
        concurrency=concurrency, layers={"fork_server": True, "netns": True, "landlock": False},
        started_at=time.time(), beat_at=time.time(),
    )  # fmt: skip


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_heartbeats_appear_while_a_worker_lives_and_expire_when_it_stops_beating(
    ops_settings: Settings, beats: redis.Redis
) -> None:
    thread = HeartbeatThread(
        ops_settings, name="w@host", queues=["cpu", "cpu-preflight"], concurrency=3,
        layers={"rlimits": True, "landlock": False},
    )  # fmt: skip
    thread.start()
    try:
        _wait_for(lambda: len(read_beats(beats)) == 1)
        (seen,) = read_beats(beats)
        assert seen.queues == ("cpu", "cpu-preflight") and seen.concurrency == 3
        assert seen.layers == {"rlimits": True, "landlock": False} and seen.pid == thread.beat.pid
        first = seen.beat_at
        # It keeps beating (interval 0.2 s) past the key's 1 s lifetime.
        _wait_for(lambda: read_beats(beats) and read_beats(beats)[0].beat_at > first + 1.0)
    finally:
        thread.stop()
    assert read_beats(beats) == []  # a clean stop removes it at once
    # A worker that dies beats no more: its key expires on its own.
    write_beat(beats, _beat(("cpu",), 2), ttl_s=0.5)
    assert len(read_beats(beats)) == 1
    _wait_for(lambda: read_beats(beats) == [], timeout=5)


def _finished_history(settings: Settings, sids: list[int], seconds: float) -> None:
    """Make `sids` look graded, each taking `seconds` (the ETA's history)."""
    now = utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id.in_(sids))
            .values(
                status=Status.FAILED.value,
                started_at=now - timedelta(seconds=100 + seconds),
                finished_at=now - timedelta(seconds=100),
            )
        )


def test_position_follows_the_fair_order_and_the_eta_the_live_slots(
    ops_settings: Settings, ops_admin: Api, small_test_set: Path, tmp_path: Path,
    beats: redis.Redis,
) -> None:
    slug = _exercise(ops_admin, small_test_set, queue="gpu")
    model = write_linear_model(tmp_path / "m.pt")
    alice, bob, carol = _student(ops_admin), _student(ops_admin), _student(ops_admin)
    history = [alice.upload(slug, model).json()["id"] for _ in range(3)]
    _finished_history(ops_settings, history, seconds=10.0)
    a1 = alice.upload(slug, model).json()["id"]
    a2 = alice.upload(slug, model).json()["id"]  # sent while a1 waits: BEHIND everyone's first
    b1 = bob.upload(slug, model).json()["id"]
    c1 = carol.upload(slug, model).json()["id"]

    # No live worker serves the queue: a place, but no estimate.
    body = carol.get(f"/api/v1/submissions/{c1}").json()
    assert body["queue"]["position"] == 3 and body["queue"]["ahead"] == 2
    assert body["queue"]["workers"] == 0 and body["queue"]["estimated_start"] is None
    assert "no grader" in describe(_info(body))

    # One worker with two slots on this queue (another on cpu only does not count).
    write_beat(beats, _beat(("gpu",), 2), ttl_s=60)
    write_beat(beats, _beat(("cpu",), 4, pid=4343), ttl_s=60)
    now = utcnow()
    with session_scope(ops_settings.sqlalchemy_url, write=False) as session:
        snap = build_snapshot(session, queue="gpu", workers=2, settings=ops_settings, now=now)
    places = {sid: snap.info(sid) for sid in (a1, b1, c1, a2)}
    assert [places[s].position for s in (a1, b1, c1, a2)] == [1, 2, 3, 4]  # type: ignore[union-attr]
    starts = [places[s].estimated_start - now for s in (a1, b1, c1, a2)]  # type: ignore[operator,union-attr]
    # Two slots, 10 s per grading: 0, 0, 10, 10 s from now; each ends 10 s after its start.
    assert [round(s.total_seconds(), 3) for s in starts] == [0.0, 0.0, 10.0, 10.0]
    assert places[a2].estimated_finish - places[a2].estimated_start == timedelta(seconds=10)  # type: ignore[operator,union-attr]

    # a1 runs for 4 s already: one slot frees in ~6 s, the other now.
    with session_scope(ops_settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission).where(Submission.id == a1).values(
                status=Status.RUNNING.value, started_at=now - timedelta(seconds=4)
            )
        )  # fmt: skip
    with session_scope(ops_settings.sqlalchemy_url, write=False) as session:
        snap = build_snapshot(session, queue="gpu", workers=2, settings=ops_settings, now=now)
    running = snap.info(a1)
    assert running is not None and running.position == 0
    assert running.estimated_finish == now + timedelta(seconds=6)
    b, c, a = snap.info(b1), snap.info(c1), snap.info(a2)
    assert (b.position, c.position, a.position) == (1, 2, 3)  # type: ignore[union-attr]
    assert b.estimated_start == now and c.estimated_start == now + timedelta(seconds=6)  # type: ignore[union-attr]
    assert a.estimated_start == now + timedelta(seconds=10)  # type: ignore[union-attr]

    # Through the API (the cached snapshot, with the live heartbeats): the same place.
    _wait_for(lambda: bob.get(f"/api/v1/submissions/{b1}").json()["queue"]["workers"] == 2)
    body = carol.get(f"/api/v1/submissions/{c1}").json()
    assert body["queue"]["position"] == 2 and body["queue"]["estimated_finish"] is not None
    assert describe(_info(body)).startswith("2nd in queue, about ")
    # A finished submission has no queue.
    assert alice.get(f"/api/v1/submissions/{history[0]}").json()["queue"] is None


def _info(body: dict[str, Any]) -> Any:
    from grader.ops.queueinfo import QueueInfo

    return QueueInfo.model_validate(body["queue"])


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(family: Any, suffix: str = "", **labels: str) -> float:
    found = [
        s.value for s in family.samples
        if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    ]  # fmt: skip
    return sum(found)


def test_metrics_expose_every_family_with_the_databases_figures(
    ops_settings: Settings, ops_client: TestClient, ops_admin: Api, small_test_set: Path,
    tmp_path: Path, beats: redis.Redis,
) -> None:
    before = _families(ops_admin.get("/metrics").text)
    uploads_before = _value(before["grader_uploads"], "_total", queue="cpu")
    failed_before = _value(before["grader_grading_outcomes"], "_total", status="FAILED")
    bad_before = _value(
        before["grader_preflight_outcomes"], "_total", status="FAILED", failure="BAD_OUTPUT"
    )
    hist_before = _value(before["grader_grading_duration_seconds"], "_count", queue="cpu")

    slug = _exercise(ops_admin, small_test_set)
    student = _student(ops_admin)
    good = write_linear_model(tmp_path / "good.pt")
    bad = save_scripted(WrongShape(), tmp_path / "bad.pt")
    graded = [student.upload(slug, good).json()["id"] for _ in range(2)]
    broken = student.upload(slug, bad).json()["id"]
    waiting = student.upload(slug, good).json()["id"]
    for sid in graded:
        assert grading.grade_submission(ops_settings, sid) == "FAILED"
    assert preflight.run_preflight(ops_settings, broken) == "BAD_OUTPUT"
    write_beat(beats, _beat(("cpu",), 2), ttl_s=60)
    time.sleep(2.1)  # the metrics endpoint caches its rendering for 2 s

    response = ops_client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain"
    )
    fams = _families(response.text)
    for name in (
        "grader_uploads", "grader_preflight_outcomes", "grader_grading_outcomes",
        "grader_grading_duration_seconds", "grader_queue_depth", "grader_queue_running",
        "grader_queue_oldest_age_seconds", "grader_workers", "grader_worker_slots",
        "grader_workers_live", "grader_worker_sandbox_layer",
        "grader_worker_heartbeat_age_seconds",
    ):  # fmt: skip
        assert name in fams, name
    assert _value(fams["grader_uploads"], "_total", queue="cpu") == uploads_before + 4
    assert _value(fams["grader_grading_outcomes"], "_total", status="FAILED") == failed_before + 2
    assert _value(
        fams["grader_preflight_outcomes"], "_total", status="FAILED", failure="BAD_OUTPUT"
    ) == bad_before + 1
    hist = fams["grader_grading_duration_seconds"]
    assert _value(hist, "_count", queue="cpu") == hist_before + 2
    assert _value(hist, "_bucket", queue="cpu", le="+Inf") == hist_before + 2
    assert _value(hist, "_sum", queue="cpu") > 0
    # The waiting upload (and nothing else on cpu in this database) is queued.
    with session_scope(ops_settings.sqlalchemy_url, write=False) as session:
        queued = session.query(Submission).filter(Submission.status == "QUEUED").all()
        on_cpu = [s for s in queued if s.exercise.queue == "cpu"]
        oldest: datetime = min(s.created_at for s in on_cpu)
    assert waiting in {s.id for s in on_cpu}
    assert _value(fams["grader_queue_depth"], queue="cpu") == len(on_cpu)
    age = _value(fams["grader_queue_oldest_age_seconds"], queue="cpu")
    assert 0 < age <= (utcnow() - oldest).total_seconds() + 1
    assert _value(fams["grader_workers"], queue="cpu") == 1
    assert _value(fams["grader_worker_slots"], queue="cpu") == 2
    assert _value(fams["grader_workers_live"]) == 1
    layer = fams["grader_worker_sandbox_layer"]
    assert _value(layer, host="gpu-box-7", pid="4242", layer="netns") == 1
    assert _value(layer, host="gpu-box-7", pid="4242", layer="landlock") == 0


def test_metrics_are_never_open(ops_client: TestClient, ops_admin: Api) -> None:
    assert ops_client.get("/metrics").status_code == 401
    assert ops_client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    student = _student(ops_admin)
    assert student.get("/metrics").status_code == 403
    assert ops_admin.get("/metrics").status_code == 200
