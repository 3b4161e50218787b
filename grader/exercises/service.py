"""Exercises and their hidden test sets. Session first, keyword-only, flush never commit."""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.errors import Conflict, Invalid, NotFound
from grader.exercises.models import Exercise, LatePolicy, LeaderboardVisibility

DEMO_SLUG = "facial-keypoints"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
QUEUES = ("cpu", "gpu")
EDITABLE = (
    "title",
    "description",
    "threshold",
    "max_model_bytes",
    "time_limit_s",
    "deadline",
    "daily_limit",
    "late_policy",
    "queue",
    "leaderboard_visibility",
    "is_published",
)


def get_exercise(session: Session, *, slug: str, include_unpublished: bool = True) -> Exercise:
    exercise = session.scalar(select(Exercise).where(Exercise.slug == slug))
    if exercise is None or (not exercise.is_published and not include_unpublished):
        raise NotFound(f"No exercise {slug!r}.")
    return exercise


def list_exercises(session: Session, *, include_unpublished: bool) -> list[Exercise]:
    query = select(Exercise).order_by(Exercise.created_at, Exercise.id)
    if not include_unpublished:
        query = query.where(Exercise.is_published.is_(True))
    return list(session.scalars(query))


def _validate(values: dict[str, Any]) -> None:
    if "threshold" in values and values["threshold"] is not None and values["threshold"] < 0:
        raise Invalid("threshold must be >= 0.")
    if "max_model_bytes" in values and not 1 <= values["max_model_bytes"] <= 2**31 - 1:
        raise Invalid("max_model_bytes must be between 1 byte and 2 GiB.")
    if values.get("daily_limit") is not None and values["daily_limit"] < 1:
        raise Invalid("daily_limit must be >= 1 (or null for no limit).")
    if values.get("time_limit_s") is not None and values["time_limit_s"] <= 0:
        raise Invalid("time_limit_s must be > 0.")
    if "late_policy" in values:
        try:
            LatePolicy(values["late_policy"])
        except ValueError:
            raise Invalid(f"late_policy is one of {[p.value for p in LatePolicy]}.") from None
    if "leaderboard_visibility" in values:
        try:
            LeaderboardVisibility(values["leaderboard_visibility"])
        except ValueError:
            choices = [v.value for v in LeaderboardVisibility]
            raise Invalid(f"leaderboard_visibility is one of {choices}.") from None
    if "queue" in values and values["queue"] not in QUEUES:
        raise Invalid(f"queue is one of {list(QUEUES)}.")


def create_exercise(
    session: Session,
    *,
    slug: str,
    title: str,
    settings: Settings,
    description: str = "",
    threshold: float | None = None,
    max_model_bytes: int | None = None,
    time_limit_s: float | None = None,
    deadline: datetime | None = None,
    daily_limit: int | None = None,
    late_policy: str = LatePolicy.REJECT.value,
    queue: str = "cpu",
    leaderboard_visibility: str = LeaderboardVisibility.ANONYMOUS.value,
    is_published: bool = True,
) -> Exercise:
    if not _SLUG.match(slug):
        raise Invalid("A slug is lowercase letters, digits and '-', starting with a letter/digit.")
    if session.scalar(select(Exercise.id).where(Exercise.slug == slug)) is not None:
        raise Conflict(f"Exercise {slug!r} already exists.")
    values: dict[str, Any] = {
        "title": title,
        "description": description,
        "threshold": settings.default_threshold if threshold is None else threshold,
        "max_model_bytes": max_model_bytes or settings.default_max_model_bytes,
        "time_limit_s": time_limit_s,
        "deadline": deadline,
        "daily_limit": daily_limit,
        "late_policy": late_policy,
        "queue": queue,
        "leaderboard_visibility": leaderboard_visibility,
        "is_published": is_published,
    }
    _validate(values)
    exercise = Exercise(slug=slug, **values)
    session.add(exercise)
    session.flush()
    return exercise


def update_exercise(session: Session, *, exercise: Exercise, changes: dict[str, Any]) -> Exercise:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise Invalid(f"Cannot change {sorted(unknown)}.")
    _validate(changes)
    for key, value in changes.items():
        setattr(exercise, key, value)
    session.flush()
    return exercise


def set_test_set(
    session: Session, *, exercise: Exercise, csv_path: Path, settings: Settings
) -> Exercise:
    """Validate a hidden test set CSV and make it the exercise's next version.

    The file is copied into the data directory, so the caller may delete its temp file.
    """
    from grader.grading.testsets import TestSetError, load_test_set

    try:
        test_set = load_test_set(csv_path, cache_dir=settings.cache_dir)
    except TestSetError as exc:
        raise Invalid(f"Invalid test set: {exc}") from None
    version = exercise.testset_version + 1
    target_dir = settings.testsets_dir / exercise.slug
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"v{version}-{test_set.sha256[:12]}.csv"
    if csv_path.resolve() != target.resolve():
        shutil.copyfile(csv_path, target)
    exercise.testset_path = str(target)
    exercise.testset_sha256 = test_set.sha256
    exercise.testset_version = version
    exercise.testset_n_images = len(test_set)
    session.flush()
    return exercise


def set_test_set_from_upload(
    session: Session, *, exercise: Exercise, upload: BinaryIO, settings: Settings
) -> Exercise:
    """`set_test_set` for an uploaded file object (spooled to the test-set directory first)."""
    settings.testsets_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=settings.testsets_dir, suffix=".csv") as tmp:
        shutil.copyfileobj(upload, tmp)
        tmp.flush()
        return set_test_set(session, exercise=exercise, csv_path=Path(tmp.name), settings=settings)


def ensure_demo_exercise(session: Session, *, settings: Settings) -> Exercise | None:
    """Create the demo exercise on first start; returns it only when it was just created."""
    if session.scalar(select(Exercise.id).where(Exercise.slug == DEMO_SLUG)) is not None:
        return None
    from grader.grading.testsets import demo_test_set_path

    exercise = create_exercise(
        session,
        slug=DEMO_SLUG,
        title="Facial keypoints",
        description=(
            "Train a CNN that finds 15 facial keypoints on 96x96 grayscale faces. Upload it "
            "as a TorchScript file; it passes with a score of at least 100. (Demo test set: "
            "synthetic faces; instructors replace it with the real hidden set.)"
        ),
        threshold=100.0,
        settings=settings,
    )
    return set_test_set(
        session, exercise=exercise, csv_path=demo_test_set_path(settings), settings=settings
    )
