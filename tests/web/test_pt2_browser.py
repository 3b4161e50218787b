"""The same model exported both ways, uploaded through the web form (real Chromium) and with
`grader-cli submit`, against a live `grader serve`: the same score everywhere, both formats
recorded, and the exercise page shows the torch.export recipe first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_server import LiveServer
from tests.support.zoo import export, export_program
from tests.web.test_browser import DEMO, chromium, log_in, upload_and_wait  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("both")
    return (export("lenet", directory / "lenet.pt"),
            export_program("lenet", directory / "lenet.pt2"))


def _cli_submit(server: LiveServer, token: str, path: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "GRADER_TOKEN": token, "HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "grader_cli", "submit", str(path), "--exercise", DEMO,
         "--server", server.url, "--wait", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr
    verdict: dict[str, Any] = json.loads(result.stdout)
    return verdict


def test_both_formats_score_alike_through_the_form_and_the_cli(
    chromium: Any, live_server: LiveServer, both: tuple[Path, Path], tmp_path: Path  # noqa: F811
) -> None:
    username, password = live_server.create_student()
    page = log_in(chromium, live_server, username, password)
    page.goto(f"/exercises/{DEMO}")
    text = page.inner_text("main")
    assert text.index("torch.export.export") < text.index("torch.jit.script")
    assert ".pt2" in (page.get_attribute("#model-file", "accept") or "")
    ids = [upload_and_wait(page, path, "FAILED") for path in both]
    assert "torch.export program" in page.inner_text("main")  # the .pt2's page, shown last
    token = live_server.token(username, password)
    with live_server.client(token) as client:
        rows = [client.get(f"/api/v1/submissions/{sid}").json() for sid in ids]
    assert [row["model_format"] for row in rows] == ["torchscript", "pt2"]
    reference = rows[0]["score"]
    cli = [_cli_submit(live_server, token, path, tmp_path) for path in both]
    for score in [rows[1]["score"], *(verdict["score"] for verdict in cli)]:
        assert abs(score - reference) <= 1e-5 * reference
