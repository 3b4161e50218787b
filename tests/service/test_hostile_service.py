"""Hostile models through the running service: each ends with its named failure, nothing
outside the sandbox changes, and the same worker grades an honest model right after."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from tests.sandbox import hostile_models as hm
from tests.support.live_server import LiveServer
from tests.support.models import write_small_test_set

pytestmark = pytest.mark.slow
TIME_LIMIT_S = 4.0


@pytest.fixture(scope="module")
def hostile_exercise(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    slug = f"hostile-{os.getpid()}"
    csv_path = write_small_test_set(tmp_path_factory.mktemp("hostile") / "t.csv")
    with live_server.admin_client() as admin:
        created = admin.post(
            "/api/v1/exercises",
            json={"slug": slug, "title": slug, "time_limit_s": TIME_LIMIT_S},
        )
        assert created.status_code == 201, created.text
        with csv_path.open("rb") as fh:
            put = admin.put(f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)})
        assert put.status_code == 200, put.text
    return slug


def _upload(client: httpx.Client, slug: str, path: Path) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post(f"/api/v1/exercises/{slug}/submissions", files={"file": (path.name, fh)})


def _graded(server: LiveServer, client: httpx.Client, slug: str, path: Path) -> dict[str, object]:
    response = _upload(client, slug, path)
    assert response.status_code == 202, response.text
    return server.wait_for_submission(client, int(response.json()["id"]), timeout=180)


def _hidden_test_set(server: LiveServer, slug: str) -> Path:
    (path,) = (server.data_dir / "testsets" / slug).glob("v1-*.csv")
    return path


def _assert_honest_model_still_graded(server: LiveServer, client: httpx.Client, slug: str,
                                      tmp_path: Path) -> None:
    body = _graded(server, client, slug, hm.save_scripted(hm.Honest(), tmp_path / "honest.pt"))
    assert body["status"] in ("PASSED", "FAILED"), body
    assert isinstance(body["score"], float) and body["score"] > 0


MODELS: dict[str, tuple[Callable[[LiveServer, str, Path], torch.nn.Module], str]] = {
    # Reads the hidden test set, which sits on the same machine as the worker.
    "reads_hidden_labels": (
        lambda s, slug, _: hm.SecretReader(str(_hidden_test_set(s, slug)), 64),
        "SANDBOX_VIOLATION",
    ),
    "writes_into_data_dir": (
        lambda s, _slug, _t: hm.Writer(str(s.data_dir / "pwned.pt")),
        "SANDBOX_VIOLATION",
    ),
    "writes_at_load_time": (
        lambda s, _slug, _t: hm.LoadTimeWriter(str(s.data_dir / "pwned-at-load.pt")),
        "SANDBOX_VIOLATION",
    ),
    "endless_loop": (lambda *_: hm.Endless(), "TIMEOUT"),
    "allocates_past_the_cap": (lambda *_: hm.HugeAllocation(), "MEMORY_LIMIT"),
    "nan_output": (lambda *_: hm.NaNOutput(), "NON_FINITE"),
    "wrong_shape": (lambda *_: hm.WrongShape(), "BAD_OUTPUT"),
    "integer_output": (lambda *_: hm.IntegerOutput(), "BAD_OUTPUT"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hostile_model_ends_with_its_named_failure(
    live_server: LiveServer, hostile_exercise: str, tmp_path: Path, name: str
) -> None:
    build, expected = MODELS[name]
    database = live_server.data_dir / "grader.sqlite3"
    database_before = database.stat().st_size
    path = hm.save_scripted(build(live_server, hostile_exercise, tmp_path), tmp_path / "m.pt")
    with live_server.student_client() as client:
        body = _graded(live_server, client, hostile_exercise, path)
        assert body["failure_reason"] == expected, body
        assert body["passed"] is False and not body["score"]
        assert body["failure_message"], body
        assert not (live_server.data_dir / "pwned.pt").exists()
        assert not (live_server.data_dir / "pwned-at-load.pt").exists()
        assert database.stat().st_size >= database_before  # not truncated or replaced
        _assert_honest_model_still_graded(live_server, client, hostile_exercise, tmp_path)


@pytest.mark.parametrize(
    "make",
    [hm.write_pickle, hm.write_random_bytes, hm.write_empty, hm.write_zip_bomb],
    ids=lambda f: f.__name__,
)
def test_files_that_are_not_models_are_refused_at_upload(
    live_server: LiveServer, hostile_exercise: str, tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "m.pt"
    make(path)
    with live_server.student_client() as client:
        response = _upload(client, hostile_exercise, path)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]
        listed = client.get("/api/v1/submissions", params={"exercise": hostile_exercise})
        assert listed.json()["items"] == []  # nothing was queued


def test_a_file_over_the_limit_is_413(
    live_server: LiveServer, hostile_exercise: str, tmp_path: Path
) -> None:
    with live_server.admin_client() as admin:
        limit = admin.get(f"/api/v1/exercises/{hostile_exercise}").json()["max_model_bytes"]
    path = tmp_path / "big.pt"
    path.write_bytes(b"\0" * (limit + 1))
    with live_server.student_client() as client:
        response = _upload(client, hostile_exercise, path)
    assert response.status_code == 413, response.text
