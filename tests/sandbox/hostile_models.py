"""Hostile (and one honest) TorchScript models, built at test time."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch


class Honest(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 5, stride=4)
        self.fc = torch.nn.Linear(4 * 23 * 23, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1)))


class SecretReader(torch.nn.Module):
    """Returns the planted labels, which is a perfect score, if it can read them."""

    def __init__(self, secret: str, n: int) -> None:
        super().__init__()
        self.secret = secret
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.from_file(self.secret, size=self.n * 30, dtype=torch.float32)
        return labels.view(self.n, 30)[: x.shape[0]]


class Writer(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.target)
        return torch.zeros(x.shape[0], 30)


class LoadTimeWriter(torch.nn.Module):
    """Writes a file from __setstate__, which runs while torch.jit.load unpickles it."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.target, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), state[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 30)


class Endless(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i >= 0:
            i += 1
        return torch.zeros(x.shape[0], 30)


class MemoryHog(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ones(1 << 20)
        for _ in range(40):  # doubles every time: 4 MiB, 8 MiB, ... 4 PiB
            y = torch.cat([y, y])
        return torch.zeros(x.shape[0], 30) + y[-1]


class NaNOutput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 30), float("nan"))


class WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 29)


class IntegerOutput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 30, dtype=torch.int64)


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


class HugeAllocation(torch.nn.Module):
    """Asks for 1 TiB at once: past any cap immediately (the doubling MemoryHog can take longer
    than a short time limit to reach a 4 GiB cap on a busy machine)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ones(1 << 38)
        return torch.zeros(x.shape[0], 30) + y[-1]


# Files that are not TorchScript models.


def write_pickle(path: Path) -> None:
    torch.save(Honest(), path)


def write_state_dict(path: Path) -> None:
    torch.save(Honest().state_dict(), path)


def write_random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_zip_bomb(path: Path, size: int = 300 * 1024 * 1024) -> None:
    """Under 1 MB on disk, `size` bytes once inflated, in a TorchScript-like layout."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * size)
        archive.writestr("archive/constants.pkl", b"x")
        archive.writestr("archive/version", b"3\n")
