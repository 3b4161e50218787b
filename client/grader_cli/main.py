"""Entry point: run the click group and turn every outcome into one line and an exit code."""

from __future__ import annotations

import sys
from typing import Any

import click

from grader_cli.commands import cli
from grader_cli.errors import CliError, ExitCode
from grader_cli.output import Mode, emit_json, error_line


def run(argv: list[str] | None = None) -> None:
    sys.exit(invoke(argv))


def invoke(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="grader-cli", standalone_mode=False)
    except CliError as exc:
        return _fail(exc.message, exc.code, exc.extra)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        # A parse error happens before --json's callback ran, so look at the raw arguments.
        if Mode.json or "--json" in (sys.argv[1:] if argv is None else argv):
            emit_json({"error": exc.format_message(), "exit_code": int(ExitCode.USAGE)})
        exc.show()
        return int(ExitCode.USAGE)
    except click.ClickException as exc:
        return _fail(exc.format_message(), ExitCode.USAGE)
    except click.Abort as exc:
        # click turns Ctrl-C and end-of-input (at a prompt) into Abort.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _fail("interrupted", ExitCode.INTERRUPTED)
        return _fail("aborted: no input", ExitCode.USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", ExitCode.SERVER)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def _fail(message: str, code: ExitCode, extra: dict[str, Any] | None = None) -> int:
    if Mode.json:
        emit_json({"error": message, "exit_code": int(code), **(extra or {})})
    error_line(message)
    return int(code)
