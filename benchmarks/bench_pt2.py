""".pt2 (torch.export) vs TorchScript: the same zoo models, graded side by side in one run.

    python benchmarks/bench_pt2.py [--models a,b,...] [--threads 2] [--no-compile]

For each zoo model (tests/support/zoo.py), exported both ways (TorchScript by torch.jit.script
or trace as the zoo says; torch.export with a dynamic batch 1..1024), on the 1000-image demo
test set:
  course    the course's evaluate_model on the file (TorchScript: verbatim; .pt2: on
            torch.export.load(f).module(), without .eval())
  engine    grade_model_file through the sandbox (fork, load, tuning, predict, score), the
            fork server already started, as in a running worker; the plan it chose
  compiled  .pt2 only, outside the sandbox (inside it inductor has no compiler): load, then
            the `compiled` plan (torch.compile, inductor) forced, compile time included;
            and the compile time alone
Every figure is seconds per 1000 images, and each score is checked against the course's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.config import get_settings  # noqa: E402
from grader.grading import sandbox  # noqa: E402
from grader.grading.engine import grade_model_file  # noqa: E402
from grader.grading.kinds import get_kind  # noqa: E402
from grader.grading.plans import Plan, PlanHint  # noqa: E402
from grader.grading.sandboxed.predict import load_model, predict_with_plan  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import TestSet, load_test_set  # noqa: E402
from tests.support.course import course_loop  # noqa: E402
from tests.support.zoo import export, export_program  # noqa: E402

DEFAULT_MODELS = "tiny_cnn,lenet,relu_cnn,bn_cnn_fc1024,naimish_leaky,residual_small"


def _engine(path: Path, test_set: TestSet, threads: int) -> tuple[float, str, float]:
    settings = get_settings().model_copy(
        update={"sandbox_enabled": True, "sandbox_thread_count": threads}
    )
    started = time.perf_counter()
    outcome = grade_model_file(
        path, test_set, threshold=1.0, max_model_bytes=25 * 2**20, settings=settings,
        time_limit_s=600,
    )
    seconds = time.perf_counter() - started
    if outcome.failure_kind is not None:
        raise SystemExit(f"{path}: {outcome.failure_kind}: {outcome.failure_message}")
    plan = outcome.plan.describe() if outcome.plan else "?"
    return seconds, plan, outcome.score


def _compiled(path: Path, test_set: TestSet, threads: int) -> tuple[float, float, float]:
    """Load + predict with the compiled plan forced: (total s, compile s, score)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = load_model(path, device="cpu")
    hint = Plan("compiled", 32, threads)
    predictions, report = predict_with_plan(
        model, test_set.images, device="cpu", max_batch=32, threads=threads, hint=PlanHint(hint),
    )
    total = time.perf_counter() - started
    if report.plan != hint:
        raise SystemExit(f"{path}: compiled plan refused: {[t.to_dict() for t in report.trials]}")
    compile_s = report.tuning_s  # the hint's one trial: compile, two warm-ups, two timed runs
    score = get_kind("keypoints").score(predictions, test_set.labels, threshold=1.0).score
    return total, compile_s, score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    test_set = load_test_set(demo_test_set_path(settings, "keypoints"),
                             cache_dir=settings.cache_dir)
    per_1000 = 1000 / len(test_set)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads, {len(test_set)} images; "
          "seconds per 1000 images")
    header = (f"{'model':<16} {'course.pt':>9} {'course.pt2':>10} {'engine.pt':>9} "
              f"{'engine.pt2':>10} {'pt2/pt':>6} {'compiled':>8} {'compile':>7}  plans (pt | pt2)")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            scripted = export(name, Path(tmp) / f"{name}.pt")
            program = export_program(name, Path(tmp) / f"{name}.pt2")
            course_pt = course_loop(scripted, test_set)
            t0 = time.perf_counter()
            expected = course_pt()
            c_pt = time.perf_counter() - t0
            t0 = time.perf_counter()
            expected_pt2 = course_loop(program, test_set)()
            c_pt2 = time.perf_counter() - t0
            _engine(scripted, test_set, args.threads)  # the fork server starts on the first
            e_pt, plan_pt, s_pt = _engine(scripted, test_set, args.threads)
            e_pt2, plan_pt2, s_pt2 = _engine(program, test_set, args.threads)
            for score, reference in ((s_pt, expected), (s_pt2, expected_pt2),
                                     (expected_pt2, expected)):
                assert abs(score - reference) <= 1e-5 * reference, (name, score, reference)
            compiled = compile_s = float("nan")
            if not args.no_compile:
                compiled, compile_s, s_c = _compiled(program, test_set, args.threads)
                assert abs(s_c - expected) <= 1e-5 * expected, (name, s_c, expected)
            print(f"{name:<16} {c_pt * per_1000:9.2f} {c_pt2 * per_1000:10.2f} "
                  f"{e_pt * per_1000:9.2f} {e_pt2 * per_1000:10.2f} {e_pt2 / e_pt:6.2f} "
                  f"{compiled * per_1000:8.2f} {compile_s:7.2f}  {plan_pt} | {plan_pt2}",
                  flush=True)
    sandbox.shutdown()


if __name__ == "__main__":
    main()
