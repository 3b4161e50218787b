"""Grade one model file against one test set: size check, predict (sandboxed), score.

`grade_model_file` never raises for anything a student's file can cause: every failure becomes
a `GradingOutcome` with score 0 and `passed` False. Our own unexpected errors become
INFRA_ERROR outcomes, so the caller can tell them apart and not count them against the student.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from grader.config import Settings
from grader.grading.archive import PT2, check_model_archive, detect_format
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import DEFAULT_KIND, get_kind
from grader.grading.kinds.base import json_parts
from grader.grading.plans import Plan, PlanHint
from grader.grading.sandbox import SandboxLimits, SandboxRun
from grader.grading.testdata.testsets import TestSet

log = logging.getLogger(__name__)

PASSED = "PASSED"
FAILED = "FAILED"


@dataclass
class GradingOutcome:
    status: str  # PASSED, FAILED or a FailureKind value
    score: float
    passed: bool
    threshold: float
    n_images: int
    # The kind's per-part breakdown (per keypoint RMSE in px, per class accuracy in %).
    parts: list[float]
    seconds: float
    kind: str = "keypoints"
    details: dict[str, Any] = field(default_factory=dict)
    failure_kind: FailureKind | None = None
    failure_message: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # How the model was run (see plans.py), and what else was tried; None after a failure.
    plan: Plan | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    # Predictions on the public preview faces, when asked for and the model produced them.
    preview: np.ndarray | None = None
    # The raw predictions on the hidden test set, for the copy check's fingerprint (trusted
    # side; never shown to anyone); None after a failure.
    predictions: np.ndarray | None = None

    def breakdown(self) -> dict[str, Any]:
        spec = get_kind(self.kind).breakdown
        return {"title": spec.title, "unit": spec.unit, "labels": list(spec.labels),
                "values": json_parts(self.parts)}

    def to_dict(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "kind": self.kind,
            "score": self.score,
            "passed": self.passed,
            "threshold": self.threshold,
            "n_images": self.n_images,
            "breakdown": self.breakdown() if self.parts else None,
            "details": dict(self.details),
            "seconds": self.seconds,
            "failure_kind": str(self.failure_kind) if self.failure_kind else None,
            "failure_message": self.failure_message,
            "timings": dict(self.timings),
            "plan": self.plan.to_dict() if self.plan else None,
            "trials": list(self.trials),
        }
        if self.kind == "keypoints":  # the name it has always had in this JSON
            out["per_keypoint_rmse_px"] = json_parts(self.parts)
        return out


def sandbox_limits(settings: Settings, *, time_limit_s: float | None) -> SandboxLimits:
    return SandboxLimits(
        time_limit_s=time_limit_s or settings.default_time_limit_s,
        memory_limit_bytes=settings.memory_limit_bytes,
        threads=settings.sandbox_thread_count,
    )


def _check_program(model_path: Path, max_model_bytes: int) -> None:
    """A torch.export program's structural check (pt2_archive.py) runs again before any
    grading, whatever the path that brought the file here (`grader evaluate`, a rescore):
    loading one can evaluate strings and unpickle, so nothing unchecked reaches torch."""
    if detect_format(model_path) == PT2:
        check_model_archive(model_path, max_bytes=max_model_bytes)


def _predict(
    model_path: Path,
    test_set: TestSet,
    *,
    settings: Settings,
    time_limit_s: float | None,
    timings: dict[str, float],
    plan_hint: PlanHint | None,
    preview_images: np.ndarray | None,
    max_batch: int,
) -> SandboxRun:
    kind = get_kind(test_set.kind)
    if settings.sandbox_enabled:
        from grader.grading.sandbox import run_in_sandbox

        start = time.perf_counter()
        run = run_in_sandbox(
            model_path,
            test_set.images,
            device=settings.device,
            batch_size=max_batch,
            limits=sandbox_limits(settings, time_limit_s=time_limit_s),
            plan_hint=plan_hint,
            preview_images=preview_images,
            kind=kind,
        )
        timings["sandbox"] = time.perf_counter() - start
        timings.update(run.timings)
        crashed = [{**plan.to_dict(), "verdict": "crashed"} for plan in run.crashed]
        return replace(run, trials=[*crashed, *run.trials])

    # Benchmarks and tests only: the model runs in this process.
    from grader.grading.sandboxed.predict import load_model, predict_preview, predict_with_plan

    start = time.perf_counter()
    model = load_model(model_path, device=settings.device, kind=kind)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    predictions, report = predict_with_plan(
        model, test_set.images, device=settings.device, max_batch=max_batch,
        kind=kind, hint=plan_hint,
    )
    timings["predict"] = time.perf_counter() - start
    timings["tuning"] = report.tuning_s
    preview = None
    if preview_images is not None:
        preview = predict_preview(report, preview_images, device=settings.device, kind=kind)
    return SandboxRun(
        predictions=predictions, plan=report.plan,
        trials=[t.to_dict() for t in report.trials], preview=preview,
    )


def grade_model_file(
    model_path: Path,
    test_set: TestSet,
    *,
    threshold: float,
    max_model_bytes: int,
    settings: Settings,
    time_limit_s: float | None = None,
    plan_hint: PlanHint | None = None,
    preview_images: np.ndarray | None = None,
    batch_one_only: bool = False,
) -> GradingOutcome:
    """`batch_one_only`: the check at upload found the model works only one image at a time,
    so no batched plan is tried (each would fail, after its preparation and a batch's work)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def failed(kind: FailureKind, message: str) -> GradingOutcome:
        timings["total"] = time.perf_counter() - started
        return GradingOutcome(
            status=str(kind),
            score=0.0,
            passed=False,
            threshold=float(threshold),
            n_images=len(test_set),
            parts=[],
            seconds=timings["total"],
            kind=test_set.kind,
            failure_kind=kind,
            failure_message=message,
            timings=timings,
        )

    model_path = Path(model_path)
    try:
        size = model_path.stat().st_size
        if size > max_model_bytes:
            raise GradingFailure(
                FailureKind.TOO_LARGE,
                f"{size / 1e6:.1f} MB, the limit is {max_model_bytes / 1e6:.1f} MB",
            )
        _check_program(model_path, max_model_bytes)
        run = _predict(
            model_path,
            test_set,
            settings=settings,
            time_limit_s=time_limit_s,
            timings=timings,
            plan_hint=plan_hint,
            preview_images=preview_images,
            max_batch=1 if batch_one_only else settings.batch_size,
        )
        start = time.perf_counter()
        report = get_kind(test_set.kind).score(
            run.predictions, test_set.labels, threshold=threshold
        )
        timings["score"] = time.perf_counter() - start
    except GradingFailure as failure:
        return failed(failure.kind, failure.message_for(get_kind(test_set.kind)))
    except Exception as exc:
        log.exception("grading %s failed inside the grader", model_path)
        return failed(FailureKind.INFRA_ERROR, f"{type(exc).__name__}: {exc}")

    timings["total"] = time.perf_counter() - started
    return GradingOutcome(
        status=PASSED if report.passed else FAILED,
        score=report.score,
        passed=report.passed,
        threshold=report.threshold,
        n_images=report.n_images,
        parts=report.parts,
        seconds=timings["total"],
        kind=test_set.kind,
        details=report.details,
        timings=timings,
        plan=run.plan,
        trials=run.trials,
        preview=run.preview,
        predictions=run.predictions,
    )


@dataclass
class PreflightOutcome:
    """The quick check at upload. `status` is PASSED or a FailureKind value."""

    status: str
    message: str | None
    # True: the model fails (or answers differently) on a batch; it is graded one image at
    # a time. None when the check did not get that far.
    batch_one_only: bool | None
    seconds: float

    @property
    def failure_kind(self) -> FailureKind | None:
        return None if self.status == PASSED else FailureKind(self.status)


def preflight_model_file(
    model_path: Path,
    *,
    max_model_bytes: int,
    settings: Settings,
    time_limit_s: float,
    kind: str = DEFAULT_KIND,
    images: int = 2,
) -> PreflightOutcome:
    """Load the model and run it on `images` public sample images of its kind, in the
    sandbox: the failures a student should hear about at once (LOAD_ERROR, BAD_OUTPUT,
    NON_FINITE) without waiting in the grading queue. Never raises for a student's fault."""
    started = time.perf_counter()
    spec = get_kind(kind)
    samples = spec.sample_images(images)

    def done(status: str, message: str | None, batch_one_only: bool | None) -> PreflightOutcome:
        return PreflightOutcome(status, message, batch_one_only, time.perf_counter() - started)

    try:
        size = Path(model_path).stat().st_size
        if size > max_model_bytes:
            raise GradingFailure(
                FailureKind.TOO_LARGE,
                f"{size / 1e6:.1f} MB, the limit is {max_model_bytes / 1e6:.1f} MB",
            )
        _check_program(Path(model_path), max_model_bytes)
        if settings.sandbox_enabled:
            from grader.grading.sandbox import run_in_sandbox

            run = run_in_sandbox(
                model_path, samples, device=settings.device, batch_size=len(samples),
                limits=sandbox_limits(settings, time_limit_s=time_limit_s), preflight=True,
                kind=spec,
            )
            predictions, batch_ok = run.predictions, run.batch_ok
        else:  # tests and benchmarks only: the model runs in this process
            from grader.grading.sandboxed.predict import load_model, preflight

            model = load_model(model_path, device=settings.device, kind=spec)
            predictions, batch_ok = preflight(model, samples, device=settings.device, kind=spec)
        spec.check_finite(predictions, images="sample image")
    except GradingFailure as failure:
        return done(str(failure.kind), failure.message_for(spec), None)
    except Exception as exc:
        log.exception("pre-flight of %s failed inside the grader", model_path)
        return done(str(FailureKind.INFRA_ERROR), f"{type(exc).__name__}: {exc}", None)
    return done(PASSED, None, None if batch_ok is None else not batch_ok)
