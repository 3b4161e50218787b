from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from grader.auth.models import Role


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    student_id: str | None
    role: str
    is_active: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: Role = Role.STUDENT
    password: str | None = Field(default=None, min_length=8, max_length=200)
    student_id: str | None = None
    display_name: str = ""


class UserCreated(UserOut):
    # Only present when the server generated the password; shown once.
    password: str | None = None


class ApiTokenCreate(BaseModel):
    name: str = Field(default="", max_length=100)
    # Instructors may issue a token for another user (e.g. a student without a password).
    username: str | None = None


class ApiTokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(TokenOut):
    id: int
    name: str
    username: str
