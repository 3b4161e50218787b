"""`grader serve` as a newcomer runs it: Ctrl-C stops every process it started, and a restart
on the same data directory keeps accounts, submissions and scores."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import start_live_server
from tests.support.models import write_linear_model

pytestmark = pytest.mark.slow


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_live_server(data_dir)
    try:
        name, password = server.create_student()
        model = write_linear_model(tmp_path / "linear.pt")
        with server.client(server.token(name, password)) as client, model.open("rb") as fh:
            created = client.post(
                "/api/v1/exercises/facial-keypoints/submissions", files={"file": ("m.pt", fh)}
            )
            assert created.status_code == 202, created.text
            graded = server.wait_for_submission(client, created.json()["id"])
        assert graded["status"] == "FAILED" and graded["score"] > 0
        assert server.proc is not None
        started = _descendants(server.proc.pid)
        assert len(started) >= 3, started  # at least uvicorn's server, the worker and Redis
        # Grading yields the cores to the API: the worker, its pre-flight process and the
        # sandboxes they fork all run 10 steps below it.
        ours = _nice(server.proc.pid)
        grading = {p for p in started if " worker " in _cmdline(p) or "zygote" in _cmdline(p)}
        assert grading, started
        assert {_nice(p) for p in grading} == {min(19, ours + 10)}
    finally:
        server.stop()

    assert server.proc is not None and server.proc.returncode == 0, server.describe()
    deadline = time.monotonic() + 20
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started), f"still running after Ctrl-C: {_alive(started)}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=2)

    again = start_live_server(data_dir)
    try:
        with again.client(again.token(name, password)) as client:
            kept = client.get(f"/api/v1/submissions/{graded['id']}").json()
        assert kept["status"] == "FAILED"
        assert kept["score"] == graded["score"]
        assert kept["result"]["model_sha256"] == graded["result"]["model_sha256"]
    finally:
        again.stop()
