"""TEMPORARY in-process stand-in; issue 4 replaces this with the real process boundary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SandboxLimits:
    time_limit_s: float = 120.0
    memory_limit_bytes: int = 4 * 1024**3
    threads: int = 1


def predict_in_sandbox(
    model_path: Path,
    images: np.ndarray,
    *,
    device: str,
    batch_size: int,
    limits: SandboxLimits,
) -> np.ndarray:
    from grader.grading.predict import load_model, predict

    model = load_model(model_path, device=device)
    return predict(model, images, device=device, batch_size=batch_size)
