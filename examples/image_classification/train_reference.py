"""Train the image-classification demo's reference model on synthetic shapes and export it.

    python examples/image_classification/train_reference.py    # about 2 min on 2 idle CPU cores

Writes, next to this script:
  reference_model.pt  a small CNN trained on the synthetic `train` split (passes the demo)
  dummy_model.pt      the same architecture, untrained (fails the demo)

Both are TorchScript archives made with torch.jit.script(...).save(...), what students upload
(CIFAR-10's shape: a float32 batch (N, 3, 32, 32) of RGB pixels in [0, 1] in, 10 logits out).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grader.grading.testdata.shapes import generate_shapes

HERE = Path(__file__).resolve().parent


class ShapeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in [(3, 16), (16, 32), (32, 64)]:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(),
                                  nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean() * 100)


def export(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model.eval()).save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()
    images, labels = generate_shapes(split="train", count=args.train)
    x, y = to_tensor(images), torch.from_numpy(labels)
    val_images, val_labels = generate_shapes(split="val", count=2000)
    xv, yv = to_tensor(val_images), torch.from_numpy(val_labels)

    export(ShapeNet(), args.out / "dummy_model.pt")
    model = ShapeNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=args.epochs * ((len(x) + 63) // 64)
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            schedule.step()
        print(f"epoch {epoch + 1}: val accuracy {accuracy(model, xv, yv):.1f} %", flush=True)
    export(model, args.out / "reference_model.pt")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
