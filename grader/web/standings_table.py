"""The rows of the standings tables (the instructor's and the leaderboard page), built in Python.

A class of 1,000 students is 1,000 rows of up to 15 fields; through Jinja (an escape and the
invisible-character filter per field) that alone took most of the page's time. Here each row
is one f-string, and only the text that comes from people is escaped and neutralised, exactly
as the template's autoescape and finalize would (formatting.visible, markupsafe.escape).
"""

from __future__ import annotations

from markupsafe import Markup, escape

from grader.leaderboard.service import LeaderboardRow, Standing
from grader.web.formatting import format_dt, format_score, iso, visible


def _text(value: str) -> str:
    return str(escape(visible(value)))


def standings_rows(rows: list[Standing], *, slug: str) -> Markup:
    slug_text = _text(slug)
    out = []
    for r in rows:
        username = _text(r.username)
        name = _text(r.display_name or r.username)
        also = (
            f' <span class="muted">{username}</span>'
            if r.display_name and r.display_name != r.username
            else ""
        )
        passed = (
            '<span class="status s-passed">passed</span>'
            if r.passed
            else '<span class="status s-failed">no</span>'
        )
        late = ' <span class="tag">late</span>' if r.best_late else ""
        sort_score = r.best_score if r.best_score is not None else -1
        out.append(
            "<tr>"
            f'<td class="num" data-value="{r.rank if r.rank else 999999}">{r.rank or "—"}</td>'
            f'<td><a href="/instructor/exercises/{slug_text}/students/{username}">{name}</a>'
            f"{also}</td>"
            f"<td>{_text(r.student_id or '')}</td>"
            f'<td class="num" data-value="{sort_score}">{format_score(r.best_score)}</td>'
            f"<td>{passed}{late}</td>"
            f'<td class="num" data-value="{r.attempts}">{r.attempts}</td>'
            f'<td data-value="{iso(r.last_submitted_at)}">{format_dt(r.last_submitted_at)}</td>'
            "</tr>\n"
        )
    return Markup("".join(out))


def leaderboard_rows(rows: list[LeaderboardRow]) -> Markup:
    """The rows of the leaderboard page (what a student sees: ranks, names or "Student n")."""
    out = []
    for r in rows:
        me = ' class="me"' if r.is_me else ""
        you = ' <span class="tag">you</span>' if r.is_me else ""
        out.append(
            f"<tr{me}>"
            f'<td class="num">{r.rank or "—"}</td><td>{_text(r.name)}{you}</td>'
            f'<td class="num">{format_score(r.best_score)}</td>'
            f'<td>{"yes" if r.passed else "no"}</td><td class="num">{r.attempts}</td>'
            "</tr>\n"
        )
    return Markup("".join(out))
