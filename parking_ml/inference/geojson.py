"""GeoJSON of counted spaces: pixel coordinates, or map coordinates of a georeferenced image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parking_ml.inference.contract import Space


def _apply_transform(transform: Any, ring: Sequence[Sequence[float]]) -> list[list[float]]:
    if transform is None:
        return [[float(x), float(y)] for x, y in ring]
    out = []
    for x, y in ring:
        mx, my = transform @ (x, y)
        out.append([float(mx), float(my)])
    return out


def spaces_to_geojson(
    spaces: Sequence[Space], transform: Any = None, crs: str | None = None, dst_crs: str | None = None
) -> dict[str, Any]:
    """FeatureCollection of the spaces: pixel coordinates without a transform, else map coordinates
    in the image CRS, reprojected to dst_crs (e.g. "EPSG:4326") when given."""
    features = []
    for s in spaces:
        geom: dict[str, Any] = {"type": "Polygon", "coordinates": [_apply_transform(transform, s.polygon)]}
        if dst_crs and crs and transform is not None:
            from rasterio.warp import transform_geom

            geom = transform_geom(crs, dst_crs, geom)
            geom = {"type": geom["type"], "coordinates": _lists(geom["coordinates"])}
        features.append(
            {
                "type": "Feature",
                "id": s.id,
                "geometry": geom,
                "properties": {
                    "id": s.id,
                    "status": s.status,
                    "confidence": s.confidence,
                    "area_px": s.area_px,
                },
            }
        )
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    out_crs = dst_crs if (dst_crs and crs and transform is not None) else crs
    if out_crs and transform is not None:
        fc["crs"] = {"type": "name", "properties": {"name": out_crs}}
    return fc


def _lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return float(value)


def georeferenced_geojson(spaces: Sequence[Space], transform: Any, crs: str | None) -> dict[str, Any] | None:
    """{"image_crs": FeatureCollection, "wgs84": FeatureCollection} when the image is georeferenced."""
    if transform is None or not crs:
        return None
    return {
        "image_crs": spaces_to_geojson(spaces, transform, crs),
        "wgs84": spaces_to_geojson(spaces, transform, crs, dst_crs="EPSG:4326"),
    }
