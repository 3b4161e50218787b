"""Following a submission until it is graded: polling with backoff, tolerant of blips."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from grader_cli.api import ApiClient
from grader_cli.errors import CliError, ExitCode

TERMINAL = frozenset({"PASSED", "FAILED", "ERROR"})
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
BACKOFF = 1.5
# Consecutive network/server failures tolerated while waiting (a server restart, a blip).
MAX_TRANSIENT_FAILURES = 6


INFRA_ERROR = "INFRA_ERROR"


def is_infra_error(status: str, failure_reason: object) -> bool:
    """ERROR is ours only when the server says so; a named model failure is a graded fail."""
    return status == "ERROR" and failure_reason in (None, "", INFRA_ERROR)


def exit_code_for(status: str, failure_reason: object = None) -> ExitCode:
    if status == "FAILED":
        return ExitCode.GRADED_FAILED
    if status == "ERROR":
        if is_infra_error(status, failure_reason):
            return ExitCode.SERVER
        return ExitCode.GRADED_FAILED
    return ExitCode.OK


def wait_until_done(
    client: ApiClient,
    submission_id: str,
    *,
    on_update: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    delay = FIRST_DELAY_S
    failures = 0
    while True:
        try:
            submission = client.submission(submission_id)
        except CliError as exc:
            # Auth and "not yours" errors will not fix themselves; everything else might.
            if exc.code != ExitCode.SERVER:
                raise
            failures += 1
            if failures > MAX_TRANSIENT_FAILURES:
                raise
            sleep(max(delay, MAX_DELAY_S))
            continue
        failures = 0
        on_update(submission)
        if str(submission.get("status")) in TERMINAL:
            return submission
        sleep(delay)
        delay = min(delay * BACKOFF, MAX_DELAY_S)
