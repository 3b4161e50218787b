"""Copy detection, evaluated honestly: how alike are independently trained models, how alike
are copies, and what the threshold catches; then the cost of one check at 1,000 × 10.

A cohort of small CNNs/MLPs is trained on the synthetic faces (different seeds, architectures
and data orders). Some of them are copied six ways: the same bytes, re-scripted from the same
weights, traced, wrapped in an identity layer, weights perturbed by 1e-4, and fine-tuned one
epoch from a copy. Every file is graded by the engine (grade_model_file, in this process, the
sandbox off for speed: the predictions are the same), fingerprinted as the worker does, and
every pair is compared. Prints the similarity distribution of independent pairs and of each
copy kind, precision and recall at the service's threshold, then the time of one check
against 10,000 stored fingerprints (SQLite, the real service code).

    python benchmarks/bench_copies.py [--models 12] [--epochs 4] [--train 1500]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader.config import Settings  # noqa: E402
from grader.grading.engine import grade_model_file  # noqa: E402
from grader.grading.testdata.testsets import TestSet  # noqa: E402
from grader.integrity import fingerprint as fp  # noqa: E402
from grader.integrity.service import SIMILARITY_THRESHOLD  # noqa: E402

COPY_KINDS = ("identical", "rescripted", "traced", "wrapped", "perturbed", "finetuned")


def _architectures() -> list[Callable[[], Any]]:
    import torch
    from torch import nn

    def cnn(width: int, act: type[nn.Module]) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2), act(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), act(),
            nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(72 * width, 64), act(),
            nn.Linear(64, 30),
        )

    def mlp(hidden: int) -> nn.Module:
        return nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(576, hidden), nn.ReLU(),
                             nn.Linear(hidden, 30))

    del torch
    return [lambda: cnn(8, nn.ReLU), lambda: cnn(12, nn.ELU), lambda: cnn(8, nn.LeakyReLU),
            lambda: mlp(128)]


def _train(model: object, images: object, targets: object, *, epochs: int, seed: int,
           lr: float = 2e-3) -> None:
    import torch

    assert isinstance(model, torch.nn.Module)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=order).split(32):  # type: ignore[arg-type]
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(model(images[batch]), targets[batch])  # type: ignore[index]
            loss.backward()
            optimiser.step()
    model.eval()


def build_cohort(
    out: Path, *, models: int, epochs: int, train: int, copied: int
) -> tuple[dict[str, Path], dict[str, str]]:
    """Files by name, and for each copy the original it came from."""
    import copy

    import torch
    from torch import nn

    from grader.grading.testdata.faces import generate_faces

    torch.set_num_threads(2)
    images_np, keypoints = generate_faces(split="train", count=train)
    images = torch.from_numpy(images_np).float().div(255).unsqueeze(1)
    targets = torch.from_numpy((keypoints.reshape(train, 30) - 48) / 48).float()
    makers = _architectures()
    files: dict[str, Path] = {}
    origin: dict[str, str] = {}
    for i in range(models):
        torch.manual_seed(1000 + i)
        model = makers[i % len(makers)]()
        _train(model, images, targets, epochs=epochs, seed=2000 + i)
        name = f"student{i:02d}"
        files[name] = out / f"{name}.pt"
        torch.jit.script(model).save(str(files[name]))
        if i >= copied:
            continue

        def save(kind: str, module: object, name: str = name) -> None:
            path = out / f"{name}-{kind}.pt"
            if kind == "identical":
                path.write_bytes(files[name].read_bytes())
            else:
                module.save(str(path))  # type: ignore[attr-defined]
            files[f"{name}-{kind}"] = path
            origin[f"{name}-{kind}"] = name

        rebuilt = makers[i % len(makers)]()
        rebuilt.load_state_dict(model.state_dict())
        rebuilt.eval()
        save("identical", None)
        save("rescripted", torch.jit.script(rebuilt))
        save("traced", torch.jit.trace(rebuilt, images[:2]))
        save("wrapped", torch.jit.script(nn.Sequential(copy.deepcopy(rebuilt), nn.Identity())))
        perturbed = copy.deepcopy(rebuilt)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(3000 + i)
            for p in perturbed.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 1e-4)
        save("perturbed", torch.jit.script(perturbed))
        tuned = copy.deepcopy(rebuilt)
        _train(tuned, images, targets, epochs=1, seed=4000 + i, lr=1e-3)
        save("finetuned", torch.jit.script(tuned))
    return files, origin


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "min": round(min(values), 5),
            "median": round(statistics.median(values), 5), "max": round(max(values), 5)}


def evaluate(files: dict[str, Path], origin: dict[str, str], data_dir: Path) -> dict[str, object]:
    from grader.grading.testdata.faces import generate_faces

    images, keypoints = generate_faces(split="test", count=1000)
    test_set = TestSet(images, ((keypoints - 48) / 48).astype(np.float32), "bench", "keypoints")
    settings = Settings(data_dir=data_dir, sandbox_enabled=False, environment="test")
    blobs, norms, scores = [], [], {}
    for name, path in files.items():
        outcome = grade_model_file(path, test_set, threshold=100.0,
                                   max_model_bytes=20 << 20, settings=settings)
        assert outcome.predictions is not None, (name, outcome.failure_message)
        blob, norm = fp.sketch(outcome.predictions, test_set.labels)
        blobs.append(blob)
        norms.append(norm)
        scores[name] = round(outcome.score, 1)
    sims = fp.similarity_matrix(fp.unpack(blobs), np.array(norms))
    names = list(files)
    independent: list[float] = []
    alike: list[tuple[float, str, str]] = []
    by_kind: dict[str, list[float]] = {k: [] for k in COPY_KINDS}
    for a, b in itertools.combinations(range(len(names)), 2):
        x, y = names[a], names[b]
        root_x, root_y = origin.get(x, x), origin.get(y, y)
        if root_x != root_y:
            independent.append(float(sims[a, b]))
            alike.append((round(float(sims[a, b]), 4), x, y))
        elif x == root_y or y == root_x:  # an original and its copy
            by_kind[(y if x == root_y else x).rsplit("-", 1)[1]].append(float(sims[a, b]))
    t = SIMILARITY_THRESHOLD
    caught = {k: sum(v >= t for v in vals) for k, vals in by_kind.items()}
    false_positive = sum(v >= t for v in independent)
    flagged_copies = sum(caught.values())
    wanted = [k for k in COPY_KINDS if k != "finetuned"]
    return {
        "threshold": t,
        "scores": scores,
        "independent": _summary(independent),
        "most_alike_independent": sorted(alike, reverse=True)[:3],
        "copies": {k: _summary(v) for k, v in by_kind.items()},
        "caught": caught,
        "false_positives": false_positive,
        "precision": round(flagged_copies / max(flagged_copies + false_positive, 1), 4),
        "recall_all_kinds": round(flagged_copies / max(sum(map(len, by_kind.values())), 1), 4),
        "recall_without_finetuned": round(
            sum(caught[k] for k in wanted) / max(sum(len(by_kind[k]) for k in wanted), 1), 4
        ),
    }


def scaling(data_dir: Path, *, students: int = 1000, per_student: int = 10) -> dict[str, float]:
    """One check for a new submission against students × per_student stored fingerprints."""
    from sqlalchemy import insert

    from grader.auth.models import User
    from grader.db import Base, get_engine, import_all_models, session_scope
    from grader.exercises.models import Exercise
    from grader.integrity import service
    from grader.integrity.models import Fingerprint
    from grader.submissions.models import Submission

    url = f"sqlite:///{data_dir / 'scale.sqlite3'}"
    import_all_models()
    Base.metadata.create_all(get_engine(url))
    rng = np.random.default_rng(0)
    n = students * per_student
    with session_scope(url) as session:
        session.add(Exercise(id=1, slug="scale", title="scale"))
        session.execute(insert(User), [{"id": u + 1, "username": f"u{u}", "role": "student"}
                                       for u in range(students + 1)])
        session.execute(insert(Submission), [
            {"id": s + 1, "user_id": s // per_student + 1, "exercise_id": 1,
             "model_sha256": f"{s:064x}", "model_size": 1, "status": "PASSED"}
            for s in range(n + 1)
        ])
        vectors = rng.normal(size=(n + 1, fp.SKETCH_DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        session.execute(insert(Fingerprint), [
            {"submission_id": s + 1, "exercise_id": 1, "user_id": s // per_student + 1,
             "testset_version": 1, "sketch": vectors[s].astype(np.float16).tobytes(),
             "norm": 1.0}
            for s in range(n + 1)
        ])
    seconds = []
    for _ in range(5):
        with session_scope(url) as session:
            sub = session.get(Submission, n + 1)
            assert sub is not None
            start = time.perf_counter()
            service._flag_one(session, sub)
            seconds.append(time.perf_counter() - start)
            session.rollback()
    start = time.perf_counter()
    with session_scope(url) as session:
        exercise = session.get(Exercise, 1)
        assert exercise is not None
        service.rescan(session, exercise=exercise)
    rescan_s = time.perf_counter() - start
    get_engine(url).dispose()
    return {"fingerprints": n, "check_median_s": round(statistics.median(seconds), 4),
            "check_max_s": round(max(seconds), 4), "rescan_all_pairs_s": round(rescan_s, 2),
            "fingerprint_bytes": fp.SKETCH_DIM * 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--copied", type=int, default=4, help="how many originals are copied")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files, origin = build_cohort(out, models=args.models, epochs=args.epochs,
                                     train=args.train, copied=args.copied)
        trained = time.perf_counter() - started
        figures = evaluate(files, origin, out)
        figures["train_s"] = round(trained, 1)
        if not args.skip_scaling:
            figures["scaling"] = scaling(out)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
