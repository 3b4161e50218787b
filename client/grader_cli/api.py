"""A thin client for the grading server's REST API (/api/v1) that speaks in CliErrors.

Every transport failure and every HTTP error becomes one CliError with the right exit code, so
commands never see an httpx exception.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from grader_cli import __version__
from grader_cli.archive import format_bytes
from grader_cli.errors import CliError, ExitCode

API_PREFIX = "/api/v1"
LOGIN_HINT = "log in with grader-cli login"


class ApiClient:
    def __init__(self, server: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.server = server
        self.token = token
        headers = {"User-Agent": f"grader-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=server + API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # -- endpoints ---------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        response = self._send(
            "POST", "/auth/token", data={"username": username, "password": password}
        )
        if response.status_code in (400, 401):
            raise CliError(
                f"login failed at {self.server}: wrong username or password", ExitCode.AUTH
            )
        body = self._json(self._checked(response))
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CliError(f"{self.server} returned no access token", ExitCode.SERVER)
        return token

    def me(self) -> dict[str, Any]:
        return _object(self.get("/auth/me"))

    def exercises(self) -> list[dict[str, Any]]:
        return _items(self.get("/exercises"))

    def exercise(self, slug: str) -> dict[str, Any]:
        return _object(self.get(f"/exercises/{slug}", not_found=f"unknown exercise {slug!r}"))

    def submission(self, submission_id: str) -> dict[str, Any]:
        return _object(
            self.get(
                f"/submissions/{submission_id}",
                not_found=f"no submission {submission_id} of yours",
            )
        )

    def submission_if_changed(
        self, submission_id: str, etag: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(the submission, its ETag), or (None, etag) while it is unchanged (a 304)."""
        self._require_token()
        headers = {"If-None-Match": etag} if etag else {}
        response = self._send("GET", f"/submissions/{submission_id}", headers=headers)
        if response.status_code == 304:
            return None, etag
        body = self._json(
            self._checked(response, not_found=f"no submission {submission_id} of yours")
        )
        return _object(body), response.headers.get("ETag")

    def submission_events(self, submission_id: str) -> Iterator[dict[str, Any]]:
        """The submission's server-sent events: its JSON at once and on every change; ends
        after it is graded (or when the server closes the stream: connect again). Raises
        StreamUnavailable where the server offers no stream (too many open, an older
        server) and CliError(SERVER) when the connection breaks."""
        self._require_token()
        path = f"/submissions/{submission_id}/events"
        url = self.server + API_PREFIX + path
        # Keep-alive comments come every 15 s; a silent minute means the connection is gone.
        timeout = httpx.Timeout(60.0, connect=10.0)
        try:
            with self._http.stream(
                "GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout
            ) as response:
                if response.status_code in (404, 405, 429, 501, 503) or (
                    response.is_success
                    and "text/event-stream" not in response.headers.get("content-type", "")
                ):
                    raise StreamUnavailable(f"{url}: {response.status_code}")
                if not response.is_success:
                    response.read()
                    self._checked(response)
                for name, data in _sse_events(response.iter_lines()):
                    if name == "submission":
                        try:
                            yield _object(json.loads(data))
                        except ValueError as exc:
                            raise CliError(
                                f"{url} sent an event that is not JSON", ExitCode.SERVER
                            ) from exc
                    elif name == "end":
                        return
        except httpx.HTTPError as exc:
            raise CliError(f"the stream {url} broke: {_reason(exc)}", ExitCode.SERVER) from exc

    def submissions(self, *, exercise: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"limit": limit}
        if exercise:
            params["exercise"] = exercise
        not_found = f"unknown exercise {exercise!r}" if exercise else None
        return _items(self.get("/submissions", params=params, not_found=not_found))

    def leaderboard(self, slug: str) -> Any:
        return self.get(f"/exercises/{slug}/leaderboard", not_found=f"unknown exercise {slug!r}")

    def submit(
        self,
        slug: str,
        path: Path,
        *,
        max_bytes: int | None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        self._require_token()
        with path.open("rb") as fh:
            upload = _ProgressReader(fh, on_progress)
            files = {"file": (path.name, upload, "application/octet-stream")}
            response = self._send(
                "POST",
                f"/exercises/{slug}/submissions",
                files=files,
                # An upload can take a while on a slow link; only the connect stays short.
                timeout=httpx.Timeout(None, connect=10.0),
            )
        if response.status_code == 413:
            limit = f" of {format_bytes(max_bytes)}" if max_bytes else ""
            detail = _detail(response)
            raise CliError(
                f"{path.name} is over the exercise's size limit{limit}"
                + (f": {detail}" if detail else ""),
                ExitCode.USAGE,
            )
        body = self._json(self._checked(response, not_found=f"unknown exercise {slug!r}"))
        if not isinstance(body, dict) or "id" not in body:
            raise CliError(f"{self.server} sent an unexpected reply to the upload", ExitCode.SERVER)
        return body

    # -- plumbing ----------------------------------------------------------------------------

    def get(
        self, path: str, *, params: dict[str, Any] | None = None, not_found: str | None = None
    ) -> Any:
        self._require_token()
        response = self._send("GET", path, params=params)
        return self._json(self._checked(response, not_found=not_found))

    def _require_token(self) -> None:
        if not self.token:
            raise CliError(f"not logged in to {self.server}: {LOGIN_HINT}", ExitCode.AUTH)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.server + API_PREFIX + path
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            reason = _reason(exc)
            raise CliError(f"cannot connect to {url}: {reason}", ExitCode.SERVER) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"{url} timed out ({type(exc).__name__})", ExitCode.SERVER) from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {url} failed: {_reason(exc)}", ExitCode.SERVER) from exc

    def _checked(self, response: httpx.Response, *, not_found: str | None = None) -> httpx.Response:
        if response.is_success:
            return response
        raise http_error(
            response, server=self.server, token_sent=bool(self.token), not_found=not_found
        )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"{response.request.url} answered {response.status_code} with a non-JSON body; "
                "is this a grading server?",
                ExitCode.SERVER,
            ) from exc


