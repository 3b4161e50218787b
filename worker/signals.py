"""Worker start-up logging and clean sandbox shutdown."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready

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
