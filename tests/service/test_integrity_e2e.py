"""End to end: a real `grader serve` with its worker grades two students' copies of one model
(saved two different ways) and the instructor's API flags the pair; the students cannot see
it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grader.integrity.service import SIMILARITY_THRESHOLD
from tests.support.live_server import LiveServer
from tests.support.models import write_small_test_set

pytestmark = pytest.mark.slow


def test_a_real_worker_flags_two_copies_of_one_model(
    live_server: LiveServer, tmp_path: Path
) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(8)
            self.fc = torch.nn.Linear(144, 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(self.pool(x).flatten(1)))

    torch.manual_seed(5)
    net = Net().eval()
    scripted, traced = tmp_path / "mine.pt", tmp_path / "also_mine.pt"
    torch.jit.script(net).save(str(scripted))
    torch.jit.trace(net, torch.zeros(2, 1, 96, 96)).save(str(traced))
    assert scripted.read_bytes() != traced.read_bytes()

    slug = f"integrity-{os.getpid()}"
    csv_path = write_small_test_set(tmp_path / "small.csv")
    with live_server.admin_client() as admin:
        assert admin.post("/api/v1/exercises", json={"slug": slug, "title": slug}).is_success
        with csv_path.open("rb") as fh:
            assert admin.put(f"/api/v1/exercises/{slug}/test-set",
                             files={"file": ("t.csv", fh)}).is_success
    ids = []
    students = [live_server.student_client(), live_server.student_client()]
    for client, model in zip(students, (scripted, traced), strict=True):
        with model.open("rb") as fh:
            response = client.post(f"/api/v1/exercises/{slug}/submissions",
                                   files={"file": (model.name, fh)})
        assert response.status_code == 202, response.text
        ids.append(int(response.json()["id"]))
    for client, sid in zip(students, ids, strict=True):
        assert live_server.wait_for_submission(client, sid)["status"] == "FAILED"
    with live_server.admin_client() as admin:
        body = admin.get(f"/api/v1/exercises/{slug}/similar").json()
    [pair] = body["pairs"]
    assert (pair["first"]["submission_id"], pair["second"]["submission_id"]) == tuple(ids)
    assert pair["similarity"] >= SIMILARITY_THRESHOLD and not pair["identical_file"]
    for client in students:
        assert client.get(f"/api/v1/exercises/{slug}/similar").status_code == 403
        client.close()
