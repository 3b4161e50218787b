"""Reading grading tasks straight out of a real Redis broker (kombu's Redis layout: one list
per queue and priority, deliveries awaiting their ack in the `unacked` hash)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import redis

# kombu's Redis transport: priority 0 is the queue's own list; others are "<queue>\x06\x16<p>".
PRIORITY_STEPS = (0, 3, 6, 9)
SEP = "\x06\x16"


def queue_key(queue: str, priority: int) -> str:
    return queue if priority == 0 else f"{queue}{SEP}{priority}"


def submission_id(raw: bytes) -> int:
    message = json.loads(raw)
    return int(json.loads(base64.b64decode(message["body"]))[0][0])


def queued(broker: redis.Redis, queue: str = "cpu") -> dict[int, list[int]]:
    """priority -> submission ids waiting there, oldest first (kombu pushes left, pops right)."""
    return {
        p: [submission_id(raw) for raw in reversed(broker.lrange(queue_key(queue, p), 0, -1))]
        for p in PRIORITY_STEPS
    }


def take(broker: redis.Redis, ids: set[int], queue: str = "cpu") -> list[int]:
    """Remove the waiting tasks of `ids` (as a worker taking them would); returns the ids
    taken, one per task, in the order a worker would take them."""
    taken = []
    for p in PRIORITY_STEPS:
        key = queue_key(queue, p)
        for raw in reversed(broker.lrange(key, 0, -1)):
            sid = submission_id(raw)
            if sid in ids:
                broker.lrem(key, 1, raw)
                taken.append(sid)
    return taken


def waiting_tasks(broker: redis.Redis, queue: str = "cpu") -> int:
    return sum(int(broker.llen(queue_key(queue, p))) for p in PRIORITY_STEPS)


def measure_broker_loss(
    workdir: Path, *, uploads: int, env: dict[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Production layout (API without a worker, a separate Redis): `uploads` uploads are
    accepted and their tasks published; the broker then dies without saving and comes back
    empty; then a worker starts. Measures the seconds from the broker's restart until the
    sweeper has re-sent every task ("detected"), and until every submission is graded.

    Returns the figures and each submission's final JSON (to check nothing ran twice).
    """
    from grader.runtime.redis_server import EmbeddedRedis
    from tests.support.live_server import free_port, start_live_server, start_worker, stop_worker
    from tests.support.models import write_linear_model, write_small_test_set

    port = free_port()
    broker = EmbeddedRedis(workdir / "broker", port=port, persist=False)
    broker.start()
    api = worker = None
    try:
        api = start_live_server(
            workdir / "data",
            env={"GRADER_BROKER_URL": broker.url, **(env or {})},
            extra_args=("--no-worker",),
        )
        csv_path = write_small_test_set(workdir / "small.csv")
        model = write_linear_model(workdir / "m.pt")
        with api.admin_client() as admin:
            slug = "broker-loss"
            body = {"slug": slug, "title": slug, "daily_limit": None}
            admin.post("/api/v1/exercises", json=body).raise_for_status()
            with csv_path.open("rb") as fh:
                admin.put(
                    f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)}
                ).raise_for_status()
        client = api.student_client()
        ids = []
        for _ in range(uploads):
            response = client.post(
                f"/api/v1/exercises/{slug}/submissions",
                files={"file": ("m.pt", model.read_bytes())},
            )
            response.raise_for_status()
            ids.append(int(response.json()["id"]))
        published = waiting_tasks(redis.Redis(port=port))
        broker.stop()  # SIGTERM without persistence: like `redis-cli shutdown nosave`
        broker = EmbeddedRedis(workdir / "broker", port=port, persist=False)
        broker.start()
        restarted = time.monotonic()
        assert waiting_tasks(redis.Redis(port=port)) == 0
        while waiting_tasks(redis.Redis(port=port)) < uploads:
            if time.monotonic() - restarted > timeout:
                raise AssertionError(f"tasks not re-sent after {timeout} s\n{api.describe()}")
            time.sleep(0.1)
        detected = time.monotonic() - restarted
        worker = start_worker(api, "cpu")
        finals = [api.wait_for_submission(client, sid, timeout=timeout) for sid in ids]
        graded = time.monotonic() - restarted
        client.close()
        return {
            "uploads": uploads,
            "published_before_loss": published,
            "detected_s": round(detected, 1),
            "all_graded_s": round(graded, 1),
            "finals": finals,
        }
    finally:
        if worker is not None:
            stop_worker(worker)
        if api is not None:
            api.stop()
        broker.stop()
