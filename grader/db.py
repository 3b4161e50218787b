"""Engine, session factory and the declarative Base every domain's models share."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, sessionmaker
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)

# Stable constraint names so Alembic migrations are reproducible on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Row ids are 32-bit integers on every backend. A larger number from a URL names no row, and
# must be answered as "not found" before it reaches the database: PostgreSQL refuses to compare
# it with the column and SQLite's driver cannot even bind it (both a 500 otherwise).
MAX_ROW_ID = 2**31 - 1


def is_row_id(value: int) -> bool:
    """Whether `value` could be the id of a row."""
    return 1 <= value <= MAX_ROW_ID


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (see _begin_immediate), so turn off pysqlite's own handling.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the worker read while the API writes; busy_timeout turns lock contention
    # during an upload rush into a short wait instead of "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: WAL + NORMAL survives an app crash but a power loss can drop the last commits, and
    # a 202 is a promise (the model file is already fsynced for it). In WAL mode FULL costs
    # one WAL fsync per commit: within noise in the upload rush (BENCHMARKS.md, Service).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=30,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _begin_immediate(conn: Any) -> None:
    # A deferred SQLite transaction that reads and then writes fails at once with "database is
    # locked" when another writer committed in between (busy_timeout cannot help a stale WAL
    # snapshot). Transactions that will write after reading ask for the write lock up front
    # (begin_write); they then queue on busy_timeout. Reads stay deferred and lock-free.
    if conn.get_execution_options().get("sqlite_immediate"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


_WRITE_LOCK_KEY = "grader_sqlite_write_lock"
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _sqlite_write_lock(url: str) -> threading.Lock:
    with _write_locks_guard:
        return _write_locks.setdefault(url, threading.Lock())


def begin_write(session: Session) -> None:
    """Start `session`'s transaction as a writer (SQLite: BEGIN IMMEDIATE; a no-op elsewhere).

    Call before the first statement, and commit within the same thread hop: a write lock held
    while waiting for a threadpool slot can starve the threads that would release it.

    SQLite: writers of this process first queue on a Python lock, released when the
    transaction ends. Without it, 50 concurrent uploads all wait in SQLite's busy handler,
    which polls with sleeps growing to 100 ms: a measured p99 of ~250-550 ms just to begin.
    Other processes (the worker) still meet us through busy_timeout. The wait is bounded like
    busy_timeout, so a nested writer in one thread degrades to the old behaviour, never hangs.
    """
    if session.in_transaction():
        return
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        session.connection()
        return
    lock = _sqlite_write_lock(str(bind.engine.url))
    if lock.acquire(timeout=30):
        session.info[_WRITE_LOCK_KEY] = lock
    try:
        session.connection(execution_options={"sqlite_immediate": True})
    except BaseException:
        _release_write_lock(session)
        raise


def _release_write_lock(session: Session) -> None:
    lock = session.info.pop(_WRITE_LOCK_KEY, None)
    if lock is not None:
        lock.release()


def _release_on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the root transaction, not a savepoint
        _release_write_lock(session)


# Registered before _run_after_commit: the next writer may start while we publish.
event.listen(Session, "after_commit", _release_write_lock)
event.listen(Session, "after_transaction_end", _release_on_end)


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str, *, write: bool = True) -> Iterator[Session]:
    """Unit of work outside a request: commit on success, roll back on any error."""
    session = get_sessionmaker(url)()
    try:
        if write:
            begin_write(session)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dialect_insert(session: Session) -> Any:
    """The insert construct of the session's database, for ON CONFLICT (SQLite and PostgreSQL
    spell it alike)."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    if session.get_bind().dialect.name == "postgresql":
        return postgresql_insert
    return sqlite_insert


class DuplicateRow(Exception):
    """A unique constraint refused an insert; the message is the database's (it names the
    constraint or the column)."""


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    # PostgreSQL's SQLSTATE unique_violation; SQLite has no codes in its Python errors.
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


@contextmanager
def unique_insert(session: Session) -> Iterator[None]:
    """Flush the rows added in the block in a savepoint; raise DuplicateRow if a unique
    constraint refuses them.

    Services look for an existing row first, for a clear message, but two requests can both
    pass that check before either commits; the second INSERT then fails on the constraint
    (PostgreSQL; SQLite's writers take turns). The caller turns DuplicateRow into the same
    Conflict the check gives, and the savepoint keeps the rest of the transaction usable.
    """
    try:
        with session.begin_nested():
            yield
    except IntegrityError as exc:
        if not _is_unique_violation(exc):
            raise
        raise DuplicateRow(str(exc.orig)) from exc


def import_all_models() -> None:
    """Register every domain's tables on Base.metadata (Alembic and create_all need them)."""
    import grader.auth.models  # noqa: F401
    import grader.exercises.models  # noqa: F401
    import grader.integrity.models  # noqa: F401
    import grader.leaderboard.models  # noqa: F401
    import grader.submissions.models  # noqa: F401


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once this session's transaction has committed (never on rollback).

    Used to publish a task only after the row it names is visible to the worker.
    """
    session.info.setdefault("after_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a failed publish is recovered by the sweeper, never by the request
            logger.exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)
