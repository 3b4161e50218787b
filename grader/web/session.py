"""Browser sessions: a signed cookie that carries an API token, and a per-session CSRF token.

The server-side state is the existing API token (auth.service.issue_token): logging out
revokes it, and an instructor revoking a user's tokens ends their browser sessions too. The
cookie also carries a random nonce from the first visit; the CSRF token is an HMAC of that
nonce, so forms work before login (the login form itself) and nothing extra is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from grader.config import Settings

COOKIE_NAME = "grader_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SALT = "grader.web.session"


@dataclass
class WebSession:
    nonce: str
    token: str | None = None
    # True when this request created the session: the response must set the cookie.
    fresh: bool = False


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=_SALT)


def _max_age(settings: Settings) -> int:
    return settings.access_token_ttl_hours * 3600


def load_session(request: Request, settings: Settings) -> WebSession:
    """The request's session (cached on request.state); a new anonymous one if none is valid."""
    cached: WebSession | None = getattr(request.state, "web_session", None)
    if cached is not None:
        return cached
    session: WebSession | None = None
    raw = request.cookies.get(COOKIE_NAME)
    if raw:
        try:
            data: Any = _serializer(settings).loads(raw, max_age=_max_age(settings))
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("n"), str):
            token = data.get("t")
            session = WebSession(nonce=data["n"], token=token if isinstance(token, str) else None)
    if session is None:
        session = WebSession(nonce=secrets.token_urlsafe(24), fresh=True)
    request.state.web_session = session
    return session


def start_session(request: Request, token: str) -> WebSession:
    """After login: a new nonce (so a CSRF token seen before login is useless) and the token."""
    session = WebSession(nonce=secrets.token_urlsafe(24), token=token, fresh=True)
    request.state.web_session = session
    return session


def csrf_token(settings: Settings, session: WebSession) -> str:
    key = hashlib.sha256(("csrf:" + settings.secret_key).encode()).digest()
    return hmac.new(key, session.nonce.encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, session: WebSession, presented: str | None) -> bool:
    if not presented or session.fresh:
        # A session created by this very request cannot have issued the token presented.
        return False
    return hmac.compare_digest(presented, csrf_token(settings, session))


def is_https(request: Request) -> bool:
    # uvicorn's proxy-headers middleware has already applied X-Forwarded-Proto to the scope
    # when the request came through a trusted proxy.
    return request.url.scheme == "https"


def write_cookie(response: Response, request: Request, settings: Settings) -> None:
    session: WebSession | None = getattr(request.state, "web_session", None)
    if session is None or not session.fresh:
        return
    value = _serializer(settings).dumps({"n": session.nonce, "t": session.token})
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=_max_age(settings),
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=is_https(request)
    )
