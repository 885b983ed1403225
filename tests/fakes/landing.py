"""Fake landing batches: scenes (see scenes.scene) encoded as PNG with mask, GeoJSON or COCO labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from parking_ml.lake import Lake
from tests.fakes.scenes import scene, stall_features


def png_bytes(arr: np.ndarray) -> bytes:
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def geojson_bytes(stalls: list[dict]) -> bytes:
    doc = {"type": "FeatureCollection", "coordinate_space": "pixel", "features": stall_features(stalls)}
    return json.dumps(doc).encode()


def coco_bytes(stalls: list[dict], file_name: str, size: tuple[int, int], bbox_only: bool = False) -> bytes:
    h, w = size
    anns = []
    for i, s in enumerate(stalls):
        x0, y0, x1, y1 = s["rect"]
        ann = {
            "id": i + 1,
            "image_id": 7,
            "category_id": 1 if s["status"] == "free" else 2,
            "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
        }
        if not bbox_only:
            ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        anns.append(ann)
    doc = {
        "images": [{"id": 7, "file_name": file_name, "width": w, "height": h}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "free_space"}, {"id": 2, "name": "occupied_space"}],
    }
    return json.dumps(doc).encode()


def write_landing(
    lake: Lake,
    batch: str = "b1",
    sites: int = 4,
    per_site: int = 2,
    size: int = 128,
    seed: int = 0,
    first_site: int = 0,
) -> dict[str, np.ndarray]:
    """Write a valid batch; annotation kinds rotate mask / geojson / coco / mask+geojson. Returns masks by key."""
    masks = {}
    n = 0
    for s in range(first_site, first_site + sites):
        site = f"site{s}"
        for t in range(per_site):
            stem = f"tile{t}"
            rgb, mask, stalls = scene(size, seed=seed * 1000 + n)
            base = f"landing/{batch}/{site}/{stem}"
            lake.write_bytes(f"{base}.png", png_bytes(rgb))
            kind = n % 4
            if kind in (0, 3):
                lake.write_bytes(f"{base}.mask.png", png_bytes(mask))
            if kind in (1, 3):
                lake.write_bytes(f"{base}.geojson", geojson_bytes(stalls))
            if kind == 2:
                lake.write_bytes(f"{base}.json", coco_bytes(stalls, f"{stem}.png", mask.shape))
            masks[f"{base}.png"] = mask
            n += 1
    return masks


def geotiff_bytes(rgb: np.ndarray) -> bytes:
    from affine import Affine
    from rasterio.io import MemoryFile

    h, w = rgb.shape[:2]
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff", height=h, width=w, count=3, dtype="uint8", crs="EPSG:32633",
            transform=Affine(0.1, 0, 500000.0, 0, -0.1, 4649776.0),
        ) as ds:  # fmt: skip
            ds.write(rgb.transpose(2, 0, 1))
        return bytes(mem.read())


def write_tif(path: Path, rgb: np.ndarray, transform=None, crs="EPSG:32633", nodata_box=None, tags=None) -> Path:
    """A tiled 8-bit RGB GeoTIFF (georeferenced when a transform is given; a zeroed nodata box on request)."""
    import rasterio

    h, w = rgb.shape[:2]
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 3, "dtype": "uint8", "tiled": True}
    if transform is not None:
        profile.update(crs=crs, transform=transform)
    if nodata_box is not None:
        profile["nodata"] = 0
        r0, r1, c0, c1 = nodata_box
        rgb = rgb.copy()
        rgb[r0:r1, c0:c1] = 0
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(rgb.transpose(2, 0, 1))
        if tags:
            ds.update_tags(**tags)
    return path
