"""Exercises and their hidden test sets. Session first, keyword-only, flush never commit."""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.auth.models import User
from grader.config import Settings
from grader.db import DuplicateRow, unique_insert
from grader.errors import Conflict, Invalid, NotFound
from grader.exercises.models import Exercise, LatePolicy, LeaderboardVisibility
from grader.grading.kinds import DEFAULT_KIND, KINDS, default_threshold, get_kind

DEMO_SLUG = "facial-keypoints"
SLUG_MAX = 63
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_SLUG = re.compile(SLUG_PATTERN)
QUEUES = ("cpu", "gpu")
EDITABLE = (
    "kind",
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


# Bounds of every exercise setting, for the API, the web form and the CLI alike.
TITLE_MAX = 200
DESCRIPTION_MAX = 20_000
THRESHOLD_MAX = 1e9
DAILY_LIMIT_MAX = 10_000
MAX_MODEL_BYTES_MAX = 2**31 - 1  # the column is a 32-bit integer
# A hidden test set upload: ~37 KB a face in the course's CSV, so room for ~25,000 faces.
TEST_SET_MAX_BYTES = 1024**3
TIME_LIMIT_MIN_S = 1.0
# Below the worker's hard limit by this much: the grading run is not the whole task (loading
# the test set, starting the sandbox, recording the result).
TIME_LIMIT_MARGIN_S = 60.0
# Columns that are NOT NULL: a PATCH may change them but never clear them.
NOT_NULL = (
    "kind",
    "title",
    "description",
    "threshold",
    "max_model_bytes",
    "late_policy",
    "queue",
    "leaderboard_visibility",
    "is_published",
)
# Control characters (C0, DEL, C1) and the bidirectional overrides and isolates, which make
# displayed text lie about its order. PostgreSQL refuses NUL in text outright.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # a description keeps \t \n \r


class UseDefault:
    """The daily limit when none is given (Settings.default_daily_limit); None is unlimited."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = UseDefault()


def has_unsafe_chars(text: str) -> bool:
    """Whether `text` holds a control or bidi-override character (names, titles, file names)."""
    return _UNSAFE_CHARS.search(text) is not None


def check_slug(slug: str) -> None:
    """Refuse a string that cannot be a slug (NUL, over-long, ...) before it reaches a query."""
    if not _SLUG.fullmatch(slug):
        shown = slug[:70].encode("unicode_escape").decode()
        raise Invalid(
            f"{shown!r} is not an exercise slug: lowercase letters, digits and '-', "
            f"at most {SLUG_MAX} characters."
        )


def get_exercise(session: Session, *, slug: str, include_unpublished: bool = True) -> Exercise:
    check_slug(slug)
    exercise = session.scalar(select(Exercise).where(Exercise.slug == slug))
    if exercise is None or (not exercise.is_published and not include_unpublished):
        raise NotFound(f"No exercise {slug!r}.")
    return exercise


def visible_exercise(session: Session, *, slug: str, user: User) -> Exercise:
    """The exercise as `user` may see it: an unpublished one is "not found" for students,
    exactly like an exercise that does not exist."""
    return get_exercise(session, slug=slug, include_unpublished=user.is_instructor)


def list_exercises(session: Session, *, include_unpublished: bool) -> list[Exercise]:
    query = select(Exercise).order_by(Exercise.created_at, Exercise.id)
    if not include_unpublished:
        query = query.where(Exercise.is_published.is_(True))
    return list(session.scalars(query))


def max_time_limit_s(settings: Settings) -> float:
    """The longest per-exercise time limit: the worker kills a task at its hard limit."""
    hard_limit = min(settings.task_hard_time_limit_s, settings.broker_visibility_timeout_s - 60)
    return max(hard_limit - TIME_LIMIT_MARGIN_S, TIME_LIMIT_MIN_S)


def mib_to_bytes(mib: float) -> int:
    """A model size limit given in MiB (the CLI, the web form) as bytes, checked."""
    if not math.isfinite(mib) or not 0 < mib * 1024 * 1024 <= MAX_MODEL_BYTES_MAX:
        raise Invalid(f"max model size: {mib!r} MiB is not between 1 byte and 2 GiB.")
    return max(int(mib * 1024 * 1024), 1)


def _number(values: dict[str, Any], key: str) -> float | None:
    value = values[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{key} must be a number.")
    if not math.isfinite(value):
        raise Invalid(f"{key} must be a finite number, not {value!r}.")
    return float(value)


def _check_text(values: dict[str, Any]) -> None:
    if "title" in values:
        title = values["title"]
        if not isinstance(title, str) or not title.strip():
            raise Invalid("An exercise needs a title.")
        if len(title) > TITLE_MAX:
            raise Invalid(f"title: at most {TITLE_MAX} characters (this one has {len(title)}).")
        if has_unsafe_chars(title):
            raise Invalid("title: control and text-direction characters are not allowed.")
    if "description" in values:
        description = values["description"]
        if not isinstance(description, str):
            raise Invalid("description must be text.")
        if len(description) > DESCRIPTION_MAX:
            raise Invalid(f"description: at most {DESCRIPTION_MAX} characters.")
        if _UNSAFE_IN_TEXT.search(description):
            raise Invalid("description: control characters are not allowed.")


def _check_numbers(values: dict[str, Any], settings: Settings) -> None:
    if "threshold" in values:
        threshold = _number(values, "threshold")
        if threshold is not None and not 0 <= threshold <= THRESHOLD_MAX:
            raise Invalid(f"threshold must be between 0 and {THRESHOLD_MAX:g}.")
    if "max_model_bytes" in values:
        size = _number(values, "max_model_bytes")
        if size is not None and not (size == int(size) and 1 <= size <= MAX_MODEL_BYTES_MAX):
            raise Invalid("max_model_bytes must be a whole number from 1 byte to 2 GiB.")
    if "daily_limit" in values:
        limit = _number(values, "daily_limit")
        if limit is not None and not (limit == int(limit) and 1 <= limit <= DAILY_LIMIT_MAX):
            raise Invalid(
                f"daily_limit must be a whole number from 1 to {DAILY_LIMIT_MAX} "
                "(or null for no limit)."
            )
    if "time_limit_s" in values:
        seconds = _number(values, "time_limit_s")
        ceiling = max_time_limit_s(settings)
        if seconds is not None and not TIME_LIMIT_MIN_S <= seconds <= ceiling:
            raise Invalid(
                f"time_limit_s must be between {TIME_LIMIT_MIN_S:g} and {ceiling:g} seconds "
                "(below the worker's hard limit), or null for the default."
            )


def _validate(values: dict[str, Any], settings: Settings) -> None:
    for key in NOT_NULL:
        if key in values and values[key] is None:
            raise Invalid(f"{key} cannot be null.")
    _check_text(values)
    _check_numbers(values, settings)
    if "deadline" in values and values["deadline"] is not None:
        if not isinstance(values["deadline"], datetime):
            raise Invalid("deadline must be a date and time.")
    if "is_published" in values and not isinstance(values["is_published"], bool):
        raise Invalid("is_published must be true or false.")
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
    if "kind" in values and values["kind"] not in KINDS:
        raise Invalid(f"kind is one of {list(KINDS)}.")


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    """Whole numbers as int, enums as their values: what the columns store."""
    out = dict(values)
    for key in ("max_model_bytes", "daily_limit"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    for key in ("threshold", "time_limit_s"):
        if out.get(key) is not None:
            out[key] = float(out[key])
    for key in ("late_policy", "leaderboard_visibility"):
        if key in out:
            out[key] = str(getattr(out[key], "value", out[key]))
    return out


def create_exercise(
    session: Session,
    *,
    slug: str,
    title: str,
    settings: Settings,
    kind: str = DEFAULT_KIND,
    description: str = "",
    threshold: float | None = None,
    max_model_bytes: int | None = None,
    time_limit_s: float | None = None,
    deadline: datetime | None = None,
    daily_limit: int | None | UseDefault = DEFAULT,
    late_policy: str = LatePolicy.REJECT.value,
    queue: str = "cpu",
    leaderboard_visibility: str = LeaderboardVisibility.ANONYMOUS.value,
    is_published: bool = True,
) -> Exercise:
    """A new exercise of `kind`; `daily_limit` left out means Settings.default_daily_limit,
    and an explicit None means no limit. Without a threshold it gets its kind's default
    (Settings.default_threshold for facial keypoints)."""
    check_slug(slug)
    if session.scalar(select(Exercise.id).where(Exercise.slug == slug)) is not None:
        raise Conflict(f"Exercise {slug!r} already exists.")
    _validate({"kind": kind}, settings)
    values: dict[str, Any] = {
        "kind": kind,
        "title": title,
        "description": description,
        "threshold": default_threshold(kind, configured=settings.default_threshold)
        if threshold is None
        else threshold,
        "max_model_bytes": settings.default_max_model_bytes
        if max_model_bytes is None
        else max_model_bytes,
        "time_limit_s": time_limit_s,
        "deadline": deadline,
        "daily_limit": settings.default_daily_limit
        if isinstance(daily_limit, UseDefault)
        else daily_limit,
        "late_policy": late_policy,
        "queue": queue,
        "leaderboard_visibility": leaderboard_visibility,
        "is_published": is_published,
    }
    _validate(values, settings)
    exercise = Exercise(slug=slug, **_normalise(values))
    try:
        with unique_insert(session):
            session.add(exercise)
    except DuplicateRow:
        raise Conflict(f"Exercise {slug!r} already exists.") from None
    return exercise


def update_exercise(
    session: Session,
    *,
    exercise: Exercise,
    changes: dict[str, Any],
    settings: Settings,
) -> Exercise:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise Invalid(f"Cannot change {sorted(unknown)}.")
    if changes.get("kind", exercise.kind) != exercise.kind and exercise.testset_path:
        # Its test set, and every score so far, are in the old kind's terms.
        raise Conflict("The kind of an exercise changes only before it has a test set.")
    _validate(changes, settings)
    for key, value in _normalise(changes).items():
        setattr(exercise, key, value)
    session.flush()
    return exercise


def set_test_set(
    session: Session,
    *,
    exercise: Exercise,
    csv_path: Path,
    settings: Settings,
    display_name: str | None = None,
) -> Exercise:
    """Validate a hidden test set CSV and make it the exercise's next version.

    The file is copied into the data directory, so the caller may delete its temp file. Errors
    name the file `display_name` (default: its own name).
    """
    from grader.grading.testdata.testsets import TestSetError, load_test_set

    kind = get_kind(exercise.kind)
    try:
        test_set = load_test_set(
            csv_path, kind=kind, cache_dir=settings.cache_dir, display_name=display_name
        )
    except TestSetError as exc:
        raise Invalid(f"Invalid test set: {exc}") from None
    version = exercise.testset_version + 1
    target_dir = settings.testsets_dir / exercise.slug
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"v{version}-{test_set.sha256[:12]}{kind.test_set_suffix}"
    if csv_path.resolve() != target.resolve():
        shutil.copyfile(csv_path, target)
    exercise.testset_path = str(target)
    exercise.testset_sha256 = test_set.sha256
    exercise.testset_version = version
    exercise.testset_n_images = len(test_set)
    session.flush()
    return exercise


def upload_display_name(filename: str | None) -> str:
    """How an uploaded file is named in error messages: its own name, made printable."""
    if not filename:
        return "the uploaded file"
    name = _UNSAFE_CHARS.sub("", Path(filename.replace("\\", "/")).name)[:100]
    return name or "the uploaded file"


def set_test_set_from_upload(
    session: Session,
    *,
    exercise: Exercise,
    upload: BinaryIO,
    settings: Settings,
    filename: str | None = None,
) -> Exercise:
    """`set_test_set` for an uploaded file object (spooled to the test-set directory first);
    errors name `filename`, the name the client gave, never the spool file."""
    settings.testsets_dir.mkdir(parents=True, exist_ok=True)
    suffix = get_kind(exercise.kind).test_set_suffix
    with tempfile.NamedTemporaryFile(dir=settings.testsets_dir, suffix=suffix) as tmp:
        shutil.copyfileobj(upload, tmp)
        tmp.flush()
        return set_test_set(
            session,
            exercise=exercise,
            csv_path=Path(tmp.name),
            settings=settings,
            display_name=upload_display_name(filename),
        )


def use_demo_test_set(session: Session, *, exercise: Exercise, settings: Settings) -> Exercise:
    """The exercise's kind's synthetic demo test set (until a real one is uploaded)."""
    from grader.grading.testdata.demo import demo_test_set_path

    path = demo_test_set_path(settings, exercise.kind)
    return set_test_set(session, exercise=exercise, csv_path=path, settings=settings)


def ensure_demo_exercise(session: Session, *, settings: Settings) -> Exercise | None:
    """Create the demo exercise on first start; returns it only when it was just created."""
    if session.scalar(select(Exercise.id).where(Exercise.slug == DEMO_SLUG)) is not None:
        return None
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
    return use_demo_test_set(session, exercise=exercise, settings=settings)
