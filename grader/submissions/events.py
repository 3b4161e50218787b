"""Watching a submission cheaply: its state tag (the ETag), change notices, the event stream.

A status check costs one small indexed query: `submission_state` reads the few columns that
say whether anything a client sees has changed, and the API answers `If-None-Match` with a
304 without building the body. Whoever changes a submission (the upload and rescore after
commit, a worker's claim, pre-flight verdict, finish or hand-back) calls `submission_changed`,
which bumps a counter and publishes the id on one Redis channel. Each API process has one
listener thread on that channel (`hub`), which wakes the event streams (`stream`) watching
that id. A lost notice never hangs a client: every stream also re-reads the state on a slow
timer, and faster while the listener is disconnected.

The counter (`epoch`) is part of the tag of an unfinished submission: when another submission
moves, this one's place in the queue may have moved too. A stream re-checks for that at most
every `QUEUE_REFRESH_S`, so a long queue does not multiply its watchers' work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import anyio
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

import grader
from grader.auth.models import User
from grader.config import Settings
from grader.db import is_row_id, session_scope
from grader.errors import NotFound, RateLimited
from grader.submissions.models import TERMINAL, Result, Status, Submission
from grader.submissions.service import Viewer, check_visible

logger = logging.getLogger(__name__)

CHANNEL = "grader:submission-changed"
EPOCH_KEY = "grader:submission-epoch"
# A watcher of an unfinished submission re-reads it for others' changes at most this often.
QUEUE_REFRESH_S = 10.0
# Re-reads when no notice came: a lost notice costs at most this long. While QUEUED the wait
# grows (nothing happens to a queued submission but its place); while the listener is
# disconnected, streams fall back to reading every POLL_WITHOUT_LISTENER_S.
FALLBACK_FIRST_S = 5.0
FALLBACK_QUEUED_MAX_S = 30.0
POLL_WITHOUT_LISTENER_S = 2.0
KEEPALIVE_S = 15.0
# A stream ends after this long and the client reconnects: nothing lives forever in a process.
STREAM_LIFETIME_S = 15 * 60.0
# How long a client waits before reconnecting a dropped stream (the SSE `retry` field).
RETRY_MS = 3000
_NOTICE_TIMEOUT_S = 0.5
_OUTAGE_BACKOFF_S = 10.0


# --- Redis ------------------------------------------------------------------------------------


def redis_url(settings: Settings) -> str | None:
    """The broker's Redis spelled for redis-py (kombu's `redis+socket://` is `unix://`)."""
    parts = urlsplit(settings.celery_broker_url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return settings.celery_broker_url
    if parts.scheme == "redis+socket":
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0] or "0"
        return f"unix://{parts.path}?db={db}"
    return None


_clients: dict[str, redis.Redis] = {}
_down_until: dict[str, float] = {}
_clients_lock = threading.Lock()


def _client(settings: Settings) -> redis.Redis | None:
    url = redis_url(settings)
    if url is None or _down_until.get(url, 0.0) > time.monotonic():
        return None
    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url, socket_timeout=_NOTICE_TIMEOUT_S, socket_connect_timeout=_NOTICE_TIMEOUT_S
            )
        return _clients[url]


def _outage(settings: Settings, exc: Exception) -> None:
    url = redis_url(settings)
    if url is not None and _down_until.get(url, 0.0) <= time.monotonic():
        logger.warning("submission notices: Redis unavailable (%s); watchers fall back to polling",
                       exc)
        _down_until[url] = time.monotonic() + _OUTAGE_BACKOFF_S


def submission_changed(settings: Settings, submission_id: int) -> None:
    """Tell every watcher that the submission changed. Best effort, never raises: a lost
    notice costs a watcher one fallback interval."""
    client = _client(settings)
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(EPOCH_KEY)
        pipe.publish(CHANNEL, str(submission_id))
        pipe.execute()
    except Exception as exc:  # redis' own errors, OSError
        _outage(settings, exc)


def epoch(settings: Settings) -> str:
    """The changes counter; "-" when Redis cannot say (then nothing is being graded either)."""
    client = _client(settings)
    if client is None:
        return "-"
    try:
        value = client.get(EPOCH_KEY)
    except Exception as exc:
        _outage(settings, exc)
        return "-"
    return value.decode() if isinstance(value, bytes) else "0"


# --- the state tag ------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    submission_id: int
    status: str
    etag: str

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def submission_state(
    session: Session, *, user: Viewer, submission_id: int, settings: Settings
) -> State:
    """The submission's ETag from one indexed read; NotFound exactly as for the full read
    (someone else's submission is never revealed, with or without If-None-Match).

    The tag covers everything the body can show: status and attempts (a claim, a hand-back,
    a rescore), the pre-flight, the times, the result row; for an unfinished submission also
    the changes counter (its place in the queue); and the server's version (the body's shape).
    """
    if not is_row_id(submission_id):
        raise NotFound(f"No submission {submission_id}.")
    row = session.execute(
        select(
            Submission.user_id,
            Submission.status,
            Submission.attempts,
            Submission.preflight_status,
            Submission.preflight_finished_at,
            Submission.started_at,
            Submission.finished_at,
            Result.id,
        )
        .outerjoin(Result, Result.submission_id == Submission.id)
        .where(Submission.id == submission_id)
    ).first()
    check_visible(user, owner_id=None if row is None else row[0], submission_id=submission_id)
    assert row is not None
    status = row[1]
    moved = epoch(settings) if status not in TERMINAL else ""
    raw = "|".join(str(v) for v in (*row[1:], moved, grader.__version__))
    digest = hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()
    return State(submission_id, status, f'"{submission_id}-{digest}"')


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this tag (weak comparison, as for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return etag in tags


# --- streams per user ---------------------------------------------------------------------------


def check_stream_allowed(settings: Settings, *, user: User) -> None:
    """A user may hold `event_streams_per_user` streams in one API process (a few tabs and a
    terminal); beyond that, 429: the client polls instead."""
    open_now = hub(settings).streams_of(user.id)
    if open_now >= settings.event_streams_per_user:
        raise RateLimited(
            f"{open_now} live status streams are open for you already; close one, or poll "
            "with If-None-Match.",
            headers={"Retry-After": "30"},
        )


# --- the listener ------------------------------------------------------------------------------


@dataclass(eq=False)
class Watcher:
    submission_id: int
    user_id: int
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    own: bool = False
    others: bool = False

    def poke(self, *, own: bool) -> None:
        # Runs on the listener's thread: flags first, then wake the stream on its loop.
        if own:
            self.own = True
        else:
            self.others = True
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # its loop has closed: the stream is gone
            pass


class Hub:
    """One Redis subscription per process, fanned out to every stream in it."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.connected = False
        self._watchers: set[Watcher] = set()
        self._per_user: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def streams_of(self, user_id: int) -> int:
        with self._lock:
            return self._per_user[user_id]

    def add(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.add(watcher)
            self._per_user[watcher.user_id] += 1
            if self._thread is None and self.url is not None:
                self._thread = threading.Thread(
                    target=self._listen, name="grader-submission-events", daemon=True
                )
                self._thread.start()

    def remove(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
            self._per_user[watcher.user_id] -= 1
            if self._per_user[watcher.user_id] <= 0:
                del self._per_user[watcher.user_id]

    def dispatch(self, submission_id: int | None) -> None:
        """Wake the watchers of `submission_id`; mark the others (their place may have moved).
        None: a notice may have been lost; wake everyone."""
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.poke(own=submission_id is None or w.submission_id == submission_id)

    def close(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        assert self.url is not None
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.connected = True
                backoff = 0.5
                # Whatever happened while we were not listening.
                self.dispatch(None)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        sid = int(message["data"])
                    except (TypeError, ValueError):
                        continue
                    self.dispatch(sid)
            except Exception as exc:
                if self.connected:
                    logger.warning("submission events: listener lost Redis (%s)", exc)
                self.connected = False
                self.dispatch(None)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.connected = False
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        logger.debug("closing the pubsub failed", exc_info=True)


_hubs: dict[str | None, Hub] = {}
_hubs_lock = threading.Lock()


def hub(settings: Settings) -> Hub:
    url = redis_url(settings)
    with _hubs_lock:
        if url not in _hubs:
            _hubs[url] = Hub(url)
        return _hubs[url]


def close_hubs() -> None:
    with _hubs_lock:
        for h in _hubs.values():
            h.close()
        _hubs.clear()


# --- the stream ---------------------------------------------------------------------------------


def sse(event: str, data: str, *, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


def _fallback_after(status: str, quiet_checks: int, connected: bool) -> float:
    if not connected:
        return POLL_WITHOUT_LISTENER_S
    if status == Status.QUEUED.value:
        return min(FALLBACK_FIRST_S * 2 ** min(quiet_checks, 4), FALLBACK_QUEUED_MAX_S)
    return FALLBACK_FIRST_S


@dataclass(frozen=True)
class StreamViewer:
    """Who watches, copied from the request's user: a stream outlives the request's session."""

    id: int
    is_instructor: bool

    @classmethod
    def of(cls, user: User) -> StreamViewer:
        return cls(user.id, user.is_instructor)


async def stream(
    settings: Settings, *, viewer: StreamViewer, submission_id: int,
    body: Callable[[Session], str],
) -> AsyncIterator[str]:
    """Server-sent events for one submission: `submission` with `body`'s JSON whenever it
    changes (at once on connecting), then `end` after a terminal state. Comments keep the
    connection alive. The caller checked that `viewer` may see it (and the stream limit)."""
    the_hub = hub(settings)
    watcher = Watcher(submission_id, viewer.id, asyncio.get_running_loop())
    the_hub.add(watcher)
    started = time.monotonic()

    def read() -> State:
        with session_scope(settings.sqlalchemy_url, write=False) as session:
            return submission_state(
                session, user=viewer, submission_id=submission_id, settings=settings
            )

    def read_body() -> str:
        with session_scope(settings.sqlalchemy_url, write=False) as session:
            return body(session)

    try:
        yield f"retry: {RETRY_MS}\n\n"
        last_tag = last_body = None
        quiet = 0
        while True:
            watcher.own = watcher.others = False
            last_check = time.monotonic()
            try:
                state = await anyio.to_thread.run_sync(read)
            except NotFound:
                yield sse("end", "{}")
                return
            if state.etag != last_tag:
                text = await anyio.to_thread.run_sync(read_body)
                if text != last_body:
                    yield sse("submission", text, event_id=state.etag)
                    last_body, quiet = text, 0
                last_tag = state.etag
            else:
                quiet += 1
            if state.terminal:
                yield sse("end", json.dumps({"status": state.status}))
                return
            if time.monotonic() - started > STREAM_LIFETIME_S:
                return  # without `end`: the client connects again
            deadline = last_check + _fallback_after(state.status, quiet, the_hub.connected)
            keepalive = time.monotonic() + KEEPALIVE_S
            while True:
                now = time.monotonic()
                if now >= deadline or watcher.own:
                    break
                refresh = last_check + QUEUE_REFRESH_S
                if watcher.others and now >= refresh:
                    break
                if now >= keepalive:
                    yield ": keep-alive\n\n"
                    keepalive = now + KEEPALIVE_S
                    continue
                until = min(deadline, keepalive, refresh if watcher.others else deadline)
                watcher.event.clear()
                try:
                    await asyncio.wait_for(watcher.event.wait(), timeout=max(until - now, 0.0))
                except TimeoutError:
                    pass
    finally:
        the_hub.remove(watcher)
