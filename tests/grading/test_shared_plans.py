"""A plan chosen for one file is tried first for another file of the same architecture. The
architecture is named from the zip's directory alone; the plan, being another student's, is
kept only where it also beats the course's way on the file being graded."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading.architecture import architecture_digest
from grader.grading.kinds import get_kind
from grader.grading.plans import Plan, PlanHint
from grader.grading.sandboxed.predict import Runner, load_model
from grader.grading.sandboxed.tuner import Tuner
from grader.grading.testdata.testsets import TestSet
from tests.support.zoo import export, export_program

LIMIT = 20 * 2**20


def test_files_of_one_architecture_share_a_digest(tmp_path: Path) -> None:
    """Other weights, another file name (the archive's folder): the same digest."""
    a = architecture_digest(export("lenet", tmp_path / "a.pt", seed=1), max_bytes=LIMIT)
    b = architecture_digest(export("lenet", tmp_path / "mine.pt", seed=2), max_bytes=LIMIT)
    assert a is not None and a == b
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "mine.pt").read_bytes()


def test_other_architectures_differ(tmp_path: Path) -> None:
    """Other code (another activation), other tensor sizes (a wider head), another format."""
    digests = {
        architecture_digest(export(name, tmp_path / f"{name}.pt"), max_bytes=LIMIT)
        for name in ("naimish_elu_680", "naimish_elu_688", "naimish_leaky", "naimish_tanh")
    }
    program = export_program("naimish_elu_680", tmp_path / "elu.pt2")
    digests.add(architecture_digest(program, max_bytes=LIMIT))
    assert None not in digests and len(digests) == 5


def test_an_archive_the_grader_refuses_has_none(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip at all")
    assert architecture_digest(junk, max_bytes=LIMIT) is None
    assert architecture_digest(tmp_path / "missing.pt", max_bytes=LIMIT) is None
    two_folders = tmp_path / "two.pt"
    with zipfile.ZipFile(two_folders, "w") as zf:
        zf.writestr("a/data.pkl", b"x")
        zf.writestr("b/data.pkl", b"y")
    assert architecture_digest(two_folders, max_bytes=LIMIT) is None


def _tuner(tmp_path: Path, images: np.ndarray, *, reference_s: float) -> Tuner:
    """A tuner whose course-way speed is `reference_s` for the 8 reference images."""
    model = load_model(export("relu_cnn", tmp_path / "relu_cnn.pt"), device="cpu")
    runner = Runner(model, get_kind("keypoints"))
    x = runner.kind.to_input(images)
    reference, _ = runner.timed_batch1(x[:8])
    return Tuner(
        model, x, reference=reference, reference_s=reference_s, run_batch=runner.run,
        threads=1, max_batch=32, device="cpu", share=1e9,
    )


def test_a_shared_plan_that_beats_the_course_way_is_used_without_tuning(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    hint = PlanHint(Plan("frozen", 8, 1), shared=True)
    with torch.inference_mode():
        tuner = _tuner(tmp_path, small_test_set.images, reference_s=1e3)
        best = tuner.tune(hint)
    assert best.plan == hint.plan
    assert [(t.plan, t.verdict) for t in tuner.trials] == [(hint.plan, "reused")]


@pytest.mark.parametrize("shared", [True, False])
def test_a_shared_plan_slower_than_the_course_way_is_only_a_candidate(
    small_test_set: TestSet, tmp_path: Path, shared: bool
) -> None:
    """A course-way speed no plan can beat: a shared plan is tried once, found slower, and
    tuning goes on; the file's own plan is used as before."""
    hint = PlanHint(Plan("frozen", 8, 1), shared=shared)
    with torch.inference_mode():
        tuner = _tuner(tmp_path, small_test_set.images, reference_s=1e-9)
        best = tuner.tune(hint)
    first = tuner.trials[0]
    assert first.plan == hint.plan
    if shared:
        assert first.verdict == "slower"
        assert len(tuner.trials) > 1
        assert [t.plan for t in tuner.trials].count(hint.plan) == 1  # not tried twice
        assert best.plan == Plan("plain", 1, 1)  # nothing beats this course way
    else:
        assert first.verdict == "reused" and best.plan == hint.plan
        assert len(tuner.trials) == 1


def test_a_hint_crosses_to_the_child_and_back() -> None:
    """What the parent sends is what the child reads; anything unclear is taken as shared."""
    plan = Plan("fused", 8, 2)
    for hint in (PlanHint(plan), PlanHint(plan, shared=True)):
        assert PlanHint.from_dict(hint.to_dict()) == hint
    assert PlanHint.from_dict(plan.to_dict()) == PlanHint(plan, shared=True)
    assert PlanHint.from_dict({**plan.to_dict(), "shared": "no"}) == PlanHint(plan, shared=True)
    assert PlanHint.from_dict({"variant": "fused"}) is None
