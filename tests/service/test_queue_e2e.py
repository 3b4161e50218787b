"""The grading queue end to end, with real worker processes: one student's backlog does not
hold up another student, and tasks a broker lost are found and graded within seconds, once."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.broker import measure_broker_loss
from tests.support.live_server import LiveServer
from tests.support.models import write_linear_model, write_slow_model, write_small_test_set

pytestmark = pytest.mark.slow


def _exercise(server: LiveServer, csv_path: Path, slug: str) -> str:
    with server.admin_client() as admin:
        created = admin.post("/api/v1/exercises", json={"slug": slug, "title": slug})
        assert created.status_code == 201, created.text
        with csv_path.open("rb") as fh:
            put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
        assert put.status_code == 200, put.text
    return slug


def _upload(client: httpx.Client, slug: str, path: Path) -> int:
    with path.open("rb") as fh:
        response = client.post(
            f"/api/v1/exercises/{slug}/submissions", files={"file": (path.name, fh)}
        )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def _at(body: dict[str, Any], key: str) -> datetime:
    return datetime.fromisoformat(body[key])


def test_one_students_backlog_delays_another_student_by_one_grading_at_most(
    live_server: LiveServer, tmp_path: Path
) -> None:
    csv_path = write_small_test_set(tmp_path / "small.csv")
    tag = uuid.uuid4().hex[:8]
    busy = _exercise(live_server, csv_path, f"fair-a-{tag}")
    other = _exercise(live_server, csv_path, f"fair-b-{tag}")
    slow = write_slow_model(tmp_path / "slow.pt", repeats=150)
    quick = write_linear_model(tmp_path / "quick.pt")
    with live_server.student_client() as alice, live_server.student_client() as bob:
        alices = [_upload(alice, busy, slow) for _ in range(5)]
        deadline = time.monotonic() + 120
        while alice.get(f"/api/v1/submissions/{alices[0]}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline, live_server.describe()
            time.sleep(0.05)
        uploaded = time.monotonic()
        bobs = _upload(bob, other, quick)
        bob_body = live_server.wait_for_submission(bob, bobs, timeout=300)
        bob_waited = time.monotonic() - uploaded
        alice_bodies = [live_server.wait_for_submission(alice, i, timeout=300) for i in alices]
    one_grading = statistics.median(
        (_at(a, "finished_at") - _at(a, "started_at")).total_seconds() for a in alice_bodies
    )
    bob_grading = (_at(bob_body, "finished_at") - _at(bob_body, "started_at")).total_seconds()
    print(
        f"\nfairness: alice's slow grading {one_grading:.1f} s (x5 queued); bob waited "
        f"{bob_waited:.1f} s for a {bob_grading:.1f} s grading"
    )
    # The rule: no second slot for alice while bob's first submission waits.
    jumped = [
        a["id"]
        for a in alice_bodies
        if _at(bob_body, "created_at") < _at(a, "started_at") < _at(bob_body, "started_at")
    ]
    assert jumped == [], (jumped, bob_body, alice_bodies)
    # Bob waits for the one grading in progress when he uploaded, plus his own.
    assert bob_waited < 1.5 * one_grading + bob_grading + 5
    assert all(a["status"] == "FAILED" for a in alice_bodies) and bob_body["status"] == "FAILED"


def test_tasks_lost_with_the_brokers_data_are_graded_within_seconds_and_once(
    tmp_path: Path,
) -> None:
    figures = measure_broker_loss(
        tmp_path, uploads=6, env={"GRADER_QUEUED_CHECK_AFTER_S": "3"}, timeout=300
    )
    finals = figures.pop("finals")
    print(f"\nbroker loss (queued check after 3 s, sweeper every 1 s): {figures}")
    assert figures["published_before_loss"] == 6
    # Found by the broker check, far inside the 900 s staleness that was the only way before.
    assert figures["detected_s"] < 15
    for body in finals:
        assert body["status"] == "FAILED" and body["attempts"] == 1, body
        assert body["result"] is not None
