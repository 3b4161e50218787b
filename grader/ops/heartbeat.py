"""Worker heartbeats in the broker's Redis: how the API knows which workers are live.

Workers may run on other machines; the one thing every worker and every API process share is
the broker. Each worker's main process writes one key, `grader:worker:<host>:<pid>`, holding
what it serves (queues, slots) and the sandbox layers it has, with a TTL a few intervals
long: a worker that dies or loses the broker simply stops being counted when its key expires.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import redis

from grader.config import Settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "grader:worker:"
_SOCKET_TIMEOUT_S = 1.0


def redis_url(settings: Settings) -> str | None:
    """The broker's Redis spelled for redis-py, or None when the broker is not Redis."""
    url = settings.celery_broker_url
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return url
    if parts.scheme in ("redis+socket", "redis+unix"):
        # kombu: redis+socket:///path/to/sock?virtual_host=N ; redis-py: unix:///path?db=N
        query = parse_qs(parts.query)
        db = (query.get("virtual_host") or query.get("db") or ["0"])[0] or "0"
        return f"unix://{parts.path}?db={db}"
    return None


def connect(settings: Settings) -> redis.Redis | None:
    url = redis_url(settings)
    if url is None:
        return None
    return redis.Redis.from_url(
        url, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S
    )


@dataclass(frozen=True)
class WorkerBeat:
    """One live worker as its last heartbeat describes it."""

    host: str
    pid: int
    name: str
    queues: tuple[str, ...]
    concurrency: int
    # layer -> active (grading/doctor.py's names: fork_server, rlimits, netns, landlock, ...)
    layers: dict[str, bool] = field(default_factory=dict)
    started_at: float = 0.0
    beat_at: float = 0.0
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.host}:{self.pid}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "host": self.host, "pid": self.pid, "name": self.name,
                "queues": list(self.queues), "concurrency": self.concurrency,
                "layers": self.layers, "started_at": self.started_at,
                "beat_at": self.beat_at, "device": self.device,
            }
        )  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerBeat | None:
        try:
            data = json.loads(raw)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                name=str(data.get("name", "")),
                queues=tuple(str(q) for q in data.get("queues", [])),
                concurrency=max(int(data.get("concurrency", 1)), 0),
                layers={str(k): bool(v) for k, v in dict(data.get("layers", {})).items()},
                started_at=float(data.get("started_at", 0.0)),
                beat_at=float(data.get("beat_at", 0.0)),
                device=str(data.get("device", "cpu")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def write_beat(client: redis.Redis, beat: WorkerBeat, *, ttl_s: float) -> None:
    client.set(beat.key, beat.to_json(), px=max(int(ttl_s * 1000), 1))


def remove_beat(client: redis.Redis, beat: WorkerBeat) -> None:
    client.delete(beat.key)


def read_beats(client: redis.Redis) -> list[WorkerBeat]:
    """Every worker whose heartbeat has not expired, by host and pid."""
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=500))
    if not keys:
        return []
    beats = [WorkerBeat.from_json(raw) for raw in client.mget(keys) if raw is not None]
    return sorted((b for b in beats if b is not None), key=lambda b: (b.host, b.pid))


class LiveWorkers:
    """The heartbeats as the API reads them, cached for `max_age_s` (the status endpoint is
    polled by hundreds; the broker is asked about once a second)."""

    def __init__(self, settings: Settings, *, max_age_s: float = 1.0) -> None:
        self.settings = settings
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._beats: list[WorkerBeat] = []
        self._read_at = -1e9

    def all(self) -> list[WorkerBeat]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.max_age_s:
                self._beats = self._read()
                self._read_at = time.monotonic()
            return list(self._beats)

    def slots(self, queue: str) -> int:
        """Grading processes of live workers serving `queue`."""
        return sum(b.concurrency for b in self.all() if queue in b.queues)

    def _read(self) -> list[WorkerBeat]:
        try:
            if self._client is None:
                self._client = connect(self.settings)
            return read_beats(self._client) if self._client is not None else []
        except redis.RedisError as exc:
            # No broker, no grading either: report no live workers rather than fail a page.
            logger.warning("cannot read worker heartbeats (%s)", exc)
            return []


_live: dict[str, LiveWorkers] = {}
_live_lock = threading.Lock()


def live_workers(settings: Settings) -> LiveWorkers:
    """One reader (and cache) per broker, shared by the requests of this process."""
    key = settings.celery_broker_url
    with _live_lock:
        reader = _live.get(key)
        if reader is None:
            reader = _live[key] = LiveWorkers(settings)
        return reader


class HeartbeatThread(threading.Thread):
    """Runs in a worker's main process: writes its heartbeat every interval until stopped,
    then deletes it (a clean shutdown is seen at once, a crash when the key expires)."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        queues: list[str],
        concurrency: int,
        layers: dict[str, bool],
    ) -> None:
        super().__init__(name="grader-heartbeat", daemon=True)
        self.settings = settings
        self.beat = WorkerBeat(
            host=socket.gethostname(),
            pid=os.getpid(),
            name=name,
            queues=tuple(queues),
            concurrency=concurrency,
            layers=layers,
            started_at=time.time(),
            device=settings.device,
        )
        self._halt = threading.Event()

    def run(self) -> None:
        client = None
        while True:
            try:
                client = client or connect(self.settings)
                if client is None:
                    logger.warning("the broker is not Redis: no worker heartbeats")
                    return
                beat = WorkerBeat(**{**self.beat.__dict__, "beat_at": time.time()})
                write_beat(client, beat, ttl_s=self.settings.heartbeat_ttl_s)
            except redis.RedisError as exc:
                logger.warning("heartbeat not written (%s)", exc)
            if self._halt.wait(self.settings.heartbeat_interval_s):
                break
        try:
            if client is not None:
                remove_beat(client, self.beat)
        except redis.RedisError:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)
