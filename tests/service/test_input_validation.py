"""Hostile and malformed input gets a clear 4xx on SQLite and PostgreSQL, never a 500, and
leaves nothing behind: NUL bytes, over-long strings, non-finite or huge numbers, broken
multipart bodies, out-of-range test sets. Plus what the OpenAPI document promises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.db import session_scope
from grader.errors import Invalid
from grader.exercises import service as exercises
from grader.grading.testdata.faces import generate_faces, write_course_csv
from grader.grading.testdata.testsets import TestSetError, load_test_set
from tests.service.conftest import Api
from tests.support.models import write_linear_model

GRADER = [sys.executable, "-c", "from grader.cli import main; main()"]
REPO = Path(__file__).resolve().parents[2]


def _multipart(
    filename: bytes, body: bytes, *, boundary: bytes = b"xyz", extra: bytes = b""
) -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        + extra + b"Content-Type: application/octet-stream\r\n\r\n"
        + body + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip


def _post_raw(
    api: Api, path: str, body: bytes, *, boundary: str = "xyz", method: str = "post"
) -> Any:
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return getattr(api, method)(path, content=body, headers=headers)


def _leftovers(settings: Settings) -> list[Path]:
    folders = (settings.uploads_dir / ".incoming", settings.testsets_dir / ".incoming")
    return [p for folder in folders if folder.exists() for p in folder.iterdir()]


def _stored(settings: Settings, model: Path) -> bool:
    import hashlib

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    return (settings.uploads_dir / sha[:2] / f"{sha}.pt").exists()


@pytest.fixture
def own_model(tmp_path: Path) -> Path:
    """A model nobody else uploads, so whether it got stored can be checked."""
    return write_linear_model(tmp_path / "own.pt", seed=uuid.uuid4().int % 100_000)


def _detail(response: Any) -> str:
    body = response.json()
    assert isinstance(body["detail"], str), body  # the documented ErrorBody
    return str(body["detail"])


# --- strings that cannot be stored ------------------------------------------------------


def test_malformed_slugs_are_422_everywhere(admin: Api, make_student: Any) -> None:
    student = make_student()
    for path in (
        "/api/v1/exercises/a%00b",
        "/api/v1/exercises/" + "x" * 100,
        "/api/v1/exercises/a%00b/leaderboard",
        "/api/v1/submissions?exercise=a%00b",
    ):
        for who in (student, admin):
            response = who.get(path)
            assert response.status_code == 422, (path, response.text)
            assert "not an exercise slug" in _detail(response)
    assert admin.patch("/api/v1/exercises/a%00b", json={"title": "x"}).status_code == 422


@pytest.mark.parametrize(
    "filename", [b"a\x00b.pt", "evil\u202egnp.pt".encode(), b"tab\x07bell.pt", b"\x1b[31m.pt"]
)
def test_file_names_with_control_or_bidi_characters_are_422_and_leave_nothing(
    filename: bytes, settings: Settings, make_student: Any, make_exercise: Any, own_model: Path
) -> None:
    student, slug = make_student(), make_exercise()
    response = _post_raw(
        student,
        f"/api/v1/exercises/{slug}/submissions",
        _multipart(filename, own_model.read_bytes()),
    )
    assert response.status_code == 422, response.text
    assert "file name" in _detail(response)
    assert not _stored(settings, own_model) and _leftovers(settings) == []
    assert student.get("/api/v1/submissions").json()["total"] == 0


def test_an_unpublished_exercise_is_not_found_for_students_like_an_unknown_one(
    admin: Api, make_student: Any, make_exercise: Any
) -> None:
    student, slug = make_student(), make_exercise()
    assert admin.patch(f"/api/v1/exercises/{slug}", json={"is_published": False}).is_success
    for path in (
        f"/api/v1/submissions?exercise={slug}",
        f"/api/v1/exercises/{slug}",
        f"/api/v1/exercises/{slug}/leaderboard",
    ):
        hidden = student.get(path)
        unknown = student.get(path.replace(slug, "no-such-exercise"))
        assert hidden.status_code == unknown.status_code == 404, (path, hidden.text)
    assert admin.get(f"/api/v1/submissions?exercise={slug}").status_code == 200


def test_ids_and_offsets_beyond_any_row_are_not_found_not_500(
    settings: Settings, admin: Api, make_student: Any
) -> None:
    student = make_student()
    for sid in (2**31, 10**20):
        assert student.get(f"/api/v1/submissions/{sid}").status_code == 404
        assert admin.post(f"/api/v1/submissions/{sid}/rescore").status_code == 404
    huge = student.get("/api/v1/submissions", params={"offset": 10**20})
    assert huge.status_code == 422
    # The web history pages compute their offset; the service answers an empty page.
    from grader.auth.models import User
    from grader.submissions import service as submissions

    with session_scope(settings.sqlalchemy_url, write=False) as session:
        user = session.scalar(select(User).where(User.username == student.username))
        assert user is not None
        page = submissions.list_submissions(session, user=user, offset=10**12)
        assert page.items == [] and page.total == 0


# --- malformed multipart -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["10000-character file name", "300-character boundary", "bare CR"])
def test_malformed_multipart_is_400_for_models_and_test_sets(
    case: str, settings: Settings, admin: Api, make_exercise: Any, own_model: Path
) -> None:
    slug = make_exercise()
    boundary, filename, extra = "xyz", b"m.pt", b""
    if case == "10000-character file name":
        filename = b"a" * 10_000 + b".pt"
    elif case == "300-character boundary":
        boundary = "b" * 300
    else:
        extra = b"X-Note: a\rb\r\n"
    body = _multipart(filename, own_model.read_bytes(), boundary=boundary.encode(), extra=extra)
    for path, method in (
        (f"/api/v1/exercises/{slug}/submissions", "post"),
        (f"/api/v1/exercises/{slug}/test-set", "put"),
    ):
        response = _post_raw(admin, path, body, boundary=boundary, method=method)
        assert response.status_code == 400, (path, response.text)
        assert "Malformed multipart" in _detail(response)
    assert not _stored(settings, own_model) and _leftovers(settings) == []
    assert admin.get(f"/api/v1/exercises/{slug}").json()["testset_version"] == 1


# --- exercise settings ------------------------------------------------------------------

BAD_SETTINGS = [
    '{"title": "' + "x" * 300 + '"}',
    '{"title": "a\\u0000b"}',
    '{"title": null}',
    '{"description": null}',
    '{"description": "a\\u0000b"}',
    '{"threshold": NaN}',
    '{"threshold": Infinity}',
    '{"threshold": -1}',
    '{"threshold": null}',
    '{"daily_limit": 1e30}',
    '{"daily_limit": 1000000000000}',
    '{"daily_limit": 0}',
    '{"time_limit_s": 1e308}',
    '{"time_limit_s": 541}',
    '{"time_limit_s": 0}',
    '{"max_model_bytes": 1099511627776}',
    '{"max_model_bytes": null}',
    '{"queue": null}',
    '{"late_policy": null}',
    '{"is_published": null}',
]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/v1/tokens", '{"name": "ci", "expires_in_days": NaN}'),
        ("/api/v1/tokens", '{"name": Infinity}'),
        ("/api/v1/users", '{"username": -Infinity, "password": "long-enough"}'),
        ("/api/v1/users", '{"username": "ok-name", "student_id": [NaN, {"x": Infinity}]}'),
    ],
)
def test_non_finite_numbers_anywhere_are_a_422(admin: Api, path: str, raw: str) -> None:
    """Python's JSON parser accepts NaN and Infinity; the 422 that refuses them echoes
    them back as JSON's spelling, in strings, instead of failing to render (a 500)."""
    response = admin.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    echoed = json.dumps(response.json())
    assert any(word in echoed for word in ('"NaN"', '"Infinity"', '"-Infinity"')), echoed


