"""`grader exercises …` and `grader rescore`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from grader.config import get_settings
from grader.db import session_scope
from grader.errors import DomainError
from grader.exercises import service
from grader.grading.kinds import DEFAULT_KIND, KINDS


@click.group("exercises")
def exercises() -> None:
    """Create exercises and set their hidden test sets."""


@exercises.command("create")
@click.argument("slug")
@click.option("--title", required=True)
@click.option(
    "--kind", type=click.Choice(sorted(KINDS)), default=DEFAULT_KIND, show_default=True,
    help="What the exercise asks for (docs/architecture.md, exercise kinds).",
)
@click.option("--description", default="")
@click.option("--threshold", type=float, default=None)
@click.option("--max-model-mb", type=float, default=None)
@click.option("--deadline", type=click.DateTime(), default=None, help="UTC, e.g. 2026-06-30T23:59")
@click.option(
    "--daily-limit",
    type=int,
    default=None,
    help="Submissions per student per UTC day (default: GRADER_DEFAULT_DAILY_LIMIT).",
)
@click.option("--no-daily-limit", is_flag=True, help="No daily limit.")
@click.option("--late-policy", type=click.Choice(["reject", "accept_late", "first_only"]),
              default="reject")  # fmt: skip
@click.option("--queue", type=click.Choice(["cpu", "gpu"]), default="cpu")
@click.option("--test-set", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--demo-test-set", is_flag=True, help="Use the kind's bundled synthetic test set."
)
def create(
    slug: str,
    title: str,
    kind: str,
    description: str,
    threshold: float | None,
    max_model_mb: float | None,
    deadline: datetime | None,
    daily_limit: int | None,
    no_daily_limit: bool,
    late_policy: str,
    queue: str,
    test_set: Path | None,
    demo_test_set: bool,
) -> None:
    if no_daily_limit and daily_limit is not None:
        raise click.UsageError("--daily-limit and --no-daily-limit exclude each other.")
    limit: int | None | service.UseDefault = service.DEFAULT
    if no_daily_limit:
        limit = None
    elif daily_limit is not None:
        limit = daily_limit
    settings = get_settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            exercise = service.create_exercise(
                session,
                slug=slug,
                title=title,
                kind=kind,
                description=description,
                threshold=threshold,
                max_model_bytes=None
                if max_model_mb is None
                else service.mib_to_bytes(max_model_mb),
                deadline=deadline,
                daily_limit=limit,
                late_policy=late_policy,
                queue=queue,
                settings=settings,
            )
            if demo_test_set and test_set is None:
                service.use_demo_test_set(session, exercise=exercise, settings=settings)
            if test_set is not None:
                service.set_test_set(
                    session, exercise=exercise, csv_path=test_set, settings=settings
                )
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"created exercise {slug}")


@exercises.command("set-test-set")
@click.argument("slug")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def set_test_set(slug: str, csv_path: Path) -> None:
    """Validate CSV_PATH and make it SLUG's hidden test set (a new version)."""
    settings = get_settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            exercise = service.get_exercise(session, slug=slug)
            service.set_test_set(session, exercise=exercise, csv_path=csv_path, settings=settings)
            version, n = exercise.testset_version, exercise.testset_n_images
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{slug}: test set version {version} ({n} images)")


@exercises.command("list")
def list_exercises() -> None:
    with session_scope(get_settings().sqlalchemy_url) as session:
        for e in service.list_exercises(session, include_unpublished=True):
            click.echo(
                f"{e.slug}\tthreshold={e.threshold:g}\ttest set v{e.testset_version} "
                f"({e.testset_n_images or 0} images)\tqueue={e.queue}"
            )


@click.command("rescore")
@click.argument("slug")
@click.option("--submission", "submission_id", type=int, default=None)
def rescore(slug: str, submission_id: int | None) -> None:
    """Re-grade SLUG's finished submissions (e.g. after a new test set)."""
    from grader.app import make_publish
    from grader.runtime.queue import Publisher
    from grader.submissions.service import rescore_submissions

    settings = get_settings()
    publisher = Publisher(settings)
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            exercise = service.get_exercise(session, slug=slug)
            ids = rescore_submissions(
                session,
                exercise=exercise,
                publish=make_publish(settings, publisher),
                submission_id=submission_id,
            )
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    finally:
        publisher.close()
    click.echo(f"re-queued {len(ids)} submission(s)")
