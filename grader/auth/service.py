"""Users, passwords and API tokens. Session first, keyword-only, flush never commit."""

from __future__ import annotations

import csv
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from grader.auth import validation
from grader.auth.models import ApiToken, Role, User
from grader.auth.throttle import login_throttle
from grader.config import Settings
from grader.db import DuplicateRow, begin_write, is_row_id, unique_insert, utcnow
from grader.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotAuthenticated,
    NotFound,
)

TOKEN_PREFIX = "grd_"
# The names the API login and the web login give their tokens: the ones the per-user cap on
# live login tokens (GRADER_LOGIN_TOKENS_PER_USER) retires. Named tokens are left alone.
LOGIN_TOKEN_NAME = "login"
WEB_SESSION_TOKEN_NAME = "web session"
LOGIN_TOKEN_NAMES = (LOGIN_TOKEN_NAME, WEB_SESSION_TOKEN_NAME)
MAX_TOKEN_DAYS = 3650
_hasher = PasswordHasher()
# Verifying against this keeps the time of "unknown user" close to "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def get_user(session: Session, *, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    return user


# --- who may manage whom ------------------------------------------------------------------
#
# An actor of None is the server's operator: the admin CLI and the first start, which run with
# the database's credentials and so could do anything anyway.


def may_manage(actor: User | None, *, target_role: Role | str) -> bool:
    """Whether `actor` may create, change, or mint and revoke tokens for an account of
    `target_role`: admins for every role, instructors for students only, students for nobody.

    Only an admin makes instructors and admins: an instructor who could mint a token for an
    admin, or import a roster row with role=admin, could make themselves admin.
    """
    if actor is None or actor.role == Role.ADMIN.value:
        return True
    return actor.role == Role.INSTRUCTOR.value and Role(target_role) is Role.STUDENT


def ensure_may_manage(actor: User | None, *, target_role: Role | str) -> None:
    if not may_manage(actor, target_role=target_role):
        if actor is not None and actor.is_instructor:
            raise Forbidden(
                f"Only an admin can manage {Role(target_role).value} accounts; "
                "instructors manage students."
            )
        raise Forbidden("Only instructors can manage other accounts.")


def ensure_may_manage_tokens_of(actor: User | None, owner: User) -> None:
    """Everyone mints and revokes their own tokens; other people's follow may_manage."""
    if actor is None or actor.id != owner.id:
        ensure_may_manage(actor, target_role=owner.role)


def may_manage_tokens_of(actor: User | None, owner: User) -> bool:
    try:
        ensure_may_manage_tokens_of(actor, owner)
    except Forbidden:
        return False
    return True


def token_owner(session: Session, *, actor: User, username: str | None) -> User:
    """Whose token a `username` field names: the actor's own when empty."""
    if not username or username == actor.username:
        return actor
    if not actor.is_instructor:
        # Before looking the name up: a student learns nothing about who exists.
        raise Forbidden("Only instructors can create tokens for other users.")
    return get_user(session, username=username)


def _valid(check: Callable[..., str], value: str, **kwargs: Any) -> str:
    try:
        return check(value, **kwargs)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def create_user(
    session: Session,
    *,
    actor: User | None,
    username: str,
    role: Role = Role.STUDENT,
    password: str | None = None,
    student_id: str | None = None,
    display_name: str = "",
) -> User:
    """A new account. `actor` None is the operator (CLI, first start); the web and the API
    pass the logged-in user, and may_manage decides."""
    role = Role(role)
    ensure_may_manage(actor, target_role=role)
    username = _valid(validation.check_username, username)
    if password is not None:
        _valid(validation.check_password, password)
    student_id = _valid(
        validation.check_text,
        student_id or "",
        field="A student id",
        max_length=validation.STUDENT_ID_MAX,
    )
    display_name = _valid(
        validation.check_text,
        display_name,
        field="A display name",
        max_length=validation.DISPLAY_NAME_MAX,
    )
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"User {username!r} already exists.")
    if student_id and session.scalar(select(User.id).where(User.student_id == student_id)):
        raise Conflict(f"Student id {student_id!r} is already taken.")
    user = User(
        username=username,
        role=role.value,
        password_hash=hash_password(password) if password else None,
        student_id=student_id or None,
        display_name=display_name or username,
    )
    try:
        with unique_insert(session):
            session.add(user)
    except DuplicateRow as exc:
        if student_id and "student_id" in str(exc):
            raise Conflict(f"Student id {student_id!r} is already taken.") from None
        raise Conflict(f"User {username!r} already exists.") from None
    return user


