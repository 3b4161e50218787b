from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import CliRunner, ConnectionCounter


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    home = tmp_path / "home"
    home.mkdir()
    return CliRunner(home)


@pytest.fixture
def counter() -> Iterator[ConnectionCounter]:
    listener = ConnectionCounter()
    yield listener
    listener.close()
