"""Fill a grader database with a large graded history, fast: N submissions from S students
across E exercises, each with its result (and the preview the submission page draws), then
the standings from leaderboard.service.recompute_standings (the same function the server
uses, so they are exactly what grading would have left).

    python benchmarks/seed_submissions.py -n 100000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/lb
    python benchmarks/seed_submissions.py --data-dir /tmp/lb -n 10000      # SQLite there

The schema is migrated first and the admin account made (password: --admin-password).
Every student's password is --student-password; usernames are lb-0000 .. lb-0999 and the
exercises lb-1 .. lb-E. Rows go in with bulk INSERTs (1,000 per statement).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.auth import service as auth  # noqa: E402
from grader.auth.models import Role, User  # noqa: E402
from grader.config import Settings  # noqa: E402
from grader.db import session_scope  # noqa: E402
from grader.exercises.models import Exercise  # noqa: E402
from grader.exercises.service import create_exercise  # noqa: E402
from grader.leaderboard.service import recompute_standings  # noqa: E402
from grader.runtime.bootstrap import bootstrap  # noqa: E402
from grader.submissions.models import Result, ResultPreview, Submission  # noqa: E402

BATCH = 1000
STUDENT_PASSWORD = "lb-student-pass"


@dataclass(frozen=True)
class Seeded:
    exercises: list[str]
    students: list[str]
    submissions: int
    seconds: float


def _students(settings: Settings, count: int) -> list[str]:
    names = [f"lb-{i:04d}" for i in range(count)]
    with session_scope(settings.sqlalchemy_url) as session:
        existing = set(session.scalars(select(User.username).where(User.username.in_(names))))
        # One real password hash is enough: every student gets the same one.
        hashed = auth.hash_password(STUDENT_PASSWORD)
        rows = [
            {
                "username": name,
                "display_name": f"Student {name[3:]}",
                "student_id": f"S{name[3:]}",
                "role": Role.STUDENT.value,
                "password_hash": hashed,
            }
            for name in names
            if name not in existing
        ]
        for start in range(0, len(rows), BATCH):
            session.execute(insert(User), rows[start : start + BATCH])
    return names


def _exercises(settings: Settings, count: int) -> list[str]:
    slugs = [f"lb-{i + 1}" for i in range(count)]
    with session_scope(settings.sqlalchemy_url) as session:
        existing = set(session.scalars(select(Exercise.slug).where(Exercise.slug.in_(slugs))))
        for slug in slugs:
            if slug not in existing:
                create_exercise(
                    session, slug=slug, title=f"Leaderboard {slug}", settings=settings,
                    daily_limit=None,
                )
    return slugs


def _next_id(session: Any, column: Any) -> int:
    return int(session.scalar(select(func.coalesce(func.max(column), 0)))) + 1


def _history(
    rng: random.Random, n: int, user_ids: list[int], exercise_ids: list[int], first_sub: int,
    first_result: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Submissions (by student and exercise, spread over 30 days), their results and
    previews. About 2% end in a failed check (no score) and 1% in our own failure."""
    start = datetime(2026, 10, 1, tzinfo=UTC)
    subs, results, previews = [], [], []
    result_id = first_result
    for k in range(n):
        sid = first_sub + k
        created = start + timedelta(seconds=rng.uniform(0, 30 * 86400))
        roll = rng.random()
        score = round(rng.lognormvariate(4.4, 0.5), 4)
        status, reason = ("PASSED" if score >= 100 else "FAILED"), None
        if roll < 0.01:
            status, reason = "ERROR", "INFRA_ERROR"
        elif roll < 0.03:
            status, reason = "ERROR", "BAD_OUTPUT"
        subs.append(
            {
                "id": sid,
                "user_id": user_ids[k % len(user_ids)],
                "exercise_id": exercise_ids[(k // len(user_ids)) % len(exercise_ids)],
                "model_sha256": f"{sid:064x}",
                "model_size": 1_100_000,
                "original_filename": "model.pt",
                "status": status,
                "attempts": 1,
                "failure_reason": reason,
                "failure_message": None if reason is None else "seeded",
                "late": rng.random() < 0.05,
                "created_at": created,
                "sent_at": created,
                "started_at": created + timedelta(seconds=5),
                "finished_at": created + timedelta(seconds=12),
            }
        )
        if reason == "INFRA_ERROR":
            continue
        graded = reason is None
        results.append(
            {
                "id": result_id,
                "submission_id": sid,
                "status": status if graded else reason,
                "score": score if graded else None,
                "passed": graded and score >= 100,
                "threshold": 100.0,
                "n_images": 1000,
                "parts": [round(rng.uniform(1, 6), 3) for _ in range(15)],
                "timings": {"load_s": 0.3, "infer_s": 2.1, "score_s": 0.01},
                "seconds": 2.5,
                "model_sha256": f"{sid:064x}",
                "testset_sha256": "0" * 64,
                "testset_version": 1,
                "evaluator_version": "seed",
                "torch_version": "2.x",
                "device": "cpu",
                "plan": {"variant": "script", "batch_size": 64, "threads": 2},
                "created_at": created + timedelta(seconds=12),
            }
        )
        if graded:
            previews.append(
                {
                    "result_id": result_id,
                    "data": [
                        [[round(rng.uniform(0, 96), 2), round(rng.uniform(0, 96), 2)]
                         for _ in range(15)]
                        for _ in range(6)
                    ],
                }
            )
        result_id += 1
    return subs, results, previews


def seed(
    settings: Settings, n: int, *, students: int = 1000, exercises: int = 3, rng_seed: int = 0
) -> Seeded:
    """Add n graded submissions (on top of what is there) and recompute the standings."""
    began = time.perf_counter()
    bootstrap(settings, demo=False)
    names = _students(settings, students)
    slugs = _exercises(settings, exercises)
    rng = random.Random(rng_seed)
    with session_scope(settings.sqlalchemy_url) as session:
        user_ids = list(session.scalars(select(User.id).where(User.username.in_(names))))
        exercise_ids = list(session.scalars(select(Exercise.id).where(Exercise.slug.in_(slugs))))
        subs, results, previews = _history(
            rng, n, sorted(user_ids), sorted(exercise_ids),
            _next_id(session, Submission.id), _next_id(session, Result.id),
        )
        for table, rows in ((Submission, subs), (Result, results), (ResultPreview, previews)):
            for start in range(0, len(rows), BATCH):
                session.execute(insert(table), rows[start : start + BATCH])
        if session.get_bind().dialect.name == "postgresql":
            # Explicit ids do not move the sequences; the server's next insert must not collide.
            for name in ("submissions", "results"):
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
                )
        for exercise_id in exercise_ids:
            recompute_standings(session, exercise_id)
    with session_scope(settings.sqlalchemy_url) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE"))
    return Seeded(slugs, names, n, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="submissions to add")
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--exercises", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in --data-dir")
    parser.add_argument("--data-dir", type=Path, default=Path("seed-data"))
    parser.add_argument("--admin-password", default="lb-admin-pass")
    args = parser.parse_args()
    settings = Settings(
        data_dir=args.data_dir, database_url=args.database_url,
        admin_password=args.admin_password,
    )
    done = seed(settings, args.n, students=args.students, exercises=args.exercises)
    print(
        f"seeded {done.submissions} submissions, {len(done.students)} students, "
        f"exercises {', '.join(done.exercises)} in {done.seconds:.1f} s "
        f"({settings.sqlalchemy_url})"
    )


if __name__ == "__main__":
    main()
