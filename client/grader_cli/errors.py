"""Exit codes and the one exception type commands raise to end with a readable line."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    GRADED_FAILED = 1
    USAGE = 2
    SERVER = 3
    AUTH = 4
    # The shell convention for SIGINT; the submission itself is unaffected.
    INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    def __init__(
        self, message: str, code: ExitCode, *, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # Added to the --json error object (e.g. the id of a submission still being graded).
        self.extra = extra or {}
