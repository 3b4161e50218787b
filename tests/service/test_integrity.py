"""Grading integrity on SQLite and PostgreSQL, graded in-process by the worker's service (real
sandbox): copies flagged by their predictions, identical files, public baselines, students
kept out, and what a new test-set version changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from grader.config import Settings
from grader.integrity import fingerprint as fp
from grader.integrity.service import SIMILARITY_THRESHOLD
from grader.submissions import grading
from tests.service.conftest import Api
from tests.support.live_server import ADMIN_PASSWORD
from tests.support.models import REFERENCE_MODEL


def _module(seed: int) -> Any:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(8)
            self.fc = torch.nn.Linear(144, 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(self.pool(x).flatten(1)))

    torch.manual_seed(seed)
    return Net().eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An original, its copy re-saved another way (traced: different bytes, same weights),
    and an independently initialised model."""
    import torch

    out = tmp_path_factory.mktemp("integrity")
    original = _module(seed=11)
    paths = {name: out / f"{name}.pt" for name in ("original", "traced", "independent")}
    torch.jit.script(original).save(str(paths["original"]))
    torch.jit.trace(original, torch.zeros(2, 1, 96, 96)).save(str(paths["traced"]))
    torch.jit.script(_module(seed=12)).save(str(paths["independent"]))
    return paths


def _web(api: Api) -> TestClient:
    """A browser logged in as `api`'s user (the pages use a cookie session, not the token)."""
    password = ADMIN_PASSWORD if api.username == "admin" else "student-pass"
    client = TestClient(api.client.app, follow_redirects=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    done = client.post("/login", data={"username": api.username, "password": password,
                                       "csrf_token": csrf.group(1)})
    assert done.status_code == 303, done.text
    return client


def _graded(settings: Settings, student: Api, slug: str, path: Path) -> int:
    sid = int(student.upload(slug, path).json()["id"])
    assert grading.grade_submission(settings, sid) in ("PASSED", "FAILED")
    return sid


def _pairs(admin: Api, slug: str) -> list[dict[str, Any]]:
    response = admin.get(f"/api/v1/exercises/{slug}/similar")
    assert response.status_code == 200, response.text
    return list(response.json()["pairs"])


def test_a_copy_saved_another_way_is_flagged_and_an_independent_model_is_not(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path],
) -> None:
    slug = make_exercise()
    ada, bob, cy = make_student(), make_student(), make_student()
    first = _graded(settings, ada, slug, models["original"])
    second = _graded(settings, bob, slug, models["traced"])
    _graded(settings, cy, slug, models["independent"])
    # The same student's own resubmission is never a pair.
    _graded(settings, ada, slug, models["traced"])
    pairs = _pairs(admin, slug)
    involved = {frozenset((p["first"]["username"], p["second"]["username"])) for p in pairs}
    assert involved == {frozenset((ada.username, bob.username))}, pairs
    assert len(pairs) == 2  # ada's two submissions each against bob's
    pair = next(p for p in pairs if p["first"]["submission_id"] == first)
    assert pair["second"]["submission_id"] == second
    assert pair["similarity"] >= SIMILARITY_THRESHOLD and pair["identical_file"] is False
    assert pair["first"]["submitted_at"] <= pair["second"]["submitted_at"]
    csv_text = admin.get(f"/api/v1/exercises/{slug}/similar.csv").text
    assert f"{ada.username},{first}" in csv_text and bob.username in csv_text
    page = _web(admin).get(f"/instructor/exercises/{slug}/similar")
    assert page.status_code == 200
    assert f'href="/submissions/{first}"' in page.text
    assert f'href="/submissions/{second}"' in page.text


