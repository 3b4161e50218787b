"""First start: schema, the admin account and the demo exercise."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from grader.auth import service as auth
from grader.auth.models import Role, User
from grader.config import Settings
from grader.db import session_scope
from grader.exercises.service import ensure_demo_exercise
from grader.runtime import migrate

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class BootstrapReport:
    admin_created: bool
    # Only when it was generated now: printed once, never stored in clear.
    generated_password: str | None
    demo_created: bool


def bootstrap(settings: Settings, *, demo: bool = True) -> BootstrapReport:
    migrate.upgrade(settings)
    with session_scope(settings.sqlalchemy_url) as session:
        admin = session.scalar(select(User).where(User.username == ADMIN_USERNAME))
        generated: str | None = None
        created = admin is None
        if admin is None:
            password = settings.admin_password or auth.generate_password()
            if settings.admin_password is None:
                generated = password
            auth.create_user(
                session,
                actor=None,  # the operator
                username=ADMIN_USERNAME,
                role=Role.ADMIN,
                password=password,
                display_name="Administrator",
            )
        elif settings.admin_password:
            # GRADER_ADMIN_PASSWORD is the source of truth when it is set.
            try:
                auth.authenticate(
                    session, username=ADMIN_USERNAME, password=settings.admin_password
                )
            except Exception:
                auth.set_password(session, user=admin, password=settings.admin_password)
        demo_created = (
            ensure_demo_exercise(session, settings=settings) is not None if demo else False
        )
    return BootstrapReport(created, generated, demo_created)
