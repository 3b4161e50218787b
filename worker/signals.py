"""Worker start-up logging, its heartbeat in the broker, and clean sandbox shutdown."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from grader.ops.heartbeat import HeartbeatThread

logger = logging.getLogger("worker")
_heartbeat: list[HeartbeatThread] = []


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    layers = _log_sandbox_layers()
    _start_heartbeat(sender, layers)


def _log_sandbox_layers() -> dict[str, bool]:
    try:
        from grader.grading.doctor import describe_sandbox_layers
    except ImportError:
        logger.warning("sandbox layer report unavailable (grader.grading.doctor missing)")
        return {}
    try:
        from grader.config import get_settings
        from grader.grading.engine import sandbox_limits

        settings = get_settings()
        # The worker's own limits: the probe is a child like any other.
        layers = describe_sandbox_layers(
            device=settings.device, limits=sandbox_limits(settings, time_limit_s=None)
        )
        for name, active, note in layers:
            logger.info("sandbox layer %-20s %s  %s", name, "ACTIVE" if active else "off", note)
        return {name: active for name, active, _ in layers}
    except Exception:
        logger.exception("could not describe the sandbox layers")
        return {}
    finally:
        # The report started a fork server in this (main) process; grading happens in the
        # pool's children, which start their own. Don't leave one here to be inherited.
        from grader.grading.sandbox import shutdown

        shutdown()


def _start_heartbeat(consumer: Any, layers: dict[str, bool]) -> None:
    """The API counts live workers (and their slots, for the ETA) from these heartbeats."""
    try:
        from grader.config import get_settings

        settings = get_settings()
        controller = getattr(consumer, "controller", None)
        queues = sorted(consumer.app.amqp.queues.consume_from)
        concurrency = int(getattr(controller, "concurrency", 0) or settings.worker_concurrency)
        thread = HeartbeatThread(
            settings, name=str(getattr(consumer, "hostname", "")), queues=queues,
            concurrency=concurrency, layers=layers,
        )  # fmt: skip
        thread.start()
        _heartbeat.append(thread)
    except Exception:
        logger.exception("could not start the worker's heartbeat")


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    while _heartbeat:
        _heartbeat.pop().stop()


@worker_process_shutdown.connect
def _stop_sandbox(**_: Any) -> None:
    try:
        from grader.grading.sandbox import shutdown
    except ImportError:
        return
    shutdown()


@worker_process_init.connect
def _start_fork_server(**_: Any) -> None:
    """Start this pool process's fork server now, so that its first grading or pre-flight
    does not wait ~1 s for it. In this (the task-running) thread on purpose: the fork
    server's parent-death signal follows the thread that started it, and a helper thread
    would take the fork server with it when it ends. (celery_config allows the time.)"""
    try:
        from grader.config import get_settings
        from grader.grading.engine import sandbox_limits
        from grader.grading.sandbox import get_sandbox

        settings = get_settings()
        get_sandbox().probe(
            device=settings.device, limits=sandbox_limits(settings, time_limit_s=None)
        )
    except Exception:
        logger.warning("could not start the sandbox's fork server early", exc_info=True)
