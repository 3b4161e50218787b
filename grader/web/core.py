"""What every page route shares: templates, the logged-in user, CSRF checks, error pages."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import JSONResponse, RedirectResponse, Response

from grader import __version__
from grader.auth import service as auth_service
from grader.auth.models import User
from grader.deps import (
    SessionDep,
    SettingsDep,
    UnitOfWorkRoute,
    roll_back_request_session,
)
from grader.errors import DomainError, Forbidden, NotAuthenticated
from grader.web import session as web_session
from grader.web.formatting import register_filters

WEB_DIR = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
register_filters(templates.env)


class LoginRequired(Exception):
    """An anonymous visitor asked for a page that needs a login."""


class CsrfRejected(DomainError):
    status_code = 403


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    user: User | None = None,
) -> Response:
    settings = request.app.state.settings
    session = web_session.load_session(request, settings)
    if user is None:
        user = getattr(request.state, "web_user", None)
    ctx: dict[str, Any] = {
        "user": user,
        "csrf_token": web_session.csrf_token(settings, session),
        "csrf_field": web_session.CSRF_FIELD,
        "version": __version__,
        **(context or {}),
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    web_session.write_cookie(response, request, settings)
    # Pages show per-user data: never let a shared cache keep them.
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status_code: int, detail: str) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 401: "Please log in", 429: "Slow down"}
    return render(
        request,
        "error.html",
        {"status": status_code, "title": titles.get(status_code, "Something went wrong"),
         "detail": detail},
        status_code=status_code,
    )  # fmt: skip


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


class WebRoute(UnitOfWorkRoute):
    """Turns domain errors into HTML pages (not the API's JSON) and anonymous visits into a
    redirect to the login page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            wants_json = "application/json" in request.headers.get("accept", "")
            try:
                return await original(request)
            except LoginRequired:
                if wants_json:  # the page's scripts (upload, status polling) read JSON
                    return JSONResponse({"detail": "Please log in again."}, status_code=401)
                return login_redirect(request)
            except DomainError as exc:
                if wants_json:
                    response: Response = JSONResponse(
                        {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                    )
                else:
                    response = error_page(request, exc.status_code, exc.detail)
                    for key, value in (exc.headers or {}).items():
                        response.headers[key] = value
                # The error becomes a response here, so the session dependency sees a normal
                # return and would commit: undo what the route wrote before it failed (a
                # roster import refused on line 3 must not keep lines 1-2). The page above
                # is already rendered, so nothing reads the expired objects afterwards.
                await roll_back_request_session(request)
                return response

        return handler


def optional_user(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    web = web_session.load_session(request, settings)
    if not web.token:
        return None
    try:
        user = auth_service.resolve_token(session, token=web.token)
    except NotAuthenticated:
        return None
    request.state.web_user = user
    return user


MaybeUser = Annotated[User | None, Depends(optional_user)]


def required_user(user: MaybeUser) -> User:
    if user is None:
        raise LoginRequired()
    return user


PageUser = Annotated[User, Depends(required_user)]


def required_instructor(user: PageUser) -> User:
    if not user.is_instructor:
        raise Forbidden("This page is for instructors.")
    return user


PageInstructor = Annotated[User, Depends(required_instructor)]

CSRF_MESSAGE = (
    "The form's security token is missing or out of date (this happens after logging in "
    "again in another tab, or when a page is left open for a long time). Go back, reload the "
    "page and submit again."
)


async def check_csrf_form(request: Request, settings: SettingsDep) -> None:
    """For urlencoded/multipart forms: the token in a hidden field (or the header)."""
    presented = request.headers.get(web_session.CSRF_HEADER)
    if presented is None:
        form = await request.form()
        value = form.get(web_session.CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not web_session.csrf_ok(settings, web_session.load_session(request, settings), presented):
        raise CsrfRejected(CSRF_MESSAGE)


def check_csrf_header(request: Request, settings: SettingsDep) -> None:
    """For streamed uploads, whose body must not be parsed first: the header only.

    Never the query string: a token in a URL ends up in access logs, proxies and Referer
    headers. The upload page's script sends the header.
    """
    presented = request.headers.get(web_session.CSRF_HEADER)
    if not web_session.csrf_ok(settings, web_session.load_session(request, settings), presented):
        raise CsrfRejected(CSRF_MESSAGE)


CsrfForm = Depends(check_csrf_form)
CsrfHeader = Depends(check_csrf_header)
