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
