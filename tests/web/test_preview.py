"""The keypoint picture: predictions on public faces made in the sandbox during grading, the
faces served as PNG, and the charts' geometry."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from grader.config import Settings
from grader.grading.kinds import get_kind
from grader.submissions import grading
from grader.submissions.preview import PREVIEW_IMAGES as PREVIEW_FACES
from grader.submissions.preview import preview_samples
from grader.web.charts import breakdown_bars, confusion_cells, score_histogram
from grader.web.png import encode_gray_png
from tests.web.conftest import browser, log_in, make_user, upload_by_form


def public_faces() -> np.ndarray:
    return preview_samples("keypoints")


def decode_gray_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:]


def test_png_round_trips_the_public_face() -> None:
    face = public_faces()[3]
    assert np.array_equal(decode_gray_png(encode_gray_png(face)), face)


def test_worker_stores_sandboxed_predictions_on_public_faces_and_the_page_draws_them(
    web_app: TestClient, web_settings: Settings, linear_model: Path
) -> None:
    client = log_in(browser(web_app), make_user(web_settings))
    created = upload_by_form(client, "web-ex", linear_model, "linear.pt")
    assert created.status_code == 202, created.text
    submission_id = created.json()["id"]
    # The same function the Celery task calls, run here instead of in a worker process.
    assert grading.grade_submission(web_settings, submission_id) == "FAILED"

    status = client.get(f"/submissions/{submission_id}/status").json()
    assert status == {"id": submission_id, "status": "FAILED", "terminal": True}
    page = client.get(f"/submissions/{submission_id}").text
    assert page.count("<circle ") == PREVIEW_FACES * 15
    assert page.count('href="/samples/keypoints/') == PREVIEW_FACES
    assert page.count('class="bar"') == 15

    # The circles are the model's own predictions: rerun it (in this test process) and compare.
    import torch

    model = torch.jit.load(str(linear_model))
    with torch.no_grad():
        images = torch.from_numpy(public_faces().astype(np.float32) / 255.0).unsqueeze(1)
        expected = model(images).view(-1, 15, 2).numpy() * 48 + 48
    pairs = re.findall(r'<circle cx="([-\d.]+)" cy="([-\d.]+)"', page)
    drawn = np.array(pairs, dtype=np.float64).reshape(PREVIEW_FACES, 15, 2)
    np.testing.assert_allclose(drawn, expected, atol=0.06)


def test_a_pickle_is_refused_by_the_upload_form_before_queueing(
    web_app: TestClient, web_settings: Settings, tmp_path: Path
) -> None:
    from tests.support.models import write_pickle

    client = log_in(browser(web_app), make_user(web_settings))
    created = upload_by_form(client, "web-ex", write_pickle(tmp_path / "pickle.pt"))
    # A state_dict pickle is refused at upload (422) before it is ever queued.
    assert created.status_code == 422
    assert "LOAD_ERROR" in created.json()["detail"]


def test_keypoint_bars_scale_to_the_largest_error() -> None:
    breakdown = get_kind("keypoints").breakdown
    bars = breakdown_bars(breakdown, [1.0] * 14 + [4.0])
    assert len(bars) == 15 and bars[-1].width == 100.0 and bars[0].width == 25.0
    assert bars[10].label == "nose tip"
    assert breakdown_bars(breakdown, None) == []


def test_class_bars_scale_to_100_percent_and_mark_classes_without_images() -> None:
    bars = breakdown_bars(get_kind("classification").breakdown, [50.0, None, *[100.0] * 8])
    assert [b.width for b in bars[:3]] == [50.0, 0.0, 100.0]
    assert bars[1].value is None and bars[0].label == "class 0"


def test_confusion_cells_are_shaded_by_their_row() -> None:
    cells = confusion_cells([[3, 1], [0, 0]])
    assert [(c.row, c.col, c.count, c.shade, c.correct) for c in cells] == [
        (0, 0, 3, 0.75, True), (0, 1, 1, 0.25, False), (1, 0, 0, 0.0, False),
        (1, 1, 0, 0.0, True),
    ]


def test_histogram_marks_the_threshold_and_keeps_outliers() -> None:
    hist = score_histogram([10.0, 90.0, 150.0, 250_000.0], threshold=100.0)
    assert sum(b.count for b in hist.bins) == 4
    assert hist.open_ended and hist.bins[-1].count == 1
    assert 0 < hist.threshold_pos < 100
    passing = [b for b in hist.bins if b.passing]
    assert passing and all(b.low >= 100.0 for b in passing)
