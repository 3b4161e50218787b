"""Jinja filters: dates, time left, scores and sizes, formatted the same on every page."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import Environment

from grader.db import utcnow


def format_dt(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_left(deadline: datetime | None, now: datetime | None = None) -> str:
    if deadline is None:
        return "no deadline"
    seconds = int((deadline - (now or utcnow())).total_seconds())
    if seconds <= 0:
        return "closed"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h left"
    if hours:
        return f"{hours} h {minutes} min left"
    return f"{max(minutes, 1)} min left"


def format_score(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def format_bytes(value: int | None) -> str:
    # Binary units: the course's "20 MB" limit is 20 MiB (20 * 1024 * 1024 bytes).
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} B"
    if value < 1024**2:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 1024**2:.1f} MiB"


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def register_filters(env: Environment) -> None:
    env.filters.update(
        dt=format_dt, time_left=time_left, score=format_score, size=format_bytes, iso=iso
    )
