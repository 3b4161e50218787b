"""An exercise names its kind: through the API and the admin CLI, with the kind's default
threshold, its own test-set format, and a kind that changes only before a test set exists."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np

from grader.config import Settings
from grader.db import session_scope
from grader.exercises import service as exercises
from grader.grading.testdata.shapes import generate_shapes, write_npz
from tests.service.conftest import Api


def _slug() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def test_the_api_creates_a_classification_exercise_with_its_defaults(admin: Api) -> None:
    slug = _slug()
    created = admin.post(
        "/api/v1/exercises", json={"slug": slug, "title": "Shapes", "kind": "classification"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "classification"
    assert created.json()["threshold"] == 80.0
    keypoints = admin.post("/api/v1/exercises", json={"slug": _slug(), "title": "Faces"})
    assert keypoints.json()["kind"] == "keypoints" and keypoints.json()["threshold"] == 100.0


def test_an_unknown_kind_is_a_clear_422(admin: Api) -> None:
    response = admin.post(
        "/api/v1/exercises", json={"slug": _slug(), "title": "x", "kind": "regression"}
    )
    assert response.status_code == 422
    assert "classification" in response.text and "keypoints" in response.text


def test_the_test_set_is_read_in_the_kinds_format(
    admin: Api, small_test_set: Path, tmp_path: Path
) -> None:
    slug = _slug()
    admin.post("/api/v1/exercises", json={"slug": slug, "title": "S", "kind": "classification"})
    # A keypoints CSV is not a classification test set: refused, naming the expected format.
    with small_test_set.open("rb") as fh:
        wrong = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
    assert wrong.status_code == 422, wrong.text
    assert "npz" in wrong.text

    images, labels = generate_shapes(split="test", count=40)
    write_npz(tmp_path / "shapes.npz", images, labels)
    with (tmp_path / "shapes.npz").open("rb") as fh:
        right = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("s.npz", fh)})
    assert right.status_code == 200, right.text
    assert right.json()["testset_version"] == 1


def test_the_kind_changes_only_before_a_test_set(admin: Api, small_test_set: Path) -> None:
    slug = _slug()
    admin.post("/api/v1/exercises", json={"slug": slug, "title": "S", "kind": "classification"})
    back = admin.patch(f"/api/v1/exercises/{slug}", json={"kind": "keypoints"})
    assert back.status_code == 200 and back.json()["kind"] == "keypoints"
    with small_test_set.open("rb") as fh:
        admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
    refused = admin.patch(f"/api/v1/exercises/{slug}", json={"kind": "classification"})
    assert refused.status_code == 409
    assert "before it has a test set" in refused.json()["detail"]


def test_the_admin_cli_creates_one_with_the_kinds_demo_test_set(settings: Settings) -> None:
    slug = _slug()
    env = {
        **os.environ,
        "GRADER_DATA_DIR": str(settings.data_dir),
        "GRADER_DATABASE_URL": settings.sqlalchemy_url,
    }
    result = subprocess.run(
        [sys.executable, "-c", "from grader.cli import main; main()", "exercises", "create",
         slug, "--title", "Shapes", "--kind", "classification", "--demo-test-set"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with session_scope(settings.sqlalchemy_url) as session:
        exercise = exercises.get_exercise(session, slug=slug)
        assert (exercise.kind, exercise.threshold) == ("classification", 80.0)
        assert exercise.testset_path is not None and exercise.testset_path.endswith(".npz")
        with np.load(exercise.testset_path) as data:
            assert data["images"].shape[1:] == (32, 32, 3)
