"""What a username, a password and a free-text account field may hold.

Each check raises ValueError with a message for people, so the same function serves a
pydantic schema (FastAPI turns it into a 422) and the service (which re-raises it as
`Invalid`, for the web forms, the roster import and the admin CLI). The lengths are the
columns' (grader/auth/models.py): a longer value would otherwise reach PostgreSQL and fail
there as a 500, and a NUL byte is refused by PostgreSQL's text types altogether.
"""

from __future__ import annotations

import re
import unicodedata

USERNAME_MAX = 64
DISPLAY_NAME_MAX = 200
STUDENT_ID_MAX = 64
TOKEN_NAME_MAX = 100
PASSWORD_MIN = 8
# argon2 hashes any length; the cap only bounds what one request can make the server hash.
PASSWORD_MAX = 256

# Usernames appear in URL paths (/instructor/users/<name>) and in CSV exports: ASCII letters,
# digits and . _ - @ only, starting with a letter or digit. No "/" (breaks the page routes), no
# look-alike or direction-changing characters.
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*\Z")
USERNAME_RULE = (
    f"A username is 1-{USERNAME_MAX} characters: letters, digits, '.', '_', '-' or '@', "
    "starting with a letter or digit."
)


def check_username(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= USERNAME_MAX or not _USERNAME.match(value):
        raise ValueError(USERNAME_RULE)
    return value


# No C0 control characters (NUL included) and no DEL: for form fields checked by pydantic.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def check_login_username(value: str) -> str:
    """What a login form may send as a username: anything a stored name could be.

    Deliberately looser than check_username (an account created before that rule still logs
    in); it only refuses what the database cannot even compare.
    """
    value = value.strip()
    if len(value) > USERNAME_MAX or _has_control(value):
        raise ValueError(f"A username is at most {USERNAME_MAX} printable characters.")
    return value


def check_password(value: str) -> str:
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise ValueError(f"A password has {PASSWORD_MIN} to {PASSWORD_MAX} characters.")
    return value


def check_text(value: str, *, field: str, max_length: int) -> str:
    """A one-line free-text field (display name, student id, token name), stripped."""
    value = value.strip()
    if len(value) > max_length:
        raise ValueError(f"{field} is at most {max_length} characters ({len(value)} given).")
    if _has_control(value):
        raise ValueError(f"{field} must not contain control characters.")
    return value


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)
