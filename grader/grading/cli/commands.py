"""`grader evaluate` and `grader dataset synth`: the grading engine, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from grader.grading.kinds import DEFAULT_KIND, KINDS, default_threshold, get_kind

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


def _fail_input(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--kind", type=click.Choice(sorted(KINDS)), default=DEFAULT_KIND, show_default=True,
    help="The exercise's kind: its input, output, test-set format and score.",
)
@click.option(
    "--test-set",
    "test_set_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A test set in the kind's format (default: its demo's synthetic hidden test set).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Where the model runs.")
@click.option("--threshold", type=float, help="Passing score (default: 100).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Largest batch the execution plan may use."
)
@click.option("--max-model-mb", type=float, help="Largest model file accepted (default: 20).")
@click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds the model may run before TIMEOUT (default: 120, as an exercise's).",
)
@click.option("--no-sandbox", is_flag=True, hidden=True, help="Run the model in-process.")
def evaluate(
    model: Path,
    kind: str,
    test_set_path: Path | None,
    as_json: bool,
    device: str | None,
    threshold: float | None,
    batch_size: int | None,
    max_model_mb: float | None,
    time_limit_s: float | None,
    no_sandbox: bool,
) -> None:
    """Grade MODEL (a TorchScript file) exactly like the course's own loop.

    Exit status: 0 passed, 1 failed (including a named failure of the model), 2 bad input
    (missing model file, unreadable test set), 3 the grader itself failed.
    """
    from grader.config import get_settings
    from grader.grading.engine import grade_model_file
    from grader.grading.testdata.demo import demo_test_set_path
    from grader.grading.testdata.testsets import TestSetError, load_test_set

    settings = get_settings()
    updates: dict[str, object] = {}
    if device:
        updates["device"] = device
    if batch_size:
        updates["batch_size"] = batch_size
    if no_sandbox:
        updates["sandbox_enabled"] = False
    if not settings.sandbox_threads:
        # One grading at a time here: it may use every core, not a worker slot's share.
        updates["worker_concurrency"] = 1
    settings = settings.model_copy(update=updates)

    if not model.is_file():
        _fail_input(f"model file not found: {model}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail_input("--device cuda: no CUDA device is available on this machine")
    try:
        path = test_set_path if test_set_path else demo_test_set_path(settings, kind)
        test_set = load_test_set(path, kind=get_kind(kind), cache_dir=settings.cache_dir)
    except TestSetError as exc:
        _fail_input(f"test set: {exc}")
    except OSError as exc:
        _fail_input(f"test set: {exc}")

    outcome = grade_model_file(
        model,
        test_set,
        threshold=default_threshold(kind, configured=settings.default_threshold)
        if threshold is None
        else threshold,
        max_model_bytes=(
            int(max_model_mb * 1024 * 1024)
            if max_model_mb is not None
            else settings.default_max_model_bytes
        ),
        settings=settings,
        time_limit_s=time_limit_s,
    )
    if as_json:
        click.echo(json.dumps(outcome.to_dict()))
    else:
        click.echo(f"{outcome.status}: score {outcome.score:.2f} (pass >= {outcome.threshold:g})")
        click.echo(f"{outcome.n_images} images, {outcome.seconds:.2f} s")
        if outcome.failure_message:
            click.echo(outcome.failure_message)
        if outcome.parts:
            breakdown = outcome.breakdown()
            click.echo(f"{breakdown['title']} ({breakdown['unit']}):")
            for name, value in zip(breakdown["labels"], breakdown["values"], strict=True):
                click.echo(f"  {name:<26} {value:6.2f}")
    if outcome.passed:
        sys.exit(EXIT_PASSED)
    if outcome.status == "INFRA_ERROR":
        sys.exit(EXIT_INFRA)
    sys.exit(EXIT_FAILED)


@click.group()
def dataset() -> None:
    """Test-set data tools."""


@dataset.command()
@click.option("--kind", type=click.Choice(sorted(KINDS)), default=DEFAULT_KIND, show_default=True)
@click.option("--split", type=click.Choice(["train", "val", "test"]), required=True)
@click.option("--count", type=click.IntRange(min=1), required=True)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--seed", type=int, help="Override the split's fixed seed.")
def synth(kind: str, split: str, count: int, out: Path, seed: int | None) -> None:
    """Write COUNT synthetic images of KIND in its test-set format: faces in the course's CSV
    (keypoints), shapes in an .npz (classification). For demos and tests."""
    what = get_kind(kind).write_synthetic(out, count=count, split=split, seed=seed)
    click.echo(f"wrote {count} {split} {what} to {out}", err=True)
