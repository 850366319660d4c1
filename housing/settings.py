"""Every ``HOUSING_*`` environment variable, in one settings class for the pipeline, the service and the CLI.

The environment says *where* things are and how the service behaves; the
pipeline's knobs live in ``params.yaml`` (housing.params), which DVC tracks.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# One house as JSON takes about 250 bytes (330 with every number at full precision, 400 indented).
HOUSE_BYTES = 512
BODY_SLACK_BYTES = 64 * 1024


class HousingSettings(BaseSettings):
    """Where the data, the model and the logs are, the service's request limits and its tokens."""

    model_config = SettingsConfigDict(env_prefix="HOUSING_", extra="ignore")

    data_source: str | None = Field(
        default=None, description="URL or path of the raw CSV; overrides params.yaml data.source."
    )
    params_path: Path = Field(default=Path("params.yaml"), description="Path of params.yaml.")
    retrain_reason: str = Field(
        default="", description="Why the pipeline runs; `housing retrain` sets it so each decision records it."
    )

    model_tag: str = Field(
        default="housing-price-model:latest", description="BentoML model store tag of the model to serve."
    )
    prediction_db: Path = Field(
        default=Path("var/predictions.db"),
        description="SQLite prediction log; the pipeline's feedback stage reads its labeled houses.",
    )
    compiled_dir: Path | None = Field(
        default=Path("var/compiled"),
        description="Cache of compiled LightGBM forests (housing.compiled_forest); empty serves the booster only.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL database of the prediction log, feedback and reload coordination, shared by every "
        "replica (postgresql://user:password@host:port/db); unset, the SQLite file prediction_db.",
    )
    database_pool_size: int = Field(
        default=4, gt=0, description="Most PostgreSQL connections each worker process keeps open."
    )
    log_retention_days: float | None = Field(
        default=14.0,
        gt=0,
        description="Days a logged prediction is kept (those with feedback are kept for training); with the edge's "
        "rate limits it bounds what one client can add to the disk (docs/security.md). Unset (empty): forever.",
    )
    log_prune_interval_s: float = Field(
        default=600.0, gt=0, description="How often the background pruner removes predictions past retention."
    )
    follow_champion: bool = Field(
        default=False,
        description="Each replica polls the registry's @champion and serves it when it moves (MLFLOW_TRACKING_URI).",
    )
    champion_poll_s: float = Field(default=10.0, gt=0, description="How often a replica polls the registry's champion.")
    log_dir: Path = Field(default=Path("var/log"), description="Folder of the rotating JSON request logs.")
    log_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Size at which a log file rotates.")
    log_backups: int = Field(default=5, ge=0, description="Rotated log files kept.")
    log_to_stdout: bool = Field(default=False, description="Also print each JSON request line to stdout.")
    max_batch_size: int = Field(default=10_000, gt=0, description="Most houses in one batch request.")
    max_body_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest request body accepted; by default what the largest batch needs "
        f"({HOUSE_BYTES} bytes per house plus {BODY_SLACK_BYTES // 1024} KiB).",
    )
    body_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest a request's body may take to arrive in full; past it the answer is 408 (a client that "
        "sends slowly holds a socket, never a concurrency slot).",
    )
    max_concurrency: int = Field(
        default=128, gt=0, description="Requests each worker process works on at once; past them the answer is 429."
    )
    max_explain_houses: int = Field(
        default=1000,
        gt=0,
        description="Most houses in one /explain request (an exact explanation of one house costs 6-8 ms of a core: "
        "1,000 took at most 2.8 s on this 2-core machine in make bench, 9% of the server's 30 s timeout).",
    )
    explain_concurrency: int = Field(
        default=1,
        gt=0,
        description="Explanations each worker computes at once; past them the answer is 429, so explanations never "
        "take every worker.",
    )
    score_chunk_rows: int = Field(
        default=50_000,
        gt=0,
        description="Rows `housing score` reads, validates, prices and writes at a time: what bounds its memory.",
    )
    writer_batch_size: int = Field(default=500, gt=0, description="Most rows the log writer inserts at once.")
    writer_interval_s: float = Field(default=0.05, gt=0, description="Longest a logged row waits to be written.")
    writer_max_retries: int = Field(
        default=5, ge=0, description="Retries of a failed log write before its rows go to the dead-letter file."
    )
    log_queue_max_mb: int = Field(
        default=256,
        gt=0,
        description="Most memory (MB) a worker gives the rows waiting for the log's database (a full disk, a restart): "
        "at this machine's full load, about four minutes of single-house requests or 75 s of 10,000-house batches.",
    )
    log_full_policy: Literal["queue", "refuse"] = Field(
        default="queue",
        description="While the log cannot store rows: `queue` answers and holds rows in memory up to the bound, then "
        "drops and counts them; `refuse` answers 503 instead, so that no answered request lacks its row.",
    )
    feedback_grace_s: float = Field(
        default=1.0, ge=0, description="How long feedback waits for its prediction to reach the log."
    )
    feedback_waiters: int = Field(
        default=8, gt=0, description="Feedback requests per worker that may wait for their prediction at once."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the /admin endpoints; without one they are disabled."
    )
    feedback_token: SecretStr | None = Field(
        default=None, description="Bearer token of POST /feedback; without one feedback is disabled."
    )
    view_cache_s: float = Field(
        default=2.0, ge=0, description="How long /accuracy, /drift and /model/history answers are reused."
    )
    project_dir: Path = Field(
        default=Path(), description="The DVC project that /admin/retrain and /admin/rollback work in."
    )
    shadow_queue_houses: int = Field(
        default=20_000,
        gt=0,
        description="Most houses a worker holds for its challenger in shadow; past them a request is not shadowed "
        "(counted in housing_shadow_skipped_houses_total), never delayed.",
    )
    shadow_interval_s: float = Field(
        default=0.1, gt=0, description="How often a worker's challenger prices the houses queued for it, at once."
    )
    shadow_batch_houses: int = Field(default=10_000, gt=0, description="Most houses a challenger prices in one call.")
    shadow_compare_houses: int = Field(
        default=200_000, gt=0, description="The latest shadowed houses GET /shadow and `housing shadow` compare."
    )
    reload_poll_s: float = Field(default=1.0, gt=0, description="How often each worker checks for a reload.")
    reload_timeout_s: float = Field(default=60.0, gt=0, description="Longest a reload waits for every worker.")
    worker_max_age_s: float = Field(
        default=10.0, gt=0, description="A worker silent for longer is taken for gone when waiting on a reload."
    )

    @field_validator("admin_token", "feedback_token", "database_url", "compiled_dir", "log_retention_days",
                     mode="before")  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value disables what it enables (a token its role, a cache dir compilation) and an empty
        database URL means SQLite, as unset ones do."""
        return None if value == "" else value

    @property
    def dead_letter_path(self) -> Path:
        """Where log rows that no database took are kept (JSONL), beside the SQLite log whichever store is used."""
        return self.prediction_db.with_name(self.prediction_db.name + ".deadletter.jsonl")

    @property
    def retention_s(self) -> float | None:
        """The prediction log's retention in seconds (None: kept forever)."""
        return None if self.log_retention_days is None else self.log_retention_days * 86_400

    @property
    def body_limit(self) -> int:
        """The request body limit in bytes: the setting, or what ``max_batch_size`` houses need."""
        return self.max_body_bytes or self.max_batch_size * HOUSE_BYTES + BODY_SLACK_BYTES


def variable(field: str) -> str:
    """The environment variable of a settings field: ``prediction_db`` -> ``HOUSING_PREDICTION_DB``."""
    if field not in HousingSettings.model_fields:
        raise KeyError(field)
    return f"{HousingSettings.model_config['env_prefix']}{field.upper()}"


# Tokens stay with the service: no child process (the CLI, DVC, the pipeline) needs them.
SECRET_VARIABLES = (variable("admin_token"), variable("feedback_token"))


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less the service's tokens: the environment to hand a child process."""
    return {key: value for key, value in env.items() if key not in SECRET_VARIABLES}


@lru_cache(maxsize=1)
def settings() -> HousingSettings:
    """The service's settings, read once per process (tests clear the cache to change them)."""
    return HousingSettings()
