"""`parking-ml` commands: train, promote, model promote|rollback."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def _settings(**overrides: object):
    from parking_ml.config import load_settings
    from parking_ml.logs import configure_cli_logging

    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_cli_logging(settings, "cli")
    return settings


def _echo(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def train(
    n_trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials (default: the profile's)")] = None,
    profile: Annotated[str | None, typer.Option(help="smoke, demo or full (default PARKING_PROFILE)")] = None,
    dataset_version: Annotated[
        str | None, typer.Option(help="processed dataset version (default: processed/LATEST)")
    ] = None,
) -> None:
    """Tune on site-grouped CV folds (Optuna), fit on all training folds, register the `challenger`.

    Rerunning resumes the stored study (PARKING_OPTUNA_STORAGE): finished trials are not repeated.
    Runs are tracked in MLflow (MLFLOW_TRACKING_URI): study -> trials -> folds, plus a final-fit run.
    """
    from parking_ml.model.final_fit import run_training

    settings = _settings(profile=profile)
    _echo(run_training(settings, n_trials=n_trials, dataset_version=dataset_version))


def promote() -> None:
    """Gate the `challenger` against the `champion` on the frozen holdout; move `champion` only if better.

    Primary metric PARKING_OBJECTIVE_METRIC must beat the champion by PARKING_PROMOTION_MARGIN, guard metrics
    may not regress beyond PARKING_PROMOTION_TOLERANCE; a first model needs PARKING_PROMOTION_MIN_QUALITY.
    """
    from parking_ml.model.promote import run_promotion

    decision = run_promotion(_settings())
    _echo(decision)


model_app = typer.Typer(help="Operate the registered model's aliases by hand.", no_args_is_help=True)


@model_app.command("promote")
def model_promote(
    version: Annotated[int, typer.Option("--version", min=1, help="model version to make champion")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")],
) -> None:
    """Make version N the `champion` without the gate (an operator's decision, recorded with its reason)."""
    from parking_ml.model.promote import manual_promote

    _echo(manual_promote(_settings(), version, reason))


@model_app.command("rollback")
def model_rollback(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")] = "manual rollback",
) -> None:
    """Point `champion` back at the version it replaced (repeat to walk further back)."""
    from parking_ml.model.promote import rollback

    _echo(rollback(_settings(), reason))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train)
    app.command("promote")(promote)
    app.add_typer(model_app, name="model")
