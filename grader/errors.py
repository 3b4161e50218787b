"""Domain errors. Services raise these; app.py maps each to one HTTP status."""

from __future__ import annotations


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
