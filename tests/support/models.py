"""Small TorchScript files and test sets built at test time (torch runs in the test process,
never in the API process under test)."""

from __future__ import annotations

import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_MODEL = REPO / "examples" / "facial_keypoints" / "reference_model.pt"
DUMMY_MODEL = REPO / "examples" / "facial_keypoints" / "dummy_model.pt"


def write_linear_model(path: Path, *, seed: int = 0) -> Path:
    """An honest but untrained model (fails the threshold)."""
    import torch

    torch.manual_seed(seed)
    torch.jit.script(_Linear()).save(str(path))
    return path


def write_slow_model(path: Path, *, repeats: int = 300) -> Path:
    """Honest output after a deliberately slow forward (to catch a worker mid-grading)."""
    import torch

    module = torch.jit.script(_Slow(repeats))
    module.save(str(path))
    return path


def write_pickle(path: Path) -> Path:
    import torch

    torch.save(_Linear().state_dict(), str(path))
    return path


def write_small_test_set(path: Path, *, count: int = 64, seed: int = 7) -> Path:
    from grader.grading.testdata.faces import generate_faces, write_course_csv

    images, keypoints = generate_faces(split="test", count=count, seed=seed)
    write_course_csv(path, images, keypoints)
    return path


def is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _torch_modules() -> tuple[type, type]:
    import torch

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(96 * 96, 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(x.shape[0], -1)) * 0.01

    class Slow(torch.nn.Module):
        def __init__(self, repeats: int) -> None:
            super().__init__()
            self.repeats = repeats
            self.fc = torch.nn.Linear(96 * 96, 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Depends on the input so that freezing cannot fold the loop away.
            m = torch.ones(256, 256) * (1.0 + x.mean())
            for _ in range(self.repeats):
                m = torch.tanh(m @ m * 0.001)
            return self.fc(x.reshape(x.shape[0], -1)) * 0.01 + m[0, 0] * 0.0

    return Linear, Slow


def _Linear() -> object:
    return _torch_modules()[0]()


def _Slow(repeats: int) -> object:
    return _torch_modules()[1](repeats)
