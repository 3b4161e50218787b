"""`grader users …` and `grader tokens …`: account administration straight on the database."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import click
from sqlalchemy.orm import Session

from grader.auth import service
from grader.auth.models import Role
from grader.config import get_settings
from grader.db import session_scope
from grader.errors import DomainError


def _session_scope() -> AbstractContextManager[Session]:
    return session_scope(get_settings().sqlalchemy_url)


@click.group("users")
def users() -> None:
    """Create and list accounts."""


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="student")
@click.option("--password", default=None, help="Generated and printed when omitted.")
@click.option("--student-id", default=None)
@click.option("--display-name", default="")
def create_user(
    username: str, role: str, password: str | None, student_id: str | None, display_name: str
) -> None:
    generated = None if password else service.generate_password()
    try:
        with _session_scope() as session:
            service.create_user(
                session,
                actor=None,
                username=username,
                role=Role(role),
                password=password or generated,
                student_id=student_id,
                display_name=display_name,
            )
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"created {role} {username}")
    if generated:
        click.echo(f"password: {generated}")


@users.command("import")
@click.argument("roster", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_users(roster: Path) -> None:
    """Create users from a CSV (username[, student_id, display_name, password, role])."""
    try:
        with _session_scope() as session:
            imported = service.import_roster(session, actor=None, path=roster)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo("username,password,status")
    for row in imported:
        status = "created" if row.created else "exists"
        click.echo(f"{row.username},{row.password or ''},{status}")


@users.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice([r.value for r in Role]))
def set_role(username: str, role: str) -> None:
    """Promote or demote USERNAME (the last admin stays an admin)."""
    try:
        with _session_scope() as session:
            user = service.get_user(session, username=username)
            service.set_role(session, actor=None, user=user, role=Role(role))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{username} is now {role}")


@users.command("list")
def list_users() -> None:
    with _session_scope() as session:
        for user in service.list_users(session):
            click.echo(f"{user.username}\t{user.role}\t{user.student_id or ''}")


@click.group("tokens")
def tokens() -> None:
    """Issue and revoke API tokens."""


@tokens.command("create")
@click.argument("username")
@click.option("--name", default="cli", show_default=True)
@click.option(
    "--days",
    type=click.IntRange(1, service.MAX_TOKEN_DAYS),
    default=None,
    help="Lifetime in days [default: GRADER_API_TOKEN_TTL_DAYS, 90].",
)
@click.option("--never-expires", is_flag=True, help="A token without an expiry date.")
def create_token(username: str, name: str, days: int | None, never_expires: bool) -> None:
    """Print a new API token for USERNAME (shown once; stored hashed)."""
    if days is not None and never_expires:
        raise click.UsageError("--days and --never-expires exclude each other.")
    try:
        with _session_scope() as session:
            user = service.get_user(session, username=username)
            issued = service.create_api_token(
                session,
                actor=None,
                owner=user,
                name=name,
                settings=get_settings(),
                expires_in_days=days,
                never_expires=never_expires,
            )
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(issued.token)


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    try:
        with _session_scope() as session:
            service.revoke_token(session, actor=None, token_id=token_id)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked token {token_id}")
