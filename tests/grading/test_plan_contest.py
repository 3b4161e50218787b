"""The run's first batches race the tuner's choice against its verified runner-up: a choice
that one noisy timed batch got wrong is corrected, a runner-up that fails costs nothing, and
no image is lost or predicted another way than by a verified plan."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading.kinds import get_kind
from grader.grading.plans import Plan
from grader.grading.sandboxed.contest import ROUNDS
from grader.grading.sandboxed.predict import Runner, load_model, predict_with_plan
from grader.grading.sandboxed.tuner import Prepared
from grader.grading.testdata.testsets import TestSet
from tests.support.course import course_predictions
from tests.support.zoo import export

IMAGES = 400


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Runner, torch.Tensor, torch.Tensor]:
    path = export("relu_cnn", tmp_path / "relu_cnn.pt")
    model = load_model(path, device="cpu")
    kind = get_kind("keypoints")
    rng = np.random.default_rng(7)
    x = kind.to_input(rng.integers(0, 256, size=(IMAGES, 96, 96), dtype=np.uint8))
    with torch.inference_mode():
        expected = torch.cat([model(x[i : i + 1]).view(-1, 15, 2) for i in range(IMAGES)])
    return Runner(model, kind), x, expected


def _slowed(forward: torch.jit.ScriptModule, seconds: float):  # type: ignore[no-untyped-def]
    def run(x: torch.Tensor) -> object:
        time.sleep(seconds)
        return forward(x)

    return run


def test_a_misjudged_choice_loses_the_contest(
    setup: tuple[Runner, torch.Tensor, torch.Tensor],
) -> None:
    """The tuner's best was timed during a burst of load and looks fast; it is really 50 ms a
    batch slower. The run switches to the runner-up after three batches of each."""
    runner, x, expected = setup
    looks_fast = Prepared(Plan("frozen", 8, 1), _slowed(runner.model, 0.05), 1e-4)
    runner_up = Prepared(Plan("plain", 8, 1), runner.model, 2e-4)
    announced: list[Plan] = []
    out = torch.empty_like(expected)
    with torch.inference_mode():
        done, winner = runner.run_plan(looks_fast, x, out, runner_up, announce=announced.append)
    assert winner is runner_up
    assert done == IMAGES
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Alternated early and late, then only the winner: three switches in the contest.
    assert announced == [looks_fast.plan, runner_up.plan, looks_fast.plan, runner_up.plan]


def test_a_sound_choice_keeps_its_place(
    setup: tuple[Runner, torch.Tensor, torch.Tensor],
) -> None:
    runner, x, expected = setup
    best = Prepared(Plan("plain", 8, 1), runner.model, 2e-4)
    slow = Prepared(Plan("frozen", 8, 1), _slowed(runner.model, 0.05), 3e-4)
    out = torch.empty_like(expected)
    with torch.inference_mode():
        done, winner = runner.run_plan(best, x, out, slow)
    assert winner is best and done == IMAGES
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_a_runner_up_that_fails_is_dropped_without_losing_images(
    setup: tuple[Runner, torch.Tensor, torch.Tensor],
) -> None:
    runner, x, expected = setup
    calls = {"n": 0}

    def fails_on_its_second_batch(batch: torch.Tensor) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a later batch breaks this plan")
        return runner.model(batch)

    best = Prepared(Plan("plain", 8, 1), runner.model, 2e-4)
    flaky = Prepared(Plan("frozen", 8, 1), fails_on_its_second_batch, 2e-4)
    out = torch.empty_like(expected)
    with torch.inference_mode():
        done, winner = runner.run_plan(best, x, out, flaky)
    assert winner is best and done == IMAGES and calls["n"] == 2
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_no_contest_when_its_batches_would_be_much_of_the_run(
    setup: tuple[Runner, torch.Tensor, torch.Tensor],
) -> None:
    runner, x, expected = setup
    best = Prepared(Plan("plain", 32, 1), runner.model, 2e-4)
    other = Prepared(Plan("frozen", 32, 1), runner.model, 2e-4)
    assert ROUNDS * (32 + 32) > IMAGES / 4  # the contest would take over a quarter
    announced: list[Plan] = []
    with torch.inference_mode():
        runner.run_plan(best, x, torch.empty_like(expected), other, announce=announced.append)
    assert announced == [best.plan]


def test_the_report_names_the_plan_that_ran_the_rest(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    """Whatever the contest decides, exactly one trial is chosen, it is the reported plan, and
    the predictions are the course's."""
    path = export("relu_cnn", tmp_path / "relu_cnn.pt")
    images = np.concatenate([small_test_set.images] * 5)
    predictions, report = predict_with_plan(
        load_model(path, device="cpu"), images, device="cpu", max_batch=32, threads=1,
    )
    chosen = [t.plan for t in report.trials if t.verdict == "chosen"]
    assert chosen == [report.plan], [t.to_dict() for t in report.trials]
    assert report.prepared is not None and report.prepared.plan == report.plan
    expected = course_predictions(path, small_test_set).numpy()
    np.testing.assert_allclose(predictions, np.concatenate([expected] * 5), rtol=1e-5, atol=1e-5)