def test_identical_files_are_flagged_even_without_predictions(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, tmp_path: Path
) -> None:
    import torch

    class FiveValues(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :5]

    slug = make_exercise()
    broken = tmp_path / "five_values.pt"
    torch.jit.script(FiveValues()).save(str(broken))
    ada, bob = make_student(), make_student()
    for student in (ada, bob):
        sid = int(student.upload(slug, broken).json()["id"])
        grading.grade_submission(settings, sid)
        assert student.get(f"/api/v1/submissions/{sid}").json()["status"] == "ERROR"
    [pair] = _pairs(admin, slug)
    assert pair["identical_file"] is True and pair["similarity"] == 1.0
    assert {pair["first"]["username"], pair["second"]["username"]} == {ada.username, bob.username}


def test_a_public_baseline_is_never_flagged_nor_what_resembles_it(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path],
) -> None:
    slug = make_exercise()
    starter, ada, bob = make_student(), make_student(), make_student()
    baseline = _graded(settings, starter, slug, models["original"])
    _graded(settings, ada, slug, models["original"])
    _graded(settings, bob, slug, models["traced"])
    assert len(_pairs(admin, slug)) == 3  # before anyone says the starter is public
    marked = admin.put(f"/api/v1/submissions/{baseline}/baseline")
    assert marked.status_code == 200, marked.text
    assert _pairs(admin, slug) == []
    assert admin.get(f"/api/v1/exercises/{slug}/similar").json()["baselines"] == [baseline]
    # Graded after the marking: still not flagged.
    cy = make_student()
    _graded(settings, cy, slug, models["traced"])
    assert _pairs(admin, slug) == []
    # Unmarked on the "Similar submissions" page: everything is flagged again.
    web = _web(admin)
    page = web.get(f"/instructor/exercises/{slug}/similar").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf and f'href="/submissions/{baseline}"' in page
    done = web.post(f"/instructor/exercises/{slug}/baseline",
                    data={"csrf_token": csrf.group(1), "submission_id": baseline, "baseline": "0"})
    assert done.status_code == 303, done.text
    assert len(_pairs(admin, slug)) == 6
    assert admin.delete(f"/api/v1/submissions/{baseline}/baseline").status_code == 200


def test_students_never_see_any_of_it(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path],
) -> None:
    slug = make_exercise()
    ada, bob = make_student(), make_student()
    sid = _graded(settings, ada, slug, models["original"])
    _graded(settings, bob, slug, models["traced"])
    assert len(_pairs(admin, slug)) == 1
    for path in (f"/api/v1/exercises/{slug}/similar", f"/api/v1/exercises/{slug}/similar.csv",
                 f"/api/v1/exercises/{slug}/testset-changes"):
        assert ada.get(path).status_code == 403, path
    assert ada.put(f"/api/v1/submissions/{sid}/baseline").status_code == 403
    assert ada.delete(f"/api/v1/submissions/{sid}/baseline").status_code == 403
    own = ada.get(f"/api/v1/submissions/{sid}").text
    assert "similar" not in own and bob.username not in own
    ada_web = _web(ada)
    for page in (f"/instructor/exercises/{slug}/similar",
                 f"/instructor/exercises/{slug}/similar.csv",
                 f"/instructor/exercises/{slug}/changes",
                 f"/instructor/exercises/{slug}/changes.csv"):
        assert ada_web.get(page).status_code == 403, page
    assert ada_web.post(f"/instructor/exercises/{slug}/baseline",
                        data={"submission_id": sid}).status_code in (403, 422)
    # An instructor's submission page shows provenance; the student's own does not.
    assert 'id="provenance"' in _web(admin).get(f"/submissions/{sid}").text
    own_page = ada_web.get(f"/submissions/{sid}").text
    assert 'id="provenance"' not in own_page and "similar" not in own_page.lower()


def _shifted_test_set(source: Path, target: Path, *, pixels: float) -> Path:
    """The same faces with every keypoint moved: a "corrected" test set that changes scores."""
    import csv

    with source.open() as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        row[:30] = [f"{float(v) + pixels:.6f}" for v in row[:30]]
    with target.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return target


