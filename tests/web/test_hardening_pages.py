"""The pages under attack: the role rule on the instructor forms, the login throttle, input
bounds, the upload's CSRF token off the URL, security headers, invisible characters."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from grader.auth import service as auth_service
from grader.auth.models import ApiToken, Role, User
from grader.config import Settings
from grader.db import session_scope
from grader.submissions import grading
from grader.submissions.models import Submission
from tests.support.live_server import ADMIN_PASSWORD
from tests.web.conftest import PASSWORD, browser, csrf_from, log_in, make_user, upload_by_form


def _csrf(client: TestClient, path: str) -> str:
    return csrf_from(client.get(path).text)


def _admin(web_app: TestClient) -> TestClient:
    return log_in(browser(web_app), "admin", ADMIN_PASSWORD)


def _exists(settings: Settings, username: str) -> bool:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalar(select(User.id).where(User.username == username)) is not None


def test_instructor_cannot_issue_or_revoke_admin_tokens_on_the_pages(
    instructor: TestClient, web_app: TestClient, web_settings: Settings
) -> None:
    page = instructor.get("/instructor/users/admin")
    assert page.status_code == 200
    assert "/instructor/users/admin/tokens" not in page.text  # no form offered
    csrf = csrf_from(page.text)
    refused = instructor.post(
        "/instructor/users/admin/tokens", data={"csrf_token": csrf, "name": "x"}
    )
    assert refused.status_code == 403
    assert 'id="new-token"' not in refused.text
    # An admin's session token, which the instructor must not be able to end.
    admin = _admin(web_app)
    with session_scope(web_settings.sqlalchemy_url) as session:
        owner = auth_service.get_user(session, username="admin")
        token_id = max(t.id for t in auth_service.list_tokens(session, user=owner))
    revoke = instructor.post(f"/instructor/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert revoke.status_code == 403
    assert admin.get("/instructor/users").status_code == 200  # still logged in
    with session_scope(web_settings.sqlalchemy_url) as session:
        record = session.get(ApiToken, token_id)
        assert record is not None and record.revoked_at is None


def test_only_an_admin_creates_instructors_on_the_pages(
    instructor: TestClient, web_app: TestClient, web_settings: Settings
) -> None:
    page = instructor.get("/instructor/users")
    assert '<option value="instructor">' not in page.text
    name = f"ins-{uuid.uuid4().hex[:6]}"
    form = {"csrf_token": csrf_from(page.text), "username": name, "role": "instructor"}
    assert instructor.post("/instructor/users", data=form).status_code == 403
    assert not _exists(web_settings, name)
    admin = _admin(web_app)
    page = admin.get("/instructor/users")
    assert '<option value="instructor">' in page.text and '<option value="admin">' in page.text
    form["csrf_token"] = csrf_from(page.text)
    assert admin.post("/instructor/users", data=form).status_code == 200
    assert _exists(web_settings, name)


def _import(client: TestClient, roster: str) -> object:
    return client.post(
        "/instructor/users/import",
        data={"csrf_token": _csrf(client, "/instructor/users")},
        files={"file": ("roster.csv", roster.encode(), "text/csv")},
    )


def test_roster_import_on_the_page_obeys_roles_and_the_password_policy(
    instructor: TestClient, web_settings: Settings
) -> None:
    ok, boss = f"r-{uuid.uuid4().hex[:6]}", f"r-{uuid.uuid4().hex[:6]}"
    escalation = _import(instructor, f"username,role\n{ok},student\n{boss},admin\n")
    assert escalation.status_code == 403  # type: ignore[attr-defined]
    assert "Roster line 3" in escalation.text  # type: ignore[attr-defined]
    short = _import(instructor, f"username,password\n{ok},abc\n")
    assert short.status_code == 422  # type: ignore[attr-defined]
    assert not _exists(web_settings, ok) and not _exists(web_settings, boss)


def test_account_form_bounds_are_422_pages(instructor: TestClient) -> None:
    csrf = _csrf(instructor, "/instructor/users")
    for fields in (
        {"display_name": "x" * 300},
        {"student_id": "9" * 100},
        {"username": "with/slash"},
        {"password": "abc"},
    ):
        form = {"csrf_token": csrf, "username": f"b-{uuid.uuid4().hex[:6]}", **fields}
        response = instructor.post("/instructor/users", data=form)
        assert response.status_code == 422, (fields, response.text[:300])


def test_web_login_is_throttled_with_retry_after(
    web_app: TestClient, web_settings: Settings
) -> None:
    username = make_user(web_settings)
    client = TestClient(web_app.app, follow_redirects=False, client=("10.44.0.1", 1))
    csrf = _csrf(client, "/login")
    statuses = [
        client.post(
            "/login", data={"username": username, "password": "wrong-one", "csrf_token": csrf}
        ).status_code
        for _ in range(10)
    ]
    assert statuses == [401] * 10
    blocked = client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert "Too many failed logins" in blocked.text and 'action="/login"' in blocked.text
    # The same person from another address is not locked out.
    log_in(TestClient(web_app.app, follow_redirects=False, client=("10.44.0.2", 1)), username)


def test_upload_form_keeps_its_csrf_token_out_of_the_url(
    student: TestClient, linear_model: Path
) -> None:
    page = student.get("/exercises/web-ex")
    form = re.search(r'<form id="upload-form"[^>]*>', page.text)
    assert form
    assert 'action="/exercises/web-ex/submissions"' in form.group(0)
    token = csrf_from(page.text)
    with linear_model.open("rb") as fh:
        in_query = student.post(
            f"/exercises/web-ex/submissions?csrf_token={token}",
            files={"file": ("model.pt", fh, "application/octet-stream")},
            headers={"Accept": "application/json"},
        )
    assert in_query.status_code == 403


def test_pages_carry_a_strict_content_security_policy(student: TestClient) -> None:
    for path in ("/exercises", "/exercises/web-ex", "/submissions/999999", "/login"):
        headers = student.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    error = student.get("/submissions/999999")
    assert error.status_code == 404 and "javascript:" not in error.text


def test_bidi_and_control_characters_are_shown_as_codes(
    web_app: TestClient, web_settings: Settings, linear_model: Path
) -> None:
    username = f"rtl-{uuid.uuid4().hex[:6]}"
    with session_scope(web_settings.sqlalchemy_url) as session:
        auth_service.create_user(
            session,
            actor=None,
            username=username,
            password=PASSWORD,
            display_name="Eve\u202eevil",
        )
    client = log_in(browser(web_app), username)

    def upload(name: str) -> Any:
        with linear_model.open("rb") as fh:
            return client.post(
                "/exercises/web-ex/submissions",
                files={"file": (name, fh, "application/octet-stream")},
                headers={"Accept": "application/json",
                         "X-CSRF-Token": _csrf(client, "/exercises")},
            )

    # The intake refuses such a name; rows stored before it did are still shown safely.
    refused = upload("model\u202egnp.pt")
    assert refused.status_code == 422 and "text-direction" in refused.json()["detail"]
    sent = upload("model.pt")
    assert sent.status_code == 202, sent.text
    with session_scope(web_settings.sqlalchemy_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == sent.json()["id"])
            .values(original_filename="model\u202egnp.pt")
        )
    for path in ("/submissions", sent.json()["url"]):
        text = client.get(path).text
        assert "\u202e" not in text
        assert "model&lt;U+202E&gt;gnp.pt" in text
    assert "Eve&lt;U+202E&gt;evil" in client.get("/exercises").text


def test_script_in_a_display_name_is_escaped(web_app: TestClient, web_settings: Settings) -> None:
    username = f"xss-{uuid.uuid4().hex[:6]}"
    with session_scope(web_settings.sqlalchemy_url) as session:
        auth_service.create_user(
            session,
            actor=None,
            username=username,
            role=Role.STUDENT,
            password=PASSWORD,
            display_name="<script>alert(1)</script>",
        )
    page = _admin(web_app).get("/instructor/users")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


class _ScriptRaiser(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError('<script>alert("model")</script><img src=x onerror=alert(2)>')
        return x.new_zeros((x.shape[0], 30))


def test_script_in_a_models_exception_message_is_escaped(
    web_app: TestClient, web_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "raiser.pt"
    torch.jit.save(torch.jit.script(_ScriptRaiser()), str(path))
    client = log_in(browser(web_app), make_user(web_settings))
    created = upload_by_form(client, "web-ex", path)
    assert created.status_code == 202, created.text
    sid = created.json()["id"]
    # The function the Celery task calls: the model runs in the sandbox and its message is
    # stored as the failure's detail.
    assert grading.grade_submission(web_settings, sid) == "ERROR"
    with session_scope(web_settings.sqlalchemy_url) as session:
        stored = session.get(Submission, sid)
        assert stored is not None and stored.failure_reason == "BAD_OUTPUT"
        assert "<script>" in (stored.failure_message or "")
    pages = [client.get(f"/submissions/{sid}").text, client.get("/submissions").text,
             _admin(web_app).get(f"/submissions/{sid}").text]
    assert "alert(&#34;model&#34;)" in pages[0] or "alert(&quot;model&quot;)" in pages[0]
    for text in pages:
        assert "<script>alert" not in text and "<img src=x" not in text
