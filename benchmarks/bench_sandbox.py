"""What the sandbox costs: sandboxed predict vs in-process predict vs the optimised forward
pass alone vs the course loop, on the same model and images, in one run; and the fixed
per-submission overhead for a tiny model.

    python benchmarks/bench_sandbox.py [--repeat 3] [--device cpu] [--threads N]

Every path runs with the same number of CPU threads (the sandbox's setting) so the ratios
measure the boundary, not a thread-count difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grading import typical_cnn  # noqa: E402

from grader.config import get_settings  # noqa: E402
from grader.grading import sandbox  # noqa: E402
from grader.grading.kinds import get_kind  # noqa: E402
from grader.grading.sandboxed.predict import load_model, predict  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import load_test_set  # noqa: E402
from tests.support.course import CourseDataset, evaluate_model  # noqa: E402


class Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 30)


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=settings.sandbox_thread_count)
    parser.add_argument("--batch-size", type=int, default=settings.batch_size)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, bs = args.device, args.batch_size
    limits = sandbox.SandboxLimits(threads=args.threads)
    test_set = load_test_set(demo_test_set_path(settings), cache_dir=settings.cache_dir)
    images = test_set.images
    print(
        f"{len(images)} images, device {device}, {args.threads} thread(s), batch {bs}, "
        f"torch {torch.__version__}, best of {args.repeat}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cnn = typical_cnn(Path(tmp) / "typical.pt")
        tiny = Path(tmp) / "tiny.pt"
        torch.jit.script(Tiny()).save(str(tiny))

        started = time.perf_counter()
        sandbox.get_sandbox().probe(device=device, limits=limits)
        cold = time.perf_counter() - started

        def sandboxed(path: Path, imgs: np.ndarray) -> np.ndarray:
            return sandbox.predict_in_sandbox(
                path, imgs, device=device, batch_size=bs, limits=limits
            )

        def in_process(path: Path, imgs: np.ndarray) -> np.ndarray:
            return predict(load_model(path, device=device), imgs, device=device, batch_size=bs)

        frozen = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.load(str(cnn), map_location=device).eval())
        )
        x = get_kind("keypoints").to_input(images).to(device)

        def forward_alone() -> None:
            with torch.inference_mode():
                for start in range(0, len(x), bs):
                    frozen(x[start : start + bs])
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def course() -> float:
            model = torch.jit.load(str(cnn), map_location=device)
            with torch.no_grad():
                return float(evaluate_model(model, CourseDataset(test_set)))

        np.testing.assert_array_equal(sandboxed(cnn, images), in_process(cnn, images))
        t_fwd = best(forward_alone, args.repeat)
        t_in = best(lambda: in_process(cnn, images), args.repeat)
        t_sb = best(lambda: sandboxed(cnn, images), args.repeat)
        breakdown = dict(sandbox.get_sandbox().last_timings)
        t_course = best(course, 1) if device == "cpu" else float("nan")

        few = images[:16]
        t_tiny_in = best(lambda: in_process(tiny, few), args.repeat * 3)
        t_tiny_sb = best(lambda: sandboxed(tiny, few), args.repeat * 3)
        tiny_breakdown = dict(sandbox.get_sandbox().last_timings)
        size_mb = cnn.stat().st_size / 1e6
    sandbox.shutdown()

    print(f"\ntypical course CNN ({size_mb:.1f} MB), {len(images)} images")
    rows = [
        ("forward pass alone (frozen+optimised)", t_fwd),
        ("in-process predict (load+probe+predict)", t_in),
        ("sandboxed predict (warm fork server)", t_sb),
        ("course loop (batch 1, DataLoader)", t_course),
    ]
    for label, t in rows:
        print(f"  {label:<42}{t:>8.3f} s")
    print(f"  sandboxed / forward alone    {t_sb / t_fwd:5.2f}x   (target <= 1.3x)")
    print(f"  sandboxed / in-process       {t_sb / t_in:5.2f}x")
    print(f"  course loop / sandboxed      {t_course / t_sb:5.2f}x   (target >= 3x)")
    print(
        f"  breakdown: fork {breakdown.get('fork_ms', 0):.1f} ms, load "
        f"{breakdown.get('load_s', 0):.3f} s, predict {breakdown.get('predict_s', 0):.3f} s"
    )
    print("\ntiny model, 16 images")
    print(
        f"  in-process {t_tiny_in * 1000:7.1f} ms, sandboxed {t_tiny_sb * 1000:7.1f} ms, "
        f"fixed overhead {(t_tiny_sb - t_tiny_in) * 1000:6.1f} ms (target <= 100 ms); "
        f"fork {tiny_breakdown.get('fork_ms', 0):.1f} ms"
    )
    print(f"  fork server cold start (once per worker process): {cold:.2f} s")


if __name__ == "__main__":
    main()
