"""Writers that stream: a tiled, compressed class-mask GeoTIFF with the input's georeference, and the spaces
as GeoParquet (one row group per block) and GeoJSON (features appended as they come). Each writes to a
temporary name and renames on close(), so a crash leaves no half file under a final name."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from parking_ml.raster.blocks import TILE
from parking_ml.raster.source import RasterInfo

WGS84 = "EPSG:4326"
GEOPARQUET_VERSION = "1.1.0"


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


class MaskWriter:
    """Class mask (0 background, 1 free, 2 occupied, 255 no data) of raster rows [row0, row1)."""

    def __init__(self, path: Path, info: RasterInfo, row0: int = 0, row1: int | None = None) -> None:
        import rasterio
        from rasterio.windows import Window, transform

        self.path, self.row0 = Path(path), row0
        row1 = info.height if row1 is None else row1
        self.tmp = _tmp(self.path)
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": row1 - row0,
            "width": info.width,
            "count": 1,
            "dtype": "uint8",
            "nodata": 255,
            "tiled": True,
            "blockxsize": TILE,
            "blockysize": TILE,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        if info.georeferenced:
            window = Window(0, row0, info.width, row1 - row0)
            profile.update(crs=info.crs, transform=transform(window, info.transform))
        self.ds = rasterio.open(self.tmp, "w", **profile)

    def write(self, core: tuple[int, int, int, int], mask: np.ndarray) -> None:
        from rasterio.windows import Window

        r0, r1, c0, c1 = core
        self.ds.write(mask, 1, window=Window(c0, r0 - self.row0, c1 - c0, r1 - r0))

    def close(self) -> dict[str, str]:
        self.ds.close()
        os.replace(self.tmp, self.path)
        return {"mask": str(self.path)}

    def abort(self) -> None:
        if not self.ds.closed:
            self.ds.close()
        self.tmp.unlink(missing_ok=True)


def _to_map(info: RasterInfo, rings: np.ndarray) -> np.ndarray:
    """n x 5 x 2 pixel-edge (col, row) coordinates -> the raster CRS (pixel coordinates without one)."""
    if not info.georeferenced:
        return rings.copy()
    t = info.transform
    x = t.a * rings[..., 0] + t.b * rings[..., 1] + t.c
    y = t.d * rings[..., 0] + t.e * rings[..., 1] + t.f
    return np.stack([x, y], axis=-1)


def _to_wgs84(info: RasterInfo, coords: np.ndarray) -> np.ndarray:
    from rasterio.warp import transform

    flat = coords.reshape(-1, 2)
    lon, lat = transform(info.crs, WGS84, flat[:, 0].tolist(), flat[:, 1].tolist())
    return np.stack([np.asarray(lon), np.asarray(lat)], axis=-1).reshape(coords.shape)


def spaces_schema(info: RasterInfo):
    import pyarrow as pa

    fields = [
        ("id", pa.int64()),
        ("status", pa.string()),
        ("confidence", pa.float64()),
        ("area_px", pa.int64()),
        ("col", pa.float64()),
        ("row", pa.float64()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("geometry", pa.binary()),
    ]
    columns: dict[str, Any] = {
        # the raster's CRS as PROJJSON; null (undefined) for pixel coordinates
        "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": _projjson(info.crs)},
    }
    if info.georeferenced:
        fields += [("lon", pa.float64()), ("lat", pa.float64()), ("geometry_wgs84", pa.binary())]
        # no "crs" key: GeoParquet's default, OGC:CRS84 (lon/lat WGS84)
        columns["geometry_wgs84"] = {"encoding": "WKB", "geometry_types": ["Polygon"]}
    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": columns}
    return pa.schema(fields, metadata={b"geo": json.dumps(geo).encode()})


def _projjson(crs: str | None) -> dict | None:
    if not crs:
        return None
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_dict(projjson=True)


class _GeoJsonStream:
    """A FeatureCollection written feature by feature."""

    def __init__(self, path: Path, crs_name: str | None) -> None:
        self.path, self.tmp = path, _tmp(path)
        self.fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close/abort)
        head: dict[str, Any] = {"type": "FeatureCollection"}
        if crs_name:
            head["crs"] = {"type": "name", "properties": {"name": crs_name}}
        self.fh.write(json.dumps(head)[:-1] + ', "features": [\n')
        self.first = True

    def add(self, ids, status, confidence, area_px, coords: np.ndarray) -> None:
        parts = []
        for i, s, c, a, ring in zip(ids, status, confidence, area_px, coords, strict=True):
            feature = {
                "type": "Feature",
                "id": int(i),
                "geometry": {"type": "Polygon", "coordinates": [ring.round(8).tolist()]},
                "properties": {"id": int(i), "status": s, "confidence": float(c), "area_px": int(a)},
            }
            parts.append(json.dumps(feature))
        if parts:
            self.fh.write(("" if self.first else ",\n") + ",\n".join(parts))
            self.first = False

    def close(self) -> None:
        self.fh.write("\n]}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


class SpacesWriter:
    """Spaces of one raster, numbered 1.. in the order they are added (block rows top to bottom)."""

    def __init__(self, outputs: Any, info: RasterInfo, first_id: int = 1) -> None:
        import pyarrow.parquet as pq

        self.info, self.next_id = info, first_id
        self.schema = spaces_schema(info)
        self.parquet_path = outputs.spaces_parquet
        self.parquet_tmp = _tmp(self.parquet_path) if self.parquet_path else None
        self.parquet = pq.ParquetWriter(self.parquet_tmp, self.schema) if self.parquet_tmp else None
        self.streams: dict[str, _GeoJsonStream] = {}
        if outputs.spaces_geojson:
            # RFC 7946: WGS84 lon/lat when georeferenced; pixel coordinates otherwise
            self.streams["spaces_geojson"] = _GeoJsonStream(Path(outputs.spaces_geojson), None)
        if outputs.spaces_geojson_image_crs and info.georeferenced:
            self.streams["spaces_geojson_image_crs"] = _GeoJsonStream(Path(outputs.spaces_geojson_image_crs), info.crs)
        self.count = 0

    def add(self, status: list[str], confidence: list[float], area_px: list[int], rings: np.ndarray) -> None:
        if not status:
            return
        coords = _to_map(self.info, rings)
        lonlat = _to_wgs84(self.info, coords) if self.info.georeferenced else None
        ids = np.arange(self.next_id, self.next_id + len(status), dtype=np.int64)
        self.next_id += len(status)
        self.count += len(status)
        self.add_rows(ids, status, confidence, area_px, rings, coords, lonlat)

    def add_rows(self, ids, status, confidence, area_px, rings, coords, lonlat) -> None:
        import pyarrow as pa
        import shapely

        if self.parquet is not None:
            centre_px, centre = rings[:, :4].mean(axis=1), coords[:, :4].mean(axis=1)
            data: dict[str, Any] = {
                "id": ids,
                "status": status,
                "confidence": np.asarray(confidence, dtype=np.float64),
                "area_px": np.asarray(area_px, dtype=np.int64),
                "col": centre_px[:, 0],
                "row": centre_px[:, 1],
                "x": centre[:, 0],
                "y": centre[:, 1],
                "geometry": shapely.to_wkb(shapely.polygons(coords)).tolist(),
            }
            if lonlat is not None:
                centre_ll = lonlat[:, :4].mean(axis=1)
                data.update(
                    lon=centre_ll[:, 0],
                    lat=centre_ll[:, 1],
                    geometry_wgs84=shapely.to_wkb(shapely.polygons(lonlat)).tolist(),
                )
            self.parquet.write_table(pa.table(data, schema=self.schema))
        if "spaces_geojson" in self.streams:
            shown = lonlat if lonlat is not None else coords
            self.streams["spaces_geojson"].add(ids, status, confidence, area_px, shown)
        if "spaces_geojson_image_crs" in self.streams:
            self.streams["spaces_geojson_image_crs"].add(ids, status, confidence, area_px, coords)

    def close(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.parquet is not None:
            self.parquet.close()
            os.replace(self.parquet_tmp, self.parquet_path)
            out["spaces_parquet"] = str(self.parquet_path)
        for key, stream in self.streams.items():
            stream.close()
            out[key] = str(stream.path)
        self.parquet = None
        self.streams = {}
        return out

    def abort(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
            Path(self.parquet_tmp).unlink(missing_ok=True)
            self.parquet = None
        for stream in self.streams.values():
            stream.abort()
        self.streams = {}


def merge_parts(info: RasterInfo, parts: list[tuple[int, Path, Path]], outputs: Any) -> dict[str, str]:
    """Join work units' outputs ((first raster row, part mask, part spaces) in row order) into one raster's
    files: the masks copied strip by strip, the spaces renumbered 1.. in the same order a single process
    numbers them."""
    import pyarrow.parquet as pq
    import rasterio
    import shapely
    from rasterio.windows import Window

    written: dict[str, str] = {}
    mask_out = MaskWriter(outputs.mask, info) if outputs.mask else None
    spaces_out = SpacesWriter(outputs, info)
    try:
        for row0, part_mask, part_spaces in parts:
            if mask_out is not None:
                with rasterio.open(part_mask) as src:
                    for r in range(0, src.height, TILE):
                        h = min(TILE, src.height - r)
                        strip = src.read(1, window=Window(0, r, src.width, h))
                        mask_out.ds.write(strip, 1, window=Window(0, row0 + r, src.width, h))
            pf = pq.ParquetFile(part_spaces)
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i)
                n = t.num_rows
                if not n:
                    continue
                coords = shapely.get_coordinates(shapely.from_wkb(t["geometry"].to_numpy(zero_copy_only=False)))
                coords = coords.reshape(n, 5, 2)
                lonlat = None
                if "geometry_wgs84" in t.column_names:
                    ll = shapely.from_wkb(t["geometry_wgs84"].to_numpy(zero_copy_only=False))
                    lonlat = shapely.get_coordinates(ll).reshape(n, 5, 2)
                # the pixel rings are not stored: the centres are, and only the parquet's centres use them
                rings = np.repeat(np.stack([t["col"].to_numpy(), t["row"].to_numpy()], axis=-1)[:, None], 5, axis=1)
                ids = np.arange(spaces_out.next_id, spaces_out.next_id + n, dtype=np.int64)
                spaces_out.next_id += n
                spaces_out.count += n
                spaces_out.add_rows(
                    ids,
                    t["status"].to_pylist(),
                    t["confidence"].to_numpy(),
                    t["area_px"].to_numpy(),
                    rings,
                    coords,
                    lonlat,
                )
        if mask_out is not None:
            written.update(mask_out.close())
        written.update(spaces_out.close())
    finally:
        if mask_out is not None:
            mask_out.abort()
        spaces_out.abort()
    return written
