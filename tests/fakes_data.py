"""Tiny fake landing data for data-pipeline tests (independent of the synthetic generator).

A scene is asphalt with a row of rectangular stalls; occupied ones carry a bright "car". Stall rectangles have
integer corners and the mask is painted with numpy slicing (corners included), so it checks the polygon
rasteriser instead of repeating it.
"""

from __future__ import annotations

import json

import cv2
import numpy as np

from parking_ml.lake import Lake


def scene(size: int = 128, seed: int = 0, width: int | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(rgb uint8 H x W x 3, mask uint8 H x W, stalls [{"rect": (x0, y0, x1, y1), "status": ...}])."""
    h, w = size, width or size
    rng = np.random.default_rng(seed)
    rgb = np.clip(rng.normal(90, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    stalls = []
    sw, sh = max(8, w // 8), max(16, h // 4)
    y0 = h // 4
    for i, x0 in enumerate(range(4, w - sw, sw + 4)):
        status = "occupied" if (i + seed) % 3 == 0 else "free"
        x1, y1 = x0 + sw - 1, y0 + sh - 1
        if status == "occupied":
            rgb[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1] = (200, 30 + 10 * i, 40)
        else:
            rgb[y0 : y1 + 1, x0] = 230
        mask[y0 : y1 + 1, x0 : x1 + 1] = 1 if status == "free" else 2
        stalls.append({"rect": (x0, y0, x1, y1), "status": status})
    return rgb, mask, stalls


def png_bytes(arr: np.ndarray) -> bytes:
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def geojson_bytes(stalls: list[dict]) -> bytes:
    features = []
    for s in stalls:
        x0, y0, x1, y1 = s["rect"]
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        features.append(
            {
                "type": "Feature",
                "properties": {"status": s["status"]},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return json.dumps({"type": "FeatureCollection", "coordinate_space": "pixel", "features": features}).encode()


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
