"""Execution plans remembered per model file, so that grading the same file again (a rescore,
a resubmission) starts from the plan the tuner chose last time. The sandbox child still checks
a remembered plan against the batch-1 reference before it uses it."""

from __future__ import annotations

from functools import cache
from importlib import metadata

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from grader.config import Settings
from grader.db import dialect_insert, session_scope, utcnow
from grader.grading.plans import Plan
from grader.submissions.models import ExecutionPlan


@cache  # a scan of the installed distributions: too slow for every result written
def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _key(settings: Settings, model_sha256: str) -> tuple[ColumnElement[bool], ...]:
    return (
        ExecutionPlan.model_sha256 == model_sha256,
        ExecutionPlan.device == settings.device,
        ExecutionPlan.threads == settings.sandbox_thread_count,
        ExecutionPlan.torch_version == torch_version(),
    )


def known_plan(settings: Settings, *, model_sha256: str) -> Plan | None:
    with session_scope(settings.sqlalchemy_url, write=False) as session:
        raw = session.scalar(select(ExecutionPlan.plan).where(*_key(settings, model_sha256)))
    return Plan.from_dict(raw)


def remember_plan(session: Session, settings: Settings, *, model_sha256: str, plan: Plan) -> None:
    """Insert or update, inside the caller's transaction (the one that writes the result), in
    one statement: when two workers remember the same file at once, the later plan stays."""
    insert = dialect_insert(session)
    key = {
        "model_sha256": model_sha256,
        "device": settings.device,
        "threads": settings.sandbox_thread_count,
        "torch_version": torch_version(),
    }
    values = {"plan": plan.to_dict(), "updated_at": utcnow()}
    session.execute(
        insert(ExecutionPlan)
        .values(**key, **values)
        .on_conflict_do_update(index_elements=list(key), set_=values)
    )
