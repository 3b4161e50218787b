"""Train the demo exercise's reference model on synthetic faces and export it as TorchScript.

    python examples/facial_keypoints/train_reference.py            # about 3 min on 2 idle CPU cores

Writes, next to this script:
  reference_model.pt  a small CNN trained on the synthetic `train` split (passes the demo)
  dummy_model.pt      the same architecture, untrained (fails the demo)

Both are TorchScript archives made with torch.jit.script(...).save(...), which is exactly what
students are asked to upload.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grader.grading.testdata.faces import generate_faces

HERE = Path(__file__).resolve().parent


class KeypointNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [1, 16, 32, 64, 128]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 6 * 6, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Linear(128, 30),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_tensors(images: np.ndarray, keypoints_px: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)
    y = torch.from_numpy(((keypoints_px - 48.0) / 48.0).astype(np.float32)).reshape(-1, 30)
    return x, y


def course_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])
    return 1.0 / (2.0 * float(((pred - y) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--train-count", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    x_train, y_train = to_tensors(*generate_faces(split="train", count=args.train_count))
    x_val, y_val = to_tensors(*generate_faces(split="val", count=1000))
    print(f"data: {len(x_train)} train, {len(x_val)} val ({time.perf_counter() - started:.1f}s)")

    dummy = KeypointNet().eval()
    model = KeypointNet()
    steps = args.epochs * (len(x_train) // args.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.MSELoss()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        batches = len(x_train) // args.batch_size
        for b in range(batches):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        print(
            f"epoch {epoch + 1}/{args.epochs}: train mse {total / batches:.5f}, "
            f"val score {course_score(model, x_val, y_val):.1f} "
            f"({time.perf_counter() - started:.0f}s)"
        )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.jit.script(model).save(str(args.out_dir / "reference_model.pt"))
    torch.jit.script(dummy).save(str(args.out_dir / "dummy_model.pt"))
    print(f"wrote reference_model.pt and dummy_model.pt to {args.out_dir}")


if __name__ == "__main__":
    main()
