"""Schema migrations, runnable from any working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import grader
from grader.config import Settings

# migrations/ sits next to the package in the source tree (installed editable, or copied
# alongside it in the Docker image).
MIGRATIONS_DIR = Path(grader.__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a URL-encoded password.
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
