"""The knobs of the parking DAGs as typed Airflow Params (the trigger form in the UI, `conf` in the REST API).

An empty value (null) means "the setting": the task's own Settings (env PARKING_*) at run time, so a scheduled
run and a run triggered with the defaults behave the same. The current value of each setting is shown in the
description, read when the DAG file is parsed (informational only). Airflow validates the values against the
JSON schema of each Param before it creates the run; the tasks turn them into plain arguments and Settings
overrides with `overrides()`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

PROFILES = ["smoke", "demo", "full"]
# landing batch names are folder names: no slash, nothing a shell or a URL would mangle
BATCH_PATTERN = r"^[A-Za-z0-9._=-]*$"


def _current(field: str) -> str:
    """`now: <value>` of a setting where the environment builds valid Settings, else nothing."""
    from parking_ml.config import SettingsError, load_settings

    try:
        value = getattr(load_settings(), field)
    except SettingsError:
        return ""
    return f" (now: {'unset' if value is None else value})"


def ingest_params() -> dict[str, Param]:
    return {
        "batch": Param(
            None,
            # null, not "": the trigger form sends an emptied text field as null
            type=["null", "string"],
            pattern=BATCH_PATTERN,
            maxLength=200,
            title="Landing batch",
            description="Ingest only the landing batches whose name starts with this (a whole name picks that "
            "batch, e.g. demo-7; 2026-12- picks every December batch). Empty: every batch under landing/.",
        ),
    }


def preprocess_params() -> dict[str, Param]:
    return {
        "tile_size": Param(
            None,
            type=["null", "integer"],
            minimum=64,
            maximum=4096,
            title="Tile size (px)",
            description="Side of the square training tiles. Empty: PARKING_TILE_SIZE" + _current("tile_size"),
        ),
        "tile_overlap": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=2048,
            title="Tile overlap (px)",
            description="Pixels shared by neighbouring tiles. Empty: PARKING_TILE_OVERLAP" + _current("tile_overlap"),
        ),
        "folds": Param(
            None,
            type=["null", "integer"],
            minimum=2,
            maximum=20,
            title="Cross-validation folds",
            description="Site-grouped folds. Empty: PARKING_FOLDS" + _current("folds"),
        ),
    }


def train_params() -> dict[str, Param]:
    return {
        "profile": Param(
            None,
            type=["null", "string"],
            enum=[None, *PROFILES],
            values_display={
                None: "the setting (PARKING_PROFILE)",
                "smoke": "smoke: tests, seconds",
                "demo": "demo: 2 CPU cores, minutes",
                "full": "full: a GPU, hours",
            },
            title="Training profile",
            description="Budget: smoke (tests, seconds), demo (2 CPU cores, minutes), full (GPU). "
            "Empty: PARKING_PROFILE" + _current("profile"),
        ),
        "n_trials": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1000,
            title="Optuna trials",
            description="Trials of the CV study (a stored study resumes: only the missing ones run). "
            "Empty: PARKING_N_TRIALS, else the profile's" + _current("n_trials"),
        ),
        "init_weights": Param(
            None,
            type=["null", "string"],
            minLength=1,
            maxLength=1000,
            title="Starting weights",
            description="A state-dict file of the profile's network that the folds and the final fit start from "
            "(a path the workers can read), or none for a new network. Empty: PARKING_INIT_WEIGHTS, else the "
            "profile's shipped file" + _current("init_weights"),
        ),
    }


def promote_params() -> dict[str, Param]:
    return {
        "margin": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Promotion margin",
            section="The gate",
            description="How much the challenger's primary metric must beat the champion's by. "
            "Empty: PARKING_PROMOTION_MARGIN" + _current("promotion_margin"),
        ),
        "force_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Force this version to champion",
            section="Or skip the gate",
            description="Skip the gate and make this model version the champion, as "
            "`parking-ml model promote --version N --reason ...` does (recorded with the reason; "
            "`parking-ml model rollback` undoes it). Empty: run the gate.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=5000,
            title="Reason (with a forced version)",
            section="Or skip the gate",
            description="Why the version is forced; required with 'Force this version', recorded in the registry.",
        ),
    }


def overrides(params: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """Settings overrides from a run's params: {setting field: value} for each param (fields: param -> field)
    that is set; empty ones leave the setting as it is."""
    return {field: params[name] for name, field in fields.items() if params.get(name) is not None}


def forced_promotion(params: dict[str, Any]) -> tuple[int, str] | None:
    """(version, reason) when the run forces a version; a reason without a version, or the reverse, is an error
    that says which field to fill."""
    version, reason = params.get("force_version"), (params.get("reason") or "").strip()
    if version is None:
        if reason:
            raise ValueError("'reason' is only used with 'force_version': give the version to force, or clear it")
        return None
    if not reason:
        raise ValueError(f"forcing v{version} to champion needs a 'reason' (it is recorded in the registry)")
    return int(version), reason
