"""The zoo of student architectures: course loop vs plain module vs every plan vs the engine.

    python benchmarks/bench_zoo.py [--models a,b,...] [--repeat 1] [--calibration 256]

For each zoo model (tests/support/zoo.py), on the 1000-image demo test set, in one run:
  course    the course's evaluate_model verbatim (load the file, batch-1 loop, grad on)
  plain     the plain module at its best batch size (1, 8, 32 or 128): load + forward passes
  best      the fastest plan of all (every variant at batch 1, 8 and 32, native at 16 and
            32): load + the float input + its preparation and two warm-up calls + forward
            passes. Each plan is timed on --calibration images and checked against batch 1
            there, in a subprocess per family (oneDNN fusion can segfault); its time for all
            images is extrapolated from that rate.
  engine    grade_model_file through the sandbox (fork, load, tuning, predict, score), with
            the fork server already started, as in a running worker, and told what the
            upload's check found (a model that works one image at a time), as the server is
  tuned     the part of the engine a plan decides: the child's load + reference + tuning +
            predict, to compare with `best` (eng/best is tuned / best)
  told      `tuned` again for a grading told the best plan beforehand (as a rescore of the
            file is told its own): load + reference + that plan's check + predict, the
            engine's own costs around the best plan with no tuning (eng/told is tuned / told)
  bound     a FLOP lower bound: MFLOP per image x images / the measured float32 peak (the
            faster of a matmul and a 3x3 convolution, arithmetic.peak_flops)
and the speed-ups, the plan the engine chose and its tuning time. The summary line gives the
minimum and median engine speed-up over the course loop and the largest engine/best ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_drain import draw  # noqa: E402  (this script's folder is on sys.path)

from grader.config import Settings, get_settings  # noqa: E402
from grader.grading import sandbox  # noqa: E402
from grader.grading.engine import (  # noqa: E402
    GradingOutcome,
    grade_model_file,
    preflight_model_file,
    sandbox_limits,
)
from grader.grading.plans import VARIANTS, Plan, PlanHint  # noqa: E402
from grader.grading.sandboxed.arithmetic import peak_flops  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import TestSet, load_test_set  # noqa: E402
from tests.support.course import course_loop  # noqa: E402
from tests.support.zoo import ZOO, build, export, mflop_per_image  # noqa: E402

PLAIN_BATCHES = (1, 8, 32, 128)
PLAN_BATCHES = (1, 8, 32)
NATIVE_BATCHES = (16, 32)  # NNPACK runs from batch 16; below, the native plan is im2col
DRAIN_SUBMISSIONS = 100


def _per_image(forward: Any, x: torch.Tensor, batch: int) -> tuple[float, float, torch.Tensor]:
    """Seconds per image at `batch` after two warm-up calls, the warm-up's seconds, and the
    outputs."""
    pad = (-len(x)) % batch
    xs = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]) if pad else x
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(2):
            forward(xs[:batch])
        warm_up = time.perf_counter() - start
        # Copied out, as the engine's run does: a kept output pins its batch's activations.
        outs = torch.empty(len(xs), 15, 2)
        start = time.perf_counter()
        for i in range(0, len(xs), batch):
            outs[i : i + batch] = forward(xs[i : i + batch]).reshape(-1, 15, 2)
        elapsed = time.perf_counter() - start
    return elapsed / len(xs), warm_up, outs[: len(x)]


def measure_plans(path: Path, n_calibration: int, threads: int, kind: str) -> dict[str, Any]:
    """Runs in a subprocess: every plan (or the plain module at each batch) on the first
    `n_calibration` demo images; {"plan": {"prep_s", "per_image_s", "ok"}} and the load time."""
    from grader.grading.kinds import get_kind

    images_to_tensor = get_kind("keypoints").to_input
    from grader.grading.sandboxed.tuner import _prepare, agrees

    warnings.simplefilter("ignore", DeprecationWarning)
    torch.set_num_threads(threads)
    settings = get_settings()
    test_set = load_test_set(demo_test_set_path(settings), cache_dir=settings.cache_dir)
    start = time.perf_counter()
    images_to_tensor(test_set.images)
    convert = time.perf_counter() - start
    x = images_to_tensor(test_set.images[:n_calibration])
    start = time.perf_counter()
    model = torch.jit.load(str(path)).eval()
    # What any plan pays before its first image: the file, and the float input.
    out: dict[str, Any] = {"load_s": time.perf_counter() - start + convert}
    with torch.inference_mode():
        reference = torch.cat([model(x[i : i + 1]).reshape(-1, 15, 2) for i in range(len(x))])
    variants = ["plain"] if kind == "plain" else list(VARIANTS)
    batches = PLAIN_BATCHES if kind == "plain" else PLAN_BATCHES
    for variant in variants:
        for batch in NATIVE_BATCHES if variant == "native" else batches:
            key = f"{variant}@{batch}"
            try:
                start = time.perf_counter()
                if variant == "fused":
                    torch.jit.enable_onednn_fusion(True)
                forward = _prepare(torch.jit.load(str(path)).eval(), variant)
                prep = time.perf_counter() - start
                xb = x.contiguous(memory_format=torch.channels_last) if (
                    variant == "channels_last"
                ) else x
                per_image, warm_up, got = _per_image(forward, xb, batch)
                out[key] = {"prep_s": prep + warm_up, "per_image_s": per_image,
                            "ok": agrees(got, reference)}
            except Exception as exc:
                out[key] = {"error": f"{type(exc).__name__}"}
            finally:
                torch.jit.enable_onednn_fusion(False)
    return out


def _measure_in_subprocess(path: Path, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Each plan family in its own process, one more per crash (a segfaulting plan is
    dropped, as the sandbox does)."""
    cmd = [sys.executable, __file__, "--measure", str(path), "--calibration",
           str(args.calibration), "--threads", str(args.threads), "--kind", kind]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"crashed": done.returncode}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def best_plan(measured: dict[str, Any], n: int) -> tuple[str, float]:
    """The plan with the lowest (load + prep + n x per-image) among those that agree."""
    options = [
        (measured["load_s"] + m["prep_s"] + n * m["per_image_s"], key)
        for key, m in measured.items()
        if isinstance(m, dict) and m.get("ok")
    ]
    seconds, key = min(options)
    return key, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="", help="comma-separated zoo names (default all)")
    parser.add_argument("--repeat", type=int, default=1, help="best of N for course and engine")
    parser.add_argument("--calibration", type=int, default=256)
    # As `grader evaluate` grades one model: every core (a worker's slot gets its share).
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="plans", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_plans(args.measure, args.calibration, args.threads, args.kind)))
        return
    warnings.simplefilter("ignore", DeprecationWarning)

    settings = get_settings().model_copy(update={"sandbox_threads": args.threads})
    test_set = load_test_set(demo_test_set_path(settings), cache_dir=settings.cache_dir)
    n = len(test_set)
    peak = peak_flops(args.threads) / 1e9
    torch.set_num_threads(args.threads)
    names = [m for m in args.models.split(",") if m] or list(ZOO)
    print(
        f"{n} images; torch {torch.__version__}, {args.threads} threads (course loop, plans and "
        f"sandbox), {platform.machine()}, {os.cpu_count()} CPUs; peak {peak:.0f} GFLOP/s;"
        f" load average {os.getloadavg()[0]:.1f}; course and engine best of {args.repeat}"
    )
    header = (f"{'model':<22}{'MFLOP':>8}{'course':>8}{'plain':>8}{'best':>8}{'engine':>8}"
              f"{'tuned':>7}{'told':>7}{'bound':>7}{'vs course':>10}{'vs plain':>9}"
              f"{'eng/best':>9}{'eng/told':>9}  plan (tuning s)")
    print(header)
    # The fork server is up, as in a worker that has graded before.
    sandbox.get_sandbox().probe(limits=sandbox_limits(settings, time_limit_s=None))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = export(name, Path(tmp) / f"{name}.pt")
            mflop = mflop_per_image(build(name))
            run_course = course_loop(path, test_set)
            t_course = min(_timed(run_course) for _ in range(args.repeat))
            plain = _measure_in_subprocess(path, args, "plain")
            plans = _measure_in_subprocess(path, args, "plans")
            plain_key, t_plain = best_plan(plain, n)
            best_key, t_best = best_plan(plans, n)
            # At upload, before the grading and not part of it.
            checked = preflight_model_file(
                path, max_model_bytes=20 * 2**20, settings=settings, time_limit_s=60,
            )
            batch_one_only = bool(checked.batch_one_only)
            t_engine, outcome = _graded(
                path, test_set, settings, batch_one_only, args.repeat, hint=None
            )
            t_tuned = _child_s(outcome)
            variant, batch = best_key.split("@")
            _, told = _graded(
                path, test_set, settings, batch_one_only, args.repeat,
                hint=PlanHint(Plan(variant, int(batch), args.threads)),
            )
            t_told = _child_s(told)
            bound = mflop * n / (peak * 1000)
            plan = outcome.plan.describe() if outcome.plan else outcome.status
            tuning = outcome.timings.get("child_tuning_s", float("nan"))
            row = {
                "model": name, "mflop": mflop, "course_s": t_course, "plain_s": t_plain,
                "plain_batch": plain_key, "best_s": t_best, "best_plan": best_key,
                "engine_s": t_engine, "tuned_s": t_tuned, "told_s": t_told,
                "told_plan": told.plan.describe() if told.plan else told.status,
                "bound_s": bound, "plan": plan,
                "tuning_s": tuning,
                "score": outcome.score, "status": outcome.status,
            }
            rows.append(row)
            print(
                f"{name:<22}{mflop:>8.1f}{t_course:>8.2f}{t_plain:>8.2f}{t_best:>8.2f}"
                f"{t_engine:>8.2f}{t_tuned:>7.2f}{t_told:>7.2f}{bound:>7.2f}"
                f"{t_course / t_engine:>9.2f}x{t_plain / t_engine:>8.2f}x{t_tuned / t_best:>8.2f}x"
                f"{t_tuned / t_told:>8.2f}x  {plan} ({tuning:.2f})"
                f"  [best {best_key}, plain {plain_key}]",
                flush=True,
            )
    sandbox.shutdown()
    speedups = [r["course_s"] / r["engine_s"] for r in rows]
    ratios = [r["tuned_s"] / r["best_s"] for r in rows]
    told = [r["tuned_s"] / r["told_s"] for r in rows]
    print(
        f"\nengine vs course: min {min(speedups):.2f}x, median {statistics.median(speedups):.2f}x"
        f" over {len(rows)} models; engine/best: max {max(ratios):.2f}x, median "
        f"{statistics.median(ratios):.2f}x; engine/told: max {max(told):.2f}x, median "
        f"{statistics.median(told):.2f}x; sum course {sum(r['course_s'] for r in rows):.1f} s,"
        f" sum engine {sum(r['engine_s'] for r in rows):.1f} s"
    )
    best_sum = sum(r["best_s"] for r in rows)
    course_sum = sum(r["course_s"] for r in rows)
    print(f"sum best {best_sum:.1f} s: each model's best plan, summed, is "
          f"{course_sum / best_sum:.2f}x the course loop")
    if len(rows) == len(ZOO):
        by_name = {r["model"]: r for r in rows}
        drawn = draw(DRAIN_SUBMISSIONS)
        course = sum(by_name[n]["course_s"] for n in drawn)
        best = sum(by_name[n]["best_s"] for n in drawn)
        print(f"as bench_drain.py draws {DRAIN_SUBMISSIONS}: course {course:.1f} s, best plans "
              f"{best:.1f} s ({course / best:.2f}x), engine "
              f"{sum(by_name[n]['engine_s'] for n in drawn):.1f} s, one model at a time")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _graded(
    path: Path, test_set: TestSet, settings: Settings, batch_one_only: bool, repeat: int, *,
    hint: PlanHint | None,
) -> tuple[float, GradingOutcome]:
    """The fastest of `repeat` gradings through the sandbox, and its outcome."""
    outcomes = []
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = grade_model_file(
            path, test_set, threshold=100.0, max_model_bytes=20 * 2**20, settings=settings,
            batch_one_only=batch_one_only, plan_hint=hint,
        )
        outcomes.append((time.perf_counter() - start, outcome))
    return min(outcomes, key=lambda item: item[0])


def _child_s(outcome: GradingOutcome) -> float:
    """The child's load and predict: what a plan decides, without fork and pipes."""
    return float(outcome.timings.get("child_load_s", 0)) + float(
        outcome.timings.get("child_predict_s", float("nan"))
    )


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
