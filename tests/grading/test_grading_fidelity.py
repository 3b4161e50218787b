"""The engine's score equals the course's own evaluate_model, to 1e-5 relative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grader.config import Settings
from grader.grading.engine import grade_model_file
from grader.grading.sandboxed.predict import load_model, predict
from grader.grading.testdata.testsets import TestSet
from tests.support.course import course_score

from .archs import ARCHITECTURES, build, export


@pytest.mark.parametrize("sandbox_enabled", [False, True], ids=["in_process", "sandbox"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_engine_matches_course_loop(
    name: str, sandbox_enabled: bool, small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export(build(name), tmp_path / f"{name}.pt")
    expected = course_score(path, small_test_set)
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=sandbox_enabled, batch_size=8)

    outcome = grade_model_file(
        path, small_test_set, threshold=100.0, max_model_bytes=20 * 2**20, settings=settings
    )

    assert outcome.failure_message is None
    assert outcome.status == ("PASSED" if expected >= 100 else "FAILED")
    assert abs(outcome.score - expected) <= 1e-5 * expected, (outcome.score, expected)
    assert outcome.n_images == len(small_test_set)


def test_traced_model_matches_course_loop(small_test_set: TestSet, tmp_path: Path) -> None:
    path = export(build("residual", seed=3), tmp_path / "traced.pt", trace=True)
    expected = course_score(path, small_test_set)
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=False, batch_size=16)
    outcome = grade_model_file(
        path, small_test_set, threshold=100.0, max_model_bytes=20 * 2**20, settings=settings
    )
    assert abs(outcome.score - expected) <= 1e-5 * expected


@pytest.mark.parametrize("batch_size", [1, 5, 64, 200])
def test_predictions_do_not_depend_on_batch_size(
    batch_size: int, small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export(build("bn_dropout_cnn"), tmp_path / "m.pt")
    model = load_model(path, device="cpu")
    reference = predict(model, small_test_set.images, device="cpu", batch_size=1)
    got = predict(model, small_test_set.images, device="cpu", batch_size=batch_size)
    assert got.shape == (len(small_test_set), 15, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)


def test_batch_mixing_model_gets_batch1_predictions(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    # Batched, this model's answers depend on its neighbours; the probe must catch that.
    path = export(build("batch_mixing"), tmp_path / "m.pt")
    scripted = torch.jit.load(str(path))
    x = torch.from_numpy(small_test_set.images).float().div(255).unsqueeze(1)
    with torch.no_grad():
        one_by_one = torch.cat([scripted(x[i : i + 1]) for i in range(len(x))]).view(-1, 15, 2)
        batched = scripted(x[:8]).view(-1, 15, 2)
    assert not torch.allclose(batched, one_by_one[:8], atol=1e-4)  # the trap is real
    got = predict(load_model(path, device="cpu"), small_test_set.images, device="cpu", batch_size=8)
    np.testing.assert_allclose(got, one_by_one.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_course_loop(small_test_set: TestSet, tmp_path: Path) -> None:
    path = export(build("bn_dropout_cnn"), tmp_path / "m.pt")
    expected = course_score(path, small_test_set)
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=False, device="cuda")
    outcome = grade_model_file(
        path, small_test_set, threshold=100.0, max_model_bytes=20 * 2**20, settings=settings
    )
    assert outcome.failure_message is None
    # Against the CPU course loop: cuDNN rounds differently, but with TF32 off only in float32's
    # last bits, inside the same 1e-5 bound.
    assert abs(outcome.score - expected) <= 1e-5 * expected, (outcome.score, expected)
