"""Per-page authorization, CSRF rejection and the session cookie, with the ASGI test client."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grader.auth.models import Role
from grader.config import Settings
from tests.web.conftest import browser, csrf_from, log_in, make_user

STUDENT_PAGES = [
    "/exercises",
    "/exercises/web-ex",
    "/exercises/web-ex/leaderboard",
    "/submissions",
]
INSTRUCTOR_PAGES = [
    "/instructor",
    "/instructor/exercises",
    "/instructor/exercises/web-ex",
    "/instructor/exercises/web-ex/grades.csv",
    "/instructor/exercises/web-ex/students/admin",
    "/instructor/users",
    "/instructor/users/admin",
]
INSTRUCTOR_POSTS = [
    "/instructor/exercises",
    "/instructor/exercises/web-ex",
    "/instructor/exercises/web-ex/test-set",
    "/instructor/exercises/web-ex/rescore",
    "/instructor/users",
    "/instructor/users/import",
    "/instructor/users/admin/tokens",
    "/instructor/tokens/1/revoke",
]


def upload(client: TestClient, model: Path, *, csrf: str | None) -> object:
    headers = {"Accept": "application/json"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    with model.open("rb") as fh:
        return client.post(
            "/exercises/web-ex/submissions",
            files={"file": ("model.pt", fh, "application/octet-stream")},
            headers=headers,
        )


def page_csrf(client: TestClient) -> str:
    return csrf_from(client.get("/exercises").text)


@pytest.mark.parametrize("path", STUDENT_PAGES + INSTRUCTOR_PAGES + ["/submissions/1"])
def test_anonymous_visitors_are_sent_to_the_login_page(anonymous: TestClient, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_polling_endpoint_answers_json_401_when_logged_out(anonymous: TestClient) -> None:
    response = anonymous.get("/submissions/1/status", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert "log in" in response.json()["detail"]


@pytest.mark.parametrize("path", STUDENT_PAGES)
def test_students_see_their_pages(student: TestClient, path: str) -> None:
    response = student.get(path)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", INSTRUCTOR_PAGES)
def test_students_get_403_on_instructor_pages(student: TestClient, path: str) -> None:
    response = student.get(path)
    assert response.status_code == 403
    assert "for instructors" in response.text


@pytest.mark.parametrize("path", INSTRUCTOR_POSTS)
def test_students_cannot_post_instructor_forms_even_with_a_valid_token(
    student: TestClient, path: str
) -> None:
    response = student.post(
        path,
        data={"csrf_token": page_csrf(student), "slug": "stolen", "title": "x", "username": "x"},
    )
    assert response.status_code == 403
    assert "for instructors" in response.text


def test_instructor_pages_render_for_instructors(instructor: TestClient) -> None:
    for path in INSTRUCTOR_PAGES[1:]:
        response = instructor.get(path)
        assert response.status_code == 200, (path, response.text[:500])
    csv = instructor.get("/instructor/exercises/web-ex/grades.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("username,student_id,display_name,best_score")


def test_others_submissions_are_404_and_own_are_visible(
    web_app: TestClient, web_settings: Settings, linear_model: Path
) -> None:
    owner = log_in(browser(web_app), make_user(web_settings))
    other = log_in(browser(web_app), make_user(web_settings))
    created = upload(owner, linear_model, csrf=page_csrf(owner))
    assert created.status_code == 202, created.text
    url = created.json()["url"]
    assert owner.get(url).status_code == 200
    assert owner.get(url + "/status").json()["status"] in ("QUEUED", "RUNNING")
    for suffix in ("", "/status", "/result"):
        response = other.get(url + suffix)
        assert response.status_code == 404, suffix
    # An instructor can open any student's submission.
    teacher = log_in(browser(web_app), make_user(web_settings, Role.INSTRUCTOR))
    assert teacher.get(url).status_code == 200


def test_upload_without_csrf_is_rejected_and_nothing_is_stored(
    student: TestClient, linear_model: Path
) -> None:
    before = student.get("/submissions").text.count('href="/submissions/')
    for csrf in (None, "forged-token"):
        response = upload(student, linear_model, csrf=csrf)
        assert response.status_code == 403
        assert "security token" in response.json()["detail"]
    assert student.get("/submissions").text.count('href="/submissions/') == before


def test_form_posts_without_a_valid_csrf_token_get_a_clear_403_page(
    instructor: TestClient, web_app: TestClient, web_settings: Settings
) -> None:
    slug_missing = instructor.post(
        "/instructor/exercises", data={"slug": "no-token", "title": "No token"}
    )
    assert slug_missing.status_code == 403
    assert "security token is missing or out of date" in slug_missing.text
    # A token from another session is as good as none.
    other = browser(web_app)
    other_token = csrf_from(other.get("/login").text)
    forged = instructor.post(
        "/instructor/exercises",
        data={"slug": "other-token", "title": "x", "csrf_token": other_token},
    )
    assert forged.status_code == 403
    listing = instructor.get("/instructor/exercises").text
    assert "no-token" not in listing and "other-token" not in listing
    # With the page's own token the same form works.
    ok = instructor.post(
        "/instructor/exercises",
        data={"slug": "with-token", "title": "With token", "csrf_token": page_csrf(instructor)},
    )
    assert ok.status_code == 303
    assert "with-token" in instructor.get("/instructor/exercises").text


def test_login_and_logout_need_csrf(web_app: TestClient, web_settings: Settings) -> None:
    username = make_user(web_settings)
    client = browser(web_app)
    client.get("/login")
    refused = client.post("/login", data={"username": username, "password": "web-test-password"})
    assert refused.status_code == 403
    log_in(client, username)
    assert client.post("/logout").status_code == 403
    assert client.get("/exercises").status_code == 200  # still logged in


def test_logout_revokes_the_session_server_side(
    web_app: TestClient, web_settings: Settings
) -> None:
    client = log_in(browser(web_app), make_user(web_settings))
    stolen_cookie = client.cookies.get("grader_session")
    assert stolen_cookie
    response = client.post("/logout", data={"csrf_token": page_csrf(client)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    replay = browser(web_app)
    replay.cookies.set("grader_session", stolen_cookie)
    assert replay.get("/exercises").status_code == 303


def test_tampered_cookie_is_ignored(anonymous: TestClient) -> None:
    anonymous.cookies.set("grader_session", "eyJuIjoieCIsInQiOiJncmRfeCJ9.bad.sig")
    assert anonymous.get("/exercises").status_code == 303


def test_wrong_password_shows_the_form_again(anonymous: TestClient) -> None:
    token = csrf_from(anonymous.get("/login").text)
    response = anonymous.post(
        "/login", data={"username": "admin", "password": "nope", "csrf_token": token}
    )
    assert response.status_code == 401
    assert "Incorrect username or password" in response.text


def test_session_cookie_flags(web_app: TestClient, web_settings: Settings) -> None:
    username = make_user(web_settings)
    plain = browser(web_app)
    page = plain.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie

    secure = TestClient(web_app.app, base_url="https://testserver", follow_redirects=False)
    page = secure.get("/login")
    assert "; secure" in page.headers["set-cookie"].lower()
    response = secure.post(
        "/login",
        data={"username": username, "password": "web-test-password", "csrf_token": csrf_from(
            page.text)},
    )  # fmt: skip
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "; secure" in cookie


def test_login_redirects_only_to_local_paths(web_app: TestClient, web_settings: Settings) -> None:
    client = browser(web_app)
    page = client.get("/login?next=//evil.example/x")
    response = client.post(
        "/login",
        data={
            "username": make_user(web_settings),
            "password": "web-test-password",
            "csrf_token": csrf_from(page.text),
            "next": "//evil.example/x",
        },
    )
    assert response.headers["location"] == "/exercises"


def test_public_faces_and_assets_are_served_by_the_app(anonymous: TestClient) -> None:
    png = anonymous.get("/faces/0.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert anonymous.get("/faces/99.png").status_code == 404
    for name in ("app.css", "app.js"):
        assert anonymous.get(f"/static/{name}").status_code == 200
    assert anonymous.get("/static/../config.py").status_code == 404
