"""Login throttling: failed logins counted in Redis with the `limits` library.

Three moving windows, each counting failed logins only (a correct password never uses up a
budget, so a class behind one NAT address logging in at the start of a lab is not slowed):

* per client address: bounds how many argon2 checks one address can make the server run and
  how many accounts it can spray;
* per username *and* address: the brute-force limit for one account from one place;
* per username from anywhere: a backstop against guessing spread over many addresses. It is
  set above what the per-username-and-address window lets one address reach, so no single
  client can lock another user out; only an attacker with several addresses can, and that is
  the attack it exists for.

Counters live in the Redis the project already runs (the Celery broker, or
GRADER_RATE_LIMIT_STORAGE_URL), so every API process shares them. If that Redis cannot be
reached, logins go on unthrottled (fail open) and a warning is logged: a broker outage must not
lock every user out, and uploads already survive one (they are re-sent later).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from grader.config import Settings
from grader.errors import RateLimited

logger = logging.getLogger(__name__)

# After Redis fails, skip it for this long: a login must not wait on a connect timeout each
# time, and the log should get one warning per outage rather than one per login.
_OUTAGE_BACKOFF_S = 30.0
_SOCKET_TIMEOUT_S = 0.5


def storage_uri(settings: Settings) -> str:
    """The `limits` storage URI for these settings (kombu's broker URL spelled for redis-py)."""
    url = settings.rate_limit_storage_url or settings.celery_broker_url
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "redis+unix", "memory"):
        return url
    if parts.scheme == "redis+socket":
        # kombu: redis+socket:///path/to/sock?virtual_host=N ; redis-py: unix:///path?db=N
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0] or "0"
        return f"redis+unix://{parts.path}?db={db}"
    logger.warning(
        "login throttling: broker %r is not Redis; counting in this process only", parts.scheme
    )
    return "memory://"


@dataclass(frozen=True)
class _Window:
    name: str
    item: RateLimitItem


class LoginThrottle:
    def __init__(self, uri: str, *, per_address: str, per_user_address: str, per_user: str):
        options: dict[str, Any] = {}
        if not uri.startswith("memory"):
            options = {
                "socket_timeout": _SOCKET_TIMEOUT_S,
                "socket_connect_timeout": _SOCKET_TIMEOUT_S,
            }
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(uri, wrap_exceptions=True, **options)
        )
        self._uri = uri
        self._windows = [
            _Window(name, parse(spec))
            for name, spec in (
                ("address", per_address),
                ("user-address", per_user_address),
                ("user", per_user),
            )
            if spec
        ]
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> dict[str, tuple[str, ...]]:
        return {
            "address": ("login-address", address),
            "user-address": ("login-user-address", username, address),
            "user": ("login-user", username),
        }

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _outage(self, exc: Exception) -> None:
        with self._lock:
            first = self._available()
            self._down_until = time.monotonic() + _OUTAGE_BACKOFF_S
        if first:
            logger.warning(
                "login throttling is off for %.0f s: rate-limit storage %s unreachable (%s)",
                _OUTAGE_BACKOFF_S,
                self._uri,
                exc,
            )

    def check(self, *, username: str, address: str) -> None:
        """Raise RateLimited (429, Retry-After) when any window has no failure left."""
        if not self._available():
            return
        keys = self._keys(username, address)
        try:
            for window in self._windows:
                if not self._limiter.test(window.item, *keys[window.name]):
                    reset, _ = self._limiter.get_window_stats(window.item, *keys[window.name])
                    retry_after = max(1, math.ceil(reset - time.time()))
                    raise RateLimited(
                        f"Too many failed logins. Try again in {_duration(retry_after)}.",
                        headers={"Retry-After": str(retry_after)},
                    )
        except RateLimited:
            raise
        except Exception as exc:  # the storage's errors: StorageError, redis' own
            self._outage(exc)

    def failed(self, *, username: str, address: str) -> None:
        if not self._available():
            return
        keys = self._keys(username, address)
        try:
            for window in self._windows:
                self._limiter.hit(window.item, *keys[window.name])
        except Exception as exc:
            self._outage(exc)

    def succeeded(self, *, username: str, address: str) -> None:
        """A correct password from this address forgives its earlier typos for this account."""
        if not self._available():
            return
        keys = self._keys(username, address)
        try:
            for window in self._windows:
                if window.name == "user-address":
                    self._limiter.clear(window.item, *keys[window.name])
        except Exception as exc:
            self._outage(exc)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


@lru_cache(maxsize=8)
def _throttle(uri: str, per_address: str, per_user_address: str, per_user: str) -> LoginThrottle:
    return LoginThrottle(
        uri, per_address=per_address, per_user_address=per_user_address, per_user=per_user
    )


def login_throttle(settings: Settings) -> LoginThrottle:
    """One throttle (one Redis connection pool) per storage and limits, shared by requests."""
    return _throttle(
        storage_uri(settings),
        settings.login_limit_per_address,
        settings.login_limit_per_user_address,
        settings.login_limit_per_user,
    )
