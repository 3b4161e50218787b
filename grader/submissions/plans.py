"""Execution plans remembered per model file, so that grading the same file again (a rescore,
a resubmission) starts from the plan the tuner chose last time, and a file of an architecture
graded before starts from the plan last chosen for that architecture (a shared hint: another
student's, so it must also beat the course's way on this file). The sandbox child still checks
a remembered plan against the batch-1 reference before it uses it."""

from __future__ import annotations

from functools import cache
from importlib import metadata

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.db import dialect_insert, session_scope, utcnow
from grader.grading.plans import Plan, PlanHint
from grader.submissions.models import ExecutionPlan


@cache  # a scan of the installed distributions: too slow for every result written
def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _worker(settings: Settings) -> tuple[ColumnElement[bool], ...]:
    return (
        ExecutionPlan.device == settings.device,
        ExecutionPlan.threads == settings.sandbox_thread_count,
        ExecutionPlan.torch_version == torch_version(),
    )


def known_plan(
    settings: Settings, *, model_sha256: str, architecture: str | None = None
) -> PlanHint | None:
    """This file's own plan; else, with `architecture`, the plan chosen last for it."""
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        raw = session.scalar(
            select(ExecutionPlan.plan)
            .where(ExecutionPlan.model_sha256 == model_sha256, *_worker(settings))
        )
        if (own := Plan.from_dict(raw)) is not None:
            return PlanHint(own)
        if architecture is None or not settings.shared_plans:
            return None
        raw = session.scalar(
            select(ExecutionPlan.plan)
            .where(ExecutionPlan.architecture == architecture, *_worker(settings))
            .order_by(ExecutionPlan.updated_at.desc(), ExecutionPlan.id.desc())
            .limit(1)
        )
    shared = Plan.from_dict(raw)
    return PlanHint(shared, shared=True) if shared is not None else None


def remember_plan(
    session: Session, settings: Settings, *, model_sha256: str, plan: Plan,
    architecture: str | None = None, hint: PlanHint | None = None,
) -> None:
    """Insert or update, inside the caller's transaction (the one that writes the result), in
    one statement: when two workers remember the same file at once, the later plan stays.

    The file's plan speaks for its architecture only when this grading chose it: a plan taken
    from a shared `hint` is not passed on again, so a plan that a hostile model's own child
    reported lasts only until the architecture's next tuning, not for every file after it."""
    if hint is not None and hint.shared and hint.plan == plan:
        architecture = None
    insert = dialect_insert(session)
    key = {
        "model_sha256": model_sha256,
        "device": settings.device,
        "threads": settings.sandbox_thread_count,
        "torch_version": torch_version(),
    }
    values = {"plan": plan.to_dict(), "updated_at": utcnow(), "architecture": architecture}
    session.execute(
        insert(ExecutionPlan)
        .values(**key, **values)
        .on_conflict_do_update(index_elements=list(key), set_=values)
    )
