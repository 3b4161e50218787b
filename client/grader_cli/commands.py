"""The `grader-cli` commands. Each one returns its exit code; errors are raised as CliError."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from grader_cli import __version__, config
from grader_cli.api import ApiClient
from grader_cli.archive import check_model_file, format_bytes
from grader_cli.errors import CliError, ExitCode
from grader_cli.output import (
    Mode,
    emit_json,
    info,
    max_model_bytes,
    pick,
    print_exercises,
    print_history,
    print_leaderboard,
    queue_line,
    stderr,
    submission_verdict,
)
from grader_cli.waiting import exit_code_for, preflight_note, wait_until_done

F = TypeVar("F", bound=Callable[..., Any])


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        Mode.json = True


def json_option(func: F) -> F:
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_json,
        help="Print machine-readable JSON only (on stdout).",
    )(func)


SERVER_KEY = "grader_cli.server"


def _set_server(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared by the whole invocation, so the group's and a command's option agree.
    if value:
        ctx.meta[SERVER_KEY] = value


def common_options(func: F) -> F:
    """--server and --json, accepted before or after the command name."""
    func = click.option(
        "--server",
        metavar="URL",
        expose_value=False,
        callback=_set_server,
        help="Grading server (default: GRADER_SERVER, the stored one, "
        f"or {config.DEFAULT_SERVER}).",
    )(func)
    return json_option(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(__version__, prog_name="grader-cli")
def cli() -> None:
    """Submit TorchScript models to the course's grading server and follow their grading.

    Exit codes: 0 passed / success, 1 graded and failed, 2 usage or input error,
    3 server or network error (or an INFRA_ERROR from the grader), 4 not authenticated.
    """


def _server_option(ctx: click.Context) -> str | None:
    value = ctx.meta.get(SERVER_KEY)
    return value if isinstance(value, str) else None


def _client(ctx: click.Context) -> ApiClient:
    conn = config.resolve(_server_option(ctx))
    return ApiClient(conn.server, conn.token)


# -- login / logout ----------------------------------------------------------------------------


@cli.command()
@click.option("--token", metavar="T", help="Store this API token instead of logging in.")
@click.option("-u", "--username", help="Username (prompted for when omitted).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (for scripts).")
@common_options
@click.pass_context
def login(
    ctx: click.Context,
    token: str | None,
    username: str | None,
    password_stdin: bool,
) -> int:
    """Log in and store the server URL and token (file mode 0600)."""
    stored = config.load()
    explicit = _server_option(ctx) or config.env_server()
    server = config.normalize_server(explicit or stored.server or config.DEFAULT_SERVER)
    if token:
        with ApiClient(server, token) as client:
            try:
                username = str(client.me().get("username") or "") or username
            except CliError as exc:
                if exc.code == ExitCode.AUTH:
                    raise CliError(f"{server} rejected the token", ExitCode.AUTH) from exc
                raise
    else:
        if not username:
            username = click.prompt("Username", err=True).strip()
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, err=True)
        if not username or not password:
            raise CliError("username and password are required", ExitCode.USAGE)
        with ApiClient(server, None) as client:
            token = client.login(username, password)
    path = config.save(config.StoredConfig(server=server, token=token, username=username))
    if Mode.json:
        emit_json({"server": server, "username": username, "config": str(path)})
    else:
        who = f" as {username}" if username else ""
        click.echo(f"Logged in to {server}{who}; token stored in {path}")
    return ExitCode.OK


@cli.command()
@common_options
def logout() -> int:
    """Forget the stored server URL and token."""
    path = config.config_path()
    removed = config.remove()
    if Mode.json:
        emit_json({"removed": removed, "config": str(path)})
    elif removed:
        click.echo(f"Logged out; removed {path}")
    else:
        click.echo("Not logged in; nothing to remove.")
    return ExitCode.OK


# -- reading -----------------------------------------------------------------------------------


@cli.command()
@common_options
@click.pass_context
def exercises(ctx: click.Context) -> int:
    """List exercises: deadline, threshold, size limit and your best score."""
    with _client(ctx) as client:
        items = client.exercises()
    if Mode.json:
        emit_json(items)
    else:
        print_exercises(items)
    return ExitCode.OK


@cli.command()
@click.argument("submission_id", metavar="ID")
@click.option("--wait", is_flag=True, help="Follow the grading until it ends.")
@common_options
@click.pass_context
def status(ctx: click.Context, submission_id: str, wait: bool) -> int:
    """Show one of your submissions (exit code follows its verdict)."""
    with _client(ctx) as client:
        sub = client.submission(submission_id)
        if wait and sub.get("status") not in ("PASSED", "FAILED", "ERROR"):
            sub = _follow(client, submission_id)
        return _report(client, sub, threshold=None)


@cli.command()
@click.option("-e", "--exercise", metavar="SLUG", help="Only this exercise.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@common_options
@click.pass_context
def history(ctx: click.Context, exercise: str | None, limit: int) -> int:
    """Your submissions, newest first."""
    with _client(ctx) as client:
        items = client.submissions(exercise=exercise, limit=limit)
    items = items[:limit]
    if Mode.json:
        emit_json(items)
    else:
        print_history(items)
    return ExitCode.OK


@cli.command()
@click.argument("slug")
@common_options
@click.pass_context
def leaderboard(ctx: click.Context, slug: str) -> int:
    """Best result per student for an exercise."""
    with _client(ctx) as client:
        board = client.leaderboard(slug)
    if Mode.json:
        emit_json(board)
    else:
        print_leaderboard(board)
    return ExitCode.OK


# -- submitting --------------------------------------------------------------------------------


@cli.command()
@click.argument("model", metavar="MODEL.pt", type=click.Path(path_type=Path))
@click.option("-e", "--exercise", metavar="SLUG", help="Exercise (needed if there are several).")
@click.option("--wait", is_flag=True, help="Follow the grading live and exit with its verdict.")
@common_options
@click.pass_context
def submit(ctx: click.Context, model: Path, exercise: str | None, wait: bool) -> int:
    """Check MODEL.pt locally, upload it, and print the submission id."""
    # Local checks first: a file that cannot be a model never costs a request.
    size = check_model_file(model)
    with _client(ctx) as client:
        ex = _choose_exercise(client, exercise)
        slug = str(ex["slug"])
        limit = max_model_bytes(ex)
        if limit is not None and size > limit:
            raise CliError(
                f"{model.name} is {format_bytes(size)}, over the limit of {format_bytes(limit)} "
                f"for {slug}",
                ExitCode.USAGE,
            )
        accepted = _upload(client, slug, model, size=size, limit=limit)
        sid = str(accepted["id"])
        if not wait:
            if Mode.json:
                emit_json({**accepted, "exercise": slug})
            else:
                click.echo(
                    f"Submitted {model.name} to {slug}: submission {sid} "
                    f"({accepted.get('status', 'QUEUED')})"
                )
                click.echo(f"Follow it with: grader-cli status {sid} --wait")
            return ExitCode.OK
        final = _follow(client, sid, announce=True)
        return _report(client, final, threshold=pick(ex, "threshold"))


def _choose_exercise(client: ApiClient, slug: str | None) -> dict[str, Any]:
    if slug:
        return client.exercise(slug)
    items = client.exercises()
    if len(items) == 1:
        return items[0]
    if not items:
        raise CliError(f"{client.server} has no exercises open to you", ExitCode.USAGE)
    slugs = ", ".join(str(item.get("slug")) for item in items)
    raise CliError(f"several exercises; choose one with --exercise ({slugs})", ExitCode.USAGE)


def _upload(
    client: ApiClient, slug: str, model: Path, *, size: int, limit: int | None
) -> dict[str, Any]:
    info(f"Uploading {model.name} ({format_bytes(size)}) to {slug} at {client.server}")
    if Mode.json or not stderr.is_terminal:
        return client.submit(slug, model, max_bytes=limit)
    with Progress(
        TextColumn("[bold]upload"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    ) as progress:
        task = progress.add_task("upload", total=size)

        def advance(position: int) -> None:
            progress.update(task, completed=position)

        return client.submit(slug, model, max_bytes=limit, on_progress=advance)


def _follow(client: ApiClient, sid: str, *, announce: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    last: dict[str, Any] = {}
    show_spinner = not Mode.json and stderr.is_terminal

    def on_update(sub: dict[str, Any]) -> None:
        state = str(sub.get("status"))
        waiting = queue_line(sub)
        place = (sub.get("queue") or {}).get("position")
        if state != last.get("status") or place != (last.get("queue") or {}).get("position"):
            note = f"  ({waiting})" if waiting else ""
            info(f"  {time.monotonic() - started:6.1f} s  {state}{note}")
        checked = preflight_note(sub)
        if checked is not None and checked != preflight_note(last):
            info(f"  {time.monotonic() - started:6.1f} s  {checked}")
        last.update(sub)
        if spinner is not None:
            spinner.update(
                f"submission {sid}: {state} ({time.monotonic() - started:.0f} s)"
                + (f", {waiting}" if waiting else "")
            )

    spinner = None
    try:
        # Inside the try: once this line is visible, Ctrl-C gets the "check later" message.
        if announce:
            info(
                f"Submission {sid} accepted; waiting for the grader (Ctrl-C stops waiting, not "
                "the grading)"
            )
        spinner = stderr.status(f"submission {sid}: waiting") if show_spinner else None
        if spinner is not None:
            with spinner:
                return wait_until_done(client, sid, on_update=on_update)
        return wait_until_done(client, sid, on_update=on_update)
    except KeyboardInterrupt:
        state = str(last.get("status", "QUEUED"))
        raise CliError(
            f"stopped waiting; submission {sid} is still {state} on the server; "
            f"check it later with: grader-cli status {sid} --wait",
            ExitCode.INTERRUPTED,
            extra={"id": sid, "status": state, "interrupted": True},
        ) from None


def _report(client: ApiClient, sub: dict[str, Any], *, threshold: Any) -> int:
    if Mode.json:
        emit_json(sub)
    else:
        result = sub.get("result")
        if threshold is None and not (isinstance(result, dict) and "threshold" in result):
            threshold = _exercise_threshold(client, sub.get("exercise"))
        submission_verdict(sub, threshold=threshold)
    return exit_code_for(str(sub.get("status")), sub.get("failure_reason"))


def _exercise_threshold(client: ApiClient, exercise: Any) -> Any:
    if isinstance(exercise, dict):
        if "threshold" in exercise:
            return exercise["threshold"]
        exercise = exercise.get("slug")
    if not isinstance(exercise, str):
        return None
    try:
        return client.exercise(exercise).get("threshold")
    except CliError:
        return None
