"""Service settings from the environment (``USEG_*``, with platform fallbacks) and ``.env``.

Read only where the app or the CLI is assembled (``Settings.load()``), never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def normalize_database_url(url: str) -> str:
    """``postgres://`` / ``postgresql://`` -> the psycopg 3 driver; a bare path -> SQLite."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if "://" not in url:
        url = f"sqlite:///{url}"
    return url


class Settings(BaseSettings):
    """Every knob of the service. Safe defaults; secrets only from the environment."""

    model_config = SettingsConfigDict(env_prefix="USEG_", env_file=".env", extra="ignore")

    database_url: str | None = None
    db_sslmode: str | None = None
    db_pool_size: int = 4
    host: str = "127.0.0.1"
    port: int | None = None
    workers: int = 1
    auth: str = Field(default="auto", description="auto | required | off (off only honoured on loopback)")
    bootstrap_admin_key: str | None = None
    metrics_token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_batch_players: int = 10_000
    max_batch_events: int = 50_000
    request_batch_max: int = Field(default=64, ge=0, description=(
        "Concurrent single categorize / detect calls of a game are read and scored together, up to this "
        "many at once (0 or 1: never batched)"))
    request_batch_linger_ms: float = Field(default=1.0, ge=0, le=50, description=(
        "Under sustained concurrency, a micro-batch waits this long for more calls (a lone call never waits)"))
    gc_freeze: bool = Field(default=True, description=(
        "Exempt the server's long-lived objects from the cyclic garbage collector once started and after "
        "each taxonomy compiled (api/heap.py): full collections otherwise pause the workers"))
    calibrate_wait_s: float = 60.0
    cors_origins: str = ""
    rate_limit_per_minute: int = 6000
    idempotency_ttl_s: float = Field(default=86_400.0, description="How long an Idempotency-Key's answer is kept")
    job_stale_s: float = Field(default=120.0, description="A calibration job without a heartbeat for this long "
                                                         "is reported failed (its worker stopped)")
    log_level: str = "INFO"
    log_json: bool = True
    persist_delay_s: float = 0.5

    @classmethod
    def load(cls, **overrides) -> Settings:
        s = cls(**overrides)
        if s.database_url is None and os.environ.get("DATABASE_URL"):
            s.database_url = os.environ["DATABASE_URL"]
        if s.port is None:
            s.port = int(os.environ.get("PORT", "8000"))
        return s

    @property
    def url(self) -> str:
        """The SQLAlchemy URL in use (SQLite ``./useg.db`` when nothing is configured)."""
        if not self.database_url:
            return f"sqlite:///{Path('useg.db').resolve()}"
        return normalize_database_url(self.database_url)

    @property
    def auth_required(self) -> bool:
        if self.auth == "required":
            return True
        return self.host not in LOOPBACK

    @property
    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