def set_role(session: Session, *, actor: User | None, user: User, role: Role) -> User:
    """Promote or demote an account; both its old and its new role must be the actor's to
    manage, and the last active admin stays an admin."""
    role = Role(role)
    ensure_may_manage(actor, target_role=user.role)
    ensure_may_manage(actor, target_role=role)
    if user.role == Role.ADMIN.value and role is not Role.ADMIN:
        admins = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.is_active.is_(True))
        )
        if (admins or 0) <= 1:
            raise Conflict("This is the last admin account; make another admin first.")
    user.role = role.value
    session.flush()
    return user


def set_password(session: Session, *, user: User, password: str) -> None:
    user.password_hash = hash_password(_valid(validation.check_password, password))
    session.flush()


def authenticate(session: Session, *, username: str, password: str) -> User:
    username = _valid(validation.check_login_username, username)
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None and user.is_active else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        stored = None
    if user is None or stored is None:
        raise NotAuthenticated("Incorrect username or password.")
    if _hasher.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
        session.flush()
    return user


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: ApiToken


def _issue_token(session: Session, *, user: User, name: str, ttl: timedelta | None) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=hash_token(token),
        prefix=token[:10],
        expires_at=(utcnow() + ttl) if ttl else None,
    )
    session.add(record)
    session.flush()
    return IssuedToken(token=token, record=record)


def create_api_token(
    session: Session,
    *,
    actor: User | None,
    owner: User,
    name: str,
    settings: Settings,
    expires_in_days: int | None = None,
    never_expires: bool = False,
) -> IssuedToken:
    """A named API token for `owner`, made by `actor` (themselves, or someone may_manage
    allows). It expires after `expires_in_days`, by default GRADER_API_TOKEN_TTL_DAYS; only
    an admin (or the operator) may make one that never expires."""
    ensure_may_manage_tokens_of(actor, owner)
    name = _valid(
        validation.check_text, name, field="A token name", max_length=validation.TOKEN_NAME_MAX
    )
    if never_expires:
        if actor is not None and actor.role != Role.ADMIN.value:
            raise Forbidden("Only an admin can make a token that never expires.")
        return _issue_token(session, user=owner, name=name, ttl=None)
    days = settings.api_token_ttl_days if expires_in_days is None else expires_in_days
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise Invalid(f"A token expires after 1 to {MAX_TOKEN_DAYS} days ({days} asked).")
    return _issue_token(session, user=owner, name=name, ttl=timedelta(days=days))


def log_in(
    session: Session,
    *,
    settings: Settings,
    username: str,
    password: str,
    client: str,
    name: str = LOGIN_TOKEN_NAME,
) -> tuple[User, IssuedToken]:
    """Check the password (throttled), then issue a login token and retire the oldest.

    `client` is the caller's address (the API and the web login alike); failed attempts are
    counted per address, per username and address, and per username (grader/auth/throttle.py),
    and a caller over any of those limits gets RateLimited (429, Retry-After) before any
    password is checked.

    Unlike other services this commits: on SQLite a transaction that reads and then writes
    fails when another writer (the grading worker, say) commits in between, and the argon2
    check (~50 ms) must not run while the write lock is held, or a burst of logins queues
    behind it.
    """
    username = _valid(validation.check_login_username, username)
    throttle = login_throttle(settings)
    throttle.check(username=username, address=client)
    try:
        user = authenticate(session, username=username, password=password)
    except NotAuthenticated:
        throttle.failed(username=username, address=client)
        raise
    throttle.succeeded(username=username, address=client)
    session.commit()
    begin_write(session)
    issued = _issue_token(
        session, user=user, name=name, ttl=timedelta(hours=settings.access_token_ttl_hours)
    )
    _retire_old_login_tokens(session, user=user, keep=settings.login_tokens_per_user)
    session.commit()
    return user, issued


