"""Per-lot occupancy: spaces counted inside lot outlines, one row per lot and pass, kept in the lake.

``predictions/occupancy.parquet`` holds lot_id, image_time, raster, model_version, free, occupied,
capacity_seen, occupancy_rate. A pass is (raster, image_time): writing a pass again replaces its rows, so a
re-run never duplicates them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.raster.source import RasterInfo

OCCUPANCY_KEY = "predictions/occupancy.parquet"
COLUMNS = (
    "lot_id",
    "image_time",
    "raster",
    "model_version",
    "free",
    "occupied",
    "capacity_seen",
    "occupancy_rate",
)
# what lot outlines without a CRS of their own are in: GeoJSON's (RFC 7946) and GeoParquet's default
LON_LAT = "OGC:CRS84"
ID_FIELDS = ("lot_id", "id", "name")


class LotsError(ValueError):
    """Lot outlines that cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Lots:
    ids: list[str]
    geometries: list[dict]  # GeoJSON geometry mappings (Polygon / MultiPolygon)
    crs: str | None  # None: pixel coordinates of the raster


def _lot_id(feature: dict, index: int, name: str) -> str:
    props = feature.get("properties") or {}
    for key in ID_FIELDS:
        if props.get(key) not in (None, ""):
            return str(props[key])
    if feature.get("id") not in (None, ""):
        return str(feature["id"])
    raise LotsError(f"{name}: feature {index} has no lot id; give each lot a property 'lot_id' (or 'id')")


def _geojson_lots(data: bytes, name: str) -> Lots:
    try:
        fc = json.loads(data)
    except ValueError as exc:
        raise LotsError(f"{name}: not valid JSON ({exc}); give a GeoJSON FeatureCollection of lot polygons") from None
    features = fc.get("features") if isinstance(fc, dict) else None
    if not isinstance(features, list) or not features:
        raise LotsError(f"{name}: no 'features'; give a GeoJSON FeatureCollection of lot polygons")
    crs = ((fc.get("crs") or {}).get("properties") or {}).get("name") or LON_LAT
    if crs.lower() in ("pixel", "image"):
        crs = None
    ids, geoms = [], []
    for i, f in enumerate(features):
        geom = f.get("geometry") or {}
        if geom.get("type") not in ("Polygon", "MultiPolygon"):
            raise LotsError(f"{name}: feature {i} is a {geom.get('type')!r}; lots must be Polygon or MultiPolygon")
        ids.append(_lot_id(f, i, name))
        geoms.append(geom)
    return Lots(ids, geoms, crs)


def _geoparquet_lots(data: bytes, name: str) -> Lots:
    import io

    import pyarrow.parquet as pq
    import shapely

    table = pq.read_table(io.BytesIO(data))
    meta = json.loads((table.schema.metadata or {}).get(b"geo", b"{}"))
    column = meta.get("primary_column", "geometry")
    if column not in table.column_names:
        raise LotsError(f"{name}: no geometry column {column!r}; write the lots as GeoParquet")
    id_col = next((c for c in ID_FIELDS if c in table.column_names), None)
    if id_col is None:
        raise LotsError(f"{name}: no lot id column; add a column 'lot_id'")
    crs_meta = (meta.get("columns") or {}).get(column, {}).get("crs", LON_LAT)
    crs = None if crs_meta is None else (json.dumps(crs_meta) if isinstance(crs_meta, dict) else str(crs_meta))
    geoms = shapely.from_wkb(table[column].to_numpy(zero_copy_only=False))
    return Lots(
        [str(v) for v in table[id_col].to_pylist()],
        [json.loads(shapely.to_geojson(g)) for g in geoms],
        crs,
    )


def read_lots(data: bytes, name: str) -> Lots:
    """Lot outlines from GeoJSON or GeoParquet bytes (told by the content, not the name)."""
    lots = _geoparquet_lots(data, name) if data[:4] == b"PAR1" else _geojson_lots(data, name)
    if len(set(lots.ids)) != len(lots.ids):
        raise LotsError(f"{name}: lot ids repeat; each lot needs its own 'lot_id'")
    return lots


