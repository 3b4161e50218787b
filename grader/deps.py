"""FastAPI dependencies and the Annotated aliases routes use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

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


async def get_session(request: Request, settings: SettingsDep) -> AsyncIterator[Session]:
    """The request's unit of work: commit on success, roll back on any error.

    Creating a session does no I/O (it connects lazily), and a route that already committed
    leaves nothing to do, so only a still-open transaction costs a threadpool hop at the end.
    The session is also left on request.state: a page that turns an error into an HTML
    response (grader.web.core.WebRoute) rolls it back itself, because no exception reaches
    this function then.
    """
    session = get_sessionmaker(settings.sqlalchemy_url)()
    request.state.db_session = session
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(session.rollback)
        raise
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(session.close)
        else:
            session.close()


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