@pytest.mark.skipif(not REFERENCE_MODEL.exists(), reason="reference model not built")
def test_a_new_test_set_shows_whose_verdict_flipped_and_keeps_the_old_results(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path], small_test_set: Path, tmp_path: Path,
) -> None:
    slug = make_exercise()
    ada, bob = make_student(), make_student()
    good = _graded(settings, ada, slug, REFERENCE_MODEL)
    weak = _graded(settings, bob, slug, models["independent"])
    before = {s: admin.get(f"/api/v1/submissions/{s}").json() for s in (good, weak)}
    assert before[good]["passed"] is True and before[weak]["passed"] is False
    with _shifted_test_set(small_test_set, tmp_path / "v2.csv", pixels=6.0).open("rb") as fh:
        assert admin.put(f"/api/v1/exercises/{slug}/test-set",
                         files={"file": ("v2.csv", fh)}).status_code == 200
    # Not rescored yet: both results are on the old version.
    stale = admin.get(f"/api/v1/exercises/{slug}/testset-changes").json()
    assert {s["submission_id"] for s in stale["stale"]} == {good, weak}
    assert stale["submissions"] == []
    assert admin.post(f"/api/v1/exercises/{slug}/rescore").status_code == 200
    pending = admin.get(f"/api/v1/exercises/{slug}/testset-changes").json()
    assert {c["submission_id"] for c in pending["submissions"]} == {good, weak}
    assert all(c["after"] is None for c in pending["submissions"])
    for sid in (good, weak):
        grading.grade_submission(settings, sid)
    report = admin.get(f"/api/v1/exercises/{slug}/testset-changes").json()
    assert report["stale"] == []
    by_id = {c["submission_id"]: c for c in report["submissions"]}
    assert by_id[good]["before"]["score"] == pytest.approx(before[good]["score"])
    assert by_id[good]["before"]["testset_version"] == 1
    assert by_id[good]["after"]["testset_version"] == 2
    assert by_id[good]["flipped"] == "pass → fail"
    assert by_id[good]["score_change"] == pytest.approx(
        by_id[good]["after"]["score"] - before[good]["score"]
    )
    assert by_id[weak]["flipped"] is None
    students = {s["username"]: s for s in report["students"]}
    assert students[ada.username]["flipped"] == "pass → fail"
    web = _web(admin)
    page = web.get(f"/instructor/exercises/{slug}/changes").text
    assert "pass → fail" in page and ada.username in page
    assert "pass → fail" in web.get(f"/instructor/exercises/{slug}/changes.csv").text


def test_the_cli_exports_the_pairs(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    slug = make_exercise()
    ada, bob = make_student(), make_student()
    _graded(settings, ada, slug, models["original"])
    _graded(settings, bob, slug, models["traced"])
    from grader.cli import main
    from grader.config import get_settings

    monkeypatch.setenv("GRADER_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("GRADER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        rescanned = CliRunner().invoke(main, ["integrity", "rescan", slug])
        out = CliRunner().invoke(main, ["integrity", "similar", slug])
        missing = CliRunner().invoke(main, ["integrity", "similar", "no-such-exercise"])
    finally:
        get_settings.cache_clear()
    assert rescanned.exit_code == 0 and "1 pair(s) flagged" in rescanned.output
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].startswith("similarity,") and len(lines) == 2
    assert ada.username in lines[1] and bob.username in lines[1]
    assert missing.exit_code != 0


def test_the_similarity_separates_copies_from_independent_errors() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(600, 15, 2)) * 0.1

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        (blob_a, norm_a), (blob_b, norm_b) = fp.sketch(a, truth), fp.sketch(b, truth)
        units = fp.unpack([blob_a, blob_b])
        return float(fp.similarities(units[0], norm_a, units[1:], np.array([norm_b]))[0])

    weak_a = 0.5 * truth + rng.normal(size=truth.shape) * 0.03
    weak_b = 0.5 * truth + rng.normal(size=truth.shape) * 0.03
    assert similarity(weak_a, weak_a) == pytest.approx(1.0, abs=1e-6)
    assert similarity(weak_a, weak_a + rng.normal(size=truth.shape) * 1e-4) > 0.99
    # Two weak models share shrinkage towards the mean; that is not what makes a copy.
    assert abs(similarity(weak_a, weak_b)) < 0.3
    # A model that ignores its input carries no fingerprint.
    assert similarity(np.zeros_like(truth), np.zeros_like(truth) + 0.01) == 0.0


