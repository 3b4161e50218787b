"""Where an accepted model is stored, and what making it durable costs the upload."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from grader.config import Settings
from grader.submissions.upload import model_storage_path
from tests.service.conftest import Api
from tests.support.models import write_linear_model


def test_an_upload_fsyncs_its_file_and_its_directory_and_nothing_else(
    settings: Settings, app_client: Any, make_student: Any, make_exercise: Any,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server makes every prefix directory durable when it starts, so an upload into a
    prefix nobody used yet still pays only its own two fsyncs (the received bytes, the rename)
    and never the uploads folder's, inside the transaction that admits it."""
    prefixes = {p.name for p in settings.uploads_dir.iterdir() if p.is_dir()}
    assert {f"{i:02x}" for i in range(256)} <= prefixes
    student: Api = make_student()
    slug = make_exercise()
    model = write_linear_model(tmp_path / "fresh.pt", seed=424_242)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    response = student.upload(slug, model)
    monkeypatch.undo()
    assert response.status_code == 202, response.text
    stored = model_storage_path(settings.uploads_dir, sha)
    assert stored.is_file()
    assert str(settings.uploads_dir.resolve()) not in synced, synced
    assert synced.count(str(stored.parent.resolve())) == 1, synced
    assert len(synced) == 2, synced
