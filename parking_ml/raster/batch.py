"""Batch prediction over a lake prefix of rasters, cut into work units (raster x block rows) that an
orchestrator runs anywhere, then merged: what `dags/parking_batch_predict.py` calls, one function a task.

Every function takes and returns plain data (JSON-able dicts), so units travel between workers as XComs.
The model version is resolved once, in ``plan``, and every unit runs that version: a champion move during the
run does not mix models. Outputs of a run go under ``predictions/<run>/``; a unit that runs again rewrites its
own part, and the occupancy table replaces a pass's rows, so re-running never duplicates anything.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from parking_ml.config import Settings
from parking_ml.lake import Lake
from parking_ml.raster.inputs import is_raster_name

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"


def safe_run_name(run_id: str) -> str:
    """A run id as one path segment (Airflow's hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


def _raster_source(lake: Lake, key: str) -> tuple[str, Any]:
    """(path, opener) for rasterio: a local file as it is; an object-store raster read in ranges through the
    lake's filesystem (the filesystem itself, not its bound ``open``: see raster.source.Opener)."""
    if lake.is_local:
        return str(lake.local_path(key)), None
    return lake.path(key), lake.fs


def _put(lake: Lake, local: Path, key: str) -> None:
    """A local file into the lake whole: renamed into place locally, one upload on object stores."""
    if lake.is_local:
        target = lake.local_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
    else:
        lake.fs.put_file(str(local), lake.path(key))


def _get(lake: Lake, key: str, local: Path) -> Path:
    local.parent.mkdir(parents=True, exist_ok=True)
    lake.fs.get_file(lake.path(key), str(local))
    return local


def resolve_model(settings: Settings) -> dict[str, str]:
    """The model this run uses, pinned: a local package folder, or the alias's version right now."""
    if settings.model_dir is not None:
        return {"version": f"dir:{settings.model_dir.name}", "uri": str(settings.model_dir)}
    from parking_ml.model.registry import get_alias_version

    mv = get_alias_version(settings, settings.model_alias)
    if mv is None:
        raise LookupError(
            f"no version of {settings.model_name} has alias {settings.model_alias!r} in "
            f"{settings.mlflow_tracking_uri}; promote a model first (parking-ml promote) or set PARKING_MODEL_DIR"
        )
    return {"version": str(mv.version), "uri": f"models:/{settings.model_name}/{mv.version}"}


def model_package(settings: Settings, model: dict[str, str]) -> Path:
    """The package folder of a pinned model, downloaded once per worker and version."""
    if not model["uri"].startswith("models:/"):
        return Path(model["uri"])
    from parking_ml.model.package import download_package

    final = settings.cache_dir / "batch-models" / f"{settings.model_name}-v{model['version']}"
    if (final / "model.onnx").is_file():
        return final
    tmp = download_package(
        model["uri"], final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}"), settings.mlflow_tracking_uri
    )
    try:
        Path(tmp).rename(final)  # another unit on this worker may have won the race: then use its copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def plan(
    settings: Settings,
    prefix: str,
    run_id: str,
    lots: str = "",
    block_rows_per_unit: int = 1,
    core: int | None = None,
) -> list[dict[str, Any]]:
    """The run's work units: one per ``block_rows_per_unit`` block rows of each raster."""
    from parking_ml.inference import PreprocessConfig
    from parking_ml.raster.blocks import plan_blocks
    from parking_ml.raster.stream import raster_header

    lake = Lake.from_settings(settings)
    keys = [k for k in lake.list(prefix) if is_raster_name(k) and not Path(k).name.startswith(".")]
    if not keys:
        raise FileNotFoundError(f"no rasters under {lake.uri(prefix)}; drop GeoTIFFs there or give another prefix")
    model = resolve_model(settings)
    config = PreprocessConfig.from_file(model_package(settings, model) / "preprocess.json")
    run = safe_run_name(run_id)
    rasters, units = [], []
    for key in keys:
        path, opener = _raster_source(lake, key)
        info = raster_header(path, opener)
        layout = plan_blocks(info.height, info.width, config, info.gsd, core=core)
        image_time = info.image_time or lake.modified(key).replace(microsecond=0)
        stem = Path(key).stem
        starts = list(range(0, layout.n_rows, block_rows_per_unit))
        rasters.append({"key": key, "stem": stem, "image_time": image_time.isoformat(), "starts": starts})
        for start in starts:
            stop = min(layout.n_rows, start + block_rows_per_unit)
            units.append({"key": key, "stem": stem, "rows": [start, stop], "core": layout.core})
    lots_key = lots.strip("/")
    if lots_key and not lake.exists(lots_key):
        logger.warning("lot outlines %s not found: no occupancy this run", lake.uri(lots_key))
        lots_key = ""
    by_key = {r["key"]: r for r in rasters}
    for unit in units:
        # each unit carries its raster's and the run's facts: mapped tasks get one element of one list
        unit.update(run=run, model=model, lots=lots_key, raster=by_key[unit["key"]])
    logger.info("planned %d units over %d rasters, model %s", len(units), len(rasters), model["version"])
    return units


