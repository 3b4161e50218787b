from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from grader.grading import sandbox
from tests.sandbox.hostile_models import Honest, save_scripted

N_IMAGES = 16


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, (N_IMAGES, 96, 96), dtype=np.uint8)


@pytest.fixture(scope="session")
def honest_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_scripted(Honest(), tmp_path_factory.mktemp("honest") / "honest.pt")


def in_process_predictions(model: Path, images: np.ndarray) -> np.ndarray:
    """What the sandbox must return for `model`, bit for bit: the same code in this process,
    on the sandbox's thread count (split over more threads, a float32 sum may round
    differently: MKL's sgemm on Intel CPUs does)."""
    import torch

    from grader.grading.sandboxed.predict import load_model, predict

    threads = torch.get_num_threads()
    torch.set_num_threads(sandbox.SandboxLimits().threads)
    try:
        return predict(load_model(model, device="cpu"), images, device="cpu", batch_size=8)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def honest_reference(honest_model: Path, images: np.ndarray) -> np.ndarray:
    return in_process_predictions(honest_model, images)


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_server() -> Iterator[None]:
    yield
    sandbox.shutdown()


@pytest.fixture
def run_sandboxed(images: np.ndarray) -> Callable[..., np.ndarray]:
    def run(model: Path, *, time_limit_s: float = 60.0, memory_limit_bytes: int = 2 * 1024**3,
            imgs: np.ndarray | None = None) -> np.ndarray:
        limits = sandbox.SandboxLimits(
            time_limit_s=time_limit_s, memory_limit_bytes=memory_limit_bytes
        )
        return sandbox.predict_in_sandbox(
            model, images if imgs is None else imgs, device="cpu", batch_size=8, limits=limits
        )

    return run


@pytest.fixture
def honest_still_works(
    run_sandboxed: Callable[..., np.ndarray], honest_model: Path, honest_reference: np.ndarray
) -> Iterator[None]:
    """After whatever the test did, the same process grades an honest model exactly."""
    yield
    predictions = run_sandboxed(honest_model)
    assert predictions.dtype == np.float32
    np.testing.assert_array_equal(predictions, honest_reference)
