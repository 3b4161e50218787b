"""OpenAPI `responses=` for routes whose 422 can come from two places.

A domain error answers `{"detail": "one message"}` (ErrorBody); FastAPI's own request
validation (a JSON body of the wrong shape, a non-integer id in the path, `limit=0`) answers
`{"detail": [{"loc", "msg", "type"}, ...]}`. Routes that read their input themselves (uploads,
test sets) only ever answer the first and use `error_responses(..., 422)` directly.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from grader.errors import ErrorBody, error_responses


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """FastAPI's request-validation body: one entry per problem."""

    detail: list[ValidationProblem]


def api_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses(*codes)`, with 422 documented as either body."""
    responses = error_responses(*(code for code in codes if code != 422))
    if 422 in codes:
        responses[422] = {
            "model": ErrorBody | ValidationErrorBody,
            "description": "Invalid input: one message, or FastAPI's list of problems",
        }
    return responses
