from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np

from grader.config import Settings
from grader.grading.testdata.demo import demo_test_set_path
from grader.grading.testdata.faces import generate_faces, public_sample_faces
from grader.grading.testdata.testsets import load_test_set


def test_faces_are_deterministic_and_labelled() -> None:
    a_img, a_kp = generate_faces(split="train", count=30)
    b_img, b_kp = generate_faces(split="train", count=30)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_kp, b_kp)
    assert a_img.shape == (30, 96, 96) and a_img.dtype == np.uint8
    assert a_kp.shape == (30, 15, 2) and a_kp.dtype == np.float64
    # Keypoints sit on the face: inside the frame, left eye (subject's) right of the right eye.
    assert (a_kp > 0).all() and (a_kp < 96).all()
    assert (a_kp[:, 0, 0] > a_kp[:, 1, 0]).all()
    # Mouth below the nose below the eyes.
    assert (a_kp[:, 14, 1] > a_kp[:, 10, 1]).all() and (a_kp[:, 10, 1] > a_kp[:, 0, 1]).all()


def test_faces_vary() -> None:
    images, keypoints = generate_faces(split="val", count=200)
    assert keypoints[:, 10].std(axis=0).min() > 1.0  # nose tip moves by pixels
    assert images.reshape(200, -1).mean(axis=1).std() > 10  # lighting varies
    assert len({img.tobytes() for img in images}) == 200


def test_splits_and_seeds_differ() -> None:
    train = generate_faces(split="train", count=5)[0]
    val = generate_faces(split="val", count=5)[0]
    test = generate_faces(split="test", count=5)[0]
    seeded = generate_faces(split="test", count=5, seed=99)[0]
    assert not np.array_equal(train, val) and not np.array_equal(val, test)
    assert not np.array_equal(test, seeded)
    np.testing.assert_array_equal(public_sample_faces(5), val)


def test_demo_test_set_is_stable(tmp_path: Path) -> None:
    first = demo_test_set_path(Settings(data_dir=tmp_path / "a"))
    second = demo_test_set_path(Settings(data_dir=tmp_path / "b"))
    assert first.read_bytes() == second.read_bytes()
    ts = load_test_set(first)
    assert len(ts) == 1000
    assert ts.sha256 == hashlib.sha256(first.read_bytes()).hexdigest()


def test_dataset_synth_command(tmp_path: Path) -> None:
    out = tmp_path / "train.csv"
    result = subprocess.run(
        ["grader", "dataset", "synth", "--split", "train", "--count", "12", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ts = load_test_set(out)
    images, keypoints = generate_faces(split="train", count=12)
    np.testing.assert_array_equal(ts.images, images)
    np.testing.assert_allclose(ts.labels, (keypoints - 48) / 48, atol=1e-6)
