"""Which sandbox layers are active on this machine, as the worker logs them at start and
`grader doctor` prints them."""

from __future__ import annotations

import time

from grader.grading import sandbox
from grader.grading.sandboxed.confine import landlock_abi

LAYER_ORDER = ("fork_server", "rlimits", "uid_drop", "netns", "no_new_privs", "landlock")


def describe_sandbox_layers(
    *, device: str = "cpu", limits: sandbox.SandboxLimits | None = None
) -> list[tuple[str, bool, str]]:
    """(layer, active, note) for every layer, measured by forking a real sandbox child.

    Starts this process's fork server if it is not running, so a worker that calls this at
    start-up also has its first submission graded without the start-up cost."""
    started = time.perf_counter()
    box = sandbox.get_sandbox()
    try:
        info = box.probe(device=device, limits=limits)
    except Exception as exc:  # the report must come out even when the sandbox cannot start
        abi = landlock_abi()
        return [
            ("fork_server", False, f"cannot start: {exc}"),
            ("landlock", False, f"kernel ABI {abi}" if abi else "not in this kernel"),
        ]
    timings = box.last_timings
    start_note = (
        f"started in {timings['zygote_start_s']:.2f} s, " if "zygote_start_s" in timings else ""
    )
    rows = [(
        "fork_server", True,
        f"{start_note}fork {timings.get('fork_ms', 0.0):.1f} ms, probe "
        f"{time.perf_counter() - started:.2f} s",
    )]
    applied: dict[str, bool] = info.get("layers", {})
    notes: dict[str, str] = info.get("notes", {})
    names = [*LAYER_ORDER[1:], *(n for n in applied if n not in LAYER_ORDER)]
    for name in names:
        rows.append((name, bool(applied.get(name)), notes.get(name, "not reported")))
    return rows


def device_problem(device: str) -> str | None:
    """Why a sandboxed child cannot grade on `device` here, or None when it can (a real probe,
    whose fork server is stopped again so that no process inherits it)."""
    if device == "cpu":
        return None
    try:
        rows = {name: (ok, note) for name, ok, note in describe_sandbox_layers(device=device)}
    finally:
        sandbox.shutdown()
    if not rows.get("fork_server", (False, ""))[0]:
        return f"the sandbox cannot start: {rows['fork_server'][1]}"
    ok, note = rows.get("cuda", (False, "not reported by the sandbox child"))
    return None if ok else note


def format_layers(rows: list[tuple[str, bool, str]]) -> str:
    return "\n".join(f"{'ok ' if ok else 'OFF'} {name:<13} {note}" for name, ok, note in rows)
