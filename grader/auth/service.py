"""Users, passwords and API tokens. Session first, keyword-only, flush never commit."""

from __future__ import annotations

import csv
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from grader.auth.models import ApiToken, Role, User
from grader.db import begin_write, utcnow
from grader.errors import Conflict, Forbidden, Invalid, NotAuthenticated, NotFound

TOKEN_PREFIX = "grd_"
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


def create_user(
    session: Session,
    *,
    username: str,
    role: Role = Role.STUDENT,
    password: str | None = None,
    student_id: str | None = None,
    display_name: str = "",
) -> User:
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise Invalid("A username is 1-64 characters without spaces.")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"User {username!r} already exists.")
    if student_id and session.scalar(select(User.id).where(User.student_id == student_id)):
        raise Conflict(f"Student id {student_id!r} is already taken.")
    user = User(
        username=username,
        role=Role(role).value,
        password_hash=hash_password(password) if password else None,
        student_id=student_id or None,
        display_name=display_name or username,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    session.flush()


def authenticate(session: Session, *, username: str, password: str) -> User:
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


def issue_token(
    session: Session, *, user: User, name: str = "", ttl: timedelta | None = None
) -> IssuedToken:
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


def log_in(
    session: Session, *, username: str, password: str, name: str, ttl: timedelta | None
) -> tuple[User, IssuedToken]:
    """Check the password, then issue a token in a short write transaction of its own.

    Unlike other services this commits: on SQLite a transaction that reads and then writes
    fails when another writer (the grading worker, say) commits in between, and the argon2
    check (~50 ms) must not run while the write lock is held, or a burst of logins queues
    behind it.
    """
    user = authenticate(session, username=username, password=password)
    session.commit()
    begin_write(session)
    issued = issue_token(session, user=user, name=name, ttl=ttl)
    session.commit()
    return user, issued


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


def revoke_token(session: Session, *, actor: User, token_id: int) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None or (record.user_id != actor.id and not actor.is_instructor):
        raise NotFound("No such token.")
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


def import_roster(session: Session, *, path: Path, role: Role = Role.STUDENT) -> list[ImportedUser]:
    """Create the roster's users (columns: username, student_id, display_name, password).

    Existing usernames are left untouched, so importing the same roster twice is harmless.
    Users without a password column get a generated one, returned once.
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
            password = (row.get("password") or "").strip() or generate_password()
            create_user(
                session,
                username=username,
                role=Role((row.get("role") or role).strip() or role),
                password=password,
                student_id=(row.get("student_id") or "").strip() or None,
                display_name=(row.get("display_name") or "").strip(),
            )
            out.append(ImportedUser(username, password, created=True))
    return out


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))
