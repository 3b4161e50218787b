"""Small image classifiers (CIFAR-10's shape: (N, 3, 32, 32) in, 10 logits out) of the kinds a
course's students write, with random weights and non-trivial BatchNorm statistics."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def _cnn(act: Callable[[], nn.Module], bn: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    for c_in, c_out in [(3, 16), (16, 32), (32, 64)]:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [act(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 16, 64), act(), nn.Linear(64, 10))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.c1 = nn.Conv2d(32, 32, 3, padding=1)
        self.b1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)
        self.b2 = nn.BatchNorm2d(32)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.b1(self.c1(x)))
        return self.head(torch.relu(x + self.b2(self.c2(y))))


class BatchOneOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(1, -1))


CLASSIFIERS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(3072, 128), nn.ReLU(), nn.Linear(128, 10)),
    "relu_cnn": lambda: _cnn(nn.ReLU),
    "bn_elu_cnn": lambda: _cnn(nn.ELU, bn=True),
    "gelu_dropout_cnn": lambda: nn.Sequential(_cnn(nn.GELU), nn.Dropout(0.3)),
    "residual": Residual,
    "batch1_only": BatchOneOnly,
}


def build_classifier(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = CLASSIFIERS[name]()
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model.eval()


def export_classifier(name: str, path: Path, *, seed: int = 0) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(build_classifier(name, seed)).save(str(path))
    return path
