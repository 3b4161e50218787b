"""Worker start-up logging and clean sandbox shutdown."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

logger = logging.getLogger("worker")


@worker_ready.connect
def _log_sandbox_layers(**_: Any) -> None:
    try:
        from grader.grading.doctor import describe_sandbox_layers
    except ImportError:
        logger.warning("sandbox layer report unavailable (grader.grading.doctor missing)")
        return
    try:
        from grader.config import get_settings

        layers = describe_sandbox_layers(device=get_settings().device)
        for name, active, note in layers:
            logger.info("sandbox layer %-20s %s  %s", name, "ACTIVE" if active else "off", note)
    except Exception:
        logger.exception("could not describe the sandbox layers")
    finally:
        # The report started a fork server in this (main) process; grading happens in the
        # pool's children, which start their own. Don't leave one here to be inherited.
        from grader.grading.sandbox import shutdown

        shutdown()


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
