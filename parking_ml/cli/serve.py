"""`parking-ml` commands: serve, predict."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

import typer


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    tmp.replace(path)


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default PARKING_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default PARKING_API_PORT, 8000)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes, each with its own model")] = 1,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="serve this model package folder (model.onnx + preprocess.json) instead of the registry"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the inference API (FastAPI + uvicorn).

    Serves models:/$PARKING_MODEL_NAME@$PARKING_MODEL_ALIAS from MLflow and follows the alias (hot reload),
    or a local model folder with --model-dir. Health: /healthz, readiness: /readyz, metrics: /metrics.
    """
    from parking_ml.config import load_settings
    from serving.server import run_server

    if model_dir is not None:
        if not model_dir.is_dir():
            raise typer.BadParameter(f"{model_dir} is not a folder", param_hint="--model-dir")
        # workers are separate processes that build their settings from the environment
        os.environ["PARKING_MODEL_DIR"] = str(model_dir.resolve())
    settings = load_settings()
    run_server(host or settings.host, port or settings.api_port, workers, log_level, settings.log_format == "json")


# 45 of its lines declare the typer options; the work is in the helpers below
def predict(
    images: Annotated[
        list[str], typer.Argument(help="raster file(s), folder(s) or glob(s): GeoTIFF/COG of any size, PNG, JPEG")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="folder for each raster's <stem>.mask.tif, .spaces.parquet, .spaces.geojson"),
    ] = None,
    lots: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="lot outlines (GeoJSON or GeoParquet, property lot_id): per-lot occupancy, appended to the "
            "lake's predictions/occupancy.parquet",
        ),
    ] = None,
    geojson: Annotated[
        Path | None,
        typer.Option(help="one image: write the spaces as GeoJSON (EPSG:4326 when georeferenced, else pixels)"),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(help="one image: write the class mask (0/1/2): PNG, or GeoTIFF for a .tif/.tiff name"),
    ] = None,
    model_dir: Annotated[Path | None, typer.Option(help="local model package folder")] = None,
    model_uri: Annotated[
        str | None, typer.Option(help="MLflow model URI, e.g. models:/parking-spaces@champion (the default)")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads (default PARKING_THREADS)")] = None,
    gsd: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="ground resolution in m/px for an image that carries none (a GeoTIFF's own wins; "
            "default: estimated from the stalls' sizes (PARKING_GSD_ESTIMATE), else the model's typical one)",
        ),
    ] = None,
) -> None:
    """Find parking spaces in images of any size with the same core as the API, without a server.

    Rasters are read and predicted block by block, so memory does not grow with the raster."""
    from rich.console import Console

    from parking_ml.config import load_settings
    from parking_ml.data.images import ImageError
    from parking_ml.inference import OnnxSegmenter
    from parking_ml.raster.inputs import InputError, expand_inputs
    from parking_ml.raster.occupancy import LotsError, read_lots_file
    from parking_ml.raster.source import RasterError

    if model_dir is not None and model_uri is not None:
        raise typer.BadParameter("give --model-dir or --model-uri, not both")
    console = Console(stderr=True)
    settings = load_settings()
    try:
        paths = expand_inputs(images)
        for path in paths:
            _check_signature(path)
        lot_outlines = read_lots_file(lots) if lots is not None else None
    except (InputError, LotsError) as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    except ImageError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from None
    if (geojson is not None or mask is not None) and len(paths) > 1:
        raise typer.BadParameter(f"--geojson and --mask take one image, got {len(paths)}; use --out DIR")

    with tempfile.TemporaryDirectory(prefix="parking-predict-") as tmp:
        source, version = _model_source(settings, model_dir, model_uri, Path(tmp), console)
        try:
            segmenter = OnnxSegmenter.from_dir(source, threads=threads or settings.threads, tta=settings.serving_tta)
        except FileNotFoundError as exc:
            console.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(2) from None
        try:
            work = out or Path(tmp) / "out"
            results = [_predict_one(segmenter, p, work, gsd, settings.gsd_estimate, console) for p in paths]
            _print_results(results)
            if lot_outlines is not None:
                _occupancy(settings, lot_outlines, results, version, console)
        except (RasterError, LotsError) as exc:
            console.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(2) from None
        if geojson is not None:
            fc = json.loads(results[0][2].spaces_geojson.read_bytes())
            # foreign members of the FeatureCollection: what the API answers beside its spaces
            quality = results[0][4]
            fc.update(gsd=quality["gsd"], gsd_source=quality["gsd_source"], quality=quality)
            _atomic_write(geojson, json.dumps(fc).encode())
            console.print(f"wrote {geojson}")
        if mask is not None:
            _copy_mask(results[0][2].mask, mask)
            console.print(f"wrote {mask}")


