"""The same model exported both ways gets the same score from `grader evaluate` (sandboxed),
within 1e-5 of the course's loop; `grader-cli submit`'s local check takes a .pt2."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from grader_cli.archive import check_model_file
from grader_cli.errors import CliError

from grader.grading.testdata.testsets import TestSet
from tests.support.course import course_score
from tests.support.zoo import export, export_program


def _evaluate(path: Path, csv: Path, data_dir: Path) -> dict[str, object]:
    env = {**os.environ, "GRADER_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        ["grader", "evaluate", str(path), "--test-set", str(csv), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_grader_evaluate_scores_both_formats_alike(
    small_csv: Path, small_test_set: TestSet, tmp_path: Path
) -> None:
    scripted = export("bn_cnn_fc1024", tmp_path / "m.pt")
    program = export_program("bn_cnn_fc1024", tmp_path / "m.pt2")
    expected = course_score(program, small_test_set)
    reports = [_evaluate(p, small_csv, tmp_path / "data") for p in (scripted, program)]
    for report in reports:
        assert report["failure_kind"] is None, report["failure_message"]
        assert abs(float(report["score"]) - expected) <= 1e-5 * expected  # type: ignore[arg-type]


def test_grader_evaluate_names_a_training_mode_program(
    small_csv: Path, tmp_path: Path
) -> None:
    program = export_program("dropout2d_cnn", tmp_path / "t.pt2", train=True)
    report = _evaluate(program, small_csv, tmp_path / "data")
    assert report["failure_kind"] == "BAD_OUTPUT"
    assert "training mode" in str(report["failure_message"])


def test_the_cli_check_takes_a_program_and_names_a_broken_one(tmp_path: Path) -> None:
    program = export_program("tiny_cnn", tmp_path / "m.pt2")
    assert check_model_file(program) == program.stat().st_size
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(program) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("models/model.json"):
                dst.writestr(info, src.read(info))
    with pytest.raises(CliError) as info:
        check_model_file(broken)
    assert "models/model.json" in str(info.value) and "torch.export" in str(info.value)
