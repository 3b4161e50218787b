"""Run the installed `grader-cli` console script the way a student would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class CliRunner:
    """The console script in a subprocess, with HOME and XDG_CONFIG_HOME in a tmp dir."""

    def __init__(self, home: Path) -> None:
        executable = shutil.which("grader-cli")
        if executable is None:
            pytest.fail("grader-cli is not installed: pip install -e ./client")
        self.executable = executable
        self.home = home
        self.config_home = home / "config"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "XDG_"))}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(self.config_home), COLUMNS="200")

    @property
    def config_file(self) -> Path:
        return self.config_home / "grader-cli" / "config.json"

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.executable, *args],
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> CliResult:
        proc = subprocess.run(
            [self.executable, *args],
            env={**self.env, **(env or {})},
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            # No controlling terminal: a hidden-password prompt must then read stdin.
            start_new_session=True,
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        # The contract: whatever happens, never a traceback.
        assert "Traceback" not in proc.stderr, proc.stderr
        return result


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConnectionCounter:
    """A TCP listener that accepts and immediately closes: proves whether a request was tried."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


def fake_torchscript_zip(path: Path, *, payload: bytes = b"\0" * 1024) -> Path:
    """The entry layout torch.jit.save writes; enough for the client's local check."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("model/constants.pkl", b"\x80\x02)q\x00.")
        zf.writestr("model/code/__torch__/model.py", "class Model: pass\n")
        zf.writestr("model/version", "6\n")
        zf.writestr("model/data/0", payload)
    return path
