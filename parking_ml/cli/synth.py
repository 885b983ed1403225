"""`parking-ml` commands: synth."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

# spelled here so `--help` needs no numpy/cv2 import; tests/unit/test_synth_hard.py checks them against synth's
STYLE_NAMES = ("default", "winter", "dusk", "sensor", "pavers")
HARD_NAMES = ("dark_cars", "long_shadows", "faint_paint", "lot_edge", "roadway_cars", "hatched_zones")


def parse_gsd(text: str) -> float | tuple[float, float]:
    """'0.1' -> 0.1; '0.08-0.3' -> (0.08, 0.3) sampled per site. Metres per pixel."""
    try:
        parts = [float(p) for p in text.replace(",", "-").split("-") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or any(p <= 0 or p > 5 for p in parts):
        raise typer.BadParameter(f"--gsd {text!r}: give metres per pixel, one value (0.1) or a range (0.08-0.3)")
    if len(parts) == 1:
        return parts[0]
    lo, hi = sorted(parts)
    return (lo, hi)


def _upload(out_dir: Path, lake, key: str) -> str:
    """Copy every file under ``out_dir`` to ``key`` in the lake; -> where it went."""
    for f in sorted(out_dir.rglob("*")):
        if f.is_file():
            lake.write_bytes(f"{key}/{f.relative_to(out_dir).as_posix()}", f.read_bytes())
    return lake.uri(key)


# most of its lines declare the typer options
def synth(
    out: str = typer.Option(
        None,
        "--out",
        help="output folder; default: the lake's landing/synth-<seed> (uploaded when the lake is S3)",
    ),
    n: int = typer.Option(64, "--n", min=1, help="number of tiles"),
    seed: int = typer.Option(None, "--seed", help="random seed (default: PARKING_SEED)"),
    size: int = typer.Option(512, "--size", min=32, max=2048, help="tile size in pixels"),
    gsd: str = typer.Option("0.08-0.3", "--gsd", help="metres per pixel: a value or a range sampled per site"),
    style: str = typer.Option(
        "default",
        "--style",
        help=f"domain: {', '.join(STYLE_NAMES)} (shift it on purpose for drift; pavers: a style no shipped "
        "network saw)",
    ),
    hard: str = typer.Option(
        None,
        "--hard",
        help=f"hard cases: one of {', '.join(HARD_NAMES)} on every site, 'none' for none; default: a few sites "
        "in a hundred get each",
    ),
    sites: int = typer.Option(None, "--sites", min=1, help="number of sites (default: ~4 passes per site)"),
    geotiff: bool = typer.Option(False, "--geotiff", help="write GeoTIFF (UTM CRS) + map-coordinate GeoJSON"),
    contact_sheet: Path = typer.Option(
        None, "--contact-sheet", help="also write a PNG of image | label overlay pairs (outside --out)"
    ),
) -> None:
    """Generate synthetic satellite tiles of parking lots with stall labels.

    Writes OUT/<site>/<stem>.png (or .tif), <stem>.mask.png (0 background, 1 free, 2 occupied,
    255 ignore) and <stem>.geojson (stall polygons with status), grouped by site.
    """
    import logging

    from parking_ml.config import load_settings
    from parking_ml.lake import Lake
    from parking_ml.logs import configure_cli_logging
    from parking_ml.synth import generate_dataset, render_contact_sheet

    if style not in STYLE_NAMES:
        raise typer.BadParameter(f"--style {style!r}: choose one of {', '.join(STYLE_NAMES)}")
    if hard is not None and hard not in (*HARD_NAMES, "none"):
        raise typer.BadParameter(f"--hard {hard!r}: choose one of {', '.join(HARD_NAMES)} or none")
    gsd_value = parse_gsd(gsd)
    settings = load_settings()
    # the progress bar is what a person watches: per-site lines go to the log file only
    configure_cli_logging(settings, "synth", console_level="WARNING")
    log = logging.getLogger("parking_ml.synth")
    seed = settings.seed if seed is None else seed
    upload: tuple[Lake, str] | None = None
    tmp = None
    if out is None:
        key = f"landing/synth-{seed}"
        lake = Lake.from_settings(settings)
        if lake.is_local:
            out_dir = lake.local_path(key)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="parking-synth-")
            out_dir = Path(tmp.name)
            upload = (lake, key)
    else:
        out_dir = Path(out)
    try:
        paths = generate_dataset(
            out_dir,
            n=n,
            seed=seed,
            size=size,
            gsd=gsd_value,
            style=style,
            sites=sites,
            geotiff=geotiff,
            progress=True,
            hard=hard,
        )
        if contact_sheet is not None:
            render_contact_sheet(paths[:12], contact_sheet)
            typer.echo(f"contact sheet: {contact_sheet}")
        where = _upload(out_dir, *upload) if upload is not None else str(out_dir)
    finally:
        if tmp is not None:
            tmp.cleanup()
    log.info("synth done", extra={"tiles": len(paths), "out": where, "seed": seed, "style": style, "hard": hard})
    typer.echo(f"wrote {len(paths)} tiles to {where}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("synth")(synth)
