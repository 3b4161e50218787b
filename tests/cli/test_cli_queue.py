"""`grader-cli status` and `--wait` say where a submission waits ("3rd in queue, about 20 s"),
against a live embedded server whose one worker is busy with slow gradings."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import LiveServer
from tests.support.models import write_slow_model, write_small_test_set

from .helpers import CliRunner

pytestmark = pytest.mark.slow


def _exercise(server: LiveServer, tmp_path: Path) -> str:
    """Graded on 64 faces, so that three slow models take seconds, not minutes."""
    slug = f"cli-q-{uuid.uuid4().hex[:8]}"
    csv_path = write_small_test_set(tmp_path / "small.csv")
    with server.admin_client() as admin:
        made = admin.post("/api/v1/exercises", json={"slug": slug, "title": slug})
        assert made.status_code == 201, made.text
        with csv_path.open("rb") as fh:
            put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
        assert put.status_code == 200, put.text
    return slug


def test_status_and_wait_print_the_place_in_the_queue(
    cli: CliRunner, live_server: LiveServer, tmp_path: Path
) -> None:
    slow = write_slow_model(tmp_path / "slow.pt", repeats=150)
    exercise = _exercise(live_server, tmp_path)
    username, password = live_server.create_student()
    token = live_server.token(username, password)
    assert cli("login", "--server", live_server.url, "--token", token).code == 0
    ids = []
    with live_server.client(token) as api:
        for _ in range(3):
            with slow.open("rb") as fh:
                sent = api.post(
                    f"/api/v1/exercises/{exercise}/submissions", files={"file": ("s.pt", fh)}
                )
            assert sent.status_code == 202, sent.text
            ids.append(sent.json()["id"])
        # The one worker grades one at a time: the last of three is still waiting. Its first
        # heartbeat may not be in yet on a busy machine (the worker starts beside the API).
        last = str(ids[-1])
        deadline = time.monotonic() + 120
        while (api.get(f"/api/v1/submissions/{last}").json().get("queue") or {}).get(
            "workers", 1
        ) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        shown = cli("status", last)
        body = api.get(f"/api/v1/submissions/{last}").json()
    assert shown.code == 0, shown
    line = re.search(r"^queue\s+(.*)$", shown.stdout, re.MULTILINE)
    assert line is not None, shown.stdout
    assert re.match(r"(next|\d+(st|nd|rd|th)) in queue, about \d+ (s|min|h)$", line.group(1))
    assert body["status"] == "QUEUED" or body["queue"]["position"] <= 2

    as_json = cli("status", last, "--json").json()
    assert as_json["queue"]["workers"] >= 1 and "estimated_finish" in as_json["queue"]

    waited = cli("status", last, "--wait", timeout=600)
    assert waited.code == 1, waited  # the slow model fails the threshold
    # The progress lines on stderr named its place while it waited.
    assert re.search(r"QUEUED\s+\((next|\d+(st|nd|rd|th)) in queue", waited.stderr), waited.stderr
    for sid in ids:
        live_server.wait_for_submission(httpx.Client(
            base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ), sid, timeout=300)  # fmt: skip
