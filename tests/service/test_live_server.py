"""The embedded server end to end through the live_server fixture (real API, Redis, worker)."""

from __future__ import annotations

import pytest

from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow


def test_live_server_is_up_with_the_demo_exercise(live_server: LiveServer) -> None:
    with live_server.student_client() as client:
        exercises = client.get("/api/v1/exercises").json()
    demo = {e["slug"]: e for e in exercises}["facial-keypoints"]
    assert demo["threshold"] == 100.0
    assert demo["testset_n_images"] == 1000
