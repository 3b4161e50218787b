"""Schemathesis against the real app: no request a student or an instructor can send, valid or
not, gets a 5xx. SQLite and PostgreSQL, each with its own database and its own embedded Redis
(the fuzzing creates users, exercises and tokens, and must not disturb the other tests' data,
queue or login counters).

Every operation of the OpenAPI document is fuzzed, with schema-conforming ("positive") and
schema-violating ("negative") requests, some with random path parameters, some aimed at real
rows (an exercise with a test set, a queued submission, another user's token) so the requests
get past the 404s into the services, and some with one parameter at an edge (EDGE_*). The run
is bounded (a fixed number of examples per operation, no shrinking) and derandomized: the same
requests every run (Hypothesis derives the seed from the test's code).

Constraints, each because the case cannot be fuzzed meaningfully rather than to hide a 5xx:
- DELETE /tokens/{id} never names the fuzzing token itself: revoking it would turn the rest of
  the run into 401s (revocation has its own tests in test_api.py / test_auth_hardening.py).
- Operations that answer an event stream never name a real row (a real submission's stream
  stays open while it waits for a worker that this test does not run); they get random ids.
  Every call also has a deadline, so nothing can hang the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from grader.app import create_app
from grader.config import Settings
from grader.db import get_engine
from grader.runtime.bootstrap import bootstrap
from grader.runtime.redis_server import EmbeddedRedis
from tests.support.live_server import free_port
from tests.support.models import REFERENCE_MODEL, write_small_test_set
from tests.support.services import temporary_postgres_database

# Examples per operation and role: some 1,800 requests in all, about 40 s of CPU for the four
# runs (measured: 90 s wall on a 2-core machine shared with three other test runs).
MAX_EXAMPLES = 30
# Only a guard against a hang: the slowest request (an exercise created with the demo test
# set, copied and parsed) takes seconds.
CALL_TIMEOUT_S = 60
ADMIN_PASSWORD = "fuzz-admin-pass"
PASSWORD = "fuzz-user-pass"


@dataclass
class FuzzTarget:
    app: FastAPI
    tokens: dict[str, str]  # role -> bearer token
    token_ids: set[int]  # the fuzzing tokens: never revoked by the run
    known: dict[str, Any]  # path/query parameter -> a real value


@contextmanager
def _database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fuzz.sqlite3'}"
    else:
        with temporary_postgres_database() as url:
            try:
                yield url
            finally:
                get_engine(url).dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    tmp_path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    broker = EmbeddedRedis(tmp_path / "broker", port=free_port(), persist=False)
    broker.start()
    try:
        with _database(request.param, tmp_path) as url:
            settings_ = Settings(
                data_dir=tmp_path / "data",
                database_url=url,
                broker_url=broker.url,
                admin_password=ADMIN_PASSWORD,
                sweeper_enabled=False,
                environment="test",
            )
            bootstrap(settings_, demo=False)
            app = create_app(settings_)
            try:
                yield _populate(app, tmp_path)
            finally:
                # Schemathesis keeps the app's lifespan running for the whole process.
                asgi.shutdown_lifespans()
    finally:
        broker.stop()


def _populate(app: FastAPI, tmp_path: Path) -> FuzzTarget:
    """An instructor, a student, an exercise with a test set and a queued submission."""
    test_set = write_small_test_set(tmp_path / "small.csv")
    with TestClient(app) as client:

        def login(username: str, password: str) -> str:
            response = client.post(
                "/api/v1/auth/token", data={"username": username, "password": password}
            )
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        admin = {"Authorization": f"Bearer {login('admin', ADMIN_PASSWORD)}"}
        for username, role in (("fuzz-instructor", "instructor"), ("fuzz-student", "student")):
            body = {"username": username, "password": PASSWORD, "role": role}
            created = client.post("/api/v1/users", json=body, headers=admin)
            assert created.status_code == 201, created.text
        tokens = {
            "instructor": login("fuzz-instructor", PASSWORD),
            "student": login("fuzz-student", PASSWORD),
        }
        slug = "fuzz-exercise"
        created = client.post(
            "/api/v1/exercises", json={"slug": slug, "title": "Fuzz"}, headers=admin
        )
        assert created.status_code == 201, created.text
        with test_set.open("rb") as fh:
            put = client.put(
                f"/api/v1/exercises/{slug}/test-set",
                files={"file": ("small.csv", fh, "text/csv")},
                headers=admin,
            )
        assert put.status_code == 200, put.text
        student = {"Authorization": f"Bearer {tokens['student']}"}
        with REFERENCE_MODEL.open("rb") as fh:
            upload = client.post(
                f"/api/v1/exercises/{slug}/submissions",
                files={"file": ("model.pt", fh)},
                headers=student,
            )
        assert upload.status_code == 202, upload.text
        # A token of another student, which an instructor may revoke and a student may not see.
        other = client.post(
            "/api/v1/users", json={"username": "fuzz-other", "password": PASSWORD}, headers=admin
        )
        assert other.status_code == 201, other.text
        other_token = client.post(
            "/api/v1/tokens", json={"name": "other", "username": "fuzz-other"}, headers=admin
        )
        assert other_token.status_code == 201, other_token.text
        token_ids = {
            t["id"]
            for token in tokens.values()
            for t in client.get(
                "/api/v1/tokens", headers={"Authorization": f"Bearer {token}"}
            ).json()
        }
    known = {
        "slug": slug,
        "exercise": slug,
        "submission_id": upload.json()["id"],
        "token_id": other_token.json()["id"],
    }
    return FuzzTarget(app=app, tokens=tokens, token_ids=token_ids, known=known)


def _is_event_stream(operation: Any) -> bool:
    responses = operation.definition.raw.get("responses", {})
    return any(
        "text/event-stream" in (response.get("content") or {}) for response in responses.values()
    )


# Values at and past the edges, for every integer and string parameter of a path or query:
# random generation reaches them only by luck (a row id past 32 bits was a 500 on both
# databases; text with NUL is refused by PostgreSQL, over-long text by its columns).
EDGE_INTEGERS = [0, -1, 2**31 - 1, 2**31, 2**63, 10**30]
EDGE_TEXT = ["a\x00b", "x" * 300, "evil\u202etxt.csv", "..", "\u00e9l\u00e8ve", " "]


def _types(schema: dict[str, Any]) -> set[str]:
    kinds = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for member in schema.get("anyOf", []):
        kinds |= _types(member)
    return kinds


def _edges(operation: Any, mode: GenerationMode) -> list[st.SearchStrategy[Any]]:
    """One strategy per parameter: that one at an edge, the rest of the request generated."""
    strategies = []
    for location, parameters in (
        ("path_parameters", operation.path_parameters),
        ("query", operation.query),
    ):
        for parameter in parameters:
            kinds = _types(parameter.definition.get("schema", {}))
            values = EDGE_INTEGERS if "integer" in kinds else EDGE_TEXT if "string" in kinds else []
            if values:
                at = _setting(operation, mode, location, parameter.name)
                strategies.append(st.sampled_from(values).flatmap(at))
    return strategies


def _setting(
    operation: Any, mode: GenerationMode, location: str, name: str
) -> Callable[[Any], st.SearchStrategy[Any]]:
    return lambda value: operation.as_strategy(mode, **{location: {name: value}})


def _strategy(operation: Any, known: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Positive and negative requests: random, aimed at real rows, and at the edges."""
    path_names = {p.name for p in operation.path_parameters}
    query_names = {p.name for p in operation.query}
    aimed_path = {k: v for k, v in known.items() if k in path_names}
    aimed_query = {k: v for k, v in known.items() if k in query_names}
    if _is_event_stream(operation):
        aimed_path = aimed_query = {}
    # The edge values are hostile enough; the rest of such a request is valid.
    strategies = _edges(operation, GenerationMode.POSITIVE)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(mode))
        if aimed_path or aimed_query:
            strategies.append(
                operation.as_strategy(
                    mode, path_parameters=aimed_path or None, query=aimed_query or None
                )
            )
    return st.one_of(strategies)


