"""The `grader` command. Each domain contributes its own command group; this only assembles them."""

from __future__ import annotations

import click

from grader import __version__


@click.group()
@click.version_option(__version__, prog_name="grader")
def main() -> None:
    """Grade TorchScript models against hidden test sets."""


# Command groups register below, one import and one add_command per domain.
from grader.grading.commands import dataset, evaluate  # noqa: E402

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
from grader.grading.doctor import doctor_command  # noqa: E402

main.add_command(doctor_command)
