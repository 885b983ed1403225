"""MLflow registry helpers: log a model package as a pyfunc version, and read/move aliases.

MLflow 3 registry aliases only (`challenger`, `champion`); stages are never used. Every function takes the
Settings it needs and talks to settings.mlflow_tracking_uri explicitly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from parking_ml.config import Settings
from parking_ml.model.package import MODEL_FILE, PREPROCESS_FILE, REFERENCE_FILE

logger = logging.getLogger(__name__)

PYFUNC_ENTRY = Path(__file__).with_name("onnx_pyfunc.py")
MODEL_ARTIFACT = "model"
HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str
    model_uri: str


def client(settings: Settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "onnxruntime", "numpy", "pandas"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _tag_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def log_and_register(
    package_dir: str | Path,
    settings: Settings,
    tags: dict,
    alias: str | None = "challenger",
    run_id: str | None = None,
) -> ModelVersionInfo:
    """Log package_dir as a pyfunc model (ONNX + preprocess + reference as artifacts) and register it.

    Logs into run_id when given (else into the active run, else a new run), registers a version of
    settings.model_name, sets tags on the version and points alias at it.
    """
    import mlflow

    package_dir = Path(package_dir)
    for name in (MODEL_FILE, PREPROCESS_FILE):
        if not (package_dir / name).is_file():
            raise FileNotFoundError(f"{package_dir / name} is missing; build the package with build_package()")
    artifacts = {
        "model_onnx": str(package_dir / MODEL_FILE),
        "preprocess": str(package_dir / PREPROCESS_FILE),
    }
    if (package_dir / REFERENCE_FILE).is_file():
        artifacts["reference_features"] = str(package_dir / REFERENCE_FILE)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    active = mlflow.active_run()
    if active is not None and run_id in (None, active.info.run_id):
        ctx = None
    else:
        ctx = mlflow.start_run(run_id=run_id, nested=active is not None)
    try:
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_ENTRY),
            artifacts=artifacts,
            pip_requirements=_requirements(),
            registered_model_name=settings.model_name,
            await_registration_for=60,
        )
        used_run = mlflow.active_run().info.run_id
    finally:
        if ctx is not None:
            mlflow.end_run()
    version = str(info.registered_model_version)
    mc = client(settings)
    for key, value in tags.items():
        mc.set_model_version_tag(settings.model_name, version, key, _tag_value(value))
    if alias:
        mc.set_registered_model_alias(settings.model_name, alias, version)
    out = ModelVersionInfo(settings.model_name, version, used_run, f"models:/{settings.model_name}/{version}")
    logger.info("registered model version", extra={"model": out.name, "version": version, "alias": alias})
    return out


def get_alias_version(settings: Settings, alias: str):
    """The ModelVersion the alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def get_version(settings: Settings, version: str | int):
    return client(settings).get_model_version(settings.model_name, str(version))


def set_alias(settings: Settings, alias: str, version: str | int) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, str(version))


def set_version_tags(settings: Settings, version: str | int, tags: dict) -> None:
    mc = client(settings)
    for key, value in tags.items():
        mc.set_model_version_tag(settings.model_name, str(version), key, _tag_value(value))


def champion_history(settings: Settings) -> list[dict]:
    """Past champion moves, oldest first: [{"version", "previous", "reason", "at"}]."""
    model = client(settings).get_registered_model(settings.model_name)
    raw = (model.tags or {}).get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def record_champion_move(settings: Settings, entry: dict) -> None:
    history = [*champion_history(settings), entry]
    # tag values are limited in size: the last 50 moves are plenty to roll back through
    client(settings).set_registered_model_tag(settings.model_name, HISTORY_TAG, json.dumps(history[-50:]))
