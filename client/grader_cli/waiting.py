"""Following a submission until it is graded: its event stream, else conditional polling with
backoff; tolerant of blips."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from grader_cli.api import ApiClient, StreamUnavailable
from grader_cli.errors import CliError, ExitCode

TERMINAL = frozenset({"PASSED", "FAILED", "ERROR"})
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
MAX_QUEUED_DELAY_S = 15.0
BACKOFF = 1.5
# Consecutive network/server failures tolerated while waiting (a server restart, a blip).
MAX_TRANSIENT_FAILURES = 6
# Streams the server closed before the end (their lifetime) that are opened again.
MAX_RECONNECTS = 20


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
    """Follow a submission until it ends, calling `on_update` with each new state: through
    the server's event stream (each change arrives at once, the pre-flight verdict first),
    or, where there is none, by polling with If-None-Match and backoff."""
    reconnects = 0
    while reconnects <= MAX_RECONNECTS:
        try:
            for submission in client.submission_events(submission_id):
                on_update(submission)
                if str(submission.get("status")) in TERMINAL:
                    return submission
        except StreamUnavailable:
            break
        except CliError as exc:
            if exc.code != ExitCode.SERVER:
                raise
            break  # the stream broke: polling rides out a restart
        # The server closed the stream before the end (its streams have a lifetime).
        reconnects += 1
    return poll_until_done(client, submission_id, on_update=on_update, sleep=sleep)


def poll_until_done(
    client: ApiClient,
    submission_id: str,
    *,
    on_update: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Conditional polling: an unchanged submission costs the server a 304. The wait grows
    to MAX_DELAY_S, or MAX_QUEUED_DELAY_S while queued (nothing happens to it but its place),
    and starts over after each change."""
    delay = FIRST_DELAY_S
    failures = 0
    etag: str | None = None
    status = "QUEUED"
    while True:
        try:
            submission, etag = client.submission_if_changed(submission_id, etag)
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
        if submission is not None:
            on_update(submission)
            status = str(submission.get("status"))
            if status in TERMINAL:
                return submission
            delay = FIRST_DELAY_S
        sleep(delay)
        cap = MAX_QUEUED_DELAY_S if status == "QUEUED" else MAX_DELAY_S
        delay = min(delay * BACKOFF, cap)


def preflight_note(submission: dict[str, Any]) -> str | None:
    """The pre-flight verdict in a line, once it is known (None while pending or absent)."""
    preflight = submission.get("preflight")
    if not isinstance(preflight, dict):
        return None
    status = str(preflight.get("status") or "")
    if status in ("", "PENDING", "SKIPPED"):
        return None
    if status == "PASSED":
        note = "pre-flight: passed (the model loads and gives finite output of the right shape)"
        if preflight.get("batch_one_only"):
            note += "; it runs on one image at a time only, so its grading takes longer"
        return note
    message = preflight.get("message")
    return f"pre-flight: {status}" + (f": {message}" if message else "")
