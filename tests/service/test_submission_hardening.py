"""Submissions that must always end, the daily limit under concurrent uploads, lost broker
tasks and the per-student queue order; on SQLite and PostgreSQL with a real Redis broker."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from sqlalchemy import select, update

from grader.app import create_app
from grader.auth.models import User
from grader.config import Settings
from grader.db import session_scope, utcnow
from grader.exercises import service as exercises
from grader.exercises.models import Exercise
from grader.runtime.queue import Publisher
from grader.runtime.sweeper import sweep_once
from grader.submissions import grading
from grader.submissions.models import Status, Submission
from grader.submissions.upload import model_storage_path
from tests.service.conftest import Api
from tests.support import broker as tasks
from tests.support.live_server import free_port
from tests.support.models import write_linear_model


def _distinct(folder: Path, n: int, seed: int) -> list[Path]:
    """`n` models of distinct content, so each one is its own stored file."""
    return [write_linear_model(folder / f"m{seed + i}.pt", seed=seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _distinct(tmp_path_factory.mktemp("distinct"), 4, seed=100)


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    publisher = Publisher(settings)
    yield publisher
    publisher.close()


def _row(settings: Settings, sid: int) -> Submission:
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        sub = session.get(Submission, sid)
        assert sub is not None
        session.expunge(sub)
        return sub


def _stored(settings: Settings, model: Path) -> bool:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    return model_storage_path(settings.uploads_dir, sha).exists()


def _incoming(settings: Settings) -> list[Path]:
    folder = settings.uploads_dir / ".incoming"
    return list(folder.iterdir()) if folder.exists() else []


# --- an exercise without a test set ------------------------------------------------------


def test_upload_to_an_exercise_without_a_test_set_is_409_and_stores_nothing(
    settings: Settings, admin: Api, make_student: Any, tmp_path: Path
) -> None:
    models = _distinct(tmp_path, 1, seed=90)
    slug = f"nots-{free_port()}"
    assert admin.post("/api/v1/exercises", json={"slug": slug, "title": "t"}).status_code == 201
    student = make_student()
    refused = student.upload(slug, models[0])
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == f"The exercise {slug!r} has no test set yet."
    assert not _stored(settings, models[0]) and _incoming(settings) == []
    assert student.get("/api/v1/submissions").json()["total"] == 0


def _submission_without_test_set(settings: Settings, student: Api) -> int:
    """A QUEUED row for an exercise without a test set, as accepted before uploads to such
    exercises were refused (the row cannot be made through the API any more)."""
    with session_scope(settings.sqlalchemy_url) as session:
        exercise = exercises.create_exercise(
            session, slug=f"legacy-{free_port()}", title="legacy", settings=settings
        )
        user = session.scalar(select(User).where(User.username == student.username))
        assert user is not None
        sub = Submission(
            user_id=user.id, exercise_id=exercise.id, model_sha256="0" * 64, model_size=1
        )
        session.add(sub)
        session.flush()
        return sub.id


def test_a_failure_inside_the_claim_still_counts_the_attempt(
    settings: Settings, make_student: Any
) -> None:
    sid = _submission_without_test_set(settings, make_student())
    with pytest.raises(grading.InfrastructureError):
        grading.grade_submission(settings, sid)
    assert _row(settings, sid).attempts == 1


def _break(kind: str, settings: Settings, sid: int) -> None:
    """Make grading `sid` raise after its claim, in one of several places."""
    sub = _row(settings, sid)
    if kind == "model file missing":
        model_storage_path(settings.uploads_dir, sub.model_sha256).unlink()
        return
    with session_scope(settings.sqlalchemy_url) as session:
        exercise = session.get(Exercise, sub.exercise_id)
        assert exercise is not None
        exercise.testset_path = str(settings.testsets_dir / "gone" / "missing.csv")


@pytest.mark.parametrize("kind", ["no test set", "model file missing", "test set file missing"])
def test_no_submission_stays_unfinished_whatever_raises(
    kind: str,
    settings: Settings,
    make_student: Any,
    make_exercise: Any,
    publisher: Publisher,
    redis_broker: redis.Redis,
    tmp_path: Path,
) -> None:
    """Each round is what the system does without help: the sweeper sends what is QUEUED and
    not in the broker, a worker takes the task and runs it. The grading raises every time; the
    submission must still end, as our failure, within max_attempts rounds."""
    student = make_student()
    if kind == "no test set":
        sid = _submission_without_test_set(settings, student)
    else:
        model = write_linear_model(tmp_path / "own.pt", seed=hash(kind) % 1000)
        response = student.upload(make_exercise(), model)
        assert response.status_code == 202, response.text
        sid = response.json()["id"]
        tasks.take(redis_broker, {sid})
        _break(kind, settings, sid)
    # Check the broker on every pass (the default waits a minute for a task to show up there).
    fast = settings.model_copy(update={"queued_check_after_s": 1e-6})
    for _ in range(settings.max_attempts):
        assert sid in sweep_once(fast, publisher)
        assert tasks.take(redis_broker, {sid}) == [sid]
        try:
            grading.run_grading_task(settings, sid)
        except Exception:
            assert _row(settings, sid).status == Status.QUEUED.value  # handed back at once
    final = _row(settings, sid)
    assert (final.status, final.failure_reason) == (Status.ERROR.value, "INFRA_ERROR")
    assert final.attempts == settings.max_attempts and final.finished_at is not None
    assert sid not in sweep_once(fast, publisher)


# --- tasks the broker lost ------------------------------------------------------------------


def _sent_ago(settings: Settings, ids: list[int], seconds: float) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id.in_(ids))
            .values(sent_at=utcnow() - timedelta(seconds=seconds))
        )


def test_the_sweeper_resends_within_a_minute_only_tasks_the_broker_lost(
    settings: Settings,
    make_student: Any,
    make_exercise: Any,
    models: list[Path],
    publisher: Publisher,
    redis_broker: redis.Redis,
) -> None:
    slug = make_exercise()
    ids = [make_student().upload(slug, model).json()["id"] for model in models[:4]]
    kept, delivered, lost, lost_just_now = ids
    # `delivered` is with a worker, unacknowledged: kombu keeps it in the `unacked` hash.
    (raw,) = [r for r in redis_broker.lrange("cpu", 0, -1) if tasks.submission_id(r) == delivered]
    redis_broker.hset("unacked", "tag-1", b'[%s, "", "cpu"]' % raw)
    tasks.take(redis_broker, {delivered, lost, lost_just_now})
    _sent_ago(settings, [kept, delivered, lost], settings.queued_check_after_s + 5)
    try:
        resent = sweep_once(settings, publisher)
    finally:
        redis_broker.hdel("unacked", "tag-1")
    assert lost in resent
    assert kept not in resent and delivered not in resent  # the broker still holds them
    assert lost_just_now not in resent  # sent a moment ago: given time to show up
    assert lost in tasks.take(redis_broker, {lost})
    assert settings.queued_check_after_s <= 60 < settings.stale_after_s


# --- the daily limit under concurrent uploads ---------------------------------------------


@pytest.fixture(scope="module")
def live_url(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn in this process: requests really run concurrently."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_concurrent_uploads_cannot_pass_the_daily_limit_and_refusals_leave_nothing(
    settings: Settings, make_student: Any, make_exercise: Any, live_url: str, tmp_path: Path
) -> None:
    models = _distinct(tmp_path, 20, seed=1000 if "sqlite" in settings.sqlalchemy_url else 2000)
    slug, student = make_exercise(daily_limit=2), make_student()
    barrier = threading.Barrier(len(models))

    def upload(model: Path) -> int:
        with httpx.Client(base_url=live_url, timeout=120) as client:
            barrier.wait()
            return client.post(
                f"/api/v1/exercises/{slug}/submissions",
                headers={"Authorization": f"Bearer {student.token}"},
                files={"file": (model.name, model.read_bytes())},
            ).status_code

    with ThreadPoolExecutor(len(models)) as pool:
        codes = list(pool.map(upload, models))
    assert sorted(codes) == [202, 202] + [429] * (len(models) - 2), codes
    accepted = [m for m, code in zip(models, codes, strict=True) if code == 202]
    assert [m for m in models if _stored(settings, m)] == accepted
    assert _incoming(settings) == []
    assert student.get("/api/v1/submissions").json()["total"] == 2


# --- one student's queue does not hold up the others --------------------------------------


def test_a_students_later_submissions_queue_behind_everyones_first(
    make_student: Any, make_exercise: Any, models: list[Path], redis_broker: redis.Redis
) -> None:
    alice, bob = make_student(), make_student()
    first, other = make_exercise(), make_exercise()
    alices = [alice.upload(first, m).json()["id"] for m in models[:3]]
    bobs = bob.upload(other, models[3]).json()["id"]
    mine = {*alices, bobs}
    waiting = {
        p: [sid for sid in ids if sid in mine] for p, ids in tasks.queued(redis_broker).items()
    }
    assert waiting[0] == [alices[0], bobs]  # each student's first goes first
    assert waiting[9] == alices[1:]
    assert tasks.take(redis_broker, mine) == [alices[0], bobs, *alices[1:]]


def test_a_stored_time_limit_past_the_workers_hard_limit_is_cut_to_fit(
    settings: Settings, make_student: Any, make_exercise: Any, models: list[Path]
) -> None:
    """A limit stored before limits were bounded made every grading end INFRA_ERROR."""
    slug = make_exercise()
    sid = make_student().upload(slug, models[0]).json()["id"]
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(update(Exercise).where(Exercise.slug == slug).values(time_limit_s=1e308))
    job = grading.claim(settings, sid, me="test:1")
    assert job is not None and job.time_limit_s == exercises.max_time_limit_s(settings) == 540
    assert grading.release_claim(settings, sid, me="test:1") == "released"
    assert _row(settings, sid).attempts == 1
