"""The image-classification kind: its test-set format is validated with clear errors, and
the engine's accuracy equals a plain batch-1 `argmax` loop exactly, on every plan and
through the sandbox."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grader.config import Settings
from grader.grading.engine import grade_model_file
from grader.grading.kinds import get_kind
from grader.grading.plans import VARIANTS, Plan, PlanHint
from grader.grading.sandboxed.predict import load_model, predict_with_plan
from grader.grading.testdata.shapes import generate_shapes, write_npz
from grader.grading.testdata.testsets import TestSet, TestSetError, load_test_set
from tests.support.classifiers import CLASSIFIERS, export_classifier
from tests.support.course import classification_course_score

KIND = get_kind("classification")


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory: pytest.TempPathFactory) -> TestSet:
    path = tmp_path_factory.mktemp("shapes") / "test.npz"
    images, labels = generate_shapes(split="test", count=96, seed=11)
    write_npz(path, images, labels)
    return load_test_set(path, kind=KIND)


@pytest.mark.parametrize("sandbox_enabled", [False, True], ids=["in_process", "sandbox"])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_accuracy_equals_the_batch_one_argmax_loop(
    name: str, sandbox_enabled: bool, shapes_set: TestSet, tmp_path: Path
) -> None:
    path = export_classifier(name, tmp_path / f"{name}.pt", seed=3)
    expected = classification_course_score(path, shapes_set)
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=sandbox_enabled)
    outcome = grade_model_file(
        path, shapes_set, threshold=50.0, max_model_bytes=20 * 2**20, settings=settings
    )
    assert outcome.failure_message is None, outcome.failure_message
    assert outcome.kind == "classification"
    assert outcome.score == expected  # a count of images: exact, not within a tolerance
    assert len(outcome.parts) == 10 and sum(map(sum, outcome.details["confusion"])) == 96


@pytest.mark.parametrize("name", ["relu_cnn", "residual"])
def test_every_plan_gives_the_same_verdicts(name: str, shapes_set: TestSet, tmp_path: Path) -> None:
    path = export_classifier(name, tmp_path / f"{name}.pt", seed=5)
    expected = classification_course_score(path, shapes_set)
    for variant in VARIANTS:
        predictions, report = predict_with_plan(
            load_model(path, device="cpu", kind=KIND), shapes_set.images, device="cpu",
            max_batch=32, kind=KIND, threads=2, hint=PlanHint(Plan(variant, 8, 2)),
        )
        assert report.plan == Plan(variant, 8, 2) or variant == "channels_last"
        score = KIND.score(predictions, shapes_set.labels, threshold=50).score
        assert score == expected, variant


def test_near_ties_are_settled_the_course_way(shapes_set: TestSet) -> None:
    import torch

    logits = torch.zeros(4, 10)
    logits[0, 3], logits[0, 4] = 2.0, 2.0 - 1e-6  # a near tie: recomputed
    logits[1, 1] = 5.0  # a clear winner
    assert KIND.ambiguous(logits).tolist() == [0, 2, 3]  # all-zero rows are ties too


def _write(path: Path, **arrays: object) -> Path:
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 32, 32, 3), np.uint8)}, "missing array(s) labels"),
        ({"images": np.zeros((2, 32, 32, 3), np.float32), "labels": np.zeros(2, np.int64)},
         "dtype float32, expected uint8"),
        ({"images": np.zeros((2, 3, 32, 32), np.uint8), "labels": np.zeros(2, np.int64)},
         "shape (2, 3, 32, 32), expected (N, 32, 32, 3)"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(3, np.int64)},
         "'labels' has shape (3,), expected (2,)"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.array([0, 10])},
         "label 2 is 10; labels must lie in [0, 10)"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.array([0.0, 1.0])},
         "expected integers"),
        ({"images": np.zeros((0, 32, 32, 3), np.uint8), "labels": np.zeros(0, np.int64)},
         "holds no image"),
    ],
)
def test_malformed_test_sets_are_refused_naming_the_problem(
    arrays: dict[str, object], message: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "t.npz", **arrays)
    with pytest.raises(TestSetError) as caught:
        load_test_set(path, kind=KIND, display_name="hidden.npz")
    assert message in str(caught.value) and str(caught.value).startswith("hidden.npz: ")


def test_pickles_and_other_files_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "p.npz"
    with pickled.open("wb") as fh:
        np.savez(fh, images=np.array([object()], dtype=object), labels=np.zeros(1))
    csv = tmp_path / "faces.csv"
    csv.write_text("a,b\n1,2\n")
    for path in (pickled, csv):
        with pytest.raises(TestSetError):
            load_test_set(path, kind=KIND)
