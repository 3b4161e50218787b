from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from grader.auth import validation
from grader.auth.models import Role

# The same checks the service applies to the web forms, the roster and the CLI; here they make
# a bad JSON body a 422 before the route runs.
Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=validation.USERNAME_MAX,
        pattern=validation.USERNAME_PATTERN,
        examples=["alice"],
    ),
    AfterValidator(validation.check_username),
]
Password = Annotated[
    str,
    Field(min_length=validation.PASSWORD_MIN, max_length=validation.PASSWORD_MAX),
]
DisplayName = Annotated[
    str,
    Field(max_length=validation.DISPLAY_NAME_MAX),
    AfterValidator(
        partial(
            validation.check_text,
            field="A display name",
            max_length=validation.DISPLAY_NAME_MAX,
        )
    ),
]
StudentId = Annotated[
    str,
    Field(max_length=validation.STUDENT_ID_MAX),
    AfterValidator(
        partial(validation.check_text, field="A student id", max_length=validation.STUDENT_ID_MAX)
    ),
]
TokenName = Annotated[
    str,
    Field(max_length=validation.TOKEN_NAME_MAX),
    AfterValidator(
        partial(validation.check_text, field="A token name", max_length=validation.TOKEN_NAME_MAX)
    ),
]


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
    username: Username
    # Only an admin may create instructors and admins.
    role: Role = Role.STUDENT
    password: Password | None = None
    student_id: StudentId | None = None
    display_name: DisplayName = ""


class UserCreated(UserOut):
    # Only present when the server generated the password; shown once.
    password: str | None = None


class ApiTokenCreate(BaseModel):
    name: TokenName = ""
    # Instructors may issue a token for a student (e.g. one without a password); admins for
    # anyone.
    username: str | None = Field(default=None, max_length=validation.USERNAME_MAX)
    # Default: GRADER_API_TOKEN_TTL_DAYS (90).
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    # Admins only.
    never_expires: bool = False


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
