"""The client's side of watching, without a server: reading server-sent events and saying the
pre-flight verdict in a line."""

from __future__ import annotations

from grader_cli.api import _sse_events
from grader_cli.waiting import preflight_note


def test_server_sent_events_are_read_as_the_server_writes_them() -> None:
    lines = [
        "retry: 3000", "",
        ": keep-alive", "",
        "event: submission", 'id: "7-ab"', 'data: {"id": 7,', 'data:  "status": "QUEUED"}', "",
        ": keep-alive", "",
        "event: end", "data: {}", "",
    ]
    assert list(_sse_events(iter(lines))) == [
        ("submission", '{"id": 7,\n "status": "QUEUED"}'),
        ("end", "{}"),
    ]


def test_the_pre_flight_verdict_in_a_line() -> None:
    def sub(status: str | None, **extra: object) -> dict[str, object]:
        return {"status": "QUEUED", "preflight": None if status is None else
                {"status": status, "message": None, "batch_one_only": None, **extra}}

    assert preflight_note(sub(None)) is None
    assert preflight_note(sub("PENDING")) is None
    assert preflight_note(sub("SKIPPED")) is None
    assert preflight_note(sub("PASSED")).startswith("pre-flight: passed")  # type: ignore[union-attr]
    assert "one image at a time" in str(preflight_note(sub("PASSED", batch_one_only=True)))
    assert preflight_note(sub("BAD_OUTPUT", message="expected (N, 30)")) == (
        "pre-flight: BAD_OUTPUT: expected (N, 30)"
    )