class StreamUnavailable(Exception):
    """The server offers no event stream for this submission now; poll instead."""


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) from server-sent event lines; comments are skipped."""
    name = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def http_error(
    response: httpx.Response, *, server: str, token_sent: bool, not_found: str | None = None
) -> CliError:
    status = response.status_code
    detail = _detail(response)
    suffix = f": {detail.rstrip('.')}" if detail else ""
    if status == 401 or (status == 403 and not token_sent):
        return CliError(f"not authenticated at {server}{suffix}; {LOGIN_HINT}", ExitCode.AUTH)
    if status == 404:
        return CliError(not_found or f"not found{suffix}", ExitCode.USAGE)
    if status == 429:
        return CliError(
            f"rate limited{suffix}; {retry_hint(response.headers.get('Retry-After'))}",
            ExitCode.SERVER,
        )
    if status == 413:
        return CliError(f"upload too large{suffix}", ExitCode.USAGE)
    if 400 <= status < 500:
        return CliError(f"refused ({status}){suffix}", ExitCode.USAGE)
    return CliError(f"server error {status} at {server}{suffix}", ExitCode.SERVER)


def retry_hint(retry_after: str | None, *, now: float | None = None) -> str:
    seconds = retry_after_seconds(retry_after, now=now)
    if seconds is None:
        return "retry later"
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime((now or time.time()) + seconds))
    return f"retry in {format_duration(seconds)} (after {at})"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now or time.time()))


def format_duration(seconds: float) -> str:
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        # FastAPI validation errors: a list of {"loc", "msg"}.
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("msg") or detail)
    return "" if detail is None else str(detail)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is the server running?)"
    return text or type(exc).__name__


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CliError("the server sent an unexpected reply (not an object)", ExitCode.SERVER)
    return body


def _items(body: Any) -> list[dict[str, Any]]:
    """Lists may come bare or wrapped in a page object ({"items": [...], ...})."""
    if isinstance(body, dict):
        for key in ("items", "results", "data"):
            if isinstance(body.get(key), list):
                return list(body[key])
    if isinstance(body, list):
        return body
    raise CliError("the server sent an unexpected list format", ExitCode.SERVER)


class _ProgressReader:
    """A file wrapper that reports bytes read, so httpx's multipart streaming drives the bar."""

    def __init__(self, fh: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        self._fh = fh
        self._on_progress = on_progress
        self.name = getattr(fh, "name", "model.pt")

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        if chunk and self._on_progress:
            # The absolute position, so a re-read after seek(0) cannot overshoot the bar.
            self._on_progress(self._fh.tell())
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()
