"""The pages: one router that create_app() includes next to the REST API."""

from __future__ import annotations

from fastapi import APIRouter

from grader.web.pages_instructor import router as instructor_router
from grader.web.pages_integrity import router as integrity_router
from grader.web.pages_student import router as student_router

router = APIRouter(include_in_schema=False)
router.include_router(student_router)
router.include_router(instructor_router)
router.include_router(integrity_router)
