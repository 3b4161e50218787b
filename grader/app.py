"""create_app(): the FastAPI application (API under /api/v1, pages from grader.web if present)."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader import __version__
from grader.config import Settings, get_settings
from grader.db import get_engine
from grader.errors import DomainError
from grader.runtime.queue import Publisher
from grader.runtime.sweeper import SweeperThread
from grader.submissions.events import close_hubs, submission_changed
from grader.submissions.grading import mark_sent
from grader.submissions.service import Publish
from grader.submissions.upload import prepare_storage

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


# Pages load only their own script and stylesheet (grader/web/static) and draw charts as inline
# SVG, so everything may come from 'self' and nothing inline runs. No page may be framed
# (clickjacking of the rescore and token buttons), and forms post only to this site.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# FastAPI's /docs and /redoc load Swagger UI / ReDoc from jsDelivr and start them with an
# inline script. They show no user data; they keep frame-ancestors 'none' all the same.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    """Adds the headers above to every HTTP response, errors and static files included.

    Plain ASGI rather than BaseHTTPMiddleware: it touches only the response's start message,
    so streamed bodies (uploads, CSV exports) pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class GraderApp(FastAPI):
    """FastAPI with SecurityHeaders around the whole stack.

    A middleware added with add_middleware sits inside Starlette's ServerErrorMiddleware, so
    the 500 that middleware sends for an unhandled exception (and anything else answered
    outside the user middleware) would go out without the headers.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


# JSON's spelling of the non-finite numbers Python's parser accepts in a request body.
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by its JSON spelling as a string.

    A request body may hold `NaN` or `Infinity` (Python's JSON parser accepts them) and the
    422 that refuses it echoes the input back; no JSON response can hold those numbers, so
    FastAPI's own handler would fail while rendering it, a 500 instead of the 422.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def make_publish(settings: Settings, publisher: Publisher) -> Publish:
    def publish(
        submission_id: int, queue: str, *, preflight: bool = False, priority: int | None = None
    ) -> None:
        # Runs after the commit of an upload or a rescore: watchers hear of it (and of the
        # queue behind it) at once.
        submission_changed(settings, submission_id)
        if preflight:
            try:
                publisher.send_preflight(submission_id, queue=queue)
            except Exception as exc:
                # Only the early verdict is lost: the grading still sends it, and the
                # grading's own verdict follows.
                logger.warning("could not send the pre-flight of %s (%s)", submission_id, exc)
        try:
            publisher.send_grade(submission_id, queue=queue, priority=priority)
        except Exception as exc:
            # The row is committed; the sweeper sends it once the broker is back.
            logger.warning("could not publish submission %s (%s)", submission_id, exc)
            mark_sent(settings, submission_id, sent=False)

    return publish


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_storage(settings.uploads_dir)
        publisher = Publisher(settings)
        app.state.publish = make_publish(settings, publisher)
        sweeper = SweeperThread(settings, publisher) if settings.sweeper_enabled else None
        if sweeper is not None:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            close_hubs()
            publisher.close()

    app = GraderApp(
        title="grader",
        version=__version__,
        description="Grade TorchScript models against hidden test sets.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 body, renderable whatever the client sent.
        errors = finite_json(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError) -> JSONResponse:
        # SQLite refuses a read-then-write transaction when another writer committed in
        # between; the request changed nothing, so it is safe to say "retry" instead of 500.
        if "database is locked" not in str(exc.orig):
            raise exc
        logger.warning("database busy on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "The database is busy; nothing was changed. Retry in a moment."},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        with get_engine(settings.sqlalchemy_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    from grader.auth.router import router as auth_router
    from grader.exercises.router import router as exercises_router
    from grader.integrity.router import router as integrity_router
    from grader.leaderboard.router import router as leaderboard_router
    from grader.submissions.router import router as submissions_router

    for router in (auth_router, exercises_router, submissions_router, leaderboard_router,
                   integrity_router):
        app.include_router(router, prefix=API_PREFIX)

    from grader.ops.router import router as ops_router

    app.include_router(ops_router)  # GET /metrics

    # Pages (issue 5) plug in here when their package provides a router.
    if importlib.util.find_spec("grader.web.router") is not None:
        from grader.web.router import router as web_router  # type: ignore[import-not-found,unused-ignore]

        app.include_router(web_router)
    return app
