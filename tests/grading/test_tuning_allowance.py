"""A candidate let in although the tuning budget is spent (the likeliest winner, or a check
costing under 1 % of the work ahead) is timed, not given up before its timed run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grader.grading.kinds import get_kind
from grader.grading.sandboxed.predict import Runner, load_model
from grader.grading.sandboxed.tuner import Tuner
from tests.support.zoo import export


def test_candidates_let_in_past_the_budget_are_timed(tmp_path: Path) -> None:
    kind = get_kind("keypoints")
    model = load_model(export("relu_cnn", tmp_path / "relu_cnn.pt"), device="cpu")
    runner = Runner(model, kind)
    images = np.random.default_rng(0).integers(0, 256, (3000, *kind.image_shape), np.uint8)
    x = runner.kind.to_input(images)
    with torch.inference_mode():
        reference, reference_s = runner.timed_batch1(x[:8])
        # A budget of ~10 ms: only the first candidate and the cheap checks are let in.
        tuner = Tuner(
            model, x, reference=reference, reference_s=reference_s, run_batch=runner.run,
            threads=1, max_batch=32, device="cpu", share=1e-3,
        )
        tuner.tune()
    tried = [t for t in tuner.trials if t.verdict not in ("skipped", "failed", "disagrees")]
    assert tried and tried[0].plan.variant == "fused"
    assert all(t.per_image_ms is not None for t in tried), [t.to_dict() for t in tuner.trials]
    assert tuner.best.plan != tuner.verified[0].plan  # the course's way was beaten
