"""Domain errors. Services raise these; app.py maps each to one HTTP status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotAuthenticated(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class PayloadTooLarge(DomainError):
    status_code = 413


class Invalid(DomainError):
    status_code = 422


class RateLimited(DomainError):
    status_code = 429


class ErrorBody(BaseModel):
    """The body of every 4xx a domain error produces: `{"detail": "..."}`."""

    detail: str


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Not authenticated",
    403: "Not allowed for this role",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Payload too large",
    422: "Invalid input",
    429: "Too many requests (see Retry-After)",
    503: "Busy; nothing was changed (see Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the domain errors a route really returns."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}