def read_lots_file(path: str | Path) -> Lots:
    return read_lots(Path(path).read_bytes(), str(path))


def lot_rows(
    lots: Lots,
    spaces: pd.DataFrame,
    info: RasterInfo,
    image_time: datetime,
    model_version: str,
) -> pd.DataFrame:
    """One row per lot that the raster covers: spaces (columns x, y in the raster's CRS, status) whose
    centre lies inside the lot."""
    import shapely
    from rasterio.warp import transform_geom

    if lots.crs is not None and not info.georeferenced:
        raise LotsError(f"{info.name} is not georeferenced: give lot outlines in its pixel coordinates (crs 'pixel')")
    if info.georeferenced:
        left, top = info.transform @ (0, 0)
        right, bottom = info.transform @ (info.width, info.height)
        footprint = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    else:
        footprint = shapely.box(0, 0, info.width, info.height)
    x = spaces["x"].to_numpy(dtype=np.float64) if len(spaces) else np.zeros(0)
    y = spaces["y"].to_numpy(dtype=np.float64) if len(spaces) else np.zeros(0)
    free = (spaces["status"] == "free").to_numpy() if len(spaces) else np.zeros(0, dtype=bool)
    rows: list[dict[str, Any]] = []
    for lot_id, geom in zip(lots.ids, lots.geometries, strict=True):
        if lots.crs is not None:
            geom = transform_geom(lots.crs, info.crs, geom)
        shape = shapely.geometry.shape(geom)
        if shape.intersection(footprint).area <= 0:
            continue  # not in this image (or only touching its edge): no row rather than a lot seen empty
        inside = shapely.contains_xy(shape, x, y)
        n_free, n_occ = int((inside & free).sum()), int((inside & ~free).sum())
        cap = n_free + n_occ
        rows.append(
            {
                "lot_id": lot_id,
                "image_time": pd.Timestamp(image_time).tz_convert("UTC")
                if pd.Timestamp(image_time).tzinfo
                else pd.Timestamp(image_time, tz="UTC"),
                "raster": info.name,
                "model_version": model_version,
                "free": n_free,
                "occupied": n_occ,
                "capacity_seen": cap,
                "occupancy_rate": round(n_occ / cap, 4) if cap else float("nan"),
            }
        )
    return _typed(pd.DataFrame(rows, columns=list(COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["image_time"] = pd.to_datetime(out["image_time"], utc=True)
    for col in ("lot_id", "raster", "model_version"):
        out[col] = out[col].astype(str)
    for col in ("free", "occupied", "capacity_seen"):
        out[col] = out[col].astype("int64")
    out["occupancy_rate"] = out["occupancy_rate"].astype("float64")
    return out


def merge_occupancy(existing: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """``existing`` with every pass in ``new`` (by raster and image_time) replaced by ``new``'s rows."""
    new = _typed(new)
    if existing is None or existing.empty:
        merged = new
    else:
        existing = _typed(existing)
        passes = pd.MultiIndex.from_frame(new[["raster", "image_time"]])
        keep = ~pd.MultiIndex.from_frame(existing[["raster", "image_time"]]).isin(passes)
        merged = pd.concat([existing[keep], new], ignore_index=True)
    return merged.sort_values(["image_time", "raster", "lot_id"], ignore_index=True)[list(COLUMNS)]


def upsert_occupancy(lake: Any, rows: pd.DataFrame, key: str = OCCUPANCY_KEY) -> pd.DataFrame:
    """Write ``rows`` into the lake's occupancy table (one writer at a time: the caller's job)."""
    existing = lake.read_parquet(key) if lake.exists(key) else None
    merged = merge_occupancy(existing, rows)
    lake.write_parquet(key, merged)
    return merged
