"""Jinja filters: dates, time left, scores and sizes, formatted the same on every page; and
the neutralising of invisible characters in everything a page prints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from grader.db import utcnow
from grader.ops.queueinfo import describe as describe_queue


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


# Characters that change how the text around them is laid out or are not text at all: the
# bidirectional embeddings, overrides, isolates and marks (U+202E turns "gnp.pt" into "tp.png"
# on screen), and C0/C1 controls other than tab and newline. Escaping for HTML keeps them,
# so a filename or a name could show as something it is not.
_INVISIBLE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(value: str) -> str:
    """`value` with every layout-changing or control character written as <U+XXXX>."""
    return _INVISIBLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", value)


def _finalize(value: Any) -> Any:
    # Runs on every {{ expression }} before it is escaped. Markup is HTML the server built
    # itself (charts, safe-marked fragments) and is left alone.
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def register_filters(env: Environment) -> None:
    env.filters.update(
        dt=format_dt,
        time_left=time_left,
        score=format_score,
        size=format_bytes,
        iso=iso,
        visible=visible,
        queue_line=describe_queue,
    )
    # Everything a page prints goes through it, so no template can forget it: user names,
    # display names, filenames, titles, error messages.
    env.finalize = _finalize
