"""`parking-ml drift`: one drift report of the served model's live rows against its reference."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def drift(
    since: Annotated[
        str | None,
        typer.Option(help="window start, ISO time, UTC (default: PARKING_DRIFT_WINDOW_HOURS before --until)"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="window end, ISO time in UTC (default: now)")] = None,
    model_version: Annotated[
        str | None,
        typer.Option(help="compare this version's rows with its reference (default: the version the API serves)"),
    ] = None,
) -> None:
    """Build an Evidently drift report and store it under monitoring/reports/ in the lake.

    Prints the summary as JSON. Exit code 0 for ok and not_enough_data, 3 when drift is found.
    """
    from monitoring.run import DriftInputError, run_drift
    from parking_ml.config import load_settings

    try:
        summary = run_drift(load_settings(), since=since, until=until, model_version=model_version)
    except DriftInputError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    brief = {k: v for k, v in summary.items() if k != "features"}
    typer.echo(json.dumps(brief, indent=2, sort_keys=True, default=str))
    if summary["verdict"] == "drift":
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("drift")(drift)
