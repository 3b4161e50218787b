"""`grader doctor`: which sandbox layers are active on this machine."""

from __future__ import annotations

import json

import click

from grader.grading import sandbox
from grader.grading.doctor import describe_sandbox_layers, format_layers


@click.command("doctor")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def doctor_command(device: str, as_json: bool) -> None:
    """Show which sandbox layers are active here (the worker logs the same at start)."""
    try:
        rows = describe_sandbox_layers(device=device)
    finally:
        sandbox.shutdown()
    if as_json:
        click.echo(json.dumps({name: {"active": ok, "note": note} for name, ok, note in rows}))
    else:
        click.echo(format_layers(rows))
    required = ("fork_server", "rlimits", *(("cuda",) if device != "cpu" else ()))
    if not all(any(ok for name, ok, _ in rows if name == need) for need in required):
        raise SystemExit(1)
