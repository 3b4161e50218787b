"""Leaderboard and listings at scale: p50/p95 of the pages and endpoints a class hits at the
deadline, with 1,000 students across 3 exercises and 10k, then 100k submissions.

    python benchmarks/bench_leaderboard.py                        # PostgreSQL (temporary db)
    python benchmarks/bench_leaderboard.py --sqlite
    python benchmarks/bench_leaderboard.py --sizes 10000 100000 --repeat 100
    python benchmarks/bench_leaderboard.py --sizes 100000 --database-url URL   # reuse its data

It seeds with benchmarks/seed_submissions.py (standings from the service's recompute), starts
`grader serve --no-worker` on that database, and times sequential HTTP requests (after a
warm-up) as an instructor and as a student: the leaderboard API and pages, the grades CSV, a
student's history, everyone's submissions (instructor), the status endpoint and the
submission page (which loads the preview). Besides p50/p95 of the wall clock it prints the CPU
time per request of the API process and its PostgreSQL backends: on a shared machine the wall
clock includes waiting for a core. Side by side, in-process: the standings read from
the standings table vs computed from the whole history (the way it was done before), and a
full recompute (what a whole-exercise rescore adds).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.seed_submissions import STUDENT_PASSWORD, seed  # noqa: E402
from grader.auth.models import User  # noqa: E402
from grader.config import Settings  # noqa: E402
from grader.db import get_engine, session_scope  # noqa: E402
from grader.exercises.models import Exercise  # noqa: E402
from grader.leaderboard.service import _counted, recompute_standings, standings  # noqa: E402
from grader.submissions.models import Result, Submission  # noqa: E402
from tests.support.live_server import ADMIN_PASSWORD, LiveServer, start_live_server  # noqa: E402
from tests.support.services import temporary_postgres_database  # noqa: E402

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SLUG = "lb-1"
STUDENT = "lb-0007"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


Timing = tuple[float, float, float | None]


def timed(
    call: Callable[[], object], repeat: int, warmup: int = 3,
    cpu: Callable[[], float] | None = None,
) -> Timing:
    """(p50 ms, p95 ms, CPU ms per call of the processes `cpu` sums, or None)."""
    for _ in range(warmup):
        call()
    samples = []
    cpu_before = cpu() if cpu else 0.0
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    per_call = (cpu() - cpu_before) * 1000 / repeat if cpu else None
    return statistics.median(samples), pct(samples, 95), per_call


_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def server_cpu(server: LiveServer, url: str) -> Callable[[], float]:
    """CPU seconds used so far by the API process and (PostgreSQL) the database's backends.
    On a shared machine the wall-clock figures include waiting for a core; CPU per request
    is what a request costs on an idle one (plus I/O waits, small with a warm cache)."""
    assert server.proc is not None
    api_pid = server.proc.pid
    if url.startswith("sqlite"):
        return lambda: _process_cpu_s(api_pid)
    engine = get_engine(url)

    def total() -> float:
        with engine.connect() as conn:
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            return _process_cpu_s(api_pid) + sum(_process_cpu_s(p) for p in pids)

    return total


def _browser(server: LiveServer, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)
    page = client.get("/login")
    match = CSRF_RE.search(page.text)
    assert match, "no CSRF field on the login page"
    done = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": match[1]}
    )
    assert done.status_code == 303, done.text
    return client


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, (response.request.url, response.status_code)
    return response


def history_standings(session: Session, exercise: Exercise) -> int:
    """The best row per student computed from the whole history: what every leaderboard view
    did before the standings table (its queries; returns the number of students)."""
    attempts = dict(
        session.execute(
            select(Submission.user_id, func.count(Submission.id))
            .where(Submission.exercise_id == exercise.id, _counted())
            .group_by(Submission.user_id)
        ).all()
    )
    rows = session.execute(
        select(
            Submission.user_id, Result.score, Result.passed, Submission.created_at, Submission.late
        )
        .join(Result, Result.submission_id == Submission.id)
        .where(Submission.exercise_id == exercise.id, Result.score.is_not(None))
        .order_by(Submission.user_id, Result.score.desc(), Submission.created_at)
    ).all()
    best: dict[int, tuple[float | None, bool, datetime | None, bool]] = {}
    for user_id, score, passed, created_at, late in rows:
        best.setdefault(user_id, (score, passed, created_at, late))
    return len(attempts)


def in_process(settings: Settings, repeat: int) -> dict[str, Timing]:
    out = {}
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        found = session.scalar(select(Exercise).where(Exercise.slug == SLUG))
        assert found is not None
        exercise: Exercise = found
        out["standings() from the table"] = timed(
            lambda: standings(session, exercise=exercise), repeat
        )
        out["best rows from the history"] = timed(
            lambda: history_standings(session, exercise), max(repeat // 5, 5), warmup=1
        )
    exercise_id = exercise.id
    with session_scope(settings.sqlalchemy_url) as session:
        student = session.scalar(select(User.id).where(User.username == STUDENT))
        out["recompute_standings(one student)"] = timed(
            lambda: recompute_standings(session, exercise_id, student), repeat
        )
        out["recompute_standings(whole exercise)"] = timed(
            lambda: recompute_standings(session, exercise_id), 5, warmup=1
        )
    return out


def over_http(server: LiveServer, url: str, repeat: int) -> dict[str, Timing]:
    admin = server.admin_client()
    student = server.client(server.token(STUDENT, STUDENT_PASSWORD))
    admin_web = _browser(server, "admin", ADMIN_PASSWORD)
    student_web = _browser(server, STUDENT, STUDENT_PASSWORD)
    latest = _ok(student.get("/api/v1/submissions", params={"limit": 1})).json()["items"][0]["id"]
    graded = _ok(
        student.get("/api/v1/submissions", params={"limit": 20, "exercise": SLUG})
    ).json()["items"]
    shown = next(s["id"] for s in graded if s["status"] in ("PASSED", "FAILED"))
    cases: dict[str, tuple[httpx.Client, str, dict[str, object]]] = {
        "API leaderboard (instructor)": (admin, f"/api/v1/exercises/{SLUG}/leaderboard", {}),
        "API leaderboard (student)": (student, f"/api/v1/exercises/{SLUG}/leaderboard", {}),
        "page instructor exercise (standings)": (admin_web, f"/instructor/exercises/{SLUG}", {}),
        "page leaderboard (student)": (student_web, f"/exercises/{SLUG}/leaderboard", {}),
        "grades CSV (API)": (admin, f"/api/v1/exercises/{SLUG}/grades.csv", {}),
        "API student history (20)": (student, "/api/v1/submissions", {"limit": 20}),
        "page student history (50)": (student_web, "/submissions", {}),
        "API all users' submissions (20)": (
            admin, "/api/v1/submissions", {"limit": 20, "all_users": "true"}),
        "API all users' submissions, one exercise": (
            admin, "/api/v1/submissions", {"limit": 20, "all_users": "true", "exercise": SLUG}),
        "API status of a submission": (student, f"/api/v1/submissions/{latest}", {}),
        "page submission with preview": (student_web, f"/submissions/{shown}", {}),
    }
    cpu = server_cpu(server, url)
    out = {}
    for name, (client, path, params) in cases.items():

        def call(c: httpx.Client = client, p: str = path, q: dict = params) -> object:
            return _ok(c.get(p, params=q))

        out[name] = timed(call, repeat, cpu=cpu)
    preview = _ok(student_web.get(f"/submissions/{shown}")).text
    assert "<circle" in preview or "preview" in preview.lower()
    return out


def _submissions(settings: Settings) -> int:
    try:
        with session_scope(settings.sqlalchemy_url, write=False) as session:
            return int(session.scalar(select(func.count(Submission.id))) or 0)
    except Exception:  # no schema yet
        return 0


@contextmanager
def database(sqlite: bool, data_dir: Path, url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    if sqlite:
        yield f"sqlite:///{data_dir / 'grader.sqlite3'}"
        return
    with temporary_postgres_database() as url:
        try:
            yield url
        finally:
            get_engine(url).dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument(
        "--database-url", default=None,
        help="keep the data in this database (it is topped up to each size, never emptied)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(
        args.sqlite, Path(tmp), args.database_url
    ) as url:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, database_url=url, admin_password=ADMIN_PASSWORD)
        server: LiveServer | None = None
        try:
            for size in sorted(args.sizes):
                done = seed(settings, max(size - _submissions(settings), 0), rng_seed=size)
                print(f"\n== {size:,} submissions ({get_engine(url).dialect.name};"
                      f" seeded in {done.seconds:.1f} s) ==")
                if server is None:
                    server = start_live_server(
                        data_dir,
                        env={"GRADER_DATABASE_URL": url, "GRADER_SWEEPER_ENABLED": "false"},
                        extra_args=("--no-worker",),
                    )
                results = {
                    **over_http(server, url, args.repeat), **in_process(settings, args.repeat)
                }
                width = max(len(k) for k in results)
                print(f"{'':{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'CPU ms':>8}")
                for name, (p50, p95, cpu) in results.items():
                    cpu_text = "" if cpu is None else f"{cpu:8.1f}"
                    print(f"{name:{width}}  {p50:8.1f}  {p95:8.1f}  {cpu_text}")
                print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
                table = results["standings() from the table"][0]
                history = results["best rows from the history"][0]
                print(f"history / table (p50): {history / table:.1f}x")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
