from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from grader.auth import service
from grader.auth.models import Role
from grader.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenOut,
    TokenOut,
    UserCreate,
    UserCreated,
    UserOut,
)
from grader.deps import CurrentUser, InstructorUser, SessionDep, SettingsDep
from grader.errors import Forbidden

router = APIRouter(tags=["auth"])


@router.post("/auth/token", response_model=TokenOut)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenOut:
    _, issued = service.log_in(
        session,
        username=form.username,
        password=form.password,
        name="login",
        ttl=timedelta(hours=settings.access_token_ttl_hours),
    )
    return TokenOut(access_token=issued.token, expires_at=issued.record.expires_at)


@router.get("/auth/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/tokens", response_model=list[ApiTokenOut])
def my_tokens(user: CurrentUser, session: SessionDep) -> list[ApiTokenOut]:
    return [ApiTokenOut.model_validate(t) for t in service.list_tokens(session, user=user)]


@router.post("/tokens", response_model=ApiTokenCreated, status_code=201)
def create_token(body: ApiTokenCreate, user: CurrentUser, session: SessionDep) -> ApiTokenCreated:
    owner = user
    if body.username and body.username != user.username:
        if not user.is_instructor:
            raise Forbidden("Only instructors can create tokens for other users.")
        owner = service.get_user(session, username=body.username)
    issued = service.issue_token(session, user=owner, name=body.name)
    return ApiTokenCreated(
        access_token=issued.token, id=issued.record.id, name=body.name, username=owner.username
    )


@router.delete("/tokens/{token_id}", response_model=ApiTokenOut)
def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> ApiTokenOut:
    record = service.revoke_token(session, actor=user, token_id=token_id)
    return ApiTokenOut.model_validate(record)


@router.get("/users", response_model=list[UserOut])
def list_users(_: InstructorUser, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in service.list_users(session)]


@router.post("/users", response_model=UserCreated, status_code=201)
def create_user(body: UserCreate, actor: InstructorUser, session: SessionDep) -> UserCreated:
    if body.role is Role.ADMIN and actor.role != Role.ADMIN.value:
        raise Forbidden("Only an admin can create admins.")
    generated = None if body.password else service.generate_password()
    user = service.create_user(
        session,
        username=body.username,
        role=body.role,
        password=body.password or generated,
        student_id=body.student_id,
        display_name=body.display_name,
    )
    return UserCreated(**UserOut.model_validate(user).model_dump(), password=generated)
