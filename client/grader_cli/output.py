"""Everything the CLI prints: JSON on stdout for scripts, rich tables for people.

Progress, spinners and error lines go to stderr so stdout stays clean for `--json`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from grader_cli.archive import format_bytes
from grader_cli.waiting import is_infra_error

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class Mode:
    """Set once from --json; read by the error handler, which runs outside any click context."""

    json = False


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


def info(message: str) -> None:
    if not Mode.json:
        stderr.print(message, markup=False)


def error_line(message: str) -> None:
    # One line, plain text (no markup: server details may contain brackets).
    click.echo(f"grader-cli: error: {message}", err=True)


def pick(obj: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first present key; tolerates small naming differences across server versions."""
    for key in keys:
        if key in obj and obj[key] is not None:
            return obj[key]
    return default


def exercise_slug(value: Any) -> str:
    if isinstance(value, dict):
        return str(pick(value, "slug", "id", default="?"))
    return str(value) if value is not None else "?"


def fmt_score(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    return "—"


def fmt_number(value: Any) -> str:
    """Thresholds and limits: 100 rather than 100.0000."""
    return f"{value:g}" if isinstance(value, int | float) else "—"


def fmt_time(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "—"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone()
    return parsed.strftime("%Y-%m-%d %H:%M")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _about(seconds: float) -> str:
    if seconds < 60:
        return f"about {max(int(round(seconds / 10.0)) * 10, 10)} s"
    if seconds < 3600:
        return f"about {int(round(seconds / 60.0))} min"
    return f"about {seconds / 3600.0:.1f} h".replace(".0 h", " h")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def queue_line(sub: dict[str, Any], *, now: datetime | None = None) -> str | None:
    """"4th in queue, about 1 min" from the server's `queue` (position and ETA), or None
    when the submission is not waiting or the server does not say."""
    queue = sub.get("queue")
    if not isinstance(queue, dict) or not isinstance(queue.get("position"), int):
        return None
    now = now or datetime.now(UTC)
    position = int(queue["position"])
    finish = _parse_time(queue.get("estimated_finish"))
    left = max((finish - now).total_seconds(), 0.0) if finish is not None else None
    if position == 0:
        return "being graded" + (f", done in {_about(left)}" if left is not None else "")
    where = "next in queue" if position == 1 else f"{_ordinal(position)} in queue"
    if queue.get("workers") == 0:
        return f"{where}; no grader is running for this queue right now"
    return where + (f", {_about(left)}" if left is not None else "")


def max_model_bytes(exercise: dict[str, Any]) -> int | None:
    value = pick(exercise, "max_model_bytes", "max_model_size", "max_bytes")
    return int(value) if isinstance(value, int | float) else None


def print_exercises(exercises: list[dict[str, Any]]) -> None:
    if not exercises:
        stdout.print("No exercises.", markup=False)
        return
    table = Table(show_edge=False, header_style="bold")
    # The title is left to --json: the table must fit an 80-column terminal.
    table.add_column("slug", no_wrap=True)
    table.add_column("deadline")
    table.add_column("threshold", min_width=9)
    for column in ("best", "passed", "left today", "size limit"):
        table.add_column(column)
    for ex in exercises:
        limit = max_model_bytes(ex)
        remaining = ex.get("remaining_today")
        table.add_row(
            str(pick(ex, "slug", default="?")),
            fmt_time(pick(ex, "deadline")),
            fmt_number(pick(ex, "threshold")),
            fmt_score(pick(ex, "my_best_score", "best_score")),
            "yes" if ex.get("my_passed") else "no",
            "no limit" if remaining is None else str(remaining),
            format_bytes(limit) if limit else "—",
        )
    stdout.print(table)


def submission_verdict(sub: dict[str, Any], *, threshold: float | None) -> None:
    status = str(sub.get("status", "?"))
    result = sub.get("result") if isinstance(sub.get("result"), dict) else {}
    assert isinstance(result, dict)
    threshold = pick(result, "threshold", default=threshold)
    rows: list[tuple[str, str]] = [
        ("submission", str(sub.get("id"))),
        ("exercise", exercise_slug(sub.get("exercise"))),
        ("status", status),
    ]
    score = pick(sub, "score", default=pick(result, "score"))
    infra = is_infra_error(status, sub.get("failure_reason"))
    # An ERROR was never graded: any score it carries is meaningless to the student.
    if status in ("PASSED", "FAILED"):
        rows.append(("score", fmt_score(score)))
    if threshold is not None:
        rows.append(("threshold", fmt_number(threshold)))
    verdict = {
        "PASSED": "passed",
        "FAILED": "failed",
        "ERROR": "not graded (server error)" if infra else "failed (the model could not be graded)",
    }
    if status in verdict:
        rows.append(("verdict", verdict[status]))
    if (waiting := queue_line(sub)) is not None:
        rows.append(("queue", waiting))
    reason = sub.get("failure_reason")
    message = sub.get("failure_message")
    if reason:
        rows.append(("failure", str(reason)))
    if message:
        rows.append(("message", str(message)))
    if infra:
        rows.append(("note", "our infrastructure failed; this does not count against your limit"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


def print_history(items: list[dict[str, Any]]) -> None:
    if not items:
        stdout.print("No submissions yet.", markup=False)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("id", "exercise", "submitted", "status", "score", "failure"):
        table.add_column(column)
    for sub in items:
        result = sub.get("result") if isinstance(sub.get("result"), dict) else {}
        assert isinstance(result, dict)
        table.add_row(
            str(sub.get("id")),
            exercise_slug(sub.get("exercise")),
            fmt_time(sub.get("created_at")),
            str(sub.get("status", "?")),
            fmt_score(pick(sub, "score", default=pick(result, "score"))),
            str(sub.get("failure_reason") or ""),
        )
    stdout.print(table)


def print_leaderboard(board: Any) -> None:
    rows = board.get("entries") if isinstance(board, dict) else board
    if isinstance(board, dict) and board.get("threshold") is not None:
        stdout.print(
            f"{board.get('exercise', '')}  (threshold {fmt_number(board['threshold'])})",
            markup=False,
        )
    if not isinstance(rows, list) or not rows:
        stdout.print("No graded submissions yet.", markup=False)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("rank", "student", "best score", "passed", "attempts"):
        table.add_column(column)
    for row in rows:
        if not isinstance(row, dict):
            continue
        name = pick(row, "name", "display_name", "username", default="—")
        you = " (you)" if row.get("is_me") else ""
        passed = row.get("passed")
        table.add_row(
            str(pick(row, "rank", default="—")),
            f"{name}{you}",
            fmt_score(pick(row, "best_score", "score")),
            "yes" if passed else ("no" if passed is not None else "—"),
            str(pick(row, "attempts", default="—")),
        )
    stdout.print(table)