def rasters_of(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per raster of a plan (its facts and the run's), in plan order: what merges map over."""
    seen: dict[str, dict[str, Any]] = {}
    for unit in units:
        if unit["key"] not in seen:
            seen[unit["key"]] = {**unit["raster"], "run": unit["run"], "model": unit["model"], "lots": unit["lots"]}
    return list(seen.values())


def _part_key(run: str, stem: str, start: int, suffix: str) -> str:
    return f"{PREDICTIONS}/{run}/_parts/{stem}/{start:06d}{suffix}"


def run_unit(settings: Settings, unit: dict[str, Any]) -> dict[str, Any]:
    """Predict one unit's block rows and put its mask and spaces into the lake as parts."""
    from parking_ml.inference import OnnxSegmenter
    from parking_ml.raster.stream import Outputs, predict_raster

    lake = Lake.from_settings(settings)
    segmenter = OnnxSegmenter.from_dir(model_package(settings, unit["model"]), threads=settings.threads)
    start, stop = unit["rows"]
    path, opener = _raster_source(lake, unit["key"])
    with tempfile.TemporaryDirectory(prefix="parking-unit-") as tmp:
        outputs = Outputs(Path(tmp) / "part.mask.tif", Path(tmp) / "part.spaces.parquet", None)
        summary = predict_raster(segmenter, path, outputs, rows=range(start, stop), core=unit["core"], opener=opener)
        keys = {
            "mask": _part_key(unit["run"], unit["stem"], start, ".mask.tif"),
            "spaces": _part_key(unit["run"], unit["stem"], start, ".spaces.parquet"),
        }
        _put(lake, outputs.mask, keys["mask"])
        _put(lake, outputs.spaces_parquet, keys["spaces"])
    return {
        "key": unit["key"],
        "start": start,
        "row0": start * unit["core"],
        **keys,
        "free": summary.free,
        "occupied": summary.occupied,
    }


def merge_raster(settings: Settings, raster: dict[str, Any], parts: list[dict[str, Any]]) -> list[dict]:
    """Join a raster's parts into predictions/<run>/<stem>.mask.tif, .spaces.parquet, .spaces.geojson (+ the
    image-CRS GeoJSON), and return its per-lot occupancy rows (none without lot outlines)."""
    import pandas as pd

    from parking_ml.raster.occupancy import lot_rows, read_lots
    from parking_ml.raster.stream import Outputs, raster_header
    from parking_ml.raster.writers import merge_parts

    lake = Lake.from_settings(settings)
    mine = sorted((p for p in parts if p and p["key"] == raster["key"]), key=lambda p: p["start"])
    missing = sorted(set(raster["starts"]) - {p["start"] for p in mine})
    if missing:
        raise RuntimeError(f"{raster['key']}: the units of block rows {missing} left no parts; clear and re-run them")
    run, stem = raster["run"], raster["stem"]
    path, opener = _raster_source(lake, raster["key"])
    info = raster_header(path, opener)
    with tempfile.TemporaryDirectory(prefix="parking-merge-") as tmp:
        work = Path(tmp)
        local_parts = [
            (p["row0"], _get(lake, p["mask"], work / f"{i}.mask.tif"), _get(lake, p["spaces"], work / f"{i}.parquet"))
            for i, p in enumerate(mine)
        ]
        outputs = Outputs.beside(work / "out", stem)
        written = merge_parts(info, local_parts, outputs)
        for local in written.values():
            _put(lake, Path(local), f"{PREDICTIONS}/{run}/{Path(local).name}")
        rows: list[dict] = []
        if raster["lots"]:
            lots = read_lots(lake.read_bytes(raster["lots"]), lake.uri(raster["lots"]))
            spaces = pd.read_parquet(outputs.spaces_parquet, columns=["x", "y", "status"])
            when = datetime.fromisoformat(raster["image_time"])
            frame = lot_rows(lots, spaces, info, when, raster["model"]["version"])
            frame["image_time"] = frame["image_time"].map(lambda t: t.isoformat())
            # XComs are JSON: an undefined rate (a lot with no space seen) travels as null, not NaN
            rows = [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                for r in frame.to_dict(orient="records")
            ]
    for p in mine:
        lake.delete(p["mask"])
        lake.delete(p["spaces"])
    return rows


def write_occupancy(settings: Settings, rows: list[dict]) -> int:
    """The run's lot rows into predictions/occupancy.parquet (one writer: the run's last task)."""
    import pandas as pd

    from parking_ml.raster.occupancy import COLUMNS, upsert_occupancy

    if not rows:
        return 0
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["image_time"] = pd.to_datetime(frame["image_time"], utc=True)
    upsert_occupancy(Lake.from_settings(settings), frame)
    return len(frame)