@pytest.mark.parametrize("raw", BAD_SETTINGS)
def test_bad_exercise_settings_are_422_and_change_nothing(
    raw: str, admin: Api, make_exercise: Any
) -> None:
    slug = make_exercise(daily_limit=3)
    before = admin.get(f"/api/v1/exercises/{slug}").json()
    headers = {"Content-Type": "application/json"}
    patched = admin.patch(f"/api/v1/exercises/{slug}", content=raw, headers=headers)
    assert patched.status_code == 422, patched.text
    assert admin.get(f"/api/v1/exercises/{slug}").json() == before
    fields = json.loads(raw)
    created = admin.post(
        "/api/v1/exercises",
        content=json.dumps({"slug": f"c-{uuid.uuid4().hex[:8]}", "title": "t", **fields}),
        headers=headers,
    )
    # A null on creation means "the default" for the optional settings.
    if None not in fields.values() or "title" in fields:
        assert created.status_code == 422, created.text


def test_the_time_limit_ceiling_and_clearing_optional_settings(
    settings: Settings, admin: Api, make_exercise: Any
) -> None:
    slug = make_exercise()
    ceiling = exercises.max_time_limit_s(settings)
    assert ceiling == settings.task_hard_time_limit_s - exercises.TIME_LIMIT_MARGIN_S == 540
    ok = admin.patch(f"/api/v1/exercises/{slug}", json={"time_limit_s": ceiling})
    assert ok.status_code == 200 and ok.json()["time_limit_s"] == ceiling
    cleared = admin.patch(
        f"/api/v1/exercises/{slug}", json={"time_limit_s": None, "daily_limit": None}
    )
    assert cleared.status_code == 200
    assert (cleared.json()["time_limit_s"], cleared.json()["daily_limit"]) == (None, None)


