"""Local checks on a model file before anything is uploaded.

A TorchScript file written by `torch.jit.save` is a zip whose entries all sit under one folder
and include `data.pkl`, `constants.pkl`, `version` and compiled `code/`. A plain `torch.save`
checkpoint is also a zip with `data.pkl` but has no `code/` or `constants.pkl`, which is the
most common student mistake, so it gets its own message.

A torch.export program written by `torch.export.save` (".pt2", the recommended format since
TorchScript is deprecated) is a zip under one folder with `archive_format` ("pt2") and
`models/model.json`. The server checks both formats fully; this only catches wrong files early.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from grader_cli.errors import CliError, ExitCode

# The client does not know the exercise's input shape: `x` stands for a batch of two example
# inputs (the exercise page shows the exact line for its kind).
EXPORT_HINT = (
    "export it with torch.export: torch.export.save(torch.export.export(model.eval(), "
    "(x,), dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2') with x a batch of "
    "two example inputs; or with TorchScript: torch.jit.script(model).save('model.pt')"
)
PT2_ENTRIES = ("archive_format", "models/model.json")
REQUIRED_ENTRIES = ("data.pkl", "constants.pkl", "version")


def check_model_file(path: Path) -> int:
    """Return the file size, or raise a usage error explaining why it cannot be a model."""
    if not path.exists():
        raise CliError(f"{path}: no such file", ExitCode.USAGE)
    if not path.is_file():
        raise CliError(f"{path}: not a regular file", ExitCode.USAGE)
    size = path.stat().st_size
    if size == 0:
        raise CliError(f"{path} is empty", ExitCode.USAGE)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CliError(
            f"{path} is not a TorchScript archive or torch.export program (not a zip file); "
            f"{EXPORT_HINT}",
            ExitCode.USAGE,
        ) from exc
    _check_entries(path, names)
    return size


def _check_entries(path: Path, names: list[str]) -> None:
    prefixes = {name.split("/", 1)[0] for name in names}
    if len(prefixes) != 1 or any("/" not in name for name in names):
        raise CliError(
            f"{path} is a zip file but not a TorchScript archive or torch.export program; "
            f"{EXPORT_HINT}",
            ExitCode.USAGE,
        )
    (prefix,) = prefixes
    entries = {name.split("/", 1)[1] for name in names}
    if "archive_format" in entries or any(e.startswith("models/") for e in entries):
        missing_pt2 = [f"{prefix}/{e}" for e in PT2_ENTRIES if e not in entries]
        if missing_pt2:
            raise CliError(
                f"{path} is not a complete torch.export program (missing "
                f"{', '.join(missing_pt2)}); {EXPORT_HINT}",
                ExitCode.USAGE,
            )
        return
    has_code = any(entry.startswith("code/") for entry in entries)
    if "data.pkl" in entries and not has_code:
        raise CliError(
            f"{path} looks like a torch.save() checkpoint, not an exported model; {EXPORT_HINT}",
            ExitCode.USAGE,
        )
    if ".data/version" in entries:  # where torch 2.x's writer sometimes puts it
        entries.add("version")
    missing = [entry for entry in REQUIRED_ENTRIES if entry not in entries]
    if missing or not has_code:
        what = ", ".join(f"{prefix}/{m}" for m in missing) or f"{prefix}/code/"
        raise CliError(
            f"{path} is not a complete TorchScript archive (missing {what}); {EXPORT_HINT}",
            ExitCode.USAGE,
        )


def format_bytes(size: int | float) -> str:
    value = float(size)
    # Binary units: the server's limits are multiples of 1024 (20 MiB = 20 * 1024 * 1024).
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
