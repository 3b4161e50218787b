"""Where the server URL and token live, and how the environment overrides them.

The token is a credential: the file is written 0600 inside a 0700 directory, atomically, and a
stored token is only ever sent to the server it was issued by.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from grader_cli.errors import CliError, ExitCode

APP_NAME = "grader-cli"
DEFAULT_SERVER = "http://127.0.0.1:8000"
ENV_SERVER = "GRADER_SERVER"
ENV_TOKEN = "GRADER_TOKEN"


@dataclass
class StoredConfig:
    server: str | None = None
    token: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None


def config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / APP_NAME


def config_path() -> Path:
    return config_dir() / "config.json"


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise CliError("the server URL is empty", ExitCode.USAGE)
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise CliError(f"unsupported server URL {url!r}: use http:// or https://", ExitCode.USAGE)
    return url


def load() -> StoredConfig:
    path = config_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return StoredConfig()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", ExitCode.USAGE) from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise CliError(
            f"{path} is not valid JSON; remove it with grader-cli logout", ExitCode.USAGE
        ) from exc
    return StoredConfig(
        server=_str_or_none(data.get("server")),
        token=_str_or_none(data.get("token")),
        username=_str_or_none(data.get("username")),
    )


def save(config: StoredConfig) -> Path:
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    os.chmod(directory, 0o700)
    path = config_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(config), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def env_server() -> str | None:
    return os.environ.get(ENV_SERVER) or None


def resolve(server_option: str | None = None) -> Connection:
    """Server: --server, then GRADER_SERVER, then the stored one, then the local default.

    Token: GRADER_TOKEN, else the stored token but only when talking to the server that issued it.
    """
    stored = load()
    explicit = server_option or env_server()
    server = normalize_server(explicit or stored.server or DEFAULT_SERVER)
    env_token = os.environ.get(ENV_TOKEN) or None
    if env_token:
        return Connection(server=server, token=env_token)
    stored_server = normalize_server(stored.server) if stored.server else None
    token = stored.token if stored.token and stored_server == server else None
    return Connection(server=server, token=token)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
