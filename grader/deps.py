"""FastAPI dependencies and the Annotated aliases routes use."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from grader.auth import service as auth_service
from grader.auth.models import User
from grader.config import Settings
from grader.db import get_sessionmaker, session_scope, utcnow
from grader.errors import Forbidden, NotAuthenticated
from grader.submissions.service import Publish

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# Dependencies that do no I/O are `async def`: a sync one costs a threadpool hop per request,
# which under an upload rush is measurable CPU and GIL churn (see BENCHMARKS.md, Service).
async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# Threads of their own for ending a request's transaction. A request holds its pooled
# connection from its first query (the token lookup) to this end; had the end to queue for
# the shared threadpool, a burst of requests (every student's page at the deadline) would
# fill that pool with threads waiting for connections that only queued ends can return: a
# deadlock until the connection pool's timeout. An end needs no new connection, so these
# always progress.
_ENDING_THREADS = 16


def _ending_limiter(request: Request) -> anyio.CapacityLimiter:
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "session_enders", None)
    if limiter is None:
        limiter = state.session_enders = anyio.CapacityLimiter(_ENDING_THREADS)
    return limiter


_request_session: ContextVar[Session | None] = ContextVar("grader_request_session", default=None)


class UnitOfWorkRoute(APIRoute):
    """Every route of the app: a sync endpoint commits its request's transaction (the one
    `get_session` opened) in its own thread, before returning. FastAPI validates a sync
    endpoint's response in another thread hop; a transaction still open there would hold its
    pooled connection while queueing for a thread, and a burst of requests (150 students'
    pages at once) deadlocks: every thread waits for a connection that only a queued hop
    would return, until the pool's timeout answers 500. Async endpoints run no such hop."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _committing(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _committing(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        session = _request_session.get()
        if session is not None and session.in_transaction():
            session.commit()  # a failure here is the request's, as in get_session
        return result

    return run


async def get_session(request: Request, settings: SettingsDep) -> AsyncIterator[Session]:
    """The request's unit of work: commit on success, roll back on any error.

    Creating a session does no I/O (it connects lazily), and a route that already committed
    leaves nothing to do, so only a still-open transaction costs a thread hop at the end (on
    threads of its own: see _ENDING_THREADS).
    The session is also left on request.state: a page that turns an error into an HTML
    response (grader.web.core.WebRoute) rolls it back itself, because no exception reaches
    this function then.
    """
    session = get_sessionmaker(settings.sqlalchemy_url)()
    request.state.db_session = session
    _request_session.set(session)  # this request's task, and the threads it hops to
    enders = _ending_limiter(request)
    try:
        yield session
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.commit, limiter=enders)
    except BaseException:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.rollback, limiter=enders)
        raise
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=enders)
        else:
            session.close()


async def roll_back_request_session(request: Request) -> None:
    """Undo what the request's session wrote (a page that rendered an error itself)."""
    session: Session | None = getattr(request.state, "db_session", None)
    if session is not None and session.in_transaction():
        await anyio.to_thread.run_sync(session.rollback, limiter=_ending_limiter(request))


# "function": the commit happens before the response is sent. FastAPI's default ends a yield
# dependency after sending, which acknowledged writes (201) that could still fail to commit
# and let a client's next request miss a row it had just been told exists.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    if not token:
        raise NotAuthenticated("Not authenticated: send 'Authorization: Bearer <token>'.")
    record = auth_service.resolve_token_record(session, token=token)
    user = record.user
    # Keep the request's transaction read-only: the bookkeeping write is its own short one.
    session.commit()
    if record.last_used_at is None or utcnow() - record.last_used_at > timedelta(minutes=1):
        with session_scope(settings.sqlalchemy_url) as own:
            auth_service.touch_token(own, record=record)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_instructor(user: CurrentUser) -> User:
    if not user.is_instructor:
        raise Forbidden("Only instructors can do this.")
    return user


InstructorUser = Annotated[User, Depends(get_instructor)]


def client_address(request: Request) -> str:
    """The caller's address, as login throttling counts it.

    Behind a reverse proxy this is the client's own address only if uvicorn trusts the proxy
    (FORWARDED_ALLOW_IPS, default 127.0.0.1): otherwise every visitor looks like the proxy and
    shares one per-address budget.
    """
    return request.client.host if request.client else "unknown"


async def get_publish(request: Request) -> Publish:
    publish: Publish = request.app.state.publish
    return publish


PublishDep = Annotated[Publish, Depends(get_publish)]
