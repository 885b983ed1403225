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


def _load_segmenter(console, settings, model_dir: Path | None, model_uri: str | None, tmp: Path, threads: int):
    """The package of --model-dir, else of --model-uri (or the settings' model) fetched into ``tmp``, loaded;
    typer.Exit(2) with the reason when it cannot be."""
    from parking_ml.inference import OnnxSegmenter

    source = model_dir or (None if model_uri else settings.model_dir)
    if source is None:
        from parking_ml.model.package import download_package
        from serving.server import mlflow_client_defaults

        mlflow_client_defaults()
        uri = model_uri or f"models:/{settings.model_name}@{settings.model_alias}"
        console.print(f"fetching {uri} from {settings.mlflow_tracking_uri}")
        try:
            source = download_package(uri, tmp / "model", tracking_uri=settings.mlflow_tracking_uri)
        except Exception as exc:
            console.print(f"[red]error[/red]: could not fetch {uri}: {exc}\n(use --model-dir DIR offline)")
            raise typer.Exit(2) from None
    try:
        return OnnxSegmenter.from_dir(source, threads=threads, tta=settings.serving_tta)
    except FileNotFoundError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None


def _summary_table(title: str, pred):
    """The counts, occupancy, confidence and stage timings of a prediction as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rate = "n/a" if pred.occupancy_rate is None else f"{pred.occupancy_rate:.1%}"
    for label, value in (
        ("free spaces", str(pred.free_count)),
        ("occupied spaces", str(pred.occupied_count)),
        ("occupancy", rate),
        ("mean confidence", f"{pred.mean_confidence:.3f}"),
        *((k.removesuffix("_ms") + " ms", f"{v:.1f}") for k, v in pred.timings_ms.items()),
    ):
        table.add_row(label, value)
    return table


def predict(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="PNG, JPEG or (Geo)TIFF")],
    geojson: Annotated[
        Path | None,
        typer.Option(help="write the spaces as GeoJSON (EPSG:4326 for a GeoTIFF, pixel coordinates otherwise)"),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(help="write the class mask (0/1/2): PNG, or a GeoTIFF when the name ends in .tif/.tiff"),
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
            "default: the model's typical training resolution)",
        ),
    ] = None,
) -> None:
    """Find parking spaces in one image with the same core as the API, without a server."""
    from rich.console import Console
    from rich.progress import Progress

    from parking_ml.config import load_settings
    from parking_ml.data.images import ImageError, encode_png, read_image
    from parking_ml.inference import predict as run_predict
    from parking_ml.inference import spaces_to_geojson

    if model_dir is not None and model_uri is not None:
        raise typer.BadParameter("give --model-dir or --model-uri, not both")
    console = Console(stderr=True)
    settings = load_settings()
    n_threads = threads or settings.threads
    try:
        raster = read_image(image.read_bytes(), image.name, max_pixels=settings.max_pixels)
    except ImageError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from None

    with tempfile.TemporaryDirectory(prefix="parking-predict-") as tmp:
        segmenter = _load_segmenter(console, settings, model_dir, model_uri, Path(tmp), n_threads)

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("predicting", total=None)

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            pred = run_predict(segmenter, raster.rgb, image_gsd=raster.gsd or gsd, progress=on_progress)

    Console().print(_summary_table(f"{image.name} ({raster.width}x{raster.height} px)", pred))

    if geojson is not None:
        georef = raster.transform is not None and raster.crs
        fc = spaces_to_geojson(pred.spaces, raster.transform, raster.crs, dst_crs="EPSG:4326" if georef else None)
        _atomic_write(geojson, json.dumps(fc).encode())
        console.print(f"wrote {geojson}")
    if mask is not None:
        if mask.suffix.lower() in (".tif", ".tiff"):
            _write_mask_tiff(mask, pred.mask, raster.crs, raster.transform)
        else:
            _atomic_write(mask, encode_png(pred.mask))
        console.print(f"wrote {mask}")


def _write_mask_tiff(path: Path, mask, crs, transform) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    profile = {
        "driver": "GTiff",
        "height": mask.shape[0],
        "width": mask.shape[1],
        "count": 1,
        "dtype": "uint8",
        "compress": "deflate",
    }
    if crs and transform is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(mask, 1)
    tmp.replace(path)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("serve")(serve)
    app.command("predict")(predict)
