"""The instructors' System page: queues, live workers with their sandbox layers, recent
gradings; students are refused, anonymous visitors sent to log in."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grader.config import Settings
from grader.ops.heartbeat import WorkerBeat, connect, write_beat


@pytest.fixture
def worker_beat(web_settings: Settings) -> Iterator[WorkerBeat]:
    client = connect(web_settings)
    assert client is not None
    beat = WorkerBeat(
        host="grader-node-3", pid=777, name="grader-cpu@grader-node-3", queues=("cpu",),
        concurrency=2, layers={"rlimits": True, "netns": True, "landlock": False},
        started_at=time.time(), beat_at=time.time(),
    )  # fmt: skip
    write_beat(client, beat, ttl_s=60)
    yield beat
    client.delete(beat.key)


def test_the_system_page_shows_queues_workers_and_layers(
    instructor: TestClient, worker_beat: WorkerBeat
) -> None:
    page = instructor.get("/instructor/system")
    assert page.status_code == 200
    html = page.text
    assert 'data-queue="cpu"' in html and "grader-node-3" in html
    assert '<span class="tag">netns</span>' in html and "off: landlock" in html
    assert 'href="/instructor/system"' in html  # in the navigation


def test_students_are_refused_and_visitors_sent_to_log_in(
    student: TestClient, anonymous: TestClient
) -> None:
    assert student.get("/instructor/system").status_code == 403
    response = anonymous.get("/instructor/system")
    assert response.status_code == 303 and "/login" in response.headers["location"]
    assert 'href="/instructor/system"' not in student.get("/exercises").text


def test_the_submission_page_says_where_it_waits(
    student: TestClient, worker_beat: WorkerBeat, linear_model: Path
) -> None:
    from tests.web.test_pages_auth import page_csrf, upload

    created = upload(student, linear_model, csrf=page_csrf(student))
    assert created.status_code == 202, created.text  # type: ignore[attr-defined]
    url = created.json()["url"]  # type: ignore[attr-defined]
    pattern = re.compile(r'<p id="queue"[^>]*data-workers="(\d+)"[^>]*>([^<]*)</p>')
    deadline = time.monotonic() + 10
    while True:  # heartbeats are read at most once a second: an older reading may be cached
        html = student.get(url).text
        line = pattern.search(html)
        assert line is not None, html
        if int(line.group(1)) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # Other tests' uploads wait in the same queue; this one is somewhere in line.
    assert int(line.group(1)) == 2  # the live worker's two slots
    assert re.match(r"(Next|\d+(st|nd|rd|th)) in queue, about \d+ (s|min|h)", line.group(2))
