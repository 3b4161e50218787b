"""The pages in a real Chromium against a real embedded `grader serve` (API, Redis, worker).

A student uploads the reference model and watches it pass without reloading, then uploads the
dummy model and sees it fail; an instructor sees both on the leaderboard and downloads the CSV;
a student cannot open the instructor pages. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.web.formatting import format_score
from tests.support.live_server import LiveServer
from tests.support.models import DUMMY_MODEL, REFERENCE_MODEL, REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"
DEMO = "facial-keypoints"
GRADING_TIMEOUT_MS = 240_000


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    _need(CHROMIUM.exists(), f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def models() -> tuple[Path, Path]:
    _need(
        REFERENCE_MODEL.exists() and DUMMY_MODEL.exists(),
        "examples/facial_keypoints/{reference,dummy}_model.pt are missing "
        "(python examples/facial_keypoints/train_reference.py)",
    )
    return REFERENCE_MODEL, DUMMY_MODEL


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# What Chromium reports as blocked by the pages' Content-Security-Policy: an inline script or
# style, or a resource from elsewhere, that a page still relies on.
CSP_VIOLATIONS: list[str] = []


def _watch_csp(message: Any) -> None:
    if "Content Security Policy" in message.text:
        CSP_VIOLATIONS.append(message.text)


def log_in(browser: Any, server: LiveServer, username: str, password: str, **ctx: Any) -> Any:
    context = browser.new_context(base_url=server.url, accept_downloads=True, **ctx)
    page = context.new_page()
    page.on("console", _watch_csp)
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(instructor/)?exercises$"))
    return page


def upload_and_wait(page: Any, model: Path, final: str) -> str:
    """Upload through the form; wait on the submission page for `final` without reloading."""
    page.goto(f"/exercises/{DEMO}")
    page.set_input_files("#model-file", str(model))
    page.get_by_role("button", name="Upload and grade").click()
    page.wait_for_url(re.compile(r"/submissions/\d+$"))
    # A marker on the window survives only if the page is never reloaded.
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector(
        f'#status[data-status="{final}"]', timeout=GRADING_TIMEOUT_MS, state="attached"
    )
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    return str(page.url.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def graded(chromium: Any, live_server: LiveServer, models: tuple[Path, Path]) -> dict[str, Any]:
    """One student's two submissions, made through the browser."""
    reference, dummy = models
    username, password = live_server.create_student(student_id="S-web-1")
    page = log_in(chromium, live_server, username, password)
    shot(page, "01-exercises")
    assert page.get_by_role("link", name="Facial keypoints").is_visible()

    page.goto(f"/exercises/{DEMO}")
    assert "torch.jit.script(model)" in page.inner_text("main")
    shot(page, "02-exercise")

    passed_id = upload_and_wait(page, reference, "PASSED")
    page.wait_for_selector("#faces svg")
    shot(page, "03-submission-passed")
    passed_page = {
        "score": page.inner_text(".big"),
        "circles": page.locator("#faces svg circle").count(),
        "faces": page.locator("#faces svg").count(),
        "bars": page.locator("svg.bars rect.bar").count(),
        "face_loaded": page.evaluate(
            "fetch('/faces/0.png').then(r => r.ok && r.headers.get('content-type'))"
        ),
    }
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "04-submission-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    failed_id = upload_and_wait(page, dummy, "FAILED")
    shot(page, "05-submission-failed")
    failed_text = page.inner_text("#result")

    page.goto("/submissions")
    shot(page, "06-history")
    history = page.inner_text("main")

    forbidden = page.goto(f"/instructor/exercises/{DEMO}")
    forbidden_status = forbidden.status if forbidden else None
    shot(page, "07-student-forbidden")
    page.context.close()
    return {
        "username": username,
        "password": password,
        "passed_id": passed_id,
        "failed_id": failed_id,
        "passed_page": passed_page,
        "failed_text": failed_text,
        "history": history,
        "forbidden_status": forbidden_status,
    }


def test_reference_model_passes_live_with_score_and_picture(
    graded: dict[str, Any], live_server: LiveServer
) -> None:
    with live_server.client(
        live_server.token(graded["username"], graded["password"])
    ) as client:  # fmt: skip
        api = client.get(f"/api/v1/submissions/{graded['passed_id']}").json()
    assert api["status"] == "PASSED"
    shown = graded["passed_page"]
    assert shown["score"] == format_score(api["score"])
    assert api["score"] >= api["result"]["threshold"]
    # 6 public faces, 15 predicted keypoints each; 15 bars for the per-keypoint errors.
    assert shown["faces"] == 6 and shown["circles"] == 6 * 15
    assert shown["bars"] == 15
    assert shown["face_loaded"] == "image/png"


def test_dummy_model_fails(graded: dict[str, Any]) -> None:
    assert "Not passed yet" in graded["failed_text"]
    assert "score" in graded["failed_text"]
    history = graded["history"]
    assert "PASSED" in history.upper() and "FAILED" in history.upper()


def test_student_cannot_open_instructor_pages(graded: dict[str, Any]) -> None:
    assert graded["forbidden_status"] == 403