def _prepared_copies(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path],
    *, seed: int,
) -> tuple[str, int, int, list[Any]]:
    """Two students upload copies of one model; both gradings are prepared (same predictions)
    before either is recorded, as two workers finishing at once do. (slug, first, second,
    their drafts)."""
    from grader.db import session_scope
    from grader.exercises.models import Exercise
    from grader.grading.testdata.testsets import load_test_set
    from grader.integrity import service as integrity

    slug = make_exercise()
    ada, bob = make_student(), make_student()
    first = int(ada.upload(slug, models["original"]).json()["id"])
    second = int(bob.upload(slug, models["traced"]).json()["id"])
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        exercise = session.query(Exercise).filter_by(slug=slug).one()
        path, sha = exercise.testset_path, exercise.testset_sha256
        version = exercise.testset_version
    assert path is not None
    labels = load_test_set(Path(path)).labels
    predictions = labels + np.random.default_rng(seed).normal(0, 0.05, labels.shape)
    drafts = []
    for sid in (first, second):
        with session_scope(settings.sqlalchemy_url, write=False) as session:
            draft = integrity.prepare_grading(
                session, submission_id=sid, testset_sha256=sha, testset_version=version,
                kind="keypoints", threshold=100.0, predictions=predictions, labels=labels,
            )
        assert draft is not None
        drafts.append(draft)
    return slug, first, second, drafts


def test_copies_graded_at_the_same_moment_still_find_each_other(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path],
) -> None:
    """Two workers finish two copies at once: each prepares its comparison before the other's
    fingerprint is stored, so the one recorded second must compare with what came in between."""
    from grader.db import session_scope
    from grader.integrity import service as integrity
    from grader.integrity.models import Fingerprint

    slug, first, second, drafts = _prepared_copies(
        settings, make_student, make_exercise, models, seed=3
    )
    assert all(draft.similar == {} for draft in drafts)  # neither sees the other yet
    for draft in drafts:
        with session_scope(settings.sqlalchemy_url) as session:
            integrity.record_grading(session, draft)
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        assert session.query(Fingerprint).filter(
            Fingerprint.submission_id.in_((first, second))).count() == 2
    pairs = _pairs(admin, slug)
    assert [(p["first"]["submission_id"], p["second"]["submission_id"]) for p in pairs] == [
        (first, second)
    ], pairs
    assert pairs[0]["similarity"] == pytest.approx(1.0)


def test_results_written_in_overlapping_transactions_still_find_each_other(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    models: dict[str, Path],
) -> None:
    """Two workers write the results of two copies at the same moment: neither transaction sees
    the other's uncommitted fingerprint unless they take turns (PostgreSQL: an advisory lock
    per exercise; SQLite: its one writer)."""
    import threading
    import time

    from grader.db import session_scope
    from grader.integrity import service as integrity

    slug, first, second, (draft_first, draft_second) = _prepared_copies(
        settings, make_student, make_exercise, models, seed=4
    )
    errors: list[BaseException] = []

    def write_second() -> None:
        try:
            with session_scope(settings.sqlalchemy_url) as session:
                integrity.record_grading(session, draft_second)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with session_scope(settings.sqlalchemy_url) as session:
        integrity.record_grading(session, draft_first)
        other = threading.Thread(target=write_second)
        other.start()
        time.sleep(1.0)  # the second transaction runs (or waits) while the first is open
    other.join(timeout=60)
    assert not other.is_alive() and not errors, errors
    pairs = _pairs(admin, slug)
    assert [(p["first"]["submission_id"], p["second"]["submission_id"]) for p in pairs] == [
        (first, second)
    ], pairs
