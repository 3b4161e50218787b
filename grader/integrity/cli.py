"""`grader integrity …`: the instructor's exports of similar submissions and of what a new
test-set version changed, and public baselines. Run on the server (it reads the database)."""

from __future__ import annotations

import click

from grader.config import get_settings
from grader.db import session_scope
from grader.errors import DomainError
from grader.exercises.service import get_exercise
from grader.integrity import changes, service, split


@click.group("integrity")
def integrity() -> None:
    """Similar submissions, public baselines, test-set changes (instructors)."""


@integrity.command("similar")
@click.argument("slug")
def similar(slug: str) -> None:
    """Print SLUG's flagged pairs as CSV, most alike first."""
    try:
        with session_scope(get_settings().sqlalchemy_url, write=False) as session:
            click.echo(service.similar_csv(session, exercise=get_exercise(session, slug=slug)),
                       nl=False)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None


@integrity.command("changes")
@click.argument("slug")
def testset_changes(slug: str) -> None:
    """Print, as CSV, what SLUG's rescore against a new test set changed."""
    try:
        with session_scope(get_settings().sqlalchemy_url, write=False) as session:
            click.echo(changes.changes_csv(session, exercise=get_exercise(session, slug=slug)),
                       nl=False)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None


@integrity.command("rescan")
@click.argument("slug")
def rescan(slug: str) -> None:
    """Recompute all of SLUG's pairs from the stored fingerprints (two submissions graded at
    the same instant by two workers can miss each other)."""
    try:
        with session_scope(get_settings().sqlalchemy_url) as session:
            count = service.rescan(session, exercise=get_exercise(session, slug=slug))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{slug}: {count} pair(s) flagged")


@integrity.command("baseline")
@click.argument("submission_id", type=int)
@click.option("--unmark", is_flag=True, help="No longer a public baseline.")
def baseline(submission_id: int, unmark: bool) -> None:
    """Mark SUBMISSION_ID as a public baseline (a starter model): never flagged."""
    try:
        with session_scope(get_settings().sqlalchemy_url) as session:
            # Marked from the server's console: no account to record.
            service.mark_baseline(session, submission_id=submission_id, by=None,
                                  baseline=not unmark)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"submission {submission_id}: {'not ' if unmark else ''}a public baseline")


@integrity.command("split")
@click.argument("slug")
@click.option("--private-fraction", type=float, required=True,
              help="Share of the hidden test set kept private (0 turns the split off).")
@click.option("--pass-rule", type=click.Choice(["full", "public", "private"]), default="full",
              show_default=True, help="Which score decides the grade.")
def set_split(slug: str, private_fraction: float, pass_rule: str) -> None:
    """Split SLUG's hidden test set into a public and a private part."""
    try:
        with session_scope(get_settings().sqlalchemy_url) as session:
            split.set_split(session, exercise=get_exercise(session, slug=slug),
                            private_fraction=private_fraction, pass_rule=pass_rule)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{slug}: {private_fraction:g} private, pass rule {pass_rule}")


@integrity.command("reveal")
@click.argument("slug")
def reveal(slug: str) -> None:
    """Show students SLUG's private scores now, before the deadline."""
    try:
        with session_scope(get_settings().sqlalchemy_url) as session:
            split.reveal(session, exercise=get_exercise(session, slug=slug))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{slug}: private scores revealed")


@integrity.command("parts")
@click.argument("slug")
def parts(slug: str) -> None:
    """Print every result's full, public and private scores as CSV (instructors)."""
    try:
        with session_scope(get_settings().sqlalchemy_url, write=False) as session:
            click.echo(split.parts_csv(session, exercise=get_exercise(session, slug=slug)),
                       nl=False)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
