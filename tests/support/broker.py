"""Reading grading tasks straight out of a real Redis broker (kombu's Redis layout: one list
per queue and priority, deliveries awaiting their ack in the `unacked` hash)."""

from __future__ import annotations

import base64
import json

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
