from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request

from grader.auth import service, validation
from grader.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenOut,
    TokenOut,
    UserCreate,
    UserCreated,
    UserOut,
)
from grader.deps import (
    CurrentUser,
    InstructorUser,
    SessionDep,
    SettingsDep,
    UnitOfWorkRoute,
    client_address,
)
from grader.errors import error_responses

router = APIRouter(tags=["auth"], route_class=UnitOfWorkRoute)


@router.post("/auth/token", response_model=TokenOut, responses=error_responses(401, 429))
def login(
    request: Request,
    # The OAuth2 password form's two fields (grant_type, scope and the client fields the spec
    # allows are accepted and ignored). Bounded here so a NUL byte or a megabyte of name is a
    # 422 before anything touches the database.
    username: Annotated[
        str, Form(max_length=validation.USERNAME_MAX, pattern=validation.PRINTABLE_PATTERN)
    ],
    password: Annotated[
        str, Form(max_length=validation.PASSWORD_MAX, json_schema_extra={"format": "password"})
    ],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenOut:
    """Log in with a password (OAuth2 password flow); the token lasts
    GRADER_ACCESS_TOKEN_TTL_HOURS. Failed attempts are throttled: 429 with Retry-After."""
    _, issued = service.log_in(
        session,
        settings=settings,
        username=username,
        password=password,
        client=client_address(request),
    )
    return TokenOut(access_token=issued.token, expires_at=issued.record.expires_at)


@router.get("/auth/me", response_model=UserOut, responses=error_responses(401))
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/tokens", response_model=list[ApiTokenOut], responses=error_responses(401))
def my_tokens(user: CurrentUser, session: SessionDep) -> list[ApiTokenOut]:
    return [ApiTokenOut.model_validate(t) for t in service.list_tokens(session, user=user)]


@router.post(
    "/tokens",
    response_model=ApiTokenCreated,
    status_code=201,
    responses=error_responses(401, 403, 404, 422),
)
def create_token(
    body: ApiTokenCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> ApiTokenCreated:
    """A named API token for yourself or, for instructors, a student (admins: anyone).

    It expires after `expires_in_days` (default GRADER_API_TOKEN_TTL_DAYS); `never_expires`
    is for admins only.
    """
    owner = service.token_owner(session, actor=user, username=body.username)
    issued = service.create_api_token(
        session,
        actor=user,
        owner=owner,
        name=body.name,
        settings=settings,
        expires_in_days=body.expires_in_days,
        never_expires=body.never_expires,
    )
    return ApiTokenCreated(
        access_token=issued.token,
        expires_at=issued.record.expires_at,
        id=issued.record.id,
        name=issued.record.name,
        username=owner.username,
    )


@router.delete(
    "/tokens/{token_id}", response_model=ApiTokenOut, responses=error_responses(401, 403, 404)
)
def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> ApiTokenOut:
    record = service.revoke_token(session, actor=user, token_id=token_id)
    return ApiTokenOut.model_validate(record)


@router.get("/users", response_model=list[UserOut], responses=error_responses(401, 403))
def list_users(_: InstructorUser, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in service.list_users(session)]


@router.post(
    "/users",
    response_model=UserCreated,
    status_code=201,
    responses=error_responses(401, 403, 409, 422),
)
def create_user(body: UserCreate, actor: InstructorUser, session: SessionDep) -> UserCreated:
    """Create an account: instructors create students, admins any role."""
    generated = None if body.password else service.generate_password()
    user = service.create_user(
        session,
        actor=actor,
        username=body.username,
        role=body.role,
        password=body.password or generated,
        student_id=body.student_id,
        display_name=body.display_name,
    )
    return UserCreated(**UserOut.model_validate(user).model_dump(), password=generated)
