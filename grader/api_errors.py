"""Moved to grader.errors; this name stays only for importers not yet updated."""

from grader.errors import ValidationErrorBody, ValidationProblem, api_errors

__all__ = ["ValidationErrorBody", "ValidationProblem", "api_errors"]
