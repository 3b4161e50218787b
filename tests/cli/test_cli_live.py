"""The CLI against a live embedded server (`grader serve`: real API, Redis, worker, sandbox).

Runs the installed console script as a student would; the API is queried directly with httpx
only to cross-check what the CLI printed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer
from tests.support.models import (
    DUMMY_MODEL,
    REFERENCE_MODEL,
    write_linear_model,
    write_slow_model,
)

from .helpers import CliRunner, fake_torchscript_zip

pytestmark = pytest.mark.slow

REFERENCE = REFERENCE_MODEL
DUMMY = DUMMY_MODEL
EXERCISE = "facial-keypoints"
PASSED, FAILED, USAGE, AUTH, INTERRUPTED = 0, 1, 2, 4, 130


@dataclass
class Student:
    server: str
    username: str
    password: str
    token: str

    def api(self, path: str) -> Any:
        response = httpx.get(
            f"{self.server}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def student(live_server: LiveServer) -> Student:
    username, password = live_server.create_student(password="correct horse battery")
    return Student(live_server.url, username, password, live_server.token(username, password))


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Any honest TorchScript file, for tests about the CLI rather than the verdict."""
    return write_linear_model(tmp_path_factory.mktemp("models") / "linear.pt")


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Still grading when the CLI is interrupted."""
    return write_slow_model(tmp_path_factory.mktemp("models") / "slow.pt")


@pytest.fixture
def logged_in(cli: CliRunner, student: Student) -> CliRunner:
    result = cli(
        "login",
        "--server",
        student.server,
        "-u",
        student.username,
        "--password-stdin",
        input=student.password + "\n",
    )
    assert result.code == 0, result
    return cli


def test_login_prompts_and_stores_a_private_token(cli: CliRunner, student: Student) -> None:
    # No terminal in the subprocess: the hidden prompt reads the password from stdin.
    result = cli(
        "login", "--server", student.server, input=f"{student.username}\n{student.password}\n"
    )

    assert result.code == 0, result
    assert student.password not in result.stdout + result.stderr
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    stored = json.loads(cli.config_file.read_text())
    assert stored["server"] == student.server and stored["username"] == student.username
    listed = cli("exercises", "--json")
    assert listed.code == 0, listed
    assert EXERCISE in [ex["slug"] for ex in listed.json()]


def test_login_with_a_token(cli: CliRunner, student: Student) -> None:
    result = cli("login", "--server", student.server, "--token", student.token, "--json")

    assert result.code == 0, result
    assert result.json()["username"] == student.username
    assert cli("exercises").code == 0


def test_bad_password_exits_4(cli: CliRunner, student: Student) -> None:
    result = cli(
        "login",
        "--server",
        student.server,
        "-u",
        student.username,
        "--password-stdin",
        input="not the password\n",
    )

    assert result.code == AUTH
    assert "wrong username or password" in result.stderr
    assert not cli.config_file.exists()


def test_bad_token_exits_4(cli: CliRunner, student: Student) -> None:
    login = cli("login", "--server", student.server, "--token", "garbage")
    listing = cli("exercises", env={"GRADER_SERVER": student.server, "GRADER_TOKEN": "garbage"})

    assert login.code == AUTH and "rejected the token" in login.stderr
    assert listing.code == AUTH
    assert "log in with grader-cli login" in listing.stderr


def test_unauthenticated_exits_4(cli: CliRunner, student: Student, linear_model: Path) -> None:
    result = cli("submit", str(linear_model), "--exercise", EXERCISE, "--server", student.server)

    assert result.code == AUTH
    assert "log in with grader-cli login" in result.stderr


def test_reference_model_passes_with_the_apis_score(logged_in: CliRunner, student: Student) -> None:
    result = logged_in(
        "submit", str(REFERENCE), "--exercise", EXERCISE, "--wait", "--json", timeout=300
    )

    assert result.code == PASSED, result
    verdict = result.json()
    assert verdict["status"] == "PASSED" and verdict["passed"] is True
    api = student.api(f"/submissions/{verdict['id']}")
    assert api["status"] == "PASSED"
    assert verdict["score"] == api["score"]
    assert api["score"] >= api["result"]["threshold"]

    # The human view of the same submission: score, threshold and verdict, exit 0.
    shown = logged_in("status", str(verdict["id"]))
    assert shown.code == PASSED
    assert "PASSED" in shown.stdout and "passed" in shown.stdout
    assert f"{api['score']:.4f}" in shown.stdout
    assert f"threshold   {api['result']['threshold']:g}" in shown.stdout


def test_dummy_model_fails_with_exit_1(logged_in: CliRunner, student: Student) -> None:
    result = logged_in("submit", str(DUMMY), "--exercise", EXERCISE, "--wait", timeout=300)

    assert result.code == FAILED, result
    assert "FAILED" in result.stdout and "failed" in result.stdout
    latest = student.api(f"/submissions?exercise={EXERCISE}&limit=1")["items"][0]
    assert latest["status"] == "FAILED"
    assert f"{latest['score']:.4f}" in result.stdout


def test_random_file_is_refused_before_upload(
    logged_in: CliRunner, student: Student, tmp_path: Path
) -> None:
    before = student.api("/submissions?limit=1")["total"]
    model = tmp_path / "model.pt"
    model.write_bytes(os.urandom(100_000))

    result = logged_in("submit", str(model), "--exercise", EXERCISE)

    assert result.code == USAGE
    assert "not a TorchScript archive" in result.stderr
    assert student.api("/submissions?limit=1")["total"] == before


def test_oversized_model_is_refused_with_the_exercises_limit(
    logged_in: CliRunner, student: Student, tmp_path: Path
) -> None:
    limit = student.api(f"/exercises/{EXERCISE}")["max_model_bytes"]
    model = fake_torchscript_zip(tmp_path / "big.pt", payload=b"\0" * (limit + 1))
    before = student.api("/submissions?limit=1")["total"]

    result = logged_in("submit", str(model), "--exercise", EXERCISE)

    assert result.code == USAGE
    assert "over the limit" in result.stderr and f"{limit / 1024 / 1024:.1f} MiB" in result.stderr
    assert student.api("/submissions?limit=1")["total"] == before


def test_unknown_exercise_and_submission_exit_2(logged_in: CliRunner, linear_model: Path) -> None:
    submit = logged_in("submit", str(linear_model), "--exercise", "no-such-exercise")
    status = logged_in("status", "999999999")
    board = logged_in("leaderboard", "no-such-exercise")

    assert submit.code == USAGE and "unknown exercise 'no-such-exercise'" in submit.stderr
    assert status.code == USAGE and "999999999" in status.stderr
    assert board.code == USAGE


def test_exercise_is_chosen_when_there_is_only_one(
    logged_in: CliRunner, student: Student, linear_model: Path
) -> None:
    slugs = [ex["slug"] for ex in student.api("/exercises")]

    result = logged_in("submit", str(linear_model), "--json")

    if len(slugs) == 1:
        assert result.code == 0, result
        assert result.json()["exercise"] == slugs[0]
    else:
        assert result.code == USAGE
        assert "--exercise" in result.stderr and all(s in result.stderr for s in slugs)


def test_ctrl_c_while_waiting_prints_the_id(
    logged_in: CliRunner, student: Student, slow_model: Path
) -> None:
    proc = logged_in.popen("submit", str(slow_model), "--exercise", EXERCISE, "--wait")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "accepted" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == INTERRUPTED, (out, err)
    assert "Traceback" not in err
    latest = student.api("/submissions?limit=1")["items"][0]
    assert f"grader-cli status {latest['id']} --wait" in err
    # Only the waiting stopped: the server still grades it.
    assert latest["status"] in ("QUEUED", "RUNNING", "FAILED", "PASSED")


def test_history_and_leaderboard(logged_in: CliRunner, student: Student) -> None:
    history = logged_in("history", "--exercise", EXERCISE, "--json")
    board = logged_in("leaderboard", EXERCISE, "--json")
    human = logged_in("history")

    assert history.code == 0 and board.code == 0 and human.code == 0
    api_items = student.api(f"/submissions?exercise={EXERCISE}")["items"]
    if not api_items:
        logged_in("submit", str(DUMMY), "--exercise", EXERCISE, "--wait", timeout=300)
        return test_history_and_leaderboard(logged_in, student)
    assert [s["id"] for s in history.json()] == [s["id"] for s in api_items]
    assert str(api_items[0]["id"]) in human.stdout
    graded = [s for s in api_items if s["status"] in ("PASSED", "FAILED")]
    mine = [e for e in board.json()["entries"] if e["is_me"]]
    if graded:
        assert len(mine) == 1
        assert mine[0]["passed"] == any(s["status"] == "PASSED" for s in graded)


def test_a_classification_exercise_grades_through_the_cli_unchanged(
    logged_in: CliRunner, student: Student, live_server: LiveServer
) -> None:
    slug = "shapes-cli"
    with live_server.admin_client() as admin:
        created = admin.post(
            "/api/v1/exercises",
            json={"slug": slug, "title": "Shapes", "kind": "classification",
                  "use_demo_test_set": True},
        )
        assert created.status_code == 201, created.text
    reference = Path(__file__).resolve().parents[2] / "examples/image_classification"

    result = logged_in(
        "submit", str(reference / "reference_model.pt"), "--exercise", slug, "--wait",
        "--json", timeout=300,
    )

    assert result.code == PASSED, result
    # Read as the instructor: this module's many logins may have retired the fixture's token
    # (each user keeps a bounded number of live tokens).
    with live_server.admin_client() as admin:
        api = admin.get(f"/api/v1/submissions/{result.json()['id']}").json()
    assert api["exercise"] == slug and api["result"]["breakdown"]["unit"] == "%"
    assert result.json()["score"] == api["score"] >= 80.0
    shown = logged_in("status", str(api["id"]))
    assert shown.code == PASSED and f"{api['score']:.4f}" in shown.stdout


def test_the_private_score_stays_out_of_the_cli_until_the_reveal(
    logged_in: CliRunner, live_server: LiveServer
) -> None:
    slug = "split-cli"
    with live_server.admin_client() as admin:
        created = admin.post("/api/v1/exercises", json={
            "slug": slug, "title": "Split", "use_demo_test_set": True, "daily_limit": None})
        assert created.status_code == 201, created.text
        split = admin.put(f"/api/v1/exercises/{slug}/split",
                          json={"private_fraction": 0.4, "pass_rule": "private"})
        assert split.status_code == 200, split.text

    submitted = logged_in("submit", str(DUMMY), "--exercise", slug, "--wait", "--json",
                          timeout=300)
    sid = submitted.json()["id"]
    with live_server.admin_client() as admin:
        scores = admin.get(f"/api/v1/submissions/{sid}/scores").json()
    private, public = scores["private_score"], scores["public_score"]
    assert private is not None and public is not None and private != public
    outputs = [
        submitted,
        logged_in("status", str(sid)), logged_in("status", str(sid), "--json"),
        logged_in("history", "--exercise", slug),
        logged_in("history", "--exercise", slug, "--json"),
        logged_in("leaderboard", slug), logged_in("leaderboard", slug, "--json"),
        logged_in("exercises"), logged_in("exercises", "--json"),
    ]
    for result in outputs:
        text = result.stdout + result.stderr
        assert f"{private:.4f}" not in text and repr(private) not in text, result
    # Before the reveal the private part decides nothing a student sees: no verdict yet.
    assert f"{public:.4f}" in outputs[1].stdout

    with live_server.admin_client() as admin:
        assert admin.post(f"/api/v1/exercises/{slug}/split/reveal").status_code == 200
    assert logged_in("status", str(sid), "--json").json()["score"] == scores["score"]
