"""One typed settings object for every part of parking-ml.

Read once at an entry point (CLI command, app factory, DAG task) with ``Settings()`` and passed down;
library code never reads the environment itself. Env prefix ``PARKING_``; ``MLFLOW_TRACKING_URI`` keeps
MLflow's own name so the MLflow client and we agree on one variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Profile = Literal["smoke", "demo", "full"]

# Values people leave in example files; never acceptable as a production secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "secret",
        "password",
        "admin",
        "example",
        "test",
        "xxx",
        "todo",
        "minioadmin",
    }
)


class SettingsError(ValueError):
    """Settings could not be built; the message names the variable and the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARKING_", extra="ignore", frozen=True, populate_by_name=True)

    # --- where things live -------------------------------------------------------------------------
    env: Literal["local", "production"] = Field(
        "local", description="'production' refuses placeholder secrets and requires API keys"
    )
    home: Path = Field(Path("var"), description="local state root: lake, logs, airflow home, mlflow db")
    lake_url: str = Field("", description="object store root; default file://$PARKING_HOME/lake")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    aws_conn_id: str = Field("parking_s3", description="Airflow connection id used by DAGs for the lake")

    # --- MLflow / registry -------------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        "",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "PARKING_MLFLOW_TRACKING_URI"),
        description="MLflow server; default http://127.0.0.1:$PARKING_MLFLOW_PORT",
    )
    model_name: str = Field("parking-spaces", min_length=1)
    model_alias: str = Field("champion", min_length=1, description="alias the API serves")
    challenger_alias: str = Field("challenger", min_length=1)

    # --- training ----------------------------------------------------------------------------------
    profile: Profile = "demo"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(2, ge=1, le=256, description="torch / onnxruntime intra-op threads")
    # training only (serving runs the fp32 ONNX graph): "auto" where the CPU computes bf16 in hardware
    # (train.CPU_BF16_PROBES): docs/experiments/cpu-bf16.md
    cpu_bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast when training on CPU: auto (where bf16 runs in hardware), on, off"
    )
    folds: int = Field(3, ge=2, le=20)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    tile_size: int = Field(256, ge=64, le=4096)
    tile_overlap: int = Field(32, ge=0)
    target_gsd: float | None = Field(None, gt=0.0, description="resample to this m/px in preprocess")
    data_batches: str = Field(
        "",
        description="comma-separated landing batch names (or fnmatch patterns) preprocess builds the dataset "
        "from, e.g. 'mylots*' to train and gate on your own batch only; empty: every ingested batch",
    )
    model_gsd: float | None = Field(
        None, gt=0.0, description="m/px the network works at (default: the profile's); imagery is resampled to it"
    )
    optuna_storage: str = Field("", description="Optuna study DB; default sqlite:///$PARKING_HOME/optuna.db")
    optuna_heartbeat_s: int = Field(
        30,
        ge=1,
        description="on a server study DB (PostgreSQL), seconds between a running trial's heartbeats; a trial "
        "silent for 3 beats (its machine died) is failed and re-queued by the next process that tunes the study",
    )
    encoder_weights: str | None = Field(
        None, description="None, 'imagenet' (needs internet) or a local weights file path"
    )
    init_weights: str | None = Field(
        None,
        description="a whole network's weights (a state-dict file of the profile's network, e.g. an earlier fit's "
        "network.pt) that the CV folds and the final fit start from; 'none': a new network; unset: the profile's "
        "(demo: parking_ml/weights/demo-synthetic.pt)",
    )
    promotion_margin: float = Field(0.005, ge=0.0, description="challenger must beat champion by this")
    promotion_tolerance: float = Field(0.02, ge=0.0, description="allowed regression of guard metrics")
    promotion_min_quality: float = Field(0.5, ge=0.0, le=1.0, description="bar for the first champion")
    objective_metric: Literal["free_f1", "iou_free", "miou", "space_f1"] = Field(
        "free_f1", description="metric the CV tuning maximises and the promotion gate compares"
    )
    n_trials: int | None = Field(None, ge=1, description="Optuna trials; default from the profile")
    tile_cache_mb: int = Field(
        4096, ge=0, description="memory for decoded training tiles shared by folds, trials and the final fit (0: none)"
    )

    # --- local stack / ports -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    mlflow_port: int = Field(5000, ge=1, le=65535)
    airflow_port: int = Field(8080, ge=1, le=65535)
    api_port: int = Field(8000, ge=1, le=65535)

    # --- serving -----------------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated keys accepted in X-API-Key"
    )
    model_dir: Path | None = Field(None, description="serve a local model directory instead of the registry")
    reload_interval_s: float = Field(30.0, gt=0.0)
    gsd_estimate: bool = Field(
        True,
        description="estimate the ground resolution of an image that carries none (no georeference, no ?gsd=) from "
        "the sizes of the stalls the model finds (parking_ml.inference.gsd); false: assume the model's default",
    )
    tta: Literal["model", "none", "flip", "dihedral"] = Field(
        "model",
        description="test-time augmentation when serving: the model package's choice, or none (8x fewer network "
        "passes than dihedral), flip or dihedral",
    )
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_pixels: int = Field(100_000_000, gt=0, description="refuse images above this before decoding")
    ingest_settle_s: float = Field(
        900.0,
        ge=0.0,
        description="ingest leaves an annotation without its image (or an image without an annotation) in landing "
        "until it is this old, since its partner may still be uploading; 0 quarantines it at once",
    )
    max_concurrency: int = Field(2, ge=1, description="inferences running at once; more get 503")
    max_queue: int = Field(8, ge=0, description="requests allowed to wait for an inference slot")
    drift_flush_rows: int = Field(256, ge=1)
    drift_flush_interval_s: float = Field(30.0, gt=0.0)
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="API log level")
    log_format: Literal["console", "json"] = Field(
        "console",
        description="console: short lines for people on stderr (JSON lines go to $PARKING_HOME/logs/<command>.log); "
        "json: JSON lines on stderr too (containers, log shippers)",
    )

    # --- monitoring (drift) ------------------------------------------------------------------------
    drift_min_rows: int = Field(
        100, ge=2, description="live rows a drift report needs; fewer give verdict not_enough_data, never an alarm"
    )
    drift_window_hours: float = Field(24.0, gt=0.0, description="default drift window: the hours before now")
    retrain_on_drift: bool = Field(
        False, description="parking_train also runs on the parking_drift_detected asset event (retrain on drift)"
    )
    alert_webhook: str | None = Field(
        None, description="URL that gets a JSON POST with the summary of each drift report that finds drift"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("lake_url", mode="after")
    @classmethod
    def _lake_scheme(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://", "memory://")):
            raise ValueError("must start with file://, s3:// or memory:// (e.g. s3://bucket/prefix)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _derive_and_guard(self) -> Settings:
        # frozen model: derived defaults are set through object.__setattr__ once, here
        if not self.lake_url:
            object.__setattr__(self, "lake_url", f"file://{self.home / 'lake'}")
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"http://{self.host}:{self.mlflow_port}")
        if not self.optuna_storage:
            object.__setattr__(self, "optuna_storage", f"sqlite:///{self.home / 'optuna.db'}")
        if self.env == "production":
            if not self.api_keys:
                raise ValueError("PARKING_API_KEYS must be set in production (comma-separated keys)")
            bad = [k for k in self.api_keys if k.lower() in PLACEHOLDER_SECRETS or len(k) < 16]
            if bad:
                raise ValueError(
                    "PARKING_API_KEYS holds a placeholder or short key; use random keys of 16+ characters "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
                )
            secret = self.s3_secret_access_key
            if secret is not None and secret.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                raise ValueError("PARKING_S3_SECRET_ACCESS_KEY is a placeholder; set the real secret")
        return self

    # --- derived locations (pure functions of the fields) -----------------------------------------
    @property
    def var_dir(self) -> Path:
        return self.home

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def serving_tta(self) -> str | None:
        """The test-time augmentation to serve with: None keeps the model package's own."""
        return None if self.tta == "model" else self.tta

    @property
    def is_local_lake(self) -> bool:
        return self.lake_url.startswith("file://")

    def storage_options(self) -> dict:
        """fsspec options for the lake (s3fs: endpoint and keys when set)."""
        if not self.lake_url.startswith("s3://"):
            return {}
        opts: dict = {}
        if self.s3_endpoint_url:
            opts["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if self.s3_access_key_id and self.s3_secret_access_key:
            opts["key"] = self.s3_access_key_id.get_secret_value()
            opts["secret"] = self.s3_secret_access_key.get_secret_value()
        return opts


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment, turning pydantic's errors into one readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:
                # model-level checks see every field, secrets included: never echo their input
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            var = "MLFLOW_TRACKING_URI" if field == "MLFLOW_TRACKING_URI" else f"PARKING_{field.upper()}"
            secret = any(w in field for w in ("key", "secret", "password", "token"))
            got = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"{var}: {err['msg']}{got}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
