"""Student-like architectures for the fidelity tests: random weights, sane outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def _randomise_bn(module: nn.Module, generator: torch.Generator) -> None:
    # Fresh BatchNorm is the identity in eval mode; real running statistics exercise folding.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(9216, 64), nn.ReLU(), nn.Linear(64, 30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PlainCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(4),
        )
        self.fc = nn.Linear(16 * 6 * 6, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class BNDropoutCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Dropout(0.3),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(576, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, 30),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(8), nn.MaxPool2d(2), Block(8), nn.MaxPool2d(4))
        self.fc = nn.Linear(8 * 6 * 6, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.blocks(self.stem(x)), 1))


class Returns15x2(PlainCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1)).view(-1, 15, 2)


class ReturnsFlat(MLP):
    """Flattens its output: a (30,) vector for one image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


class BatchOneOnly(nn.Module):
    """x.view(1, -1): works in the course's batch-1 loop only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(9216, 32)
        self.fc2 = nn.Linear(32, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.view(1, -1))))


class TanhOut(PlainCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.flatten(self.features(x), 1)) * 3.0)


class ClampOut(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.net(x) * 4.0, -0.5, 0.5)


class BatchMixing(MLP):
    """Uses a statistic of the whole batch: batched prediction would change its answers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 0.5 * x.mean()


class DoubleOut(PlainCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1)).double()


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "mlp": MLP,
    "plain_cnn": PlainCNN,
    "bn_dropout_cnn": BNDropoutCNN,
    "residual": ResidualNet,
    "returns_15x2": Returns15x2,
    "returns_flat_30": ReturnsFlat,
    "batch1_only": BatchOneOnly,
    "tanh_out": TanhOut,
    "clamp_out": ClampOut,
    "batch_mixing": BatchMixing,
    "float64_out": DoubleOut,
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ARCHITECTURES[name]()
    _randomise_bn(model, torch.Generator().manual_seed(seed))
    return model.eval()


def export(model: nn.Module, path: Path, *, trace: bool = False) -> Path:
    if trace:
        scripted = torch.jit.trace(model, torch.zeros(1, 1, 96, 96))
    else:
        scripted = torch.jit.script(model)
    scripted.save(str(path))
    return path
