"""Course loop vs grading engine, side by side, on the same 1000-image demo test set.

    python benchmarks/bench_grading.py [--repeat 3] [--device cpu] [--threads N]

For each model it times, end to end (load the file, predict every image, score):
  course   the course's evaluate_model verbatim, as the course runs it (grad mode on):
           torch.jit.load + DataLoader(batch_size=1) + MSELoss
  no_grad  the same loop inside torch.no_grad(): a stricter baseline (CPU only)
  engine   grade_model_file with sandbox_enabled=False (in-process predict + score)
  sandbox  grade_model_file through grader.grading.sandbox.predict_in_sandbox
and prints each one's best time, its ratio to the course loop, and the score difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.config import Settings, get_settings  # noqa: E402
from grader.grading.engine import grade_model_file  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import TestSet, load_test_set  # noqa: E402
from tests.support.course import CourseDataset, course_loop, evaluate_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "examples" / "facial_keypoints" / "reference_model.pt"


class TypicalCourseCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks (32 -> 256 channels), FC 9216 -> 256 -> 30: ~11 MB."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in [(1, 32), (32, 64), (64, 128), (128, 256)]:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(9216, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 30)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def typical_cnn(path: Path) -> Path:
    torch.manual_seed(0)
    model = TypicalCourseCNN()
    for m in model.modules():  # trained-looking BatchNorm statistics, not the identity
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.jit.script(model.eval()).save(str(path))
    return path


def timed(fn: Callable[[], float], repeat: int) -> tuple[float, float]:
    times, score = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        score = fn()
        times.append(time.perf_counter() - start)
    return min(times), score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for the course loop and the in-process engine (default: torch's); "
        "the sandbox child uses GRADER_SANDBOX_THREADS",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = get_settings()
    test_set = load_test_set(demo_test_set_path(base), cache_dir=base.cache_dir)
    in_process = base.model_copy(update={"sandbox_enabled": False, "device": args.device})
    sandboxed = base.model_copy(update={"sandbox_enabled": True, "device": args.device})
    print(
        f"{len(test_set)} images; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; batch size {base.batch_size}; "
        f"sandbox threads {base.sandbox_thread_count}; load average {os.getloadavg()[0]:.1f}; "
        f"best of {args.repeat}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        models = {"reference": REFERENCE, "typical CNN": typical_cnn(Path(tmp) / "typical.pt")}
        for name, path in models.items():
            bench_model(name, path, test_set, in_process, sandboxed, args.device, args.repeat)


def bench_model(
    name: str,
    path: Path,
    test_set: TestSet,
    in_process: Settings,
    sandboxed: Settings,
    device: str,
    repeat: int,
) -> None:
    def course_no_grad() -> float:
        # The same loop made as cheap as it gets without changing it: a stricter baseline.
        model = torch.jit.load(str(path), map_location=device)
        with torch.no_grad():
            return evaluate_model(model, CourseDataset(test_set))

    def engine(settings: Settings) -> float:
        outcome = grade_model_file(
            path,
            test_set,
            threshold=100.0,
            max_model_bytes=settings.default_max_model_bytes,
            settings=settings,
        )
        if outcome.failure_kind is not None:
            print(
                f"  {'sandbox' if settings.sandbox_enabled else 'engine'} failed: "
                f"{outcome.status}: {outcome.failure_message}"
            )
            return float("nan")
        return outcome.score

    t_course, s_course = timed(course_loop(path, test_set, device), repeat)
    on_cpu = device == "cpu"
    t_no_grad, s_no_grad = timed(course_no_grad, repeat) if on_cpu else (t_course, s_course)
    t_engine, s_engine = timed(lambda: engine(in_process), repeat)
    t_sandbox, s_sandbox = timed(lambda: engine(sandboxed), repeat)
    size_mb = path.stat().st_size / 1e6
    print(f"\n{name} ({size_mb:.1f} MB), course score {s_course:.6f}")
    print(f"  {'path':<10}{'seconds':>9}{'speed-up':>10}{'|score diff|':>15}{'relative':>11}")
    for label, t, s in [
        ("course", t_course, s_course),
        ("no_grad", t_no_grad, s_no_grad),
        ("engine", t_engine, s_engine),
        ("sandbox", t_sandbox, s_sandbox),
    ]:
        diff = abs(s - s_course)
        print(f"  {label:<10}{t:>9.3f}{t_course / t:>9.2f}x{diff:>15.2e}{diff / s_course:>11.1e}")


if __name__ == "__main__":
    main()