def _check_signature(path: Path) -> None:
    from parking_ml.data.images import probe_image, sniff_format

    with open(path, "rb") as fh:
        head = fh.read(64)
    if sniff_format(head) is None:
        probe_image(head, path.name)  # raises the API's error (empty / unsupported_type) for it


def _model_source(settings, model_dir, model_uri, tmp: Path, console) -> tuple[Path, str]:
    """(package folder, the model version it is): a registry alias is resolved to its version first, so
    every raster of the call runs the same model even if the alias moves meanwhile."""
    source = model_dir or (None if model_uri else settings.model_dir)
    if source is not None:
        return Path(source), f"dir:{Path(source).resolve().name}"
    from parking_ml.model.package import download_package
    from serving.server import mlflow_client_defaults

    mlflow_client_defaults()
    uri = model_uri or f"models:/{settings.model_name}@{settings.model_alias}"
    console.print(f"fetching {uri} from {settings.mlflow_tracking_uri}")
    try:
        uri, version = _pin_version(settings, uri)
        return download_package(uri, tmp / "model", tracking_uri=settings.mlflow_tracking_uri), version
    except Exception as exc:
        console.print(f"[red]error[/red]: could not fetch {uri}: {exc}\n(use --model-dir DIR offline)")
        raise typer.Exit(2) from None


def _pin_version(settings, uri: str) -> tuple[str, str]:
    """models:/name@alias -> (models:/name/<version>, version); other URIs as they are."""
    if not (uri.startswith("models:/") and "@" in uri):
        return uri, uri.removeprefix("models:/").rsplit("/", 1)[-1] if uri.startswith("models:/") else uri
    from mlflow import MlflowClient

    name, alias = uri.removeprefix("models:/").split("@", 1)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    version = str(client.get_model_version_by_alias(name, alias).version)
    return f"models:/{name}/{version}", version


def _predict_one(segmenter, path: Path, out_dir: Path, gsd: float | None, estimate: bool, console):
    """One raster streamed block by block at the gsd resolved as the API resolves it: its georeference, the
    request's, an estimate from a plain image's stalls, or the package's default (docs/gsd.md)."""
    from rich.progress import Progress

    from parking_ml.raster.stream import Outputs, predict_raster, raster_header

    info = raster_header(path)
    choice = _gsd_choice(segmenter, path, info.gsd, gsd, estimate)
    outputs = Outputs.beside(out_dir, path.stem)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"predicting {path.name}", total=None)
        summary = predict_raster(
            segmenter, path, outputs, gsd=choice.gsd, progress=lambda d, t: progress.update(task, completed=d, total=t)
        )
    if choice.estimate is not None:
        summary.timings_ms["gsd_estimate_ms"] = round(choice.estimate.elapsed_ms, 2)
    return path, info, outputs, summary, _quality(outputs, summary, choice)


def _gsd_choice(segmenter, path: Path, georeference: float | None, request: float | None, estimate: bool):
    from parking_ml.inference.gsd import resolve_gsd

    if georeference or request or not estimate:
        return resolve_gsd(segmenter, None, georeference, request, estimate=False)
    from parking_ml.data.images import read_image

    # only a plain image (no georeference) is estimated: such images are read whole, as the API reads them
    return resolve_gsd(segmenter, read_image(path.read_bytes(), path.name).rgb, estimate=True)