def _parameters(case: Any) -> set[tuple[str, Any]]:
    """The case's path and query parameters with a single value, as (name, value) pairs."""
    return {
        (name, value)
        for params in (case.path_parameters, case.query)
        for name, value in (params or {}).items()
        if isinstance(value, str | int)
    }


def _fuzz(
    operation: Any, target: FuzzTarget, headers: dict[str, str], errors: list[str]
) -> set[int]:
    """Run one operation's examples; return the status codes seen, append each 5xx."""
    label = f"{operation.method.upper()} {operation.path}"
    seen: set[int] = set()
    # Values a request must not carry: the fuzzing tokens' ids everywhere, and every real row
    # for an event stream (see the module docstring).
    avoid: set[Any] = {("token_id", token_id) for token_id in target.token_ids}
    if _is_event_stream(operation):
        avoid |= set(target.known.items())

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, target.known))
    def fuzz(case: Any) -> None:
        if avoid & _parameters(case):
            return
        try:
            response = case.call(headers=headers, timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # the app raised past its handlers: a 500 for a client
            errors.append(f"{label}: {exc!r}\n  {case.as_curl_command(headers=headers)}")
            return
        seen.add(response.status_code)
        if response.status_code >= 500:
            errors.append(
                f"{label}: {response.status_code} {response.text[:300]}\n"
                f"  {case.as_curl_command(headers=headers)}"
            )

    fuzz()
    return seen


@pytest.mark.parametrize("role", ["student", "instructor"])
def test_no_request_gets_a_server_error(target: FuzzTarget, role: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    headers = {"Authorization": f"Bearer {target.tokens[role]}"}
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    # The whole API, every operation understood: not an empty or a broken schema.
    assert len(operations) == len(results) >= 15
    errors: list[str] = []
    statuses = {
        f"{op.method.upper()} {op.path}": _fuzz(op, target, headers, errors) for op in operations
    }

    assert not errors, f"{len(errors)} server errors:\n" + "\n".join(errors[:20])
    # The run reached the services, not only the authentication and the validation layer.
    reached = {label for label, codes in statuses.items() if codes & {200, 201, 202}}
    expected = {"GET /api/v1/auth/me", "GET /api/v1/exercises/{slug}", "POST /api/v1/tokens"}
    if role == "instructor":
        expected |= {"GET /api/v1/users", "POST /api/v1/users"}
    assert expected <= reached, statuses
