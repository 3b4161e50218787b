"""An image-classification exercise through the pages: created from the instructor form with
its kind, graded by the same worker function, drawn in the kind's terms (accuracy per class,
a confusion matrix, the class picked for each public sample image)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from grader.auth.models import Role
from grader.config import Settings
from grader.db import session_scope
from grader.exercises import service as exercises
from grader.grading.kinds import get_kind
from grader.submissions import grading
from grader.submissions.models import Submission
from grader.submissions.preview import PREVIEW_IMAGES, preview_samples
from grader.submissions.schemas import SubmissionOut
from tests.web.conftest import browser, csrf_from, log_in, make_user, upload_by_form

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "image_classification"
SLUG = "shapes-web"


@pytest.fixture(scope="module")
def exercise(web_app: TestClient, web_settings: Settings) -> str:
    teacher = log_in(browser(web_app), make_user(web_settings, Role.INSTRUCTOR))
    form = teacher.get("/instructor/exercises").text
    assert 'name="kind"' in form and "Image classification" in form
    created = teacher.post(
        "/instructor/exercises",
        data={
            "csrf_token": csrf_from(form), "slug": SLUG, "title": "Shapes",
            "kind": "classification", "threshold": "", "queue": "cpu",
            "late_policy": "reject", "leaderboard_visibility": "anonymous",
            "is_published": "1", "use_demo_test_set": "1",
        },
    )
    assert created.status_code == 303, created.text
    dashboard = teacher.get(f"/instructor/exercises/{SLUG}").text
    # The kind's own test-set format and default threshold (80 %), not the keypoints' CSV.
    assert ".npz" in dashboard and "Course CSV" not in dashboard
    with session_scope(web_settings.sqlalchemy_url) as session:
        stored = exercises.get_exercise(session, slug=SLUG)
        assert (stored.kind, stored.threshold) == ("classification", 80.0)
    return SLUG


def _submit_and_grade(client: TestClient, settings: Settings, model: Path) -> int:
    created = upload_by_form(client, SLUG, model)
    assert created.status_code == 202, created.text
    submission_id = int(created.json()["id"])
    grading.grade_submission(settings, submission_id)
    return submission_id


def _api_view(settings: Settings, submission_id: int) -> dict:
    """What GET /api/v1/submissions/{id} answers (the pages log in with a cookie, not a token)."""
    with session_scope(settings.sqlalchemy_url) as session:
        return SubmissionOut.from_row(session.get(Submission, submission_id)).model_dump(
            mode="json"
        )


def test_the_exercise_page_describes_the_kind(
    web_app: TestClient, web_settings: Settings, exercise: str
) -> None:
    page = log_in(browser(web_app), make_user(web_settings)).get(f"/exercises/{exercise}").text
    kind = get_kind("classification")
    assert kind.input_text in page and "(N, 1, 96, 96)" not in page


def test_reference_classifier_passes_and_the_page_draws_classes_and_confusion(
    web_app: TestClient, web_settings: Settings, exercise: str
) -> None:
    client = log_in(browser(web_app), make_user(web_settings))
    submission_id = _submit_and_grade(client, web_settings, EXAMPLES / "reference_model.pt")

    api = _api_view(web_settings, submission_id)
    assert api["status"] == "PASSED", api
    result = api["result"]
    assert result["breakdown"]["unit"] == "%" and len(result["breakdown"]["labels"]) == 10
    assert result["per_keypoint_rmse_px"] is None
    confusion = np.array(result["details"]["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == result["n_images"]
    # The score is the confusion matrix's diagonal share.
    assert result["score"] == pytest.approx(100.0 * np.trace(confusion) / confusion.sum())

    page = client.get(f"/submissions/{submission_id}").text
    assert "Accuracy per class" in page and page.count('class="bar"') == 10
    assert 'id="confusion"' in page and page.count('class="cm-count"') == 100
    assert page.count('src="/samples/classification/') == PREVIEW_IMAGES

    # The labels shown are the model's own picks on the public samples: rerun it here.
    import torch

    model = torch.jit.load(str(EXAMPLES / "reference_model.pt"))
    with torch.no_grad():
        samples = preview_samples("classification").copy()
        picked = model(get_kind("classification").to_input(samples))
    drawn = [int(x) for x in re.findall(r'class="predicted-label" data-label="(\d+)"', page)]
    assert drawn == picked.argmax(dim=1).tolist()


def test_dummy_classifier_fails_with_the_kinds_breakdown(
    web_app: TestClient, web_settings: Settings, exercise: str
) -> None:
    client = log_in(browser(web_app), make_user(web_settings))
    submission_id = _submit_and_grade(client, web_settings, EXAMPLES / "dummy_model.pt")
    api = _api_view(web_settings, submission_id)
    assert api["status"] == "FAILED" and api["result"]["score"] < 80.0
    assert "Not passed yet" in client.get(f"/submissions/{submission_id}").text


def test_a_wrong_shape_model_is_told_the_classification_shapes(
    web_app: TestClient, web_settings: Settings, exercise: str, linear_model: Path
) -> None:
    client = log_in(browser(web_app), make_user(web_settings))
    submission_id = _submit_and_grade(client, web_settings, linear_model)
    api = _api_view(web_settings, submission_id)
    assert api["failure_reason"] == "BAD_OUTPUT"
    assert "(N, 3, 32, 32)" in api["failure_message"] and "96" not in api["failure_message"]


def test_a_kind_without_a_picture_of_its_own_gets_the_generic_preview() -> None:
    from types import SimpleNamespace

    from grader.web.core import templates

    partial = templates.env.get_template("_preview.html")
    third = SimpleNamespace(name="regression")
    html = partial.render(kind=third, preview=[0.25, "<b>1.5</b>"])
    assert 'src="/samples/regression/0.png"' in html and 'src="/samples/regression/1.png"' in html
    assert "0.25" in html and "&lt;b&gt;1.5&lt;/b&gt;" in html  # escaped like every value
    assert "No picture" in partial.render(kind=third, preview=None)
    # A kind with a partial of its own keeps it.
    classification = partial.render(
        kind=get_kind("classification"), preview=[(0, {"label": 3, "confidence": 0.9})]
    )
    assert "predicted-label" in classification and "predicted-value" not in classification