def test_new_exercises_get_the_default_daily_limit_unless_told(
    settings: Settings, admin: Api
) -> None:
    assert settings.default_daily_limit == 10
    default = admin.post(
        "/api/v1/exercises", json={"slug": f"d-{uuid.uuid4().hex[:8]}", "title": "t"}
    )
    assert default.status_code == 201 and default.json()["daily_limit"] == 10
    unlimited = admin.post(
        "/api/v1/exercises",
        json={"slug": f"u-{uuid.uuid4().hex[:8]}", "title": "t", "daily_limit": None},
    )
    assert unlimited.status_code == 201 and unlimited.json()["daily_limit"] is None


def test_the_service_holds_the_same_bounds_for_every_caller(settings: Settings) -> None:
    """The web form and the CLI call these functions; the API is not the only gate."""
    with session_scope(settings.sqlalchemy_url) as session:
        assert isinstance(session, Session)
        slug = f"svc-{uuid.uuid4().hex[:8]}"
        exercise = exercises.create_exercise(session, slug=slug, title="t", settings=settings)
        assert exercise.daily_limit == settings.default_daily_limit
        for changes in (
            {"threshold": math.inf},
            {"threshold": math.nan},
            {"time_limit_s": 1e308},
            {"daily_limit": 10**30},
            {"title": "x" * 201},
            {"title": "bad\u202etitle"},
            {"title": None},
        ):
            with pytest.raises(Invalid):
                exercises.update_exercise(
                    session, exercise=exercise, changes=changes, settings=settings
                )
        with pytest.raises(Invalid):
            exercises.create_exercise(
                session, slug=f"x-{slug}", title="t", settings=settings, threshold=math.inf
            )
        with pytest.raises(Invalid):
            exercises.mib_to_bytes(math.nan)
        assert exercise.threshold == settings.default_threshold


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # This checkout's code, whatever is installed.
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "GRADER_DATABASE_URL": settings.sqlalchemy_url,
        "GRADER_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [*GRADER, "exercises", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_grader_exercises_create_refuses_bad_numbers_with_a_message(settings: Settings) -> None:
    for bad in (["--threshold", "nan"], ["--max-model-mb", "nan"], ["--max-model-mb", "inf"]):
        out = _cli(settings, "create", f"cli-{uuid.uuid4().hex[:8]}", "--title", "t", *bad)
        assert out.returncode == 1, (bad, out.stderr)
        assert "Error:" in out.stderr and "Traceback" not in out.stderr, out.stderr
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    assert _cli(settings, "create", slug, "--title", "t", "--no-daily-limit").returncode == 0
    with session_scope(settings.sqlalchemy_url) as session:
        assert exercises.get_exercise(session, slug=slug).daily_limit is None


