"""GET /metrics: the Prometheus scrape target. Never open: it takes the metrics token
(GRADER_METRICS_TOKEN) or an instructor's or admin's API token as a bearer token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from grader.auth import service as auth_service
from grader.deps import SessionDep, SettingsDep, UnitOfWorkRoute, oauth2_scheme
from grader.errors import Forbidden, NotAuthenticated
from grader.ops.metrics import MetricsEndpoint

router = APIRouter(tags=["ops"], route_class=UnitOfWorkRoute)


def _may_scrape(
    session: SessionDep, settings: SettingsDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> None:
    if not token:
        raise NotAuthenticated("Not authenticated: send 'Authorization: Bearer <token>'.")
    expected = settings.metrics_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return
    user = auth_service.resolve_token_record(session, token=token).user
    session.commit()
    if not user.is_instructor:
        raise Forbidden("Only instructors, admins and the metrics token may read the metrics.")


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(_may_scrape)])
async def metrics(request: Request) -> Response:
    endpoint: MetricsEndpoint | None = getattr(request.app.state, "metrics", None)
    if endpoint is None:
        endpoint = request.app.state.metrics = MetricsEndpoint(request.app.state.settings)
    body = await run_in_threadpool(endpoint.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
