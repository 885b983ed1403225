"""`parking-ml` commands: ingest, preprocess."""

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


def ingest(
    batch: Annotated[
        list[str] | None, typer.Option("--batch", help="landing batch to ingest (repeatable; default: all)")
    ] = None,
    all_batches: Annotated[bool, typer.Option("--all", help="ingest every batch under landing/ (the default)")] = False,
    max_pixels: Annotated[
        int | None, typer.Option(min=1, help="refuse larger images (default PARKING_MAX_PIXELS)")
    ] = None,
    settle_s: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="leave an annotation without its image (or an image without an annotation) in landing until it "
            "is this many seconds old; 0 quarantines it at once (default PARKING_INGEST_SETTLE_S, 900)",
        ),
    ] = None,
) -> None:
    """Validate landing/<batch>/<site>/ files and move what is usable into raw/ (content-addressed).

    Rejected files are copied to quarantine/<batch>/ with a reason and a fix in reasons.jsonl; landing files are
    left in place. Re-running is safe: files already ingested or quarantined are skipped. Prints a JSON summary.
    """
    from parking_ml.data.ingest import ingest as run_ingest
    from parking_ml.lake import Lake
    from parking_ml.model.gsd_estimator import ShippedGsdEstimator

    if batch and all_batches:
        raise typer.BadParameter("give --batch NAME or --all, not both")
    settings = _settings(max_pixels=max_pixels, ingest_settle_s=settle_s)
    try:
        summary = run_ingest(
            Lake.from_settings(settings),
            batch or None,
            settings.max_pixels,
            progress=True,
            settle_s=settings.ingest_settle_s,
            gsd_estimator=ShippedGsdEstimator() if settings.gsd_estimate else None,
        )
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))


def preprocess(
    tile_size: Annotated[int | None, typer.Option(min=64, help="tile side in px (default PARKING_TILE_SIZE)")] = None,
    tile_overlap: Annotated[
        int | None, typer.Option(min=0, help="overlap between tiles in px (default PARKING_TILE_OVERLAP)")
    ] = None,
    target_gsd: Annotated[
        float | None, typer.Option(min=0.001, help="resample to this m/px (default PARKING_TARGET_GSD: none)")
    ] = None,
    folds: Annotated[int | None, typer.Option(min=2, help="CV folds grouped by site (default PARKING_FOLDS)")] = None,
    batches: Annotated[
        str | None,
        typer.Option(
            help="only these landing batches (comma-separated names or patterns, e.g. 'mylots*'): your own lots "
            "then make the training folds and the holdout the gate scores on (default PARKING_DATA_BATCHES: all)"
        ),
    ] = None,
) -> None:
    """Tile raw/ images into processed/<version>/ with site-grouped folds and a frozen holdout.

    The version is a hash of the raw images, their labels and these settings: the same inputs give the same
    version and nothing is rewritten. processed/LATEST names the newest version. Prints a JSON summary.
    """
    from parking_ml.data.preprocess import TilingConfig
    from parking_ml.data.preprocess import preprocess as run_preprocess
    from parking_ml.lake import Lake

    settings = _settings(
        tile_size=tile_size, tile_overlap=tile_overlap, target_gsd=target_gsd, folds=folds, data_batches=batches
    )
    try:
        config = TilingConfig.from_settings(settings)
        summary = run_preprocess(Lake.from_settings(settings), config, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("ingest")(ingest)
    app.command("preprocess")(preprocess)