def _retire_old_login_tokens(session: Session, *, user: User, keep: int) -> None:
    """Revoke the user's live login tokens beyond the newest `keep`: each login adds one, and
    without a cap a script that logs in on every run piles up months-long tokens."""
    now = utcnow()
    stale = session.scalars(
        select(ApiToken.id)
        .where(
            ApiToken.user_id == user.id,
            ApiToken.name.in_(LOGIN_TOKEN_NAMES),
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
        .order_by(ApiToken.id.desc())
        .offset(keep)
    ).all()
    if stale:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id.in_(stale))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )


def resolve_token(session: Session, *, token: str) -> User:
    return resolve_token_record(session, token=token).user


def resolve_token_record(session: Session, *, token: str) -> ApiToken:
    record = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = utcnow()
    if (
        record is None
        or record.revoked_at is not None
        or (record.expires_at is not None and record.expires_at <= now)
        or not record.user.is_active
    ):
        raise NotAuthenticated("Invalid, expired or revoked token.")
    return record


def touch_token(session: Session, *, record: ApiToken) -> bool:
    """Coarse last-used tracking: one write per token per minute at most, not per request."""
    now = utcnow()
    if record.last_used_at is not None and now - record.last_used_at < timedelta(minutes=1):
        return False
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == record.id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


def list_tokens(session: Session, *, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_token(session: Session, *, actor: User | None, token_id: int) -> ApiToken:
    """Revoke one token: the owner's own, or one of an account the actor may manage."""
    record = session.get(ApiToken, token_id) if is_row_id(token_id) else None
    if record is None or (
        actor is not None and record.user_id != actor.id and not actor.is_instructor
    ):
        # A student learns nothing about other people's token ids.
        raise NotFound("No such token.")
    ensure_may_manage_tokens_of(actor, record.user)
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record


def revoke_token_value(session: Session, *, token: str) -> None:
    """Revoke the token itself (a browser session logging out); unknown tokens are ignored."""
    record = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()


def require_instructor(user: User) -> None:
    if not user.is_instructor:
        raise Forbidden("Only instructors can do this.")


@dataclass(frozen=True)
class ImportedUser:
    username: str
    password: str | None
    created: bool


def import_roster(
    session: Session, *, actor: User | None, path: Path, role: Role = Role.STUDENT
) -> list[ImportedUser]:
    """Create the roster's users (columns: username, student_id, display_name, password, role).

    Every row goes through create_user, so the same rules hold as for one account: the actor
    must be allowed to create the row's role, and a given password must meet the policy.
    Existing usernames are left untouched, so importing the same roster twice is harmless.
    Users without a password column get a generated one, returned once. A bad row refuses
    the whole roster (nothing is created), naming its line.
    """
    out: list[ImportedUser] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "username" not in reader.fieldnames:
            raise Invalid("The roster needs a header row with at least a 'username' column.")
        for line, row in enumerate(reader, start=2):
            username = (row.get("username") or "").strip()
            if not username:
                raise Invalid(f"Roster line {line}: empty username.")
            if session.scalar(select(User.id).where(User.username == username)) is not None:
                out.append(ImportedUser(username, None, created=False))
                continue
            row_role = (row.get("role") or "").strip() or Role(role).value
            if row_role not in {r.value for r in Role}:
                raise Invalid(f"Roster line {line}: unknown role {row_role!r}.")
            password = (row.get("password") or "").strip() or generate_password()
            try:
                create_user(
                    session,
                    actor=actor,
                    username=username,
                    role=Role(row_role),
                    password=password,
                    student_id=row.get("student_id") or None,
                    display_name=row.get("display_name") or "",
                )
            except DomainError as exc:
                raise type(exc)(f"Roster line {line}: {exc.detail}") from None
            out.append(ImportedUser(username, password, created=True))
    return out


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))
