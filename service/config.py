"""Settings of the prediction service, read once from ``HOUSING_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Where the service finds its model and writes its logs, and its request limits."""

    model_config = SettingsConfigDict(env_prefix="HOUSING_", extra="ignore")

    model_tag: str = Field(
        default="housing-price-model:latest", description="BentoML model store tag of the model to serve."
    )
    prediction_db: Path = Field(default=Path("var/predictions.db"), description="SQLite prediction log.")
    log_dir: Path = Field(default=Path("var/log"), description="Folder of the rotating JSON request logs.")
    log_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Size at which a log file rotates.")
    log_backups: int = Field(default=5, ge=0, description="Rotated log files kept.")
    log_to_stdout: bool = Field(default=False, description="Also print each JSON request line to stdout.")
    max_batch_size: int = Field(default=10_000, gt=0, description="Most houses in one batch request.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Largest request body accepted.")
    writer_batch_size: int = Field(default=500, gt=0, description="Most rows the log writer inserts at once.")
    writer_interval_s: float = Field(default=0.05, gt=0, description="Longest a logged row waits to be written.")
    feedback_grace_s: float = Field(
        default=1.0, ge=0, description="How long feedback waits for its prediction to reach the log."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the /admin endpoints; without one they are disabled."
    )
    project_dir: Path = Field(
        default=Path(), description="The DVC project that /admin/retrain and /admin/rollback work in."
    )
    reload_poll_s: float = Field(default=1.0, gt=0, description="How often each worker checks for a reload.")
    reload_timeout_s: float = Field(default=60.0, gt=0, description="Longest a reload waits for every worker.")
    worker_max_age_s: float = Field(
        default=10.0, gt=0, description="A worker silent for longer is taken for gone when waiting on a reload."
    )


@lru_cache(maxsize=1)
def settings() -> ServiceSettings:
    """The process-wide settings (tests clear the cache to change them)."""
    return ServiceSettings()
