"""Instructor pages for grading integrity: similar submissions (with public baselines) and
what a new test-set version changed. Every route depends on PageInstructor."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from grader.deps import SessionDep
from grader.downloads import csv_download
from grader.errors import Invalid
from grader.exercises import service as exercises
from grader.integrity import changes, service, split
from grader.web.core import CsrfForm, PageInstructor, WebRoute, render

router = APIRouter(prefix="/instructor", route_class=WebRoute, include_in_schema=False)


@router.get("/exercises/{slug}/similar")
def similar_page(request: Request, slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    return render(
        request,
        "instructor/similar.html",
        {
            "exercise": exercise,
            "pairs": service.similar_pairs(session, exercise=exercise),
            "baselines": service.baselines(session, exercise=exercise),
            "threshold": service.SIMILARITY_THRESHOLD,
        },
    )


@router.get("/exercises/{slug}/similar.csv")
def similar_csv(slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    return csv_download(service.similar_csv(session, exercise=exercise), f"{slug}-similar.csv")


@router.post("/exercises/{slug}/baseline", dependencies=[CsrfForm])
async def baseline(
    request: Request, slug: str, actor: PageInstructor, session: SessionDep
) -> Response:
    form = await request.form()
    raw = str(form.get("submission_id") or "").strip()
    if not raw.isdigit():
        raise Invalid("Give the number of the submission to mark.")
    exercise = exercises.get_exercise(session, slug=slug)
    service.mark_baseline(
        session, submission_id=int(raw), by=actor, baseline=form.get("baseline") != "0",
        exercise=exercise,
    )
    return RedirectResponse(f"/instructor/exercises/{slug}/similar", status_code=303)


@router.get("/exercises/{slug}/changes")
def changes_page(request: Request, slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    return render(
        request,
        "instructor/changes.html",
        {"exercise": exercise, "report": changes.testset_changes(session, exercise=exercise)},
    )


@router.get("/exercises/{slug}/changes.csv")
def changes_csv(slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    content = changes.changes_csv(session, exercise=exercise)
    return csv_download(content, f"{slug}-testset-changes.csv")


@router.get("/exercises/{slug}/split")
def split_page(request: Request, slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    current = split.get_split(session, exercise=exercise)
    return render(
        request,
        "instructor/split.html",
        {
            "exercise": exercise,
            "split": current,
            "rules": [r.value for r in split.PassRule],
            "rows": split.instructor_rows(session, exercise=exercise),
        },
    )


@router.post("/exercises/{slug}/split", dependencies=[CsrfForm])
async def save_split(
    request: Request, slug: str, _: PageInstructor, session: SessionDep
) -> Response:
    form = await request.form()
    exercise = exercises.get_exercise(session, slug=slug)
    if form.get("reveal") is not None:
        split.reveal(session, exercise=exercise, revealed=form.get("reveal") != "0")
    else:
        try:
            percent = float(str(form.get("private_percent") or "0"))
        except ValueError:
            raise Invalid("The private part is a percentage, e.g. 30.") from None
        split.set_split(
            session, exercise=exercise, private_fraction=percent / 100.0,
            pass_rule=str(form.get("pass_rule") or "full"),
        )
    return RedirectResponse(f"/instructor/exercises/{slug}/split", status_code=303)


@router.get("/exercises/{slug}/parts.csv")
def parts_csv(slug: str, _: PageInstructor, session: SessionDep) -> Response:
    exercise = exercises.get_exercise(session, slug=slug)
    return csv_download(split.parts_csv(session, exercise=exercise), f"{slug}-parts.csv")