def test_instructor_sees_both_and_downloads_the_csv(
    graded: dict[str, Any], chromium: Any, live_server: LiveServer
) -> None:
    page = log_in(chromium, live_server, live_server.admin_username, live_server.admin_password)
    page.goto(f"/instructor/exercises/{DEMO}")
    row = page.locator("#leaderboard tbody tr", has_text=graded["username"])
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    assert "PASSED" in cells[4].upper()
    assert cells[5] == "2"  # attempts: the reference and the dummy
    page.fill("#lb-search", "no-such-student-xyz")
    assert not row.is_visible()
    page.fill("#lb-search", "")
    shot(page, "08-instructor-leaderboard")

    with page.expect_download() as info:
        page.click("#grades-csv")
    body = Path(info.value.path()).read_text()
    rows = {r["username"]: r for r in csv.DictReader(io.StringIO(body))}
    mine = rows[graded["username"]]
    assert mine["student_id"] == "S-web-1"
    assert mine["passed"] == "true" and mine["attempts"] == "2"

    row.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"/students/"))
    listing = page.inner_text("main").upper()
    assert "PASSED" in listing and "FAILED" in listing
    shot(page, "09-instructor-student")
    page.get_by_role("link", name=graded["passed_id"], exact=True).click()
    page.wait_for_selector('#status[data-status="PASSED"]', state="attached")

    page.goto("/instructor/users")
    assert graded["username"] in page.inner_text("#users")
    shot(page, "10-instructor-users")
    page.context.close()


def test_no_page_needed_anything_the_content_security_policy_blocks(
    graded: dict[str, Any], chromium: Any, live_server: LiveServer
) -> None:
    page = log_in(chromium, live_server, graded["username"], graded["password"])
    page.goto(f"/exercises/{DEMO}")
    page.goto("/submissions/999999")  # the error page: its "Go back" is script, not inline
    page.get_by_role("button", name="Go back").click()
    page.wait_for_url(re.compile(rf"/exercises/{DEMO}$"))
    page.context.close()
    assert CSP_VIOLATIONS == []


def test_the_pre_flight_verdict_appears_while_the_grading_waits(
    graded: dict[str, Any], chromium: Any, live_server: LiveServer, models: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """The page follows its event stream: the quick check's verdict shows up while the model
    still waits behind two slow gradings, then the result, and the page never reloads."""
    from tests.support.models import write_slow_model, write_small_test_set

    _, dummy = models
    slug = "watch-live"
    with live_server.admin_client() as admin:
        admin.post("/api/v1/exercises", json={"slug": slug, "title": "Watch live",
                                              "daily_limit": None}).raise_for_status()
        with write_small_test_set(tmp_path / "small.csv").open("rb") as fh:
            admin.put(f"/api/v1/exercises/{slug}/test-set",
                      files={"file": ("small.csv", fh)}).raise_for_status()
    slow = write_slow_model(tmp_path / "slow.pt", repeats=300)
    for _ in range(2):  # two students: both ahead in the queue and in the pre-flight queue
        with live_server.student_client() as crowd, slow.open("rb") as fh:
            sent = crowd.post(f"/api/v1/exercises/{slug}/submissions",
                              files={"file": ("slow.pt", fh)})
            assert sent.status_code == 202, sent.text

    page = log_in(chromium, live_server, graded["username"], graded["password"])
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"/exercises/{slug}")
    page.set_input_files("#model-file", str(dummy))
    page.get_by_role("button", name="Upload and grade").click()
    page.wait_for_url(re.compile(r"/submissions/\d+$"))
    page.evaluate("window.__sameDocument = true")
    first = page.get_attribute("#preflight", "data-preflight")
    page.wait_for_selector('#preflight[data-preflight="PASSED"]', state="attached",
                           timeout=GRADING_TIMEOUT_MS)
    status_then = page.get_attribute("#status", "data-status")
    text_then = page.inner_text("#result")
    shot(page, "11-preflight-passed-while-queued")
    page.wait_for_selector('#status[data-status="FAILED"]', state="attached",
                           timeout=GRADING_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert first == "PENDING" and status_then == "QUEUED", (first, status_then)
    assert "Quick check passed" in text_then, text_then
    assert "Not passed yet" in page.inner_text("#result")
    # Pushed, not polled.
    assert any(url.endswith("/events") for url in asked), asked
    assert not any(url.endswith("/status") for url in asked), asked
    page.context.close()


def test_a_classification_exercise_made_in_the_form_grades_in_the_browser(
    graded: dict[str, Any], chromium: Any, live_server: LiveServer
) -> None:
    """The second kind end to end in Chromium: the instructor picks it in the new-exercise
    form (with its demo test set), a student uploads the reference classifier and the page
    draws accuracy per class, the confusion matrix and the class picked for sample images."""
    classifier = REPO / "examples" / "image_classification" / "reference_model.pt"
    slug = "shapes-browser"
    teacher = log_in(chromium, live_server, live_server.admin_username,
                     live_server.admin_password)
    teacher.goto("/instructor/exercises")
    teacher.locator("summary").filter(has_text="New exercise").click()
    teacher.fill("#f-slug", slug)
    teacher.fill("#f-title", "Shapes")
    teacher.select_option("#f-kind", "classification")
    teacher.get_by_role("button", name="Create exercise").click()
    teacher.wait_for_url(re.compile(rf"/instructor/exercises/{slug}"))
    assert ".npz" in teacher.inner_text("main")
    teacher.context.close()

    page = log_in(chromium, live_server, graded["username"], graded["password"])
    page.goto(f"/exercises/{slug}")
    assert "(N, 3, 32, 32)" in page.inner_text("main")
    page.set_input_files("#model-file", str(classifier))
    page.get_by_role("button", name="Upload and grade").click()
    page.wait_for_url(re.compile(r"/submissions/\d+$"))
    page.wait_for_selector('#status[data-status="PASSED"]', timeout=GRADING_TIMEOUT_MS,
                           state="attached")
    page.wait_for_selector("#confusion")
    shot(page, "12-classification-passed")
    assert page.locator("svg.bars rect.bar").count() == 10
    assert page.locator("#confusion .cm-count").count() == 100
    assert page.locator("#samples figure").count() == 6
    assert page.evaluate(
        "fetch('/samples/classification/0.png').then(r => r.ok && r.headers.get('content-type'))"
    ) == "image/png"
    page.context.close()
    assert CSP_VIOLATIONS == []