def _quality(outputs, summary, choice) -> dict:
    """The API's `quality` block for a streamed raster (parking_ml.inference.quality, from the block counts)."""
    import pandas as pd

    confidences = pd.read_parquet(outputs.spaces_parquet, columns=["confidence"])["confidence"]
    return {
        "gsd": choice.gsd,
        "gsd_source": choice.source,
        "estimated_gsd": choice.estimate.gsd if choice.estimate is not None else None,
        "estimate_spaces": choice.estimate.spaces if choice.estimate is not None else None,
        "no_structure_share": round(summary.background_px / max(1, summary.valid_px), 4),
        "mean_confidence": round(float(summary.mean_confidence), 4),
        "mean_space_confidence": round(float(confidences.mean()), 4) if len(confidences) else None,
    }


def _print_results(results) -> None:
    from rich.console import Console
    from rich.table import Table

    def rate(s) -> str:
        return "n/a" if s.occupancy_rate is None else f"{s.occupancy_rate:.1%}"

    if len(results) == 1:
        path, info, _, s, quality = results[0]
        table = Table(title=f"{path.name} ({info.width}x{info.height} px)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for label, value in (
            ("free spaces", str(s.free)),
            ("occupied spaces", str(s.occupied)),
            ("occupancy", rate(s)),
            ("mean confidence", f"{s.mean_confidence:.3f}"),
            ("gsd (m/px)", "n/a" if quality["gsd"] is None else f"{quality['gsd']:.4f}"),
            ("gsd source", quality["gsd_source"]),
            ("no-structure share", f"{quality['no_structure_share']:.3f}"),
            ("blocks", str(s.blocks)),
            ("seconds", f"{s.timings_ms['total_ms'] / 1000:.1f}"),
        ):
            table.add_row(label, value)
    else:
        table = Table(title="parking spaces")
        for col in ("raster", "px", "free", "occupied", "occupancy", "confidence", "s"):
            table.add_column(col, justify="left" if col == "raster" else "right")
        for path, info, _, s, _ in results:
            table.add_row(
                path.name, f"{info.width}x{info.height}", str(s.free), str(s.occupied), rate(s),
                f"{s.mean_confidence:.3f}", f"{s.timings_ms['total_ms'] / 1000:.1f}",
            )  # fmt: skip
    Console().print(table)


def _occupancy(settings, lot_outlines, results, version: str, console) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from parking_ml.lake import Lake
    from parking_ml.raster.inputs import pass_time
    from parking_ml.raster.occupancy import OCCUPANCY_KEY, lot_rows, upsert_occupancy

    frames = []
    for path, info, outputs, _, _ in results:
        spaces = pd.read_parquet(outputs.spaces_parquet, columns=["x", "y", "status"])
        frames.append(lot_rows(lot_outlines, spaces, info, pass_time(info, path), version))
    rows = pd.concat(frames, ignore_index=True)
    lake = Lake.from_settings(settings)
    upsert_occupancy(lake, rows)
    table = Table(title="occupancy per lot")
    for col in ("lot", "raster", "image time", "free", "occupied", "capacity seen", "occupancy"):
        table.add_column(col)
    for r in rows.itertuples(index=False):
        rate = "n/a" if pd.isna(r.occupancy_rate) else f"{r.occupancy_rate:.1%}"
        table.add_row(r.lot_id, r.raster, str(r.image_time), str(r.free), str(r.occupied), str(r.capacity_seen), rate)
    Console().print(table)
    console.print(f"{len(rows)} lot rows written to {lake.uri(OCCUPANCY_KEY)}")


def _copy_mask(streamed: Path, dst: Path) -> None:
    import shutil

    if dst.suffix.lower() in (".tif", ".tiff"):
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(streamed, tmp)
        tmp.replace(dst)
        return
    import rasterio

    from parking_ml.data.images import encode_png

    with rasterio.open(streamed) as ds:
        _atomic_write(dst, encode_png(ds.read(1)))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve")(serve)
    app.command("predict")(predict)
