"""Instructor forms do what they say: exercise settings, accounts, roster, API tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grader.app import create_app
from grader.auth import service as auth_service
from grader.auth.models import Role
from grader.config import Settings
from grader.db import session_scope
from grader.exercises import service as exercises
from tests.web.conftest import browser, csrf_from, log_in, make_user


def token_of(client: TestClient, path: str) -> str:
    return csrf_from(client.get(path).text)


def test_settings_form_updates_the_exercise(instructor: TestClient, web_settings: Settings) -> None:
    csrf = token_of(instructor, "/instructor/exercises")
    created = instructor.post(
        "/instructor/exercises",
        data={"csrf_token": csrf, "slug": "form-ex", "title": "Form exercise", "threshold": "80",
              "is_published": "1"},
    )  # fmt: skip
    assert created.status_code == 303
    response = instructor.post(
        "/instructor/exercises/form-ex",
        data={
            "csrf_token": csrf,
            "title": "Renamed",
            "threshold": "55.5",
            "deadline": "2031-05-04T12:30",
            "daily_limit": "3",
            "max_model_mb": "10",
            "queue": "gpu",
            "late_policy": "accept_late",
            "leaderboard_visibility": "public",
        },
    )
    assert response.status_code == 303
    with session_scope(web_settings.sqlalchemy_url) as session:
        ex = exercises.get_exercise(session, slug="form-ex")
        assert (ex.title, ex.threshold, ex.daily_limit, ex.queue) == ("Renamed", 55.5, 3, "gpu")
        assert ex.max_model_bytes == 10 * 1024 * 1024
        assert ex.deadline is not None and ex.deadline.isoformat() == "2031-05-04T12:30:00+00:00"
        assert ex.late_policy == "accept_late" and ex.leaderboard_visibility == "public"
        assert ex.is_published is False  # the checkbox was not sent
    bad = instructor.post(
        "/instructor/exercises/form-ex",
        data={"csrf_token": csrf, "title": "x", "daily_limit": "lots"},
    )
    assert bad.status_code == 422 and "daily limit" in bad.text


def test_create_account_shows_the_generated_password_once(
    instructor: TestClient, web_app: TestClient
) -> None:
    csrf = token_of(instructor, "/instructor/users")
    page = instructor.post(
        "/instructor/users",
        data={"csrf_token": csrf, "username": "made-in-web", "role": "student", "student_id": "W1"},
    )
    assert page.status_code == 200
    password = re.search(r'<code class="secret">([^<]+)</code>', page.text)
    assert password
    assert "made-in-web" in instructor.get("/instructor/users").text
    assert password.group(1) not in instructor.get("/instructor/users").text
    log_in(browser(web_app), "made-in-web", password.group(1))
    # Instructors cannot create admins.
    refused = instructor.post(
        "/instructor/users", data={"csrf_token": csrf, "username": "sneaky", "role": "admin"}
    )
    assert refused.status_code == 403


def test_roster_import(instructor: TestClient, web_settings: Settings) -> None:
    csrf = token_of(instructor, "/instructor/users")
    roster = "username,student_id,display_name\nroster-a,R-1,Ana\nroster-b,R-2,Ben\n"
    page = instructor.post(
        "/instructor/users/import",
        data={"csrf_token": csrf},
        files={"file": ("roster.csv", roster.encode(), "text/csv")},
    )
    assert page.status_code == 200 and "2 created" in page.text
    with session_scope(web_settings.sqlalchemy_url) as session:
        assert auth_service.get_user(session, username="roster-b").student_id == "R-2"


def test_issue_and_revoke_an_api_token(
    instructor: TestClient, web_app: TestClient, web_settings: Settings
) -> None:
    student = make_user(web_settings)
    csrf = token_of(instructor, f"/instructor/users/{student}")
    form = {"csrf_token": csrf, "name": "ci"}
    page = instructor.post(f"/instructor/users/{student}/tokens", data=form)
    token = re.search(r'id="new-token">([^<]+)<', page.text)
    assert token
    api = TestClient(web_app.app, headers={"Authorization": f"Bearer {token.group(1)}"})
    assert api.get("/api/v1/auth/me").json()["username"] == student
    token_id = re.search(r'action="/instructor/tokens/(\d+)/revoke"', page.text)
    assert token_id
    revoked = instructor.post(
        f"/instructor/tokens/{token_id.group(1)}/revoke", data={"csrf_token": csrf}
    )
    assert revoked.status_code == 303
    assert api.get("/api/v1/auth/me").status_code == 401


def test_test_set_upload_is_validated_and_versioned(
    instructor: TestClient, web_settings: Settings, tmp_path: Path
) -> None:
    from tests.support.models import write_small_test_set

    with session_scope(web_settings.sqlalchemy_url) as session:
        before = exercises.get_exercise(session, slug="web-ex").testset_version
    csrf = token_of(instructor, "/instructor/exercises/web-ex")
    bad = instructor.post(
        "/instructor/exercises/web-ex/test-set",
        data={"csrf_token": csrf},
        files={"file": ("bad.csv", b"not,a,test,set\n1,2,3,4\n", "text/csv")},
    )
    assert bad.status_code == 422 and "Invalid test set" in bad.text
    csv_path = write_small_test_set(tmp_path / "new.csv", count=8, seed=3)
    good = instructor.post(
        "/instructor/exercises/web-ex/test-set",
        data={"csrf_token": csrf},
        files={"file": ("new.csv", csv_path.read_bytes(), "text/csv")},
    )
    assert good.status_code == 303
    with session_scope(web_settings.sqlalchemy_url) as session:
        ex = exercises.get_exercise(session, slug="web-ex")
        assert (ex.testset_version, ex.testset_n_images) == (before + 1, 8)


@pytest.fixture
def own_instructor(web_settings: Settings) -> Iterator[TestClient]:
    """An instructor on an app whose settings differ from the process environment's (a
    longer worker limit, another default daily limit), sharing the pages' database."""
    settings = web_settings.model_copy(
        update={"task_hard_time_limit_s": 1200, "default_daily_limit": 7, "default_threshold": 42}
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield log_in(client, make_user(settings, Role.INSTRUCTOR))


def test_new_exercise_form_uses_the_servers_defaults(
    own_instructor: TestClient, web_settings: Settings
) -> None:
    page = own_instructor.get("/instructor/exercises").text
    assert re.search(r'name="daily_limit"[^>]*value="7"', page)
    # The threshold is the kind's default unless typed: the placeholder names each kind's.
    assert re.search(r'name="threshold"[^>]*value=""[^>]*placeholder="[^"]*42', page)
    csrf = csrf_from(page)
    # A form without the field (a script, an older page) gets the default, not "unlimited";
    # a blank field is a deliberate "no limit", as null is in the API.
    for slug, extra, expected in (
        ("dflt-absent", {}, 7),
        ("dflt-blank", {"daily_limit": ""}, None),
    ):
        created = own_instructor.post(
            "/instructor/exercises",
            data={"csrf_token": csrf, "slug": slug, "title": slug, **extra},
        )
        assert created.status_code == 303, created.text
        with session_scope(web_settings.sqlalchemy_url) as session:
            made = exercises.get_exercise(session, slug=slug)
            assert made.daily_limit == expected and made.threshold == 42


def test_edit_form_is_checked_against_the_apps_settings(
    own_instructor: TestClient, web_settings: Settings
) -> None:
    with session_scope(web_settings.sqlalchemy_url) as session:
        exercises.create_exercise(session, slug="edit-limits", title="t", settings=web_settings)
    # 900 s is within this app's worker limit (1200 s) but not the environment's default.
    csrf = token_of(own_instructor, "/instructor/exercises/edit-limits")
    saved = own_instructor.post(
        "/instructor/exercises/edit-limits",
        data={"csrf_token": csrf, "title": "t", "time_limit_s": "900"},
    )
    assert saved.status_code == 303, saved.text
    with session_scope(web_settings.sqlalchemy_url) as session:
        assert exercises.get_exercise(session, slug="edit-limits").time_limit_s == 900


@pytest.mark.parametrize("size", ["nan", "inf", "-inf", "1e300", "0"])
def test_non_finite_model_size_is_a_clear_422(
    instructor: TestClient, web_settings: Settings, size: str
) -> None:
    with session_scope(web_settings.sqlalchemy_url) as session:
        before = exercises.get_exercise(session, slug="web-ex").max_model_bytes
    csrf = token_of(instructor, "/instructor/exercises")
    form = {"csrf_token": csrf, "title": "t", "max_model_mb": size}
    edited = instructor.post("/instructor/exercises/web-ex", data=form)
    assert edited.status_code == 422 and "max model size" in edited.text
    created = instructor.post("/instructor/exercises", data={**form, "slug": "never-made"})
    assert created.status_code == 422 and "max model size" in created.text
    with session_scope(web_settings.sqlalchemy_url) as session:
        assert exercises.get_exercise(session, slug="web-ex").max_model_bytes == before
        assert "never-made" not in {
            e.slug for e in exercises.list_exercises(session, include_unpublished=True)
        }


def test_test_set_errors_name_the_uploaded_file(instructor: TestClient) -> None:
    csrf = token_of(instructor, "/instructor/exercises/web-ex")
    bad = instructor.post(
        "/instructor/exercises/web-ex/test-set",
        data={"csrf_token": csrf},
        files={"file": ("my-hidden-set.csv", b"not,a,test,set\n1,2,3,4\n", "text/csv")},
    )
    assert bad.status_code == 422
    assert "my-hidden-set.csv" in bad.text and "tmp" not in bad.text
