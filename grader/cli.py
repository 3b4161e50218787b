"""The `grader` command. Each domain contributes its own command group; this only assembles them."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from grader import __version__


class SettingsError(click.ClickException):
    exit_code = 2  # bad input, as for every command's own arguments


# Settings whose value must not be echoed into a terminal or a log.
SECRET_SETTINGS = {"secret_key", "admin_password"}


def _settings_error_line(err: Any) -> str:
    field = "_".join(map(str, err["loc"]))
    value = "(hidden)" if field in SECRET_SETTINGS else repr(err.get("input"))
    return f"  GRADER_{field.upper()}={value}: {err['msg']}"


class GraderGroup(click.Group):
    """Reports invalid GRADER_* settings as one line each instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            lines = [_settings_error_line(err) for err in exc.errors()]
            raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


@click.group(cls=GraderGroup)
@click.version_option(__version__, prog_name="grader")
def main() -> None:
    """Grade TorchScript models against hidden test sets."""


# Command groups register below, one import and one add_command per domain.
from grader.grading.cli.commands import dataset, evaluate  # noqa: E402

main.add_command(evaluate)
main.add_command(dataset)
from grader.auth.cli import tokens, users  # noqa: E402
from grader.exercises.cli import exercises, rescore  # noqa: E402
from grader.runtime.commands import migrate_command, serve_command, worker_command  # noqa: E402

main.add_command(serve_command)
main.add_command(worker_command)
main.add_command(migrate_command)
main.add_command(users)
main.add_command(tokens)
main.add_command(exercises)
main.add_command(rescore)
from grader.grading.cli.doctor import doctor_command  # noqa: E402

main.add_command(doctor_command)
from grader.integrity.cli import integrity  # noqa: E402

main.add_command(integrity)
