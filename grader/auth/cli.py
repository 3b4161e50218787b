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
            imported = service.import_roster(session, path=roster)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo("username,password,status")
    for row in imported:
        status = "created" if row.created else "exists"
        click.echo(f"{row.username},{row.password or ''},{status}")


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
def create_token(username: str, name: str) -> None:
    """Print a new API token for USERNAME (shown once; stored hashed)."""
    try:
        with _session_scope() as session:
            user = service.get_user(session, username=username)
            issued = service.issue_token(session, user=user, name=name)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(issued.token)


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    try:
        with _session_scope() as session:
            admin = service.get_user(session, username="admin")
            service.revoke_token(session, actor=admin, token_id=token_id)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked token {token_id}")
