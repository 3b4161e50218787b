"""The operating-system layers hold on their own, with no help from the model-code scan."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grader.grading import sandbox
from grader.grading.sandboxed.confine import landlock_abi

ATTEMPTS = r"""
import json, os, socket, sys
import encodings.idna  # imported before confinement: nothing can be imported after
from grader.grading.sandboxed.child import ChildRequest, confine_self
secret, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
req = ChildRequest(n_images=0, device="cpu", batch_size=1, threads=1,
                   memory_limit_bytes=1 << 30, zygote_pid=os.getppid())
layers = confine_self(req)
out = {"layers": layers.applied}
def attempt(name, action):
    try:
        action()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = exc.strerror or str(exc)
attempt("read_secret", lambda: open(secret, "rb").read())
attempt("write_file", lambda: open(target, "w").write("x"))
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
attempt("read_environ_of_parent", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
print(json.dumps(out), flush=True)
"""


@pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock")
def test_reads_writes_and_tcp_are_refused(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    secret = tmp_path / "secret.csv"
    secret.write_text("left_eye_center_x,...\n")
    secret.chmod(0o644)
    target = tmp_path / "written.txt"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        result = subprocess.run(
            [sys.executable, "-c", ATTEMPTS, str(secret), str(target),
             str(server.getsockname()[1])],
            capture_output=True, text=True, timeout=120, cwd="/",
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["layers"]["landlock"] is True
    for attempt in ("read_secret", "write_file", "tcp_connect", "read_environ_of_parent"):
        assert out[attempt] != "allowed", attempt
    assert not target.exists()


def test_probe_reports_layers_and_the_fork_server_env_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADER_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("GRADER_DATABASE_URL", "postgresql://secret@db/grader")
    box = sandbox.Sandbox()
    try:
        info = box.probe()
        assert set(info["layers"]) >= {"rlimits", "landlock", "netns", "uid_drop"}
        assert info["layers"]["rlimits"] is True
        assert info["layers"]["landlock"] is (landlock_abi() > 0)
        assert box._proc is not None
        environ = Path(f"/proc/{box._proc.pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(b"GRADER_")]
        assert not [v for v in environ if b"secret" in v]
    finally:
        box.shutdown()
    assert box._proc is None
