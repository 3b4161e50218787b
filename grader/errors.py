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


class BadRequest(DomainError):
    """The request itself is malformed (e.g. an unreadable multipart body): nothing in it
    could be read, so there is nothing to validate."""

    status_code = 400


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
    """OpenAPI `responses=` for the domain errors a route really returns.

    Routes that read their input themselves (uploads, test sets) only ever answer a domain
    error's `{"detail": "one message"}`; routes with a pydantic body or typed parameters can
    also answer FastAPI's own 422 and use `api_errors` instead.
    """
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """FastAPI's request-validation body (a JSON body of the wrong shape, a non-integer id in
    the path, `limit=0`): one entry per problem."""

    detail: list[ValidationProblem]


def api_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses(*codes)`, with 422 documented as either body: a domain error's one
    message or FastAPI's list of problems."""
    responses = error_responses(*(code for code in codes if code != 422))
    if 422 in codes:
        responses[422] = {
            "model": ErrorBody | ValidationErrorBody,
            "description": "Invalid input: one message, or FastAPI's list of problems",
        }
    return responses