# --- test sets -----------------------------------------------------------------------


def _csv_with(tmp_path: Path, *, x: str) -> Path:
    path = tmp_path / "set.csv"
    write_course_csv(path, *generate_faces(split="test", count=3, seed=1))
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[0] = x  # left_eye_center_x of row 1
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_keypoints_must_lie_near_the_image(tmp_path: Path) -> None:
    for value in ("1e200", "193", "-97", "-1e308"):
        with pytest.raises(TestSetError, match="outside"):
            load_test_set(_csv_with(tmp_path, x=value))
    for value in ("192", "-96", "0", "95.5"):
        assert len(load_test_set(_csv_with(tmp_path, x=value))) == 3


def test_test_set_errors_name_the_uploaded_file_not_the_servers_temp_file(
    settings: Settings, admin: Api, make_exercise: Any, tmp_path: Path
) -> None:
    slug = make_exercise()
    bad = _csv_with(tmp_path, x="1e200").read_bytes()
    response = admin.put(
        f"/api/v1/exercises/{slug}/test-set", files={"file": ("hidden-v2.csv", bad, "text/csv")}
    )
    assert response.status_code == 422, response.text
    detail = _detail(response)
    assert detail.startswith(
        "Invalid test set: hidden-v2.csv: row 1 (line 2): column left_eye_center_x"
    )
    assert "outside [-96, 192]" in detail and "upload" not in detail and "tmp" not in detail
    assert admin.get(f"/api/v1/exercises/{slug}").json()["testset_version"] == 1
    missing = _post_raw(admin, f"/api/v1/exercises/{slug}/test-set", b"--xyz--\r\n", method="put")
    assert missing.status_code == 422 and "no field named 'file'" in _detail(missing)
    assert _leftovers(settings) == []


# --- what the OpenAPI document says ------------------------------------------------------

DOCUMENTED = {
    ("get", "/api/v1/exercises"): {401},
    ("get", "/api/v1/exercises/{slug}"): {401, 404, 422},
    ("post", "/api/v1/exercises"): {401, 403, 409, 422},
    ("patch", "/api/v1/exercises/{slug}"): {401, 403, 404, 422},
    ("put", "/api/v1/exercises/{slug}/test-set"): {400, 401, 403, 404, 413, 422},
    ("post", "/api/v1/exercises/{slug}/rescore"): {401, 403, 404, 422},
    ("get", "/api/v1/exercises/{slug}/grades.csv"): {401, 403, 404, 422},
    ("post", "/api/v1/exercises/{slug}/submissions"): {400, 401, 403, 404, 409, 413, 422, 429},
    ("get", "/api/v1/submissions/{submission_id}"): {401, 404, 422},
    ("get", "/api/v1/submissions"): {401, 404, 422},
    ("post", "/api/v1/submissions/{submission_id}/rescore"): {401, 403, 404, 409, 422},
    ("get", "/api/v1/exercises/{slug}/leaderboard"): {401, 403, 404, 422},
}


def test_openapi_documents_the_errors_each_route_returns(app_client: Any) -> None:
    spec = app_client.get("/openapi.json").json()
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for (method, path), codes in DOCUMENTED.items():
        responses = spec["paths"][path][method]["responses"]
        assert {int(c) for c in responses if c.startswith("4")} == codes, (method, path)
        for code in codes - {422}:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            assert schema == error_body, (method, path, code)
        if 422 not in codes:
            continue
        schema = responses["422"]["content"]["application/json"]["schema"]
        # Routes that read their own input answer only ErrorBody; the others may also answer
        # FastAPI's list of validation problems.
        assert schema == error_body or error_body in schema["anyOf"], (method, path)
    upload = spec["paths"]["/api/v1/exercises/{slug}/submissions"]["post"]["responses"]
    assert upload["422"]["content"]["application/json"]["schema"] == error_body
