"""The CLI without a grading server: local checks, network failures, config, exit codes.

Each test runs the installed console script in a subprocess, as a student would.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from grader_cli import config

from .helpers import CliRunner, ConnectionCounter, fake_torchscript_zip, unused_port

USAGE, SERVER, AUTH = 2, 3, 4


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_random_file_is_refused_without_any_request(
    cli: CliRunner, counter: ConnectionCounter, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(os.urandom(50_000))

    result = cli(
        "submit", str(model), "--exercise", "x", "--server", counter.url, env={"GRADER_TOKEN": "t"}
    )

    assert result.code == USAGE
    assert "not a TorchScript archive" in one_line(result.stderr)
    assert counter.connections == 0


def test_the_connection_counter_does_see_requests(
    cli: CliRunner, counter: ConnectionCounter, tmp_path: Path
) -> None:
    # The control for the test above: a well-formed archive does reach the network.
    model = fake_torchscript_zip(tmp_path / "model.pt")

    result = cli(
        "submit", str(model), "--exercise", "x", "--server", counter.url, env={"GRADER_TOKEN": "t"}
    )

    assert counter.connections >= 1
    assert result.code == SERVER
    assert counter.url in one_line(result.stderr)


def test_torch_save_checkpoint_gets_its_own_message(
    cli: CliRunner, counter: ConnectionCounter, tmp_path: Path
) -> None:
    model = tmp_path / "weights.pt"
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("weights/version", "3\n")
        zf.writestr("weights/data/0", b"\0" * 64)

    result = cli("submit", str(model), "--server", counter.url, env={"GRADER_TOKEN": "t"})

    assert result.code == USAGE
    assert "torch.save() checkpoint" in one_line(result.stderr)
    assert "torch.jit.script" in result.stderr
    assert counter.connections == 0


def test_zip_of_other_files_and_missing_file_are_usage_errors(
    cli: CliRunner, counter: ConnectionCounter, tmp_path: Path
) -> None:
    other = tmp_path / "notes.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("a.txt", "hello")
        zf.writestr("b/c.txt", "world")
    empty = tmp_path / "empty.pt"
    empty.touch()

    for path, message in (
        (other, "not a TorchScript archive"),
        (empty, "is empty"),
        (tmp_path / "absent.pt", "no such file"),
        (tmp_path, "not a regular file"),
    ):
        result = cli("submit", str(path), "--server", counter.url, env={"GRADER_TOKEN": "t"})
        assert result.code == USAGE, (path, result)
        assert message in one_line(result.stderr)
    assert counter.connections == 0


def test_server_down_exits_3_naming_the_url(cli: CliRunner, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    model = fake_torchscript_zip(tmp_path / "model.pt")

    for args in (
        ("submit", str(model), "--exercise", "facial-keypoints"),
        ("exercises",),
        ("status", "1"),
        ("history",),
        ("leaderboard", "facial-keypoints"),
    ):
        result = cli(*args, env={"GRADER_SERVER": url, "GRADER_TOKEN": "t"})
        assert result.code == SERVER, (args, result)
        line = one_line(result.stderr)
        assert url in line and "connection refused" in line
        assert result.stdout == ""


def test_login_with_server_down_exits_3(cli: CliRunner) -> None:
    url = f"http://127.0.0.1:{unused_port()}"

    result = cli("login", "--server", url, "-u", "alice", "--password-stdin", input="pw\n")

    assert result.code == SERVER
    assert f"{url}/api/v1/auth/token" in one_line(result.stderr)
    assert not cli.config_file.exists()


def test_json_errors_are_parseable_and_only_json_on_stdout(cli: CliRunner, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a zip at all")

    down = cli("exercises", "--json", env={"GRADER_SERVER": url, "GRADER_TOKEN": "t"})
    bad_file = cli("submit", str(model), "--json", env={"GRADER_SERVER": url})
    no_token = cli("--json", "history", env={"GRADER_SERVER": url})
    bad_option = cli("status", "--json", "--no-such-option")

    assert down.code == SERVER and down.json()["exit_code"] == SERVER
    assert url in down.json()["error"]
    assert bad_file.code == USAGE and bad_file.json()["exit_code"] == USAGE
    assert no_token.code == AUTH and "grader-cli login" in no_token.json()["error"]
    assert bad_option.code == USAGE and "no-such-option" in bad_option.json()["error"]


def test_not_logged_in_exits_4_without_a_request(
    cli: CliRunner, counter: ConnectionCounter
) -> None:
    for args in (("exercises",), ("status", "7"), ("history",), ("leaderboard", "x")):
        result = cli(*args, "--server", counter.url)
        assert result.code == AUTH
        assert "log in with grader-cli login" in one_line(result.stderr)
    assert counter.connections == 0


def test_stored_token_is_not_sent_to_another_server(
    cli: CliRunner, counter: ConnectionCounter
) -> None:
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text(
        json.dumps({"server": "http://grader.example:8000", "token": "secret"})
    )

    other = cli("exercises", "--server", counter.url)
    env_server = cli("exercises", env={"GRADER_SERVER": counter.url})

    assert other.code == AUTH and env_server.code == AUTH
    assert counter.url in other.stderr
    assert counter.connections == 0


def test_env_token_and_server_override_the_stored_config(
    cli: CliRunner, counter: ConnectionCounter
) -> None:
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text(json.dumps({"server": "http://127.0.0.1:1", "token": "stored"}))

    result = cli("exercises", env={"GRADER_SERVER": counter.url, "GRADER_TOKEN": "from-env"})

    # It went to GRADER_SERVER with GRADER_TOKEN (the listener drops it: a network error).
    assert result.code == SERVER
    assert counter.url in result.stderr
    assert counter.connections >= 1


def test_config_file_is_private_and_logout_removes_it(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cli.config_home))
    # A pre-existing world-readable file and a permissive umask must still end up private.
    cli.config_file.parent.mkdir(parents=True, mode=0o755)
    cli.config_file.write_text("{}")
    os.chmod(cli.config_file, 0o644)
    old_umask = os.umask(0)
    try:
        path = config.save(config.StoredConfig(server="http://h:1", token="tok", username="u"))
    finally:
        os.umask(old_umask)

    assert path == cli.config_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["token"] == "tok"

    result = cli("logout", "--json")
    assert result.code == 0
    assert result.json() == {"removed": True, "config": str(cli.config_file)}
    assert not cli.config_file.exists()
    again = cli("logout")
    assert again.code == 0 and "Not logged in" in again.stdout


def test_corrupt_config_is_a_readable_usage_error(cli: CliRunner) -> None:
    cli.config_file.parent.mkdir(parents=True)
    cli.config_file.write_text("{not json")

    result = cli("exercises")

    assert result.code == USAGE
    assert "grader-cli logout" in one_line(result.stderr)


def test_login_prompt_without_input_is_a_usage_error(cli: CliRunner) -> None:
    result = cli("login", "--server", f"http://127.0.0.1:{unused_port()}", input="")

    assert result.code == USAGE
    assert not cli.config_file.exists()


def test_help_and_version(cli: CliRunner) -> None:
    help_ = cli("--help")
    version = cli("--version")
    submit_help = cli("submit", "--help")

    assert help_.code == 0 and "Exit codes" in help_.stdout
    assert version.code == 0 and "grader-cli" in version.stdout
    assert submit_help.code == 0 and "--wait" in submit_help.stdout
