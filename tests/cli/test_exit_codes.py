"""How HTTP answers and grading states map to exit codes and one-line messages."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from grader_cli.api import format_duration, http_error, retry_after_seconds, retry_hint
from grader_cli.errors import ExitCode
from grader_cli.waiting import exit_code_for

SERVER = "http://grader.test"


def response(
    status: int, detail: object = "nope", headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("GET", f"{SERVER}/api/v1/x")
    return httpx.Response(status, json={"detail": detail}, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "token_sent", "code"),
    [
        (401, True, ExitCode.AUTH),
        (401, False, ExitCode.AUTH),
        (403, False, ExitCode.AUTH),
        (403, True, ExitCode.USAGE),
        (404, True, ExitCode.USAGE),
        (409, True, ExitCode.USAGE),
        (413, True, ExitCode.USAGE),
        (422, True, ExitCode.USAGE),
        (429, True, ExitCode.SERVER),
        (500, True, ExitCode.SERVER),
        (502, True, ExitCode.SERVER),
    ],
)
def test_http_status_to_exit_code(status: int, token_sent: bool, code: ExitCode) -> None:
    error = http_error(response(status), server=SERVER, token_sent=token_sent)
    assert error.code == code
    assert "\n" not in error.message


def test_401_says_how_to_log_in() -> None:
    error = http_error(response(401, "token expired"), server=SERVER, token_sent=True)
    assert "token expired" in error.message
    assert "log in with grader-cli login" in error.message


def test_404_uses_the_callers_wording() -> None:
    error = http_error(
        response(404), server=SERVER, token_sent=True, not_found="unknown exercise 'nope'"
    )
    assert error.message == "unknown exercise 'nope'"


def test_422_validation_list_is_flattened() -> None:
    detail = [{"loc": ["body", "file"], "msg": "field required", "type": "missing"}]
    error = http_error(response(422, detail), server=SERVER, token_sent=True)
    assert "file: field required" in error.message


def test_429_says_when_to_retry() -> None:
    error = http_error(
        response(429, "daily limit of 5 reached", {"Retry-After": "3725"}),
        server=SERVER,
        token_sent=True,
    )
    assert "daily limit of 5 reached" in error.message
    assert "retry in 1 h 02 min" in error.message


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    http_date = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after_seconds("120", now=now) == 120
    assert retry_after_seconds(http_date, now=now) == pytest.approx(90, abs=1)
    assert retry_after_seconds("soon", now=now) is None
    assert retry_hint(None) == "retry later"
    assert format_duration(42) == "42 s"
    assert format_duration(61) == "1 min 01 s"


def test_non_json_error_body_still_gives_one_line() -> None:
    request = httpx.Request("GET", f"{SERVER}/api/v1/x")
    error = http_error(
        httpx.Response(502, text="<html>\nBad gateway\n</html>", request=request),
        server=SERVER,
        token_sent=True,
    )
    assert error.code == ExitCode.SERVER
    assert "\n" not in error.message and "502" in error.message


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        ("PASSED", None, ExitCode.OK),
        ("FAILED", None, ExitCode.GRADED_FAILED),
        ("ERROR", "INFRA_ERROR", ExitCode.SERVER),
        ("ERROR", None, ExitCode.SERVER),
        # A named model failure is the student's verdict, not our outage.
        ("ERROR", "LOAD_ERROR", ExitCode.GRADED_FAILED),
        ("ERROR", "TIMEOUT", ExitCode.GRADED_FAILED),
        ("QUEUED", None, ExitCode.OK),
        ("RUNNING", None, ExitCode.OK),
    ],
)
def test_grading_status_to_exit_code(status: str, reason: str | None, code: ExitCode) -> None:
    assert exit_code_for(status, reason) == code
